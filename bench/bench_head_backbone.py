"""What the self-trained head's default backbone costs: EfficientNet-Lite2 (seeded) vs Lite0, one run.

    .venv/bin/python bench/bench_head_backbone.py --images ../shared/data/cub100-unboxed/images --n 200 \
        --out /tmp/bench-head

Both runs are the product's ``coloc label --method selftrain`` path (``pipelines.label.run_labeling``:
the Ray Data fit passes over the collection, the typical-box pass, then labeling), on the same first
``n`` images (sorted) of the folder, on one local Ray cluster of ``--cpus`` CPUs, in the order given by
``--order``. The baseline is ``backbone=efficientnet_lite0`` (the head before 2026-12-01); the
measured run is ``backbone=auto`` (EfficientNet-Lite2, its first round seeded by Lite0's DDT, so its
fit also runs Lite0 in two passes). Reported per run: wall time of the whole call (fit and labeling), images per second, the peak
summed PSS of the driver's process tree (``bench_label.PeakSampler``); and the ratios auto / lite0.
The first run also starts the cluster's workers: ``--order auto,lite0`` shows the order's share.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_label import add_pool_arguments, paired_report, timed_labeling  # noqa: E402


def run_one(images: str, out: str, n: int, backbone: str, args: argparse.Namespace) -> dict[str, float]:
    from pipelines.config import LabelJobConfig  # noqa: PLC0415

    shutil.rmtree(out, ignore_errors=True)
    cfg = LabelJobConfig(
        method="selftrain",
        backbone=backbone,
        images=images,
        out=out,
        limit=n,
        num_actors=args.num_actors,
        actor_cpus=args.actor_cpus,
        decode_cpus=args.decode_cpus,
    )
    return timed_labeling(cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--out", required=True, help="scratch folder (two predictions folders under it)")
    add_pool_arguments(ap)
    ap.add_argument("--order", default="lite0,auto", help="which run goes first")
    args = ap.parse_args()

    import ray  # noqa: PLC0415

    names = {"lite0": "efficientnet_lite0", "auto": "auto"}
    order = [s.strip() for s in args.order.split(",")]
    if sorted(order) != ["auto", "lite0"]:
        ap.error("--order must name lite0 and auto once each")
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    runs = {key: run_one(args.images, os.path.join(args.out, key), args.n, names[key], args) for key in order}
    ray.shutdown()
    result = paired_report("bench_head_backbone.py", runs, "lite0", "auto")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
