"""Calibrate τ on a labelled subset and write a new model file with it.

    python jobs/calibrate.py --predictions s3://bucket/labels/cub-val --gt s3://bucket/CUB_200_2011 \
        --format cub --split test --model s3://bucket/runs/cub-caml/model.pt \
        --out s3://bucket/runs/cub-caml/model.calibrated.pt

τ maximises CorLoc@``delta`` (single box) over the stored heatmaps of ``--predictions`` joined with the
GT. ``--model`` defaults to the baseline model file stored in the predictions folder (``_model.pt``);
``--out`` defaults to ``<model without .pt>.calibrated.pt``. The weights (and model id) are unchanged:
label into a new output folder with the new file. Exit code 0 on success, 1 on failure, 2 on a bad
command line.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from coloc_core.config import CALIBRATION_CURVE_INTERVAL, NON_NEGATIVE, UNIT_OPEN, Range
from jobs.entry import Job
from pipelines.config import build_config


@dataclass
class CalibrateJobConfig:
    """Calibration job.

    Attributes:
        predictions: predictions folder of the labelled subset.
        gt: data set root with boxes.
        format: GT reader.
        split: GT split.
        model: model file to copy with the new τ ("" = the one the predictions were made with).
        out: new model file ("" = ``<model>.calibrated.pt``).
        delta: IoU threshold of the CorLoc that is maximised.
        cam_curve_interval: τ grid spacing.
        limit: use at most this many GT images (0 = all).
    """

    predictions: str = ""
    gt: str = ""
    format: str = "boxes_csv"
    split: str = "test"
    model: str = ""
    out: str = ""
    delta: float = 0.5
    cam_curve_interval: float = CALIBRATION_CURVE_INTERVAL
    limit: int = 0

    RANGES: ClassVar[dict[str, Range]] = {
        "delta": Range(0, 1, open_low=True),
        "cam_curve_interval": UNIT_OPEN,
        "limit": NON_NEGATIVE,
    }


def _parse(args: list[str]) -> CalibrateJobConfig:
    cfg = build_config(CalibrateJobConfig, args)
    if not cfg.predictions or not cfg.gt:
        raise ValueError("--predictions and --gt are required")
    return cfg


def _header(cfg: CalibrateJobConfig) -> tuple[str, dict[str, str]]:
    return "calibrate τ", {
        "predictions": cfg.predictions,
        "ground truth": f"{cfg.gt} ({cfg.format}, split {cfg.split})",
        "out": cfg.out or "<model>.calibrated.pt",
    }


def _run(cfg: CalibrateJobConfig) -> dict[str, Any]:
    # Only once the command line is known to be good: these import pyarrow and torch.
    from pipelines.evaluate import calibrate_threshold, write_calibrated_model  # noqa: PLC0415
    from pipelines.predictions import PredictionsFolder  # noqa: PLC0415

    model = cfg.model or PredictionsFolder(cfg.predictions).read_manifest()["model_uri"]
    out = cfg.out or (model[: -len(".pt")] if model.endswith(".pt") else model) + ".calibrated.pt"
    result = calibrate_threshold(
        cfg.predictions, cfg.gt, cfg.format, cfg.split, cfg.delta, cfg.cam_curve_interval, cfg.limit
    )
    write_calibrated_model(model, out, result)
    report = {k: v for k, v in asdict(result).items() if k not in ("curve", "thresholds")}
    return {"model": out, **report}


JOB = Job("calibrate", _parse, _run, "calibration failed", _header, report=lambda cfg, summary: summary)
main = JOB.main


if __name__ == "__main__":
    sys.exit(main())
