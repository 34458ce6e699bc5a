"""The end-to-end demo on generated data (local Ray, CPU, a few minutes): ``./run demo``.

    python jobs/demo.py [--out=demo_out] [--num_images=96] [--epochs=3] [--backbone=efficientnet_lite0|tiny]

Generates a CUB-layout data set of synthetic birds, trains what ``coloc train`` trains by default (the
self-trained head) and, for comparison, the paper's CAML on Ray Train (``--epochs``; 0 skips it),
labels every image with Ray Data model actors into Parquet (and with the training-free DDT baseline),
evaluates CorLoc/MaxBoxAccV2 on the test split side by side, draws a picture sheet and exports
COCO/YOLO. Rerunning with the same ``--out`` reuses the data and resumes the CAML run.
"""

from __future__ import annotations

import json
import logging
import sys

from pipelines.config import build_config
from pipelines.demo import DemoConfig, run_demo

log = logging.getLogger("jobs.demo")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = build_config(DemoConfig, sys.argv[1:] if argv is None else argv)
    except (KeyError, ValueError) as err:
        log.error("bad arguments: %s", err)
        return 2
    try:
        result = run_demo(cfg)
    except Exception:
        log.exception("demo failed")
        return 1
    metrics = result["evaluation"]
    print(f"\n=== coloc demo finished in {result['seconds']:.0f} s ===")
    print("model:        ", result["model"])
    print("predictions:  ", result["labels"], "(Parquet, one row per image)")
    print("evaluation:   ", result["report"], "(metrics.json, metrics.md, picture sheet PNG)")
    print("exports:      ", result["exports"], "(COCO JSON, YOLO txt)")
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
    print("summary:      ", json.dumps({"seconds": result["seconds"], "model": result["model"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
