"""CAML's data preparation when the test split is the training split: one decode per image vs two.

    python bench/bench_train_prepare.py --data ../shared/data/raccoon --format boxes_csv --rounds 2

On a local Ray cluster of ``--cpus`` CPUs started by this script (its own temp dir; shut down at the
end), the wall time from the record list to the materialized training and test datasets:

- **before** (the baseline, the code before issue 12 item 10): the training images decoded at
  ``augment.resize`` (256) and split from their error rows, then the test images (the same files)
  decoded again at ``augment.crop`` (224) and split: two decodes per image;
- **after**: ``pipelines.train.prepare_data``: one decode per image gives both sizes.

Rounds alternate (before, after, before, after, ...) so a change of machine load hits both sides; the
ratio is the median before over the median after. Decode tasks use ``run.decode_cpus`` (0.5). First,
without Ray, the CPU time (``time.process_time``, little affected by other load) of the decode work
alone: ``decode_image`` at 256 and at 224 per image vs ``decode_image_sizes`` at both from one decode.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time

from coloc_core.config import apply_overrides
from pipelines.config import DatasetConfig, RunConfig, TrainJobConfig


def before(cfg: TrainJobConfig) -> tuple[int, int]:
    """The preparation of the code before the fix: two decodes per image. (train rows, test rows)."""
    from pipelines import ingest
    from pipelines.train import read_split_records

    records = read_split_records(cfg, cfg.dataset.train_split)
    train, _ = ingest.split_errors(
        ingest.images_dataset(records, size=cfg.augment.resize, decode_cpus=cfg.run.decode_cpus),
        num_cpus=cfg.run.decode_cpus,
    )
    test_records = [r for r in read_split_records(cfg, cfg.dataset.test_split) if r.boxes]
    test, _ = ingest.split_errors(
        ingest.images_dataset(test_records, size=cfg.augment.crop, decode_cpus=cfg.run.decode_cpus),
        num_cpus=cfg.run.decode_cpus,
    )
    return train.count(), test.count()


def after(cfg: TrainJobConfig) -> tuple[int, int]:
    """``pipelines.train.prepare_data``: one decode per image. (train rows, test rows)."""
    from pipelines.train import prepare_data

    data = prepare_data(cfg)
    assert data.decoded == data.num_train + data.num_errors, data  # one decode per image
    return data.train.count(), 0 if data.test is None else data.test.count()


def decode_cpu(cfg: TrainJobConfig) -> tuple[float, float]:
    """CPU seconds (this process, no Ray) to decode every image twice (256, then 224) vs once for both."""
    from coloc_core.decode import decode_image, decode_image_sizes
    from pipelines import storage
    from pipelines.train import read_split_records

    blobs = [storage.read_bytes(r.path) for r in read_split_records(cfg, cfg.dataset.train_split)]
    resize, crop = cfg.augment.resize, cfg.augment.crop
    started = time.process_time()
    for data in blobs:
        decode_image(data, resize)
        decode_image(data, crop)
    twice = time.process_time() - started
    started = time.process_time()
    for data in blobs:
        decode_image_sizes(data, (resize, crop))
    once = time.process_time() - started
    return twice, once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--format", default="boxes_csv")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import ray

    cfg = apply_overrides(
        TrainJobConfig(
            method="caml",
            dataset=DatasetConfig(root=args.data, format=args.format, train_split="all", test_split="all"),
            run=RunConfig(decode_cpus=0.5),
        ),
        {},
    )
    twice, once = decode_cpu(cfg)
    print(
        f"decode CPU, one process: two decodes per image {twice:.2f} s, one decode for both sizes "
        f"{once:.2f} s, ratio {twice / once:.2f}",
        flush=True,
    )
    if args.rounds == 0:
        return
    temp_dir = tempfile.mkdtemp(prefix="coloc-bench-", dir="/tmp")
    ray.init(num_cpus=args.cpus, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        after(cfg)  # warm-up: worker processes started, modules imported (not timed)
        times: dict[str, list[float]] = {"before": [], "after": []}
        rows = {}
        for _ in range(args.rounds):
            for name, fn in (("before", before), ("after", after)):
                started = time.perf_counter()
                rows[name] = fn(cfg)
                times[name].append(time.perf_counter() - started)
                print(
                    f"{name}: {times[name][-1]:.1f} s ({rows[name][0]} train rows, {rows[name][1]} test rows)",
                    flush=True,
                )
    finally:
        ray.shutdown()
    assert rows["before"] == rows["after"], rows
    b, a = statistics.median(times["before"]), statistics.median(times["after"])
    print(f"{args.data} ({args.format}), {rows['after'][0]} images, {args.cpus} CPUs, {args.rounds} rounds")
    print(
        f"before (two decodes per image): median {b:.1f} s  {' '.join(f'{t:.1f}' for t in times['before'])}"
    )
    print(f"after  (one decode per image):  median {a:.1f} s  {' '.join(f'{t:.1f}' for t in times['after'])}")
    print(f"ratio before / after: {b / a:.2f}")


if __name__ == "__main__":
    main()
