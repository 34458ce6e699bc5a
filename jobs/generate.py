"""Write a synthetic CUB-200-2011-layout dataset with known boxes: ``coloc generate --out DIR``.

python jobs/generate.py --out=data/synthetic --num_images=200 --seed=0
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar

from coloc_core.config import AT_LEAST_ONE, NON_NEGATIVE, Range
from coloc_core.synthetic import generate_cub_layout
from jobs.entry import Job
from pipelines.config import build_config


@dataclass
class GenerateConfig:
    """Options: ``out`` folder, ``num_images``, ``seed``."""

    out: str = "data/synthetic"
    num_images: int = 200
    seed: int = 0

    RANGES: ClassVar[dict[str, Range]] = {"num_images": AT_LEAST_ONE, "seed": NON_NEGATIVE}


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
