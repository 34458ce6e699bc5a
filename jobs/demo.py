"""The end-to-end demo on generated data (local Ray, CPU, a few minutes): ``./run demo``.

    python jobs/demo.py [--out=demo_out] [--num_images=96] [--epochs=3] [--backbone=efficientnet_lite0|tiny]

Generates a CUB-layout data set of synthetic birds, trains what ``coloc train`` trains by default (the
self-trained head) and, for comparison, the paper's CAML on Ray Train (``--epochs``; 0 skips it),
labels every image with Ray Data model actors into Parquet (and with the training-free DDT baseline),
evaluates CorLoc/MaxBoxAccV2 on the test split side by side, draws a picture sheet and exports
COCO/YOLO. Rerunning with the same ``--out`` reuses the data and resumes the CAML run.
"""

from __future__ import annotations

import sys
from typing import Any

from jobs.entry import Job
from pipelines.config import build_config
from pipelines.demo import DemoConfig, run_demo


def _header(cfg: DemoConfig) -> tuple[str, dict[str, str]]:
    title = f"the whole pipeline on {cfg.num_images} generated images of birds with known boxes"
    return f"demo: {title} (local Ray, CPU)", _fields(cfg)


def _report(cfg: DemoConfig, result: dict[str, Any]) -> None:
    metrics = result["evaluation"]
    print(f"\n=== coloc demo finished in {result['seconds']:.0f} s ===")
    print("model:        ", result["model"])
    print("predictions:  ", result["labels"], "(Parquet, one row per image)")
    print("evaluation:   ", result["report"], "(metrics.json, metrics.md, picture sheet PNG)")
    print("exports:      ", result["exports"], "(COCO JSON, YOLO dataset)")
    keys = [
        k
        for k in ("corloc@0.5", "maxboxaccv2", "spearman_score_iou", "corloc@0.5_top_half_by_score")
        if k in metrics
    ]
    rows = [("self-trained (default)", metrics)]
    if result.get("calibrated"):
        rows.append(
            (
                f"  τ={result['calibrated']['threshold']:.2f} from train boxes",
                result["calibrated"]["evaluation"],
            )
        )
    if result.get("caml"):
        rows.append(("CAML (paper)", result["caml"]["evaluation"]))
    if result.get("baseline"):
        rows.append(
            (f"training-free {result['baseline']['method'].upper()}", result["baseline"]["evaluation"])
        )
    print(f"\ntest split ({int(metrics.get('gt_images', 0))} images)")
    print(f"  {'':<24}" + "".join(f"{k:>32}" for k in keys))
    for name, values in rows:
        print(f"  {name:<24}" + "".join(f"{float(values.get(k, float('nan'))):>32.2f}" for k in keys))
    print(
        f"whole-image boxes (self-trained): {result['whole_image_boxes']} of "
        f"{result['label_summary']['images']}"
    )


JOB = Job("demo", lambda args: build_config(DemoConfig, args), run_demo, "demo failed", _header, _report)
main = JOB.main


def _fields(cfg: DemoConfig) -> dict[str, str]:
    """The header's lines: what the demo generates, trains and labels, and where it writes."""
    trains = "the self-trained head (coloc train's default)"
    if cfg.epochs > 0:
        trains += f", and CAML on Ray Train for {cfg.epochs} epoch(s)"
    compare = f"the training-free {cfg.baseline.upper()}" if cfg.baseline and cfg.baseline != "none" else ""
    if cfg.calibrate:
        compare += (" and " if compare else "") + "τ fitted to the train split's boxes"
    return {
        "trains": f"{trains}; backbone {cfg.backbone}",
        "compares": compare,
        "out": f"{cfg.out} (data/, runs/, labels*/, evaluation*/, exports/, summary.json)",
    }


if __name__ == "__main__":
    sys.exit(main())
