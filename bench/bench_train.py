"""Training benchmark: images/s of the Ray Train CAML job vs a plain single-process PyTorch loop.

    python bench/bench_train.py --images 64 --epochs 3 --batch 16 --backbone efficientnet_lite0

Same model, config, batch and images on both sides. The plain loop has every image decoded, resized
to 256 and cropped to 224 in memory before it starts (the best case for it), then runs
``coloc_core.step.train_step`` batch after batch. The Ray side is ``pipelines.train.run_training``
with one worker of ``--threads`` CPUs on a local 2-CPU Ray cluster, reading the same generated CUB-layout folder through Ray
Data (decode and resize in Ray Data tasks; the random crop in the worker's batch collate). The Ray figure is the steady-state throughput the job
reports for its last epoch (``images_per_s``: training images / wall time of the epoch, data waiting
included, evaluation excluded); the plain figure is the same over the plain loop's last epoch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from coloc_core.config import apply_overrides
from coloc_core.datasets import read_dataset
from coloc_core.model import build_model, normalize_images
from coloc_core.step import make_optimizer, train_step
from coloc_core.synthetic import generate_cub_layout
from pipelines.config import DatasetConfig, RunConfig, TrainJobConfig


def job_config(root: str, out: str, args: argparse.Namespace) -> TrainJobConfig:
    job = TrainJobConfig(
        dataset=DatasetConfig(root=root, format="cub", train_split="train", test_split=""),
        run=RunConfig(
            name="bench",
            storage_path=out,
            num_workers=1,
            cpus_per_worker=float(args.threads),
            decode_cpus=0.5,
            eval_every=0,
        ),
    )
    return apply_overrides(
        job,
        [
            f"model.backbone={args.backbone}",
            f"model.weights={'none' if args.backbone == 'tiny' else 'auto'}",
            f"optim.epochs={args.epochs}",
            f"optim.batch_size={args.batch}",
            "seed=0",
        ],
    )


def plain_loop(root: str, cfg: TrainJobConfig, epochs: int, threads: int) -> float:
    torch.set_num_threads(threads)  # what Ray gives a worker of `threads` CPUs (OMP_NUM_THREADS)
    records = read_dataset("cub", root, "train")
    crops = []
    rng = np.random.default_rng(0)
    for rec in records:
        with Image.open(rec.path) as im:
            arr = np.asarray(im.convert("RGB").resize((256, 256), Image.Resampling.BILINEAR))
        arr = np.pad(arr, ((4, 4), (4, 4), (0, 0)), mode="reflect")
        y, x = rng.integers(0, arr.shape[0] - 224 + 1, size=2)
        crops.append(arr[y : y + 224, x : x + 224])
    images = torch.from_numpy(np.stack(crops))
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = make_optimizer(model, cfg.optim)
    gen = torch.Generator().manual_seed(0)
    rate = 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(images), generator=gen)
        seen = 0
        for i in range(0, len(images), cfg.optim.batch_size):
            batch = images[order[i : i + cfg.optim.batch_size]]
            train_step(model, normalize_images(batch, model.mean, model.std), cfg, optimizer, generator=gen)
            seen += len(batch)
        rate = seen / (time.perf_counter() - start)
    return rate


def ray_job(cfg: TrainJobConfig) -> float:
    import ray

    from pipelines.train import run_training

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = run_training(cfg)
    finally:
        ray.shutdown()
    return float(result.history[-1]["images_per_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--images", type=int, default=64, help="training images (x2 generated: half are test)"
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the plain loop = CPUs of the Ray worker (the Ray cluster has 2 CPUs; "
        "decode tasks take 0.5)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = str(Path(tmp, "data"))
        generate_cub_layout(root, num_images=2 * args.images, seed=0)
        cfg = job_config(root, str(Path(tmp, "runs")), args)
        plain = plain_loop(root, cfg, args.epochs, args.threads)
        ray_rate = ray_job(cfg)
    print(
        f"backbone {args.backbone}, {args.images} images, batch {args.batch}, {args.epochs} epochs, last epoch:"
    )
    print(f"plain PyTorch loop (pre-decoded):  {plain:7.2f} images/s")
    print(f"plain loop threads / Ray worker CPUs: {args.threads}")
    print(f"Ray Train job (1 worker):          {ray_rate:7.2f} images/s")
    print(f"ratio Ray / plain: {ray_rate / plain:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
