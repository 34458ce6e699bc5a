"""Labeling throughput and memory: ``pipelines.label`` (Ray) vs a plain-PyTorch loop, same images.

    .venv/bin/python bench/bench_label.py --images ../shared/data/cub100-unboxed/images --n 500 \
        --out /tmp/bench-label-500 --num_actors 2 --actor_cpus 0.75 --decode_cpus 0.25

Ray run: ``run_labeling`` with a training-free localizer (``--method``, default CAAM; ``--backbone``,
default EfficientNet-Lite0 with its packaged ImageNet weights) on the first ``n`` images (sorted) of the folder, on a local Ray cluster of ``--cpus`` CPUs.
Reported: wall time of the whole call (Ray start excluded, actor start included) and the time each
part file was written, the driver's peak RSS (``ru_maxrss``) and the peak summed PSS and RSS of the
driver's whole process tree (raylet, workers, actors), sampled every 0.25 s from ``/proc``. PSS shares
each shared page (torch libraries, the object store) among the processes mapping it; RSS counts it once
per process (an upper bound). Two sizes give the marginal rate (n2 - n1) / (t2 - t1), free of start-up.
Baseline: a plain loop in one process with ``--cpus`` torch threads, on ``--baseline_n`` images: the
same decode (``coloc_core.decode.decode_image``), the same localizer as a user builds it (default
memory layout, ``torch.inference_mode``), and the box at τ from the bicubic score map
(``scoremap_from_attention`` + ``boxes_from_scoremap``): decode + forward + boxes. Prints one JSON object.

Memory at scale (the model's cost is constant per actor, so a light one keeps a 20k run short)::

    .venv/bin/python bench/bench_label.py --images /tmp/birds-x4 --n 2000  --out /tmp/bl2k  --backbone tiny --baseline_n 0
    .venv/bin/python bench/bench_label.py --images /tmp/birds-x4 --n 20000 --out /tmp/bl20k --backbone tiny --baseline_n 0

where /tmp/birds-x4 holds four hard-linked copies of the 5,902 real bird photos (23,608 files).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import threading
import time
from typing import Any

import numpy as np


def _tree_memory_bytes(root_pid: int) -> tuple[int, int]:
    """(summed RSS, summed PSS) of ``root_pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    rss = pss = 0
    stack = [root_pid]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:
            continue
    return rss, pss


class PeakSampler(threading.Thread):
    def __init__(self, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak_rss, self.peak_pss = interval, 0, 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            rss, pss = _tree_memory_bytes(os.getpid())
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            time.sleep(self.interval)


def timed_labeling(cfg: Any) -> dict[str, float]:
    """``pipelines.label.run_labeling(cfg)`` timed, with the peak PSS of this process tree sampled.

    Returns the images, errors, wall time, images per second and peak PSS of the call (Ray must run).
    """
    from pipelines.label import run_labeling  # noqa: PLC0415

    sampler = PeakSampler()
    sampler.start()
    start = time.monotonic()
    try:
        summary = run_labeling(cfg)
    finally:
        sampler.stop_flag.set()
        sampler.join()
    wall = time.monotonic() - start
    return {
        "images": summary.images,
        "errors": summary.errors,
        "wall_s": round(wall, 1),
        "images_per_s": round(summary.images / wall, 3),
        "process_tree_peak_pss_mb": round(sampler.peak_pss / 2**20, 1),
    }


def add_pool_arguments(ap: argparse.ArgumentParser, num_actors: int = 0) -> None:
    """The local cluster and the labeling pool: ``--cpus``, ``--num_actors``, ``--actor_cpus``, ``--decode_cpus``."""
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument(
        "--num_actors",
        type=int,
        default=num_actors,
        help="labeling actors (0 = the product's auto-sized pool)",
    )
    ap.add_argument("--actor_cpus", type=float, default=0.75)
    ap.add_argument("--decode_cpus", type=float, default=0.25)


def paired_report(script: str, runs: dict[str, dict[str, float]], base: str, new: str) -> dict[str, Any]:
    """The JSON of a two-run benchmark: the command, both runs, and the ratios ``new`` / ``base``."""
    a, b = runs[base], runs[new]
    return {
        "command": f"python bench/{script} " + " ".join(sys.argv[1:]),
        base: a,
        new: b,
        f"ratio_wall_{new}_over_{base}": round(b["wall_s"] / a["wall_s"], 2),
        f"ratio_peak_pss_{new}_over_{base}": round(
            b["process_tree_peak_pss_mb"] / a["process_tree_peak_pss_mb"], 2
        ),
        "load_avg_after": os.getloadavg(),
    }


def plain_baseline(paths: list[str], threads: int, batch: int, method: str, backbone: str) -> float:
    import torch

    from coloc_core.boxes import boxes_from_scoremap, scoremap_from_attention
    from coloc_core.decode import decode_image
    from coloc_core.localizer import baseline_payload, localizer_from_payload, payload_input_size
    from coloc_core.model import normalize_images
    from pipelines import storage

    torch.set_num_threads(threads)
    payload = baseline_payload(method, backbone=backbone, weights="auto")
    loc, size = localizer_from_payload(payload).eval(), payload_input_size(payload)
    tau = float(payload["threshold"])
    start = time.monotonic()
    with torch.inference_mode():
        for i in range(0, len(paths), batch):
            imgs = [decode_image(storage.read_bytes(p), size)[0] for p in paths[i : i + batch]]
            x = normalize_images(torch.from_numpy(np.stack(imgs)), loc.mean, loc.std)
            for attention in loc(x).numpy():  # the box of every image, as the labeling stage makes it
                boxes_from_scoremap(scoremap_from_attention(attention), tau)
    return len(paths) / (time.monotonic() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", required=True)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--out", required=True)
    add_pool_arguments(ap, num_actors=2)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--rows_per_file", type=int, default=100)
    ap.add_argument("--baseline_n", type=int, default=200)
    ap.add_argument("--method", default="caam", help="training-free localizer: caam | full")
    ap.add_argument("--model", default="", help="label with this model file instead (no baseline loop)")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    args = ap.parse_args()

    import ray

    from pipelines import storage
    from pipelines.config import LabelJobConfig
    from pipelines.label import run_labeling

    shutil.rmtree(args.out, ignore_errors=True)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    cfg = LabelJobConfig(
        model=args.model,
        method="model" if args.model else args.method,
        backbone=args.backbone,
        images=args.images,
        out=args.out,
        limit=args.n,
        batch_size=args.batch_size,
        num_actors=args.num_actors,
        actor_cpus=args.actor_cpus,
        decode_cpus=args.decode_cpus,
        rows_per_file=args.rows_per_file,
    )
    marks: list[tuple[float, int]] = []
    sampler = PeakSampler()
    sampler.start()
    start = time.monotonic()
    summary = run_labeling(cfg, on_shard_written=lambda s: marks.append((time.monotonic(), s)))
    wall = time.monotonic() - start
    sampler.stop_flag.set()
    sampler.join()
    ray.shutdown()
    paths = [] if args.model else storage.list_images(args.images)[: args.baseline_n]
    result = {
        "images": summary.images,
        "errors": summary.errors,
        "wall_s": round(wall, 1),
        "images_per_s_whole_run": round(summary.images / wall, 2),
        "driver_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "process_tree_peak_pss_mb": round(sampler.peak_pss / 2**20, 1),
        "process_tree_peak_rss_mb": round(sampler.peak_rss / 2**20, 1),
        "shard_times_s": [round(t - start, 1) for t, _ in marks],
        "plain_pytorch_images_per_s": round(
            plain_baseline(paths, args.cpus, args.batch_size, args.method, args.backbone), 2
        )
        if paths
        else None,
        "load_avg_after": os.getloadavg(),
        "config": vars(args),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
