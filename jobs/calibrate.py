"""Calibrate τ on a labelled subset and write a new model file with it.

    python jobs/calibrate.py --predictions s3://bucket/labels/cub-val --gt s3://bucket/CUB_200_2011 \
        --format cub --split test --model s3://bucket/runs/cub-caml/model.pt \
        --out s3://bucket/runs/cub-caml/model.calibrated.pt

τ maximises CorLoc@``delta`` (single box) over the stored heatmaps of ``--predictions`` joined with the
GT. ``--model`` defaults to the baseline model file stored in the predictions folder (``_model.pt``);
``--out`` defaults to ``<model without .pt>.calibrated.pt``. The weights (and model id) are unchanged:
label into a new output folder with the new file. Exit code 0 on success, 1 on failure, 2 on a bad
command line or bad input (a missing --predictions, --gt or --model, a GT of another set).
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Any

from jobs.entry import Job
from pipelines.config import CalibrateJobConfig, build_config, check_calibrate_config, check_table_inputs


def _parse(args: list[str]) -> CalibrateJobConfig:
    cfg = check_calibrate_config(build_config(CalibrateJobConfig, args))
    check_table_inputs(cfg.predictions, gt=cfg.gt, model=cfg.model, needs_manifest=not cfg.model)
    return cfg


def _header(cfg: CalibrateJobConfig) -> tuple[str, dict[str, str]]:
    return "calibrate τ", {
        "predictions": cfg.predictions,
        "ground truth": f"{cfg.gt} ({cfg.format}, split {cfg.split})",
        "out": cfg.out or "<model>.calibrated.pt",
    }


def _run(cfg: CalibrateJobConfig) -> dict[str, Any]:
    # Only once the command line is known to be good: these import pyarrow and torch.
    from coloc_core.errors import MissingInputError  # noqa: PLC0415
    from pipelines import storage  # noqa: PLC0415
    from pipelines.evaluate import calibrate_threshold, write_calibrated_model  # noqa: PLC0415
    from pipelines.predictions import PredictionsFolder  # noqa: PLC0415

    # The model is looked up before the calibration pass, which would otherwise run for nothing.
    if cfg.model:
        model, named_by = cfg.model, "named by --model"
    else:
        folder = PredictionsFolder(cfg.predictions)
        try:
            model = folder.read_manifest()["model_uri"]
        except FileNotFoundError:
            raise MissingInputError(
                f"--predictions={cfg.predictions} has no {folder.manifest} naming the model it was "
                "labelled with: give --model"
            ) from None
        named_by = f"the one {folder.manifest} names; give --model"
    if not storage.exists(model):
        raise MissingInputError(f"the model file {model} is not there ({named_by})")
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
