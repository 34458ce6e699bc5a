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

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from coloc_core.config import NON_NEGATIVE, Range
from jobs.entry import Job, Refused
from pipelines.config import build_config

if TYPE_CHECKING:
    from pipelines.render import RenderSummary


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


def _parse(args: list[str]) -> RenderJobConfig:
    cfg = build_config(RenderJobConfig, args)
    missing = [k for k in ("predictions", "out") if not getattr(cfg, k)]
    if missing:
        raise ValueError(f"required: {', '.join('--' + k for k in missing)}")
    return cfg


def _header(cfg: RenderJobConfig) -> tuple[str, dict[str, str]]:
    what = (
        f"the images listed in {cfg.paths}"
        if cfg.paths
        else (f"{cfg.sample} at random" if cfg.sample else "all")
    )
    return "render", {
        "predictions": cfg.predictions,
        "images": what,
        "ground truth": f"{cfg.gt} ({cfg.format}, split {cfg.split})" if cfg.gt else "none",
        "out": f"{cfg.out} (one PNG per image)",
    }


def _run(cfg: RenderJobConfig) -> RenderSummary:
    from pipelines import storage  # noqa: PLC0415
    from pipelines.predictions import part_files  # noqa: PLC0415 - imports pyarrow
    from pipelines.render import run_render  # noqa: PLC0415 - imports torch

    # Checked here, not in _parse: listing storage can fail for reasons that are not the command
    # line's (an unreachable server: exit 1), while a folder without part files is a bad argument.
    try:
        found = part_files(cfg.predictions)
    except FileNotFoundError:
        found = []
    if not found:
        raise Refused(f"bad arguments: --predictions={cfg.predictions}: no part-*.parquet files there")
    if cfg.paths and not storage.exists(cfg.paths):
        raise Refused(f"bad arguments: --paths={cfg.paths}: no such file")
    return run_render(
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


def _report(cfg: RenderJobConfig, summary: RenderSummary) -> dict[str, object]:
    report = summary.to_dict()
    report["files"] = len(report["files"] or [])
    return report


JOB = Job("render", _parse, _run, "render failed", _header, report=_report)
main = JOB.main


if __name__ == "__main__":
    sys.exit(main())
