"""Peak memory of one CPU labeling actor's forward pass, per batch size (sizes the auto actor pool).

    .venv/bin/python bench/bench_actor_memory.py --model RUNS/raccoon/model.pt --side 480 --batches 1,8,32

Each batch size runs in a fresh process (``ru_maxrss`` is a process's peak): the model file is read
and made ready as a labeling actor does (``localizer_from_payload`` + ``inference_layout``), one warm-up
batch of 2, then one batch of random uint8 images through ``coloc_core.predict.attention_maps`` on one
torch thread (repeated to 32 images at least). Reported: the peak RSS before and after, the images/s, and the
bytes per input pixel above the batch-1 baseline of the same run, which is what
``pipelines.label_actors.ACTOR_BASE_BYTES`` / ``ACTOR_BYTES_PER_PIXEL`` are set from. ``--model``: any
model file (``coloc train``'s ``model.pt``, or the ``_model.pt`` a fitted ``coloc label`` leaves). Prints
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

_CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from coloc_core.checkpoint import read_model_payload
from coloc_core.localizer import localizer_from_payload
from coloc_core.predict import attention_maps, inference_layout
torch.set_num_threads(1)
model, side, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(model, "rb") as fh:
    loc = inference_layout(localizer_from_payload(read_model_payload(fh.read())), torch.device("cpu"))
rng = np.random.default_rng(0)
attention_maps(loc, rng.integers(0, 256, (2, side, side, 3), dtype=np.uint8))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
images = rng.integers(0, 256, (batch, side, side, 3), dtype=np.uint8)
repeat = max(1, -(-32 // batch))  # at least 32 images, for a steady rate
start = time.perf_counter()
for _ in range(repeat):
    attention_maps(loc, images)
seconds = (time.perf_counter() - start) / repeat
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"batch": batch, "before_bytes": before, "peak_bytes": peak, "images_per_s": batch / seconds}))
"""


def measure(model: str, side: int, batch: int) -> dict[str, Any]:
    """One batch size in a fresh interpreter; its JSON line."""
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, model, str(side), str(batch)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    """Parse the arguments, measure each batch size, print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--model", required=True, help="a model file (coloc train's model.pt, or a fitted _model.pt)"
    )
    parser.add_argument("--side", type=int, default=480, help="square input side in pixels")
    parser.add_argument(
        "--batches", default="1,8,32", help="comma-separated batch sizes; the first is the baseline"
    )
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    rows = [measure(args.model, args.side, b) for b in batches]
    base = rows[0]
    pixels = args.side * args.side
    for row in rows:
        extra = row["peak_bytes"] - base["peak_bytes"]
        extra_images = row["batch"] - base["batch"]
        row["peak_gib"] = round(row["peak_bytes"] / 2**30, 3)
        row["ratio_to_baseline_peak"] = round(row["peak_bytes"] / base["peak_bytes"], 3)
        row["bytes_per_pixel_over_baseline"] = (
            round(extra / (extra_images * pixels), 1) if extra_images else None
        )
    print(json.dumps({"model": args.model, "side": args.side, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
