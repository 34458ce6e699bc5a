"""EfficientNet-Lite on the CPU: the labeling path as shipped against the backbone before two changes.

    .venv/bin/python bench/bench_backbone_cpu.py --model RUNS/raccoon/model.pt \
        --images ../shared/data/cub100-unboxed/images --n 64 --repeat 3 [--undo activations,padding]

Each run is ``coloc_core.predict.Predictor.predict_batch`` (the code every labeling actor runs: the
decode, the network at the model's input size, the boxes, the score with its content crops) over the
same first ``n`` images (sorted) of the folder, in a fresh Python process with ``--threads`` torch
threads, after one warm-up batch. The measured run is the shipped backbone; the baseline is the same
network with what ``--undo`` names put back as it was before 2026-12-02, patched in by this script:
``activations``, the out-of-place ``F.relu6(...)`` and ``out + x`` (the shipped ones write into the
tensor their conv just made); ``padding``, TensorFlow's "SAME" padding of a strided depthwise conv
as an explicit padded copy of its input (the shipped one pads the last row and column's thin slabs
only). The two compute the same numbers (each run's boxes, scores and heatmaps are hashed; the script fails
if they differ). Runs alternate, baseline first, ``--repeat`` times each. Reported: the median
images/s and peak RSS (``ru_maxrss``) of each, and the ratios shipped / baseline. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("baseline", "shipped")
UNDO = ("activations", "padding")


def _use_padded_copies() -> None:
    """Patch ``Conv2dSame`` back to padding a copy of the input whenever its padding is asymmetric."""
    import torch.nn.functional as F  # noqa: N812, PLC0415

    from coloc_core import backbones  # noqa: PLC0415

    def one_more_at_the_end(self, x, pads):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    backbones.Conv2dSame._one_more_at_the_end = one_more_at_the_end  # type: ignore[method-assign]


def _use_out_of_place_activations() -> None:
    """Patch EfficientNet-Lite back to out-of-place ReLU6s and residual sums."""
    import torch.nn.functional as F  # noqa: N812, PLC0415

    from coloc_core import backbones  # noqa: PLC0415

    def block_forward(self, x):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202
        out = x
        if self.has_expand:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out

    def pre_head(self, x):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return x

    def forward(self, x):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202
        return F.relu6(self._bn1(self._conv_head(self.pre_head(x))))

    backbones.MBConvBlock.forward = block_forward  # type: ignore[method-assign]
    backbones.EfficientNetLiteBackbone.pre_head = pre_head  # type: ignore[method-assign]
    backbones.EfficientNetLiteBackbone.forward = forward  # type: ignore[method-assign]


def child(args: argparse.Namespace) -> None:
    """One timed run in this process; prints its JSON line."""
    sys.path.insert(0, str(ROOT))
    import torch  # noqa: PLC0415

    if args.variant == "baseline":
        undo = set(args.undo.split(","))
        if "activations" in undo:
            _use_out_of_place_activations()
        if "padding" in undo:
            _use_padded_copies()
    from coloc_core.predict import Predictor  # noqa: PLC0415

    torch.set_num_threads(args.threads)
    paths = sorted(
        str(p) for p in Path(args.images).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    )
    paths = paths[: args.n]
    predictor = Predictor.load(args.model)
    predictor.predict_batch(paths[: args.batch_size], batch_size=args.batch_size)  # warm-up
    started = time.perf_counter()
    predictions = predictor.predict_batch(paths, batch_size=args.batch_size)
    seconds = time.perf_counter() - started
    digest = hashlib.sha256()
    for p in predictions:
        digest.update(p.box.tobytes() + p.heatmap.tobytes() + repr(p.score).encode())
    print(
        json.dumps(
            {
                "variant": args.variant,
                "images": len(paths),
                "seconds": round(seconds, 3),
                "images_per_s": round(len(paths) / seconds, 3),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "digest": digest.hexdigest()[:16],
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a model file (an EfficientNet-Lite labeler)")
    ap.add_argument("--images", required=True, help="a folder of images (searched recursively)")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--undo", default="activations,padding", help=f"what the baseline puts back: {', '.join(UNDO)}"
    )
    ap.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # a child run
    args = ap.parse_args()
    if not set(args.undo.split(",")) <= set(UNDO):
        ap.error(f"--undo takes {', '.join(UNDO)}, got {args.undo!r}")
    if args.variant:
        child(args)
        return
    runs: dict[str, list[dict[str, float | str]]] = {v: [] for v in VARIANTS}
    for _ in range(args.repeat):
        for variant in VARIANTS:
            cmd = [sys.executable, __file__, *sys.argv[1:], "--variant", variant]
            line = (
                subprocess.run(cmd, check=True, capture_output=True, text=True)
                .stdout.strip()
                .splitlines()[-1]
            )
            runs[variant].append(json.loads(line))
            print(line, file=sys.stderr, flush=True)
    digests = {str(r["digest"]) for rs in runs.values() for r in rs}
    if len(digests) != 1:
        raise SystemExit(f"the two variants gave different predictions: {sorted(digests)}")
    med = {
        v: {k: statistics.median(float(r[k]) for r in rs) for k in ("images_per_s", "peak_rss_mb")}
        for v, rs in runs.items()
    }
    print(
        json.dumps(
            {
                "undo": args.undo,
                "median": med,
                "speed_ratio": round(med["shipped"]["images_per_s"] / med["baseline"]["images_per_s"], 3),
                "memory_ratio": round(med["shipped"]["peak_rss_mb"] / med["baseline"]["peak_rss_mb"], 3),
                "runs": runs,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
