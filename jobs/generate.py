"""Write a synthetic CUB-200-2011-layout dataset with known boxes: ``coloc generate --out DIR``.

python jobs/generate.py --out=data/synthetic --num_images=200 --seed=0
"""

from __future__ import annotations

import sys

from coloc_core.synthetic import generate_cub_layout
from jobs.entry import Job
from pipelines.config import GenerateConfig, build_config


def _run(cfg: GenerateConfig) -> int:
    return len(generate_cub_layout(cfg.out, num_images=cfg.num_images, seed=cfg.seed))


def _report(cfg: GenerateConfig, images: int) -> None:
    print(f"wrote {images} images with boxes to {cfg.out} (CUB-200-2011 layout)")


JOB = Job(
    "generate", lambda args: build_config(GenerateConfig, args), _run, "generation failed", report=_report
)
main = JOB.main


if __name__ == "__main__":
    sys.exit(main())
