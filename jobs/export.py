"""Export a predictions table: ``python jobs/export.py --predictions=... --out=labels.json --category=bird``.

    python jobs/export.py --predictions s3://bucket/labels/birds --to coco \
        --out s3://bucket/birds.coco.json --category bird
    python jobs/export.py --predictions s3://bucket/labels/birds --to coco_results \
        --out s3://bucket/birds.results.json --top_fraction 0.5
    python jobs/export.py --predictions /data/labels/birds --to yolo --out /data/birds-yolo --category bird \
        --val_fraction 0.2
    python jobs/export.py --predictions /data/labels/birds --to voc --out /data/birds-voc --category bird \
        --top_k 1000
    python jobs/export.py --predictions /data/labels/birds --to label_studio --out /data/birds.ls.json \
        --category bird --images_url '/data/local-files/?d=birds/'

COCO writes one dataset JSON file, COCO results one JSON list of detections (same image ids as the
dataset file), YOLO an Ultralytics dataset folder (``labels/``, links under ``images/``, ``train.txt``
/ ``val.txt``, ``data.yaml``, ``classes.txt``), VOC a folder of ``.xml`` files, Label Studio one JSON
file of tasks with predictions; error rows are skipped, and ``--min_score`` / ``--top_k`` (or
``--top_fraction``, a share of the boxes) drop low-scored boxes in every format. A table labelled with
``--boxes=all`` exports every box of an image (one annotation, detection, YOLO line, VOC object or
Label Studio region each), with its own score; the filters then act on those boxes.
Needs no Ray. Exit code 0 on success, 1 on failure, 2 on a bad command line or bad input (a
folder without part files).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from jobs.entry import Job
from pipelines.config import ExportJobConfig, build_config, check_export_config, check_table_inputs

if TYPE_CHECKING:
    from pipelines.export import ExportSummary


def _parse(args: list[str]) -> ExportJobConfig:
    cfg = check_export_config(build_config(ExportJobConfig, args))
    check_table_inputs(cfg.predictions)
    return cfg


def _header(cfg: ExportJobConfig) -> tuple[str, dict[str, str]]:
    return "export", {"predictions": cfg.predictions, "out": f"{cfg.out} ({cfg.to})"}


def _run(cfg: ExportJobConfig) -> ExportSummary:
    from pipelines.export import run_export  # noqa: PLC0415 - imports pyarrow and torch

    return run_export(cfg)


JOB = Job("export", _parse, _run, "export failed", _header, report=lambda cfg, summary: summary.to_dict())
main = JOB.main


if __name__ == "__main__":
    sys.exit(main())
