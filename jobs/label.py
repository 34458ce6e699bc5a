"""Pseudo-label a collection: ``ray job submit -- python jobs/label.py --model=... --images=... --out=...``.

    ray job submit --working-dir . -- python jobs/label.py \
        --model s3://bucket/runs/cub-caml/model.pt --images s3://bucket/photos --out s3://bucket/labels/photos

    # no model: the head is self-trained on the images first (--method=selftrain, the default);
    # training-free baselines: --method=ddt | rps | caam | full (--backbone=auto: efficientnet_lite0)
    python jobs/label.py --images=/data/birds --out=/data/labels/birds
    python jobs/label.py --method=ddt --images=/data/birds --out=/data/labels/birds-ddt
    # every box above τ (several objects per image) besides the single box, in the `boxes` column
    python jobs/label.py --boxes=all --images=/data/herds --out=/data/labels/herds

Every key of ``pipelines.config.LabelJobConfig`` can be set with ``--key=value`` (``--help`` lists them,
``--config file.yaml`` applies a file first). Starting the same command again resumes: only images
without a written part file are labelled (see ``pipelines.label``). Exit code 0 on success, 1 when
labeling fails, 2 on a bad command line or a local ``--images`` / ``--model`` path that does not exist
(checked before Ray or torch is imported; ``s3://`` inputs are looked up by the job), or bad input
(a folder without images, a dataset without the files of its ``--format``, a model file it cannot
label with).
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from jobs.entry import Job
from pipelines.config import (
    LabelJobConfig,
    build_config,
    check_label_config,
    check_label_paths,
    crop_bottom_note,
    dump,
)

if TYPE_CHECKING:
    from pipelines.label import LabelSummary

log = logging.getLogger("jobs.label")


def _parse(args: list[str]) -> LabelJobConfig:
    cfg = check_label_config(build_config(LabelJobConfig, args))
    check_label_paths(cfg)  # local --images / --model must exist: exit 2 before Ray starts
    log.info("config:\n%s", dump(cfg))
    return cfg


def _header(cfg: LabelJobConfig) -> tuple[str, dict[str, str]]:
    return "label: a box, a score and a heatmap for every image", _fields(cfg)


def _run(cfg: LabelJobConfig) -> LabelSummary:
    from pipelines.label import run_labeling  # noqa: PLC0415 - imports torch

    # Inputs that are not what the stage expects (a model file it cannot read, a labels folder of
    # other options) raise coloc_core.errors.InputError: one line, exit 2. Any other error, a
    # ValueError included, is a failure of the run, reported with its traceback (exit 1).
    return run_labeling(cfg)


JOB = Job(
    "label",
    _parse,
    _run,
    "labeling failed",
    _header,
    lambda cfg, r: r.to_dict(),
    needs_ray=True,
    preload=("pipelines.label",),
)
main = JOB.main


def _fields(cfg: LabelJobConfig) -> dict[str, str]:
    """The header's lines: what is labelled, with what, into where."""
    where = cfg.format if cfg.format == "folder" else f"{cfg.format} layout, split {cfg.split}"
    if cfg.method == "model":
        labeler = f"model file {cfg.model}"
    elif cfg.method == "selftrain":
        labeler = f"self-trained head, fitted on these images first ({cfg.backbone})"
    else:
        labeler = f"training-free {cfg.method.upper()} ({cfg.backbone})"
    return {
        "images": f"{cfg.images} ({where}{f', first {cfg.limit}' if cfg.limit else ''}"
        f"{crop_bottom_note(cfg.crop_bottom)})",
        "labeler": labeler + (f", τ={cfg.threshold:g}" if cfg.threshold >= 0 else ""),
        "boxes": "every region above τ (--boxes=all)" if cfg.boxes == "all" else "",
        "out": f"{cfg.out} (Parquet, one row per image; a rerun resumes)",
    }


if __name__ == "__main__":
    sys.exit(main())
