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

from pipelines.config import TrainJobConfig, build_config, check_train_paths, resolve_train_config

log = logging.getLogger("jobs.train")


def main(argv: list[str] | None = None, only_format: str | None = None) -> int:
    """Parse, start Ray, train; ``only_format`` pins ``dataset.format`` (jobs/train_cub.py)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    aliases = {"data": "dataset.root"}
    if not only_format:
        aliases["format"] = "dataset.format"
    try:
        cfg = build_config(TrainJobConfig, sys.argv[1:] if argv is None else argv, aliases=aliases)
        if only_format and cfg.dataset.format != only_format:
            raise ValueError(
                f"this job reads {only_format} only (got dataset.format={cfg.dataset.format!r}); "
                "use jobs/train.py"
            )
        check_train_paths(resolve_train_config(cfg))  # fail before starting Ray
    except (KeyError, ValueError) as err:
        log.error("bad arguments: %s", err)
        return 2
    import ray  # noqa: PLC0415 - only once the command line is known to be good

    from pipelines.memory import MemoryBudgetError  # noqa: PLC0415 - imports torch
    from pipelines.train import format_metrics, run_training  # noqa: PLC0415 - imports Ray Train, torch

    if not ray.is_initialized():
        ray.init()  # address from the job environment (RAY_ADDRESS) when submitted
    try:
        result = run_training(cfg)
    except MemoryBudgetError as err:  # found before any data is read: a configuration to change
        log.error("bad arguments: %s", err)
        return 2
    except Exception:
        log.exception("training failed")
        return 1
    log.info("final metrics: %s", format_metrics(result.metrics))
    log.info(
        "checkpoint: %s; model: %s",
        result.checkpoint_path,
        result.model_path or "(not exported: run not finished)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
