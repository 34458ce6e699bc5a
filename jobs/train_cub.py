"""Train on CUB-200-2011 (or any folder in its layout): ``ray job submit -- python jobs/train_cub.py``.

    ray job submit --working-dir . -- python jobs/train_cub.py \
        --data s3://bucket/CUB_200_2011 --run.storage_path=s3://bucket/runs --run.name=cub-caml

``--data`` is ``dataset.root``; every other key of ``pipelines.config.TrainJobConfig`` can be set with
``--key=value`` (``--help`` lists them, ``--config file.yaml`` applies a file first). Starting the same
``--run.storage_path``/``--run.name`` again resumes from its latest checkpoint. Exit code 0 on success,
1 when training fails, 2 on a bad command line.
"""

from __future__ import annotations

import logging
import sys

import ray

from pipelines.config import TrainJobConfig, build_config, resolve_train_config
from pipelines.train import format_metrics, run_training

log = logging.getLogger("jobs.train_cub")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = build_config(
            TrainJobConfig, sys.argv[1:] if argv is None else argv, aliases={"data": "dataset.root"}
        )
        if cfg.dataset.format != "cub":
            raise ValueError(
                f"train_cub.py reads CUB only (got dataset.format={cfg.dataset.format!r}); use jobs/train.py"
            )
        resolve_train_config(cfg)  # fail before starting Ray
    except (KeyError, ValueError) as err:
        log.error("bad arguments: %s", err)
        return 2
    if not ray.is_initialized():
        ray.init()  # address from the job environment (RAY_ADDRESS) when submitted
    try:
        result = run_training(cfg)
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
