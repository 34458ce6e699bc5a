"""Train on any supported dataset: ``ray job submit -- python jobs/train.py --format=cars --data=...``.

    ray job submit --working-dir . -- python jobs/train.py \
        --format=aircraft --data s3://bucket/fgvc-aircraft-2013b --run.name=aircraft-caml

``--format`` is ``dataset.format`` (cub, cars, aircraft, dogs, folder, boxes_csv) and ``--data`` is
``dataset.root``; every other key of ``pipelines.config.TrainJobConfig`` can be set with ``--key=value``
(``--help`` lists them). Exit code 0 on success, 1 when training fails, 2 on a bad command line, an
unknown backbone or a local ``--data`` / ``model.weights`` path that does not exist (checked before Ray
or torch is imported; ``s3://`` paths are looked up by the job), and when CAML's workers would not fit
in the node's memory (``pipelines.memory``, checked before the data is read; ``run.check_memory``).
"""

from __future__ import annotations

import logging
import sys

from pipelines import console
from pipelines.config import (
    TrainJobConfig,
    build_config,
    check_train_paths,
    resolve_train_config,
    version_text,
)

log = logging.getLogger("jobs.train")


def main(argv: list[str] | None = None, only_format: str | None = None) -> int:
    """Parse, start Ray, train; ``only_format`` pins ``dataset.format`` (jobs/train_cub.py)."""
    args = console.start(sys.argv[1:] if argv is None else argv)  # --verbose, then the console
    if args is None:
        return 2
    aliases = {"data": "dataset.root"}
    if not only_format:
        aliases["format"] = "dataset.format"
    try:
        cfg = build_config(TrainJobConfig, args, aliases=aliases)
        if only_format and cfg.dataset.format != only_format:
            raise ValueError(
                f"this job reads {only_format} only (got dataset.format={cfg.dataset.format!r}); "
                "use jobs/train.py"
            )
        check_train_paths(resolve_train_config(cfg))  # fail before starting Ray
    except (KeyError, ValueError) as err:
        log.error("bad arguments: %s", err)
        return 2
    console.header(f"{version_text()} · train", _fields(cfg))
    from pipelines.memory import MemoryBudgetError  # noqa: PLC0415 - imports torch
    from pipelines.train import format_metrics, run_training  # noqa: PLC0415 - imports Ray Train, torch

    console.ray_init()  # address from the job environment (RAY_ADDRESS) when submitted
    try:
        result = run_training(cfg)
    except MemoryBudgetError as err:  # found before any data is read: a configuration to change
        log.error("bad arguments: %s", err)
        return 2
    except Exception:
        log.exception("training failed")
        return 1
    console.note(log, "final metrics: %s", format_metrics(result.metrics))
    console.note(
        log,
        "checkpoint: %s; model: %s",
        result.checkpoint_path,
        result.model_path or "(not exported: run not finished)",
    )
    return 0


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
        "data": f"{data.root} ({data.format}; {splits}{f', first {data.limit}' if data.limit else ''})",
        "method": method,
        "out": f"{out} (model.pt{', checkpoints; a rerun resumes' if cfg.method == 'caml' else ''})",
    }


if __name__ == "__main__":
    sys.exit(main())
