"""Export a predictions table: ``python jobs/export.py --predictions=... --out=labels.json --category=bird``.

    python jobs/export.py --predictions s3://bucket/labels/birds --to coco \
        --out s3://bucket/birds.coco.json --category bird
    python jobs/export.py --predictions s3://bucket/labels/birds --to coco_results \
        --out s3://bucket/birds.results.json --min_score 0.5
    python jobs/export.py --predictions /data/labels/birds --to yolo --out /data/birds-yolo --category bird \
        --val_fraction 0.2
    python jobs/export.py --predictions /data/labels/birds --to voc --out /data/birds-voc --category bird \
        --top_k 1000
    python jobs/export.py --predictions /data/labels/birds --to label_studio --out /data/birds.ls.json \
        --category bird --images_url '/data/local-files/?d=birds/'

COCO writes one dataset JSON file, COCO results one JSON list of detections (same image ids as the
dataset file), YOLO an Ultralytics dataset folder (``labels/``, links under ``images/``, ``train.txt``
/ ``val.txt``, ``data.yaml``, ``classes.txt``), VOC a folder of ``.xml`` files, Label Studio one JSON
file of tasks with predictions; error rows are skipped, and ``--min_score`` / ``--top_k`` drop
low-scored boxes in every format. A table labelled with ``--boxes=all`` exports every box of an image
(one annotation, detection, YOLO line, VOC object or Label Studio region each), with its own score; the
filters then act on those boxes.
Needs no Ray. Exit code 0 on success, 1 on failure, 2 on a bad command line.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobs.entry import Job
from pipelines.config import build_config

if TYPE_CHECKING:
    from pipelines.export import ExportSummary

FORMATS = (
    "coco",
    "coco_results",
    "yolo",
    "voc",
    "label_studio",
)  # pipelines.export.FORMATS, without importing it


@dataclass
class ExportJobConfig:
    """Export job.

    Attributes:
        predictions: predictions folder (local or ``s3://``).
        out: the JSON file (``coco``, ``coco_results``, ``label_studio``) or the YOLO/VOC folder (local
            or ``s3://``).
        category: the collection's name (the one class); not needed by ``coco_results``.
        to: ``coco`` (a COCO dataset: images, annotations, categories), ``coco_results`` (a COCO
            results list of detections with scores, same image ids as ``coco``, for
            ``COCO(dataset).loadRes(results)`` and COCOeval), ``yolo`` (an Ultralytics dataset:
            ``labels/<image path>.txt``, ``images/`` links to local images, ``train.txt``/``val.txt``,
            ``data.yaml``, ``classes.txt``), ``voc`` (one Pascal VOC ``.xml`` per image) or
            ``label_studio`` (Label Studio tasks with pre-annotations: one ``rectanglelabels``
            region per box, in percent of the image, with scores and the model id).
        images_root: root that exported file names are relative to ("" = the table's manifest).
        min_score: keep only the boxes whose score is at least this (null = no score filter); in a
            one-box table a box is a row.
        top_k: then keep only the ``top_k`` highest-scored boxes (ties: table order); 0 = all.
            An image left without a box is left out of every format like an error row; the counts
            are logged.
        val_fraction: ``yolo`` only: about this fraction of the images goes to ``val.txt`` (split
            by a hash of the image path, the same every run); 0 = everything in ``train.txt``.
        images_url: ``label_studio`` only: a prefix that replaces the images root in each task's
            ``data.image`` (e.g. ``/data/local-files/?d=photos/`` or ``s3://bucket/photos``);
            "" = the image paths as labelled.
    """

    predictions: str = ""
    out: str = ""
    category: str = ""
    to: str = "coco"
    images_root: str = ""
    min_score: float | None = None
    top_k: int = 0
    val_fraction: float = 0.0
    images_url: str = ""


def _parse(args: list[str]) -> ExportJobConfig:
    cfg = build_config(ExportJobConfig, args)
    required = ("predictions", "out") if cfg.to == "coco_results" else ("predictions", "out", "category")
    missing = [k for k in required if not getattr(cfg, k)]
    if missing:
        raise ValueError(f"required: {', '.join('--' + k for k in missing)}")
    if cfg.to not in FORMATS:
        raise ValueError(f"--to={cfg.to!r} is not one of {', '.join(FORMATS)}")
    if cfg.top_k < 0:
        raise ValueError(f"--top_k={cfg.top_k} must be >= 0 (0 = all)")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ValueError(f"--val_fraction={cfg.val_fraction} must be in [0, 1)")
    if cfg.val_fraction and cfg.to != "yolo":
        raise ValueError(f"--val_fraction applies to --to=yolo, not --to={cfg.to}")
    if cfg.images_url and cfg.to != "label_studio":
        raise ValueError(f"--images_url applies to --to=label_studio, not --to={cfg.to}")
    return cfg


def _header(cfg: ExportJobConfig) -> tuple[str, dict[str, str]]:
    return "export", {"predictions": cfg.predictions, "out": f"{cfg.out} ({cfg.to})"}


def _run(cfg: ExportJobConfig) -> ExportSummary:
    from pipelines.export import run_export  # noqa: PLC0415 - imports pyarrow and torch

    return run_export(
        cfg.predictions,
        cfg.out,
        cfg.category,
        cfg.to,
        cfg.images_root or None,
        min_score=cfg.min_score,
        top_k=cfg.top_k,
        val_fraction=cfg.val_fraction,
        images_url=cfg.images_url,
    )


JOB = Job("export", _parse, _run, "export failed", _header, report=lambda cfg, summary: summary.to_dict())
main = JOB.main


if __name__ == "__main__":
    sys.exit(main())
