"""Ingest benchmark: Ray Data decode + resize vs a plain PIL decode + the same resize, per core.

    python bench/bench_ingest.py --images ../shared/data/cub100-unboxed/images --limit 1000
    python bench/bench_ingest.py --images ../shared/data/raccoon/images --limit 200 --repeat 5

All sides read the same image files from local disk, in one run:

- **baseline** (the fair one): what a user's loop does to get the same arrays, in one process:
  ``Image.open(path).convert("RGB").resize((224, 224), BILINEAR)`` then ``np.asarray``;
- **bare decode** (for reference, the least work a decoder can do): ``Image.open(path).convert("RGB")``,
  no resize;
- **coloc decode, 1 process**: ``coloc_core.decode.decode_image`` (EXIF transpose, mode handling, the
  pixel limit, the truncated-file check, JPEG draft: decode at 1/2, 1/4 or 1/8 scale when that still
  covers 224) in a plain loop: the decode code's own cost, without Ray;
- **Ray Data ingest**: the full stage (``pipelines.ingest.images_dataset``: read tasks, the decode above,
  uint8 rows in Ray's object store), materialised on a local Ray cluster of ``--cpus`` CPUs.

Images/s are divided by the CPUs each side used (1 for the loops, the Ray cluster's CPUs for ingest);
ratios are against the fair baseline. ``--repeat`` lists the files that many times (small sets).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from PIL import Image

from pipelines import storage


def bare_pil(paths: list[str]) -> float:
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as im:
            im.convert("RGB").load()
    return len(paths) / (time.perf_counter() - start)


def pil_resize(paths: list[str], size: int = 224) -> float:
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as im:
            np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    return len(paths) / (time.perf_counter() - start)


def coloc_decode(paths: list[str], size: int = 224) -> float:
    from coloc_core.decode import decode_image

    start = time.perf_counter()
    for path in paths:
        with open(path, "rb") as fh:
            decode_image(fh.read(), size)
    return len(paths) / (time.perf_counter() - start)


def ray_ingest(paths: list[str], cpus: int, decode_cpus: float) -> float:
    import ray

    from coloc_core.datasets import ImageRecord
    from pipelines.ingest import images_dataset

    records = [ImageRecord(path=p, split="all") for p in paths]
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        images_dataset(records[:64], size=224, decode_cpus=decode_cpus).materialize()  # warm the workers
        start = time.perf_counter()
        ds = images_dataset(records, size=224, decode_cpus=decode_cpus).materialize()
        elapsed = time.perf_counter() - start
        assert ds.count() == len(paths)
    finally:
        ray.shutdown()
    return len(paths) / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", required=True, help="folder of images (local)")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--decode-cpus", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=1, help="list every file this many times")
    args = parser.parse_args(argv)
    paths = storage.list_images(args.images)[: args.limit] * max(1, args.repeat)
    if not paths:
        parser.error(f"no images under {args.images}")
    bare_pil(paths[:50])  # warm the page cache and PIL's plugins
    baseline = pil_resize(paths)
    bare = bare_pil(paths)
    ours = coloc_decode(paths)
    ray_rate = ray_ingest(paths, args.cpus, args.decode_cpus) / args.cpus
    print(f"images: {len(paths)}")
    rows = (
        ("baseline: PIL decode + resize to 224 (1 process)", baseline),
        ("bare PIL decode, no resize (1 process)", bare),
        ("coloc_core.decode.decode_image (1 process)", ours),
        (f"Ray Data ingest ({args.cpus} CPUs, decode_cpus {args.decode_cpus})", ray_rate),
    )
    for name, rate in rows:
        print(f"{name:60s} {rate:8.1f} images/s/core  ratio {rate / baseline:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
