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
a bad command line or bad input (e.g. a predictions folder without part files).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from jobs.entry import Job, Refused
from pipelines.config import RenderJobConfig, build_config, check_render_config, check_table_inputs

if TYPE_CHECKING:
    from pipelines.render import RenderSummary


def _parse(args: list[str]) -> RenderJobConfig:
    cfg = check_render_config(build_config(RenderJobConfig, args))
    check_table_inputs(cfg.predictions, gt=cfg.gt)
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
    from pipelines.render import run_render  # noqa: PLC0415 - imports torch

    # A local --predictions folder is checked in _parse; run_render says when a remote one has no
    # part files (an input error: exit 2).
    if cfg.paths and not storage.exists(cfg.paths):
        raise Refused(f"bad arguments: --paths={cfg.paths}: no such file")
    return run_render(cfg)


def _report(cfg: RenderJobConfig, summary: RenderSummary) -> dict[str, object]:
    report = summary.to_dict()
    report["files"] = len(report["files"] or [])
    return report


JOB = Job("render", _parse, _run, "render failed", _header, report=_report)
main = JOB.main


if __name__ == "__main__":
    sys.exit(main())
