"""The end-to-end demo on generated data (local Ray, CPU, a few minutes): ``./run demo``.

    python jobs/demo.py [--out=demo_out] [--num_images=96] [--epochs=3] [--backbone=auto|tiny|...]

Generates a CUB-layout data set of synthetic birds, trains what ``coloc train`` trains by default (the
self-trained head, a few Ray Data passes) and, for comparison, the paper's CAML on Ray Train
(``--epochs``; 0 skips it), labels every image with Ray Data model actors into Parquet (and with the
training-free DDT baseline), evaluates CorLoc/MaxBoxAccV2 on the test split side by side, draws a
picture sheet and exports COCO/YOLO. Every stage is the production one; only the sizes are small. The
demo starts its own local Ray cluster (unless Ray is up). Rerunning with the same ``--out`` reuses the
data and resumes the CAML run. Its options: :class:`pipelines.config.DemoConfig`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from coloc_core.config import apply_overrides
from coloc_core.synthetic import generate_cub_layout
from jobs.entry import Job
from pipelines import console
from pipelines.config import (
    DatasetConfig,
    DemoConfig,
    EvaluateJobConfig,
    ExportJobConfig,
    LabelJobConfig,
    RunConfig,
    TrainJobConfig,
    build_config,
    default_backbone,
    resolve_train_config,
)

log = logging.getLogger("jobs.demo")


def train_config(cfg: DemoConfig, data_root: str, method: str = "selftrain") -> TrainJobConfig:
    """A training job of the demo: ``selftrain`` (``coloc train``'s default, run ``demo``) or ``caml``."""
    job = TrainJobConfig(
        method=method,
        dataset=DatasetConfig(root=data_root, format="cub", train_split="train", test_split="test"),
        run=RunConfig(
            name="demo" if method == "selftrain" else "demo-caml",
            storage_path=str(Path(cfg.out, "runs").resolve()),
            num_workers=cfg.workers,
            cpus_per_worker=0.5,
            decode_cpus=0.5,
            eval_every=max(1, cfg.epochs),
        ),
    )
    job = apply_overrides(
        job,
        [
            f"model.backbone={cfg.backbone}",
            f"model.weights={'none' if cfg.backbone == 'tiny' else 'auto'}",
            f"optim.epochs={cfg.epochs}",
            f"optim.batch_size={cfg.batch_size}",
            f"optim.lr_milestones={max(1, cfg.epochs - 1)}",
            f"seed={cfg.seed}",
            *cfg.method,
        ],
    )
    return resolve_train_config(job)


def label_config(data: Path, out: Path, **options: Any) -> LabelJobConfig:
    """A labeling job over every generated image, sized for the demo (``options``: model or method)."""
    return replace(
        LabelJobConfig(),
        images=str(data),
        format="cub",
        split="all",
        out=str(out),
        batch_size=16,
        actor_cpus=0.5,
        decode_cpus=0.5,
        rows_per_file=64,
        **options,
    )


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run every stage and return a summary (also written to ``<out>/summary.json``)."""
    # Only once the command line is known to be good: these import Ray, pyarrow and torch.
    from pipelines.evaluate import calibrate_threshold, run_evaluation, write_calibrated_model  # noqa: PLC0415
    from pipelines.export import run_export  # noqa: PLC0415
    from pipelines.label import run_labeling  # noqa: PLC0415
    from pipelines.train import format_metrics, run_training  # noqa: PLC0415

    out = Path(cfg.out).resolve()
    data = out / "data"
    started = time.perf_counter()
    if not (data / "images.txt").exists():
        console.note(log, "[1/5] generating %d images in CUB-200-2011 layout under %s", cfg.num_images, data)
        generate_cub_layout(str(data), num_images=cfg.num_images, seed=cfg.seed)
    else:
        console.note(log, "[1/5] reusing the generated data set in %s", data)

    def evaluate(labels: Path, name: str) -> Any:
        return run_evaluation(
            EvaluateJobConfig(
                predictions=str(labels), gt=str(data), format="cub", split="test", out=str(out / name)
            )
        )

    console.note(
        log,
        "[2/5] coloc train (default): self-training a head on the train split's %s features",
        default_backbone("selftrain") if cfg.backbone == "auto" else cfg.backbone,
    )
    trained = run_training(train_config(cfg, str(data)))
    log.info("      %s", format_metrics(trained.metrics))
    if not trained.model_path:
        raise RuntimeError("training did not export a model")
    caml: dict[str, Any] | None = None
    if cfg.epochs > 0:
        console.note(
            log,
            "      and the paper's CAML on Ray Train, for comparison (%d epochs, %d worker(s))",
            cfg.epochs,
            cfg.workers,
        )
        caml_run = run_training(train_config(cfg, str(data), method="caml"))
        log.info("      last epoch: %s", format_metrics(caml_run.metrics))
        if not caml_run.model_path:
            raise RuntimeError("CAML training did not export a model")
        caml = {"model": caml_run.model_path, "train_metrics": caml_run.metrics}

    labels = out / "labels"
    console.note(log, "[3/5] labeling every image with Ray Data model actors → %s", labels)
    summary = run_labeling(label_config(data, labels, model=trained.model_path))
    log.info(
        "      %d images (%d errors) at %.1f images/s", summary.images, summary.errors, summary.images_per_s
    )
    if caml is not None:
        run_labeling(label_config(data, out / "labels_caml", model=caml["model"]))

    report = out / "evaluation"
    console.note(
        log, "[4/5] evaluating the labels of the test split against the generated boxes → %s", report
    )
    evaluation = evaluate(labels, "evaluation")
    if caml is not None:
        caml["evaluation"] = evaluate(out / "labels_caml", "evaluation_caml").metrics
    calibrated: dict[str, Any] | None = None
    if cfg.calibrate:
        fitted = calibrate_threshold(str(labels), str(data), "cub", "train")
        model_file = str(Path(trained.model_path).with_suffix("")) + ".calibrated.pt"
        write_calibrated_model(trained.model_path, model_file, fitted)
        console.note(
            log,
            "      τ fitted to the train split's boxes: %.3f (CorLoc@0.5 %.2f there, reached from τ %.2f "
            "to %.2f); relabeling with it",
            fitted.threshold,
            fitted.corloc,
            *(fitted.tied or (fitted.threshold, fitted.threshold)),
        )
        run_labeling(label_config(data, out / "labels_calibrated", model=model_file))
        calibrated = {
            "threshold": fitted.threshold,
            "model": model_file,
            "evaluation": evaluate(out / "labels_calibrated", "evaluation_calibrated").metrics,
        }

    baseline: dict[str, Any] | None = None
    if cfg.baseline and cfg.baseline != "none":
        base_labels = out / f"labels_{cfg.baseline}"
        console.note(
            log,
            "      the training-free %s baseline on the same images → %s",
            cfg.baseline.upper(),
            base_labels,
        )
        run_labeling(label_config(data, base_labels, method=cfg.baseline, backbone=cfg.backbone))
        base_eval = evaluate(base_labels, "evaluation_baseline")
        baseline = {"method": cfg.baseline, "labels": str(base_labels), "evaluation": base_eval.metrics}
    console.note(log, "[5/5] exporting COCO JSON and a YOLO dataset → %s", out / "exports")
    coco = str(out / "exports" / "coco.json")
    run_export(ExportJobConfig(predictions=str(labels), out=coco, category="bird", to="coco"))
    # Relative to images/ (the CUB layout's image folder), the labels land in exports/yolo/labels/.
    yolo = str(out / "exports" / "yolo")
    run_export(
        ExportJobConfig(
            predictions=str(labels), out=yolo, category="bird", to="yolo", images_root=str(data / "images")
        )
    )

    result = {
        "seconds": round(time.perf_counter() - started, 1),
        "train_metrics": trained.metrics,
        "model": trained.model_path,
        "labels": str(labels),
        "label_summary": summary.to_dict(),
        "evaluation": evaluation.metrics,
        "evaluation_files": evaluation.files,
        "whole_image_boxes": whole_image_boxes(str(labels)),
        "caml": caml,
        "calibrated": calibrated,
        "baseline": baseline,
        "report": str(report),
        "exports": str(out / "exports"),
    }
    (out / "summary.json").write_text(json.dumps(result, indent=1, default=str))
    return result


def whole_image_boxes(labels: str) -> int:
    """How many rows of a predictions folder have a box covering at least 95% of the image."""
    import pyarrow.parquet as pq  # noqa: PLC0415

    from pipelines.predictions import part_files  # noqa: PLC0415

    count = 0
    for uri in part_files(labels):
        rows = pq.read_table(uri, columns=["x0", "y0", "x1", "y1", "width", "height"]).to_pylist()
        for r in rows:
            if r["x0"] is None or not r["width"] or not r["height"]:
                continue
            area = (r["x1"] - r["x0"] + 1) * (r["y1"] - r["y0"] + 1) / float(r["width"] * r["height"])
            count += area >= 0.95
    return count


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
        for k in (
            "corloc@0.5",
            "box_corloc@0.5",
            "maxboxaccv2",
            "spearman_score_iou",
            "corloc@0.5_top_half_by_score",
        )
        if k in metrics
    ]
    rows = [("self-trained (default)", metrics)]
    if result.get("calibrated"):
        rows.append(
            (
                f"  τ={result['calibrated']['threshold']:.2f} (train boxes)",
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
    print(f"  {'':<24}" + "".join(f"{k:>{len(k) + 2}}" for k in keys))
    for name, values in rows:
        cells = (f"{float(values.get(k, float('nan'))):>{len(k) + 2}.2f}" for k in keys)
        print(f"  {name:<24}" + "".join(cells))
    print(
        f"whole-image boxes (self-trained): {result['whole_image_boxes']} of "
        f"{result['label_summary']['images']}"
    )


JOB = Job(
    "demo",
    lambda args: build_config(DemoConfig, args),
    run_demo,
    "demo failed",
    _header,
    _report,
    needs_ray=True,  # a local cluster of this machine's CPUs, unless Ray is up
    ray_options=lambda cfg: {"num_cpus": max(2, os.cpu_count() or 2), "include_dashboard": False},
    preload=("pipelines.train", "pipelines.label"),
)
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
        "trains": f"{trains}; backbone {cfg.backbone}"
        + (
            f" ({default_backbone('selftrain')} for the head, {default_backbone('caml')} otherwise)"
            if cfg.backbone == "auto"
            else ""
        ),
        "compares": compare,
        "out": f"{cfg.out} (data/, runs/, labels*/, evaluation*/, exports/, summary.json)",
    }


if __name__ == "__main__":
    sys.exit(main())
