"""Evaluate a predictions table: ``python jobs/evaluate.py --predictions=... --gt=... --format=cub``.

    ray job submit --working-dir . -- python jobs/evaluate.py \
        --predictions s3://bucket/labels/cub-test --gt s3://bucket/CUB_200_2011 --format cub --split test

Writes ``metrics.json``, ``metrics.md`` and ``sheet.png`` to ``--out`` (default
``<predictions>/_eval``); without ``--gt`` only score statistics and a sheet ranked by score. With
``--gt`` the metrics include box recall and precision at IoU 0.5 (``box_recall@0.5``,
``box_precision@0.5``, ``boxes_per_image``), of every box for a table labelled with ``--boxes=all``
(beside ``single_box_*``, its single box), for images with several objects. Exit code
0 on success, 1 on failure, 2 on a bad command line.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from coloc_core.config import CAM_CURVE_INTERVAL, IOU_THRESHOLDS, NON_NEGATIVE, UNIT_OPEN, Range
from jobs.entry import Job
from pipelines.config import build_config

if TYPE_CHECKING:
    from pipelines.evaluate import EvaluationResult


@dataclass
class EvaluateJobConfig:
    """Evaluation job.

    Attributes:
        predictions: predictions folder (local or ``s3://``).
        gt: data set root with boxes ("" = none).
        format: GT reader: cub | cars | aircraft | dogs | boxes_csv.
        split: GT split.
        out: output folder ("" = ``<predictions>/_eval``).
        threshold: τ for CorLoc; negative = the table's own.
        iou_thresholds: δ values.
        cam_curve_interval: τ grid spacing of MaxBoxAcc.
        sheet_images: images in each sheet group, the best and the worst (0 = no sheet).
        sheet_columns: tiles per sheet line; a longer group wraps (0 = ``sheet_images``: one line each).
    """

    predictions: str = ""
    gt: str = ""
    format: str = "boxes_csv"
    split: str = "test"
    out: str = ""
    threshold: float = -1.0
    iou_thresholds: tuple[float, ...] = IOU_THRESHOLDS
    cam_curve_interval: float = CAM_CURVE_INTERVAL
    sheet_images: int = 8
    sheet_columns: int = 0

    RANGES: ClassVar[dict[str, Range]] = {
        "threshold": Range(high=1, open_high=True),  # negative: the table's own τ
        "iou_thresholds": Range(0, 1, open_low=True),
        "cam_curve_interval": UNIT_OPEN,
        "sheet_images": NON_NEGATIVE,
        "sheet_columns": NON_NEGATIVE,
    }


def _parse(args: list[str]) -> EvaluateJobConfig:
    cfg = build_config(EvaluateJobConfig, args)
    if not cfg.predictions:
        raise ValueError("--predictions is required")
    return cfg


def _header(cfg: EvaluateJobConfig) -> tuple[str, dict[str, str]]:
    gt = f"{cfg.gt} ({cfg.format}, split {cfg.split})" if cfg.gt else "none (score statistics only)"
    out = cfg.out or cfg.predictions.rstrip("/") + "/_eval"
    return "evaluate", {
        "predictions": cfg.predictions,
        "ground truth": gt,
        "out": f"{out} (metrics.json, metrics.md, sheet.png)",
    }


def _run(cfg: EvaluateJobConfig) -> EvaluationResult:
    from pipelines.evaluate import run_evaluation  # noqa: PLC0415 - imports torch

    return run_evaluation(
        cfg.predictions,
        gt_root=cfg.gt,
        gt_format=cfg.format,
        split=cfg.split,
        out=cfg.out,
        iou_thresholds=cfg.iou_thresholds,
        cam_curve_interval=cfg.cam_curve_interval,
        threshold=None if cfg.threshold < 0 else cfg.threshold,
        sheet_images=cfg.sheet_images,
        sheet_columns=cfg.sheet_columns,
    )


JOB = Job("evaluate", _parse, _run, "evaluation failed", _header, lambda cfg, r: r.to_dict(), needs_ray=True)
main = JOB.main


if __name__ == "__main__":
    sys.exit(main())
