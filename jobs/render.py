"""Draw a predictions table for review: ``python jobs/render.py --predictions=... --out=DIR``.

    python jobs/render.py --predictions s3://bucket/labels/birds --out /tmp/birds-review --sample 50
    python jobs/render.py --predictions /data/labels/birds --out /tmp/review --paths doubtful.txt \
        --gt /data/birds --format boxes_csv --split all

Writes one PNG per selected image under ``--out``: the image with its heatmap overlay (JET colours:
blue = low, red = high) and its predicted box(es) in green with their scores (every box of a table
labelled with ``--boxes=all``); with ``--gt`` the ground-truth boxes in red. The PNG's name is the
image's path relative to the labelled images root, with ``.png``. ``--sample N`` picks N images at
random (``--seed``; 0 = all); ``--paths FILE`` draws the images listed in a text file instead (one path
per line). Error rows are skipped and counted. Needs no Ray. Exit code 0 on success, 1 on failure, 2 on
a bad command line (e.g. a predictions folder without part files).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from typing import ClassVar

from coloc_core.config import NON_NEGATIVE, Range
from pipelines import console
from pipelines.config import build_config, version_text

log = logging.getLogger("jobs.render")


@dataclass
class RenderJobConfig:
    """Render job.

    Attributes:
        predictions: predictions folder (local or ``s3://``).
        out: output folder of the PNG files (local or ``s3://``).
        sample: draw this many images picked at random (0 = every image); ignored with ``paths``.
        seed: seed of the random pick.
        paths: a text file (local or ``s3://``) of the image paths to draw, one per line.
        gt: data set root with boxes: draw its GT boxes too ("" = none).
        format: GT reader: cub | cars | aircraft | dogs | boxes_csv.
        split: GT split.
        max_side: scale larger images down to this longer side in pixels (0 = original size).
    """

    predictions: str = ""
    out: str = ""
    sample: int = 32
    seed: int = 0
    paths: str = ""
    gt: str = ""
    format: str = "boxes_csv"
    split: str = "test"
    max_side: int = 1024

    RANGES: ClassVar[dict[str, Range]] = {"sample": NON_NEGATIVE, "max_side": NON_NEGATIVE}


def main(argv: list[str] | None = None) -> int:
    args = console.start(sys.argv[1:] if argv is None else argv)  # --verbose, then the console
    if args is None:
        return 2
    try:
        cfg = build_config(RenderJobConfig, args)
        missing = [k for k in ("predictions", "out") if not getattr(cfg, k)]
        if missing:
            raise ValueError(f"required: {', '.join('--' + k for k in missing)}")
        from pipelines import storage  # noqa: PLC0415
        from pipelines.predictions import part_files  # noqa: PLC0415 - imports pyarrow

        if not part_files(cfg.predictions):
            raise ValueError(f"--predictions={cfg.predictions}: no part-*.parquet files there")
        if cfg.paths and not storage.exists(cfg.paths):
            raise ValueError(f"--paths={cfg.paths}: no such file")
    except (KeyError, ValueError, FileNotFoundError) as err:
        log.error("bad arguments: %s", err)
        return 2
    except OSError:  # storage unreachable: not the command line's fault
        log.exception("cannot read %s", cfg.predictions)
        return 1
    what = (
        f"the images listed in {cfg.paths}"
        if cfg.paths
        else (f"{cfg.sample} at random" if cfg.sample else "all")
    )
    console.header(
        f"{version_text()} · render",
        {
            "predictions": cfg.predictions,
            "images": what,
            "ground truth": f"{cfg.gt} ({cfg.format}, split {cfg.split})" if cfg.gt else "none",
            "out": f"{cfg.out} (one PNG per image)",
        },
    )
    from pipelines.render import run_render  # noqa: PLC0415 - imports torch

    try:
        summary = run_render(
            cfg.predictions,
            cfg.out,
            sample=cfg.sample,
            seed=cfg.seed,
            paths_file=cfg.paths,
            gt_root=cfg.gt,
            gt_format=cfg.format,
            split=cfg.split,
            max_side=cfg.max_side,
        )
    except Exception:
        log.exception("render failed")
        return 1
    report = summary.to_dict()
    report["files"] = len(report["files"] or [])
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
