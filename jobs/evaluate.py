"""Evaluate a predictions table: ``python jobs/evaluate.py --predictions=... --gt=... --format=cub``.

    ray job submit --working-dir . -- python jobs/evaluate.py \
        --predictions s3://bucket/labels/cub-test --gt s3://bucket/CUB_200_2011 --format cub --split test

Writes ``metrics.json``, ``metrics.md`` and ``sheet.png`` to ``--out`` (default
``<predictions>/_eval``); without ``--gt`` only score statistics and a sheet ranked by score. With
``--gt``: CorLoc@δ of the map's largest contour (SPEC §6) and ``box_corloc@δ`` of the table's own
boxes (they differ where ``coloc label --pick=score`` chose another region), MaxBoxAccV2, the score's
ranking of the table's boxes, what a score filter keeps (the share of correct boxes among the
best-scored 10-100% of the images, and the lowest score kept: ``coloc export --top_fraction`` or
``--min_score``), and box recall and precision at IoU 0.5 (``box_recall@0.5``,
``box_precision@0.5``, ``boxes_per_image``), of every box for a table labelled with ``--boxes=all``
(beside ``single_box_*``, its single box), for images with several objects. Exit code
0 on success, 1 on failure, 2 on a bad command line or bad input (a folder without part files, a
GT that is not of the labelled set or not in the layout of ``--format``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from jobs.entry import Job
from pipelines.config import EvaluateJobConfig, build_config, check_evaluate_config, check_table_inputs

if TYPE_CHECKING:
    from pipelines.evaluate import EvaluationResult


def _parse(args: list[str]) -> EvaluateJobConfig:
    cfg = check_evaluate_config(build_config(EvaluateJobConfig, args))
    check_table_inputs(cfg.predictions, gt=cfg.gt)
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

    return run_evaluation(cfg)


JOB = Job(
    "evaluate",
    _parse,
    _run,
    "evaluation failed",
    _header,
    lambda cfg, r: r.to_dict(),
    needs_ray=True,
    preload=("pipelines.evaluate",),
)
main = JOB.main


if __name__ == "__main__":
    sys.exit(main())
