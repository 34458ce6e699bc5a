"""Peak memory of a CAML training step per batch size, vs a bare PyTorch loop; the estimate's calibration.

    python bench/bench_train_memory.py --batches 8,16,32 --steps 2 --threads 1

For each batch, two fresh processes (so each peak RSS is that run's own, ``ru_maxrss``):

- **CAML step**: what a CPU training worker runs: ``pipelines.train_worker.train_batch`` (normalise, pretext
  warp, one forward of both views, L_cls + L_caml, backward, SGD with momentum) on EfficientNet-Lite0
  (``--backbone``) at ``augment.crop`` (224), ``--steps`` steps on random uint8 images;
- **bare loop** (the baseline): the same backbone in the plainest PyTorch loop at the same batch:
  forward of the images, global average pool, a linear classifier, cross-entropy, backward, SGD.

It prints each peak, what ``pipelines.memory.estimate_worker_memory`` predicts for the step, and a
least-squares line ``peak = a + b × batch`` over the CAML peaks, whose slope divided by
``saved_activation_bytes`` calibrates ``pipelines.memory.ACTIVATION_FACTOR`` (and its intercept,
``WORKER_BASE_BYTES``). Not measured here: the Ray worker's own overhead (the Ray core worker and
Ray Train in the process, the prefetched batches), which the base covers with a margin.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _config(backbone: str, batch: int):  # noqa: ANN202 - a TrainJobConfig
    from coloc_core.config import apply_overrides
    from pipelines.config import TrainJobConfig

    return apply_overrides(
        TrainJobConfig(method="caml"),
        {"model.backbone": backbone, "model.weights": None, "optim.batch_size": batch},
    )


def child(mode: str, backbone: str, batch: int, steps: int, threads: int) -> dict[str, float]:
    """One measurement in this (fresh) process: ``steps`` steps at ``batch``; peak RSS in bytes."""
    import torch
    from torch import nn

    from coloc_core.model import build_model
    from coloc_core.step import make_optimizer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = _config(backbone, batch)
    crop = cfg.augment.crop
    model = build_model(cfg, weights=False)
    images = torch.randint(0, 256, (batch, crop, crop, 3), dtype=torch.uint8)
    started = time.perf_counter()
    if mode == "caml":
        from pipelines.train_worker import train_batch

        optimizer = make_optimizer(model, cfg.optim)
        generator = torch.Generator().manual_seed(0)
        for _ in range(steps):
            train_batch(model, images, cfg, optimizer, generator=generator)
    else:
        backbone_net = model.backbone
        with torch.no_grad():
            channels = backbone_net(torch.zeros(1, 3, crop, crop)).shape[1]
        head = nn.Linear(channels, 200)
        params = [*backbone_net.parameters(), *head.parameters()]
        optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
        labels = torch.randint(0, 200, (batch,))
        backbone_net.train()
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            x = images.permute(0, 3, 1, 2).float().div(255.0)
            logits = head(backbone_net(x).mean(dim=(2, 3)))
            nn.functional.cross_entropy(logits, labels).backward()
            optimizer.step()
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"peak": float(peak), "seconds": seconds}


def measure(mode: str, backbone: str, batch: int, steps: int, threads: int) -> dict[str, float]:
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            mode,
            "--backbone",
            backbone,
            "--batches",
            str(batch),
            "--steps",
            str(steps),
            "--threads",
            str(threads),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--batches", default="8,16,32", help="comma-separated per-worker batches")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.child:
        print(json.dumps(child(args.child, args.backbone, batches[0], args.steps, args.threads)))
        return

    from pipelines import memory

    gib = memory.GIB
    saved = memory.saved_activation_bytes(_config(args.backbone, batches[0]))
    print(f"backbone {args.backbone}, crop 224, {args.steps} steps, {args.threads} thread(s)")
    print(f"saved for backward per image (2 views): {saved / 2**20:.1f} MiB")
    print("batch | CAML step peak RSS | bare loop peak RSS | ratio | estimate (current constants)")
    peaks = []
    for batch in batches:
        caml = measure("caml", args.backbone, batch, args.steps, args.threads)
        bare = measure("bare", args.backbone, batch, args.steps, args.threads)
        estimate = memory.estimate_worker_memory(_config(args.backbone, batch), 1, saved_per_image=saved)
        peaks.append(caml["peak"])
        print(
            f"{batch:5d} | {caml['peak'] / gib:6.2f} GiB ({caml['seconds']:.0f} s) | "
            f"{bare['peak'] / gib:6.2f} GiB ({bare['seconds']:.0f} s) | {caml['peak'] / bare['peak']:.2f} | "
            f"{estimate.peak / gib:.2f} GiB",
            flush=True,
        )
    if len(batches) >= 2:
        n = len(batches)
        mean_b, mean_p = sum(batches) / n, sum(peaks) / n
        slope = sum((b - mean_b) * (p - mean_p) for b, p in zip(batches, peaks, strict=True)) / sum(
            (b - mean_b) ** 2 for b in batches
        )
        intercept = mean_p - slope * mean_b
        print(
            f"fit: peak = {intercept / gib:.2f} GiB + {slope / 2**20:.0f} MiB x batch; "
            f"ACTIVATION_FACTOR = slope / saved = {slope / saved:.2f}"
        )


if __name__ == "__main__":
    main()
