"""Ingest benchmark: Ray Data decode + resize vs bare PIL decode of the same files, per core.

    python bench/bench_ingest.py --images ../shared/data/cub100-unboxed/images --limit 1000

Both sides read the same JPEG files from local disk. The baseline is the least work a decoder can do:
``PIL.Image.open(path).convert("RGB")`` in one process (no resize). The project's path is the full
ingest stage (``pipelines.ingest.images_dataset``: read bytes, EXIF transpose, mode handling, JPEG
draft, bilinear resize to 224, uint8 rows in Ray's object store), materialised on a local Ray
cluster. Images/s are divided by the CPUs each side used (1 for the baseline, the Ray cluster's CPUs
for ingest), and their ratio is printed.
"""

from __future__ import annotations

import argparse
import sys
import time

from PIL import Image

from pipelines import storage


def bare_pil(paths: list[str]) -> float:
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as im:
            im.convert("RGB").load()
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
    args = parser.parse_args(argv)
    paths = storage.list_images(args.images)[: args.limit]
    if not paths:
        parser.error(f"no images under {args.images}")
    pil = bare_pil(paths)
    ray_rate = ray_ingest(paths, args.cpus, args.decode_cpus)
    print(f"images: {len(paths)}")
    print(f"bare PIL decode (1 process):        {pil:8.1f} images/s = {pil:8.1f} images/s/core")
    print(
        f"Ray Data ingest ({args.cpus} CPUs, decode+resize): {ray_rate:8.1f} images/s = {ray_rate / args.cpus:8.1f} images/s/core"
    )
    print(f"ratio per core (ingest / bare PIL): {ray_rate / args.cpus / pil:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
