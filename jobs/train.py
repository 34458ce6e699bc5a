"""Train on any supported dataset: ``ray job submit -- python jobs/train.py --format=cars --data=...``.

    ray job submit --working-dir . -- python jobs/train.py \
        --format=aircraft --data s3://bucket/fgvc-aircraft-2013b --run.name=aircraft-caml

``--format`` is ``dataset.format`` (cub, cars, aircraft, dogs, folder, boxes_csv) and ``--data`` is
``dataset.root``; every other key of ``pipelines.config.TrainJobConfig`` can be set with ``--key=value``
(``--help`` lists them). Exit code 0 on success, 1 when training fails, 2 on a bad command line, an
unknown backbone or a local ``--data`` / ``model.weights`` path that does not exist (checked before Ray
or torch is imported; ``s3://`` paths are looked up by the job), and when CAML's workers would not fit
in the node's memory (``pipelines.memory``, checked before the data is read; ``run.check_memory``), or
on bad input (a dataset without the files of its ``--format``, no images).
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from jobs.entry import Job, Refused, run_job
from pipelines import console
from pipelines.config import (
    TrainJobConfig,
    build_config,
    check_train_paths,
    crop_bottom_note,
    resolve_train_config,
)

if TYPE_CHECKING:
    from pipelines.train import TrainResult

log = logging.getLogger("jobs.train")


def job(only_format: str | None = None) -> Job[TrainJobConfig, TrainResult]:
    """The training job; ``only_format`` pins ``dataset.format`` (jobs/train_cub.py)."""
    aliases = {"data": "dataset.root"}
    if not only_format:
        aliases["format"] = "dataset.format"

    def parse(args: list[str]) -> TrainJobConfig:
        cfg = build_config(TrainJobConfig, args, aliases=aliases)
        if only_format and cfg.dataset.format != only_format:
            raise ValueError(
                f"this job reads {only_format} only (got dataset.format={cfg.dataset.format!r}); "
                "use jobs/train.py"
            )
        cfg = resolve_train_config(cfg)  # backbone=auto resolved for the header
        check_train_paths(cfg)  # fail before starting Ray
        return cfg

    return Job(
        "train",
        parse=parse,
        run=_run,
        failed="training failed",
        header=lambda cfg: ("train", _fields(cfg)),
        report=_report,
        needs_ray=True,
        preload=("pipelines.train",),
    )


def main(argv: list[str] | None = None, only_format: str | None = None) -> int:
    """Parse, start Ray, train; ``only_format`` pins ``dataset.format`` (jobs/train_cub.py)."""
    return run_job(job(only_format), argv)


def _run(cfg: TrainJobConfig) -> TrainResult:
    from pipelines.memory import MemoryBudgetError  # noqa: PLC0415 - imports torch
    from pipelines.train import run_training  # noqa: PLC0415 - imports Ray Train, torch

    try:
        return run_training(cfg)
    except MemoryBudgetError as err:  # found before any data is read: a configuration to change
        raise Refused(f"bad arguments: {err}") from err


def _report(cfg: TrainJobConfig, result: TrainResult) -> None:
    from pipelines.train import format_metrics  # noqa: PLC0415 - imported by _run already

    console.note(log, "final metrics: %s", format_metrics(result.metrics))
    console.note(
        log,
        "checkpoint: %s; model: %s",
        result.checkpoint_path,
        result.model_path or "(not exported: run not finished)",
    )


def _fields(cfg: TrainJobConfig) -> dict[str, str]:
    """The header's lines: what is trained on which data, and where it goes."""
    data = cfg.dataset
    splits = f"train split {data.train_split!r}" + (
        f", evaluated on {data.test_split!r}" if data.test_split else ""
    )
    if cfg.method == "selftrain":
        method = f"self-trained head on frozen {cfg.model.backbone} features (Ray Data passes)"
    else:
        run = cfg.run
        method = (
            f"CAML, {cfg.model.backbone}, {cfg.optim.epochs} epochs, batch {cfg.optim.batch_size}, "
            f"{run.num_workers} {'GPU' if run.use_gpu else 'CPU'} worker(s) on Ray Train"
        )
    out = f"{cfg.run.storage_path.rstrip('/')}/{cfg.run.name}"
    return {
        "data": f"{data.root} ({data.format}; {splits}{f', first {data.limit}' if data.limit else ''}"
        f"{crop_bottom_note(data.crop_bottom)})",
        "method": method,
        "out": f"{out} (model.pt{', checkpoints; a rerun resumes' if cfg.method == 'caml' else ''})",
    }


if __name__ == "__main__":
    sys.exit(main())
