"""Write a synthetic CUB-200-2011-layout dataset with known boxes: ``coloc generate --out DIR``.

python jobs/generate.py --out=data/synthetic --num_images=200 --seed=0
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import ClassVar

from coloc_core.config import AT_LEAST_ONE, NON_NEGATIVE, Range
from coloc_core.synthetic import generate_cub_layout
from pipelines import console
from pipelines.config import build_config

log = logging.getLogger("jobs.generate")


@dataclass
class GenerateConfig:
    """Options: ``out`` folder, ``num_images``, ``seed``."""

    out: str = "data/synthetic"
    num_images: int = 200
    seed: int = 0

    RANGES: ClassVar[dict[str, Range]] = {"num_images": AT_LEAST_ONE, "seed": NON_NEGATIVE}


def main(argv: list[str] | None = None) -> int:
    args = console.start(sys.argv[1:] if argv is None else argv)  # --verbose, then the console
    if args is None:
        return 2
    try:
        cfg = build_config(GenerateConfig, args)
    except (KeyError, ValueError) as err:
        log.error("bad arguments: %s", err)
        return 2
    records = generate_cub_layout(cfg.out, num_images=cfg.num_images, seed=cfg.seed)
    print(f"wrote {len(records)} images with boxes to {cfg.out} (CUB-200-2011 layout)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
