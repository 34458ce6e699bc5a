"""The configs of the two Ray compute jobs: training (``coloc train``) and labeling (``coloc label``).

A job config is the method config (``coloc_core.config``) plus dataset and run/cluster fields. One tree
per job, built as: dataclass defaults → optional YAML file (``--config file.yaml``) → ``--key=value``
overrides (:mod:`pipelines.config.parse`). The resolved tree is logged at start and saved with every
checkpoint and next to every predictions table. Hyperparameters of the method are never repeated here.
The checks here do no I/O beyond looking up local paths, so a bad command line fails before Ray starts.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field, replace
from typing import ClassVar

from coloc_core.config import (
    AT_LEAST_ONE,
    AUTO_WEIGHTS_BACKBONES,
    BACKBONES,
    NON_NEGATIVE,
    POSITIVE,
    ColocConfig,
    ModelConfig,
    Range,
    check_numbers,
    validate,
)
from coloc_core.datasets import default_crop_bottom

DATASET_FORMATS = ("cub", "cars", "aircraft", "dogs", "folder", "boxes_csv")
# Labelers of the labeling job: a trained model file, or a training-free method (pipelines.label).
LABEL_METHODS = ("model", "full", "caam", "ddt", "rps", "selftrain")
# Boxes per image of the labeling job: the single box (co-localization) or every region's box.
LABEL_BOXES = ("one", "all")
# Which region's box is an image's box (coloc_core.predict.PICKS, kept light here: no torch import).
LABEL_PICKS = ("score", "largest")
#: ``halves`` of ``coloc label``: the content term with each box's halves, or whole boxes only.
LABEL_HALVES = ("auto", "off")
# What `coloc train` fits: the self-trained head (default) or the paper's CAML network.
TRAIN_METHODS = ("selftrain", "caml")
# What ``backbone=auto`` (the default of `coloc train` and `coloc label`) stands for: the self-trained
# head reads EfficientNet-Lite2, whose features give it the best boxes measured; every other method
# EfficientNet-Lite0 (DDT and RPS localize better on it, CAML is the paper's setting; docs/RESULTS.md,
# issue 10).
SELFTRAIN_BACKBONE = "efficientnet_lite2"
# Who labels the self-trained head's first round (``first_labels``): ``auto`` lets a head on an
# EfficientNet-Lite other than Lite0 be seeded by Lite0's DDT (pipelines.label_fit); ``own``: its own DDT.
FIRST_LABELS = ("auto", "own")
DEFAULT_BACKBONE = "efficientnet_lite0"


def default_backbone(method: str) -> str:
    """The backbone ``auto`` stands for with ``method`` (a training or a labeling method)."""
    return SELFTRAIN_BACKBONE if method == "selftrain" else DEFAULT_BACKBONE


@dataclass
class DatasetConfig:
    """Where the images are and how to read them.

    Attributes:
        root: dataset folder, local path or ``s3://bucket/prefix``.
        format: reader: cub | cars | aircraft | dogs | folder | boxes_csv.
        train_split: split used for training (no boxes are ever used for training).
        test_split: split used for evaluation (boxes needed); ``""`` disables evaluation.
        limit: keep at most this many images per split (smoke runs); 0 = all.
        crop_bottom: rows cut off the bottom of every image before it is used, for a banner that is
            not part of the photo; -1 (the default) = the format's own: FGVC-Aircraft's 20-px
            copyright banner with ``aircraft``, else 0 (``coloc_core.datasets.default_crop_bottom``).
    """

    root: str = ""
    format: str = "cub"
    train_split: str = "train"
    test_split: str = "test"
    limit: int = 0
    crop_bottom: int = -1

    RANGES: ClassVar[dict[str, Range]] = {"limit": NON_NEGATIVE, "crop_bottom": Range(-1)}


@dataclass
class RunConfig:
    """Run and cluster settings of training.

    Attributes:
        name: run name; checkpoints go to ``<storage_path>/<name>/``; rerunning the same name resumes.
        storage_path: local folder or ``s3://`` prefix for checkpoints and the exported model.
        num_workers: Ray Train workers (the global batch is split across them).
        use_gpu: one GPU per worker; bf16 autocast and channels_last on GPU.
        cpus_per_worker: CPU share of each training worker (fractional is fine).
        decode_cpus: CPU share of each Ray Data decode/augment task (keep < 1 on small machines so
            training never starves the readers).
        eval_every: evaluate CorLoc/MaxBoxAccV2 on the test split every N epochs (0 = only at the end).
        max_failures: worker-group restarts Ray Train may do after a worker failure.
        checkpoints_to_keep: how many checkpoints to keep in storage.
        export: where to write the final model file; ``""`` = ``<storage_path>/<name>/model.pt``.
        stop_after_epochs: stop (cleanly, with a checkpoint) after this many epochs in this
            invocation; 0 = run to ``optim.epochs``. Handy to split a long run into jobs.
        check_memory: CAML: before the data is prepared, estimate each worker's peak memory from
            its batch, ``augment.crop`` and the model, and stop (exit 2, naming the largest
            ``optim.batch_size`` that fits) when the workers would not fit in the node's memory under
            Ray's memory-monitor threshold; false skips the check.
    """

    name: str = "coloc"
    storage_path: str = "runs"
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    decode_cpus: float = 0.5
    eval_every: int = 5
    max_failures: int = 1
    checkpoints_to_keep: int = 2
    export: str = ""
    stop_after_epochs: int = 0
    check_memory: bool = True

    RANGES: ClassVar[dict[str, Range]] = {
        "num_workers": AT_LEAST_ONE,
        "cpus_per_worker": POSITIVE,
        "decode_cpus": POSITIVE,
        "eval_every": NON_NEGATIVE,
        "max_failures": Range(-1),  # -1: unlimited restarts (Ray Train)
        "checkpoints_to_keep": AT_LEAST_ONE,
        "stop_after_epochs": NON_NEGATIVE,
    }


@dataclass
class TrainJobConfig(ColocConfig):
    """The training job: what to train, the method's settings (all ColocConfig fields), dataset, run.

    Attributes:
        method: ``selftrain`` (default): a head self-trained on the training images' own DDT
            maps, fitted from streamed feature statistics in a few Ray Data passes (no epochs, no
            checkpoints; of the method settings only ``model.backbone`` and ``model.weights`` are
            used) — the measured best boxes (docs/RESULTS.md). ``caml``: the paper's ColocNet trained
            with CAML on Ray Train (every other setting applies).
        image_size: ``selftrain``: the side the images are resized to when the model labels, stored in
            the model file (0 = the default, 480; ``coloc_core.localizer.DEFAULT_INPUT_SIZES``).
            ``caml`` refuses it: its input side is ``augment.crop`` (and ``model.image_size``).
        fit_size: ``selftrain``: the side the training images are resized to for the fit passes (0 =
            the default, 320; ``coloc_core.localizer.DEFAULT_FIT_SIZE``). ``caml`` refuses it.
        first_labels: ``selftrain``: who labels the head's first round, ``auto`` | ``own``
            (:class:`LabelJobConfig`). ``caml`` refuses ``own``.
        model: as :class:`coloc_core.config.ModelConfig`, but ``model.backbone`` defaults to ``auto``:
            ``efficientnet_lite2`` for ``selftrain``, ``efficientnet_lite0`` for ``caml``
            (:func:`default_backbone`; resolved by :func:`resolve_train_config`).
    """

    model: ModelConfig = field(default_factory=lambda: ModelConfig(backbone="auto"))
    method: str = "selftrain"
    image_size: int = 0
    fit_size: int = 0
    first_labels: str = "auto"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    run: RunConfig = field(default_factory=RunConfig)

    RANGES: ClassVar[dict[str, Range]] = {
        **ColocConfig.RANGES,
        "image_size": NON_NEGATIVE,
        "fit_size": NON_NEGATIVE,
    }


@dataclass
class LabelJobConfig:
    """The bulk pseudo-labeling job.

    Attributes:
        model: exported model file (local or ``s3://``), or a run folder with checkpoints.
        method: ``auto`` (``model`` when ``--model`` is given, else ``selftrain``), ``model`` (a
            trained file), ``selftrain`` (a head self-trained on the collection's own DDT maps
            before labeling: what ``coloc train`` fits, fitted on the images being labelled) or a
            training-free method: ``full`` | ``caam`` | ``ddt`` | ``rps`` (DDT: principal component
            of the collection's features; RPS: representer points).
        backbone: backbone of the methods fitted or built here: ``auto`` (the default:
            ``efficientnet_lite2`` for ``selftrain``, ``efficientnet_lite0`` for the others;
            :func:`default_backbone`) or a registered name.
        feature_layer: layer the training-free map is read at: ``auto`` (DDT/RPS: the last block before
            the head where the backbone has one; CAAM: the output) | ``output`` | ``pre_head``.
        stride16: how the stride-16 backbone of a training-free method compensates the stage it runs
            at stride 1: ``auto`` (DDT/RPS: ``plain``; CAAM: the backbone default) | ``plain`` (no
            dilation) | ``dilated``.
        images: image folder (local or ``s3://``), or a dataset root when ``format`` is not folder.
        format: how to list images: folder | cub | cars | aircraft | dogs | boxes_csv.
        split: split of a dataset format to label (``all`` for folders).
        out: output folder (local or ``s3://``) of the predictions table (Parquet).
        threshold: τ; negative = the one stored with the model (calibrated, or the default of its kind:
            0.1 DDT, 0.2 RPS, 0.25 the self-trained head, 0.2 CAAM and CAML models;
            ``coloc_core.localizer.DEFAULT_THRESHOLDS``).
        batch_size: images per model call. 8 by default: on CPU small batches run faster and hold
            less memory (at 480 pixels, 8 against 32: 1.12-1.47x the images/s of a whole run, 0.6-0.7x
            the peak memory; docs/BENCHMARKS.md); on a GPU raise it while its memory allows.
        num_actors: model actors (one GPU each when ``use_gpu``); 0 = sized to the cluster when the
            run starts: one per GPU with ``use_gpu``, else one per ``ceil(actor_cpus)`` CPUs left
            after decoding's share, as many as the cluster's memory holds
            (``pipelines.label_actors.actor_count``).
        actor_cpus: CPU share of each model actor.
        decode_cpus: CPU share of each decode task.
        use_gpu: one GPU per actor.
        rows_per_file: maximum rows per Parquet file (bounds file size).
        limit: label at most this many images (0 = all).
        crop_bottom: rows cut off the bottom of every image before it is labelled, for a banner that
            is not part of the photo; -1 (the default) = the format's own: FGVC-Aircraft's 20-px
            copyright banner with ``aircraft``, else 0. The table's ``height`` is then what is left
            (the boxes' coordinates are the image's); a resumed folder must keep it.
        boxes: ``one`` (the default: one box per image, the co-localization box) or ``all``
            (also every region's box above τ, each with its score, in the table's ``boxes`` column
            and in every export; for images with several objects).
        pick: which region of the mask at τ gives the image's box: ``score`` (the default: the
            region whose box scores highest, content term included, so the region most like the
            collection's object; the largest on ties; a region under 1/16 of the largest one's box
            is a speck, never picked) or ``largest`` (the single largest contour,
            SPEC §6: the box of the paper and of ``coloc evaluate``'s CorLoc@δ).
        halves: the content term of the score (fitted and CAML models): ``auto`` (the default: each
            scored box is compared with its two halves across its longer side, three crops per box,
            unless the model file turns them off; a resumed folder keeps what it was started with)
            or ``off`` (one crop per box: labeling takes 0.7-0.9× the time on CPU, docs/BENCHMARKS.md,
            and the score ranks boxes a little less well, docs/RESULTS.md; a folder started with the
            halves refuses it).
        image_size: side of the square images a method fitted or built here labels at (0 = the
            method's default: 480 for selftrain, DDT and RPS, 224 for CAAM and full;
            ``coloc_core.localizer.DEFAULT_INPUT_SIZES``). A model file carries its own.
        fit_size: side the images are resized to for the fit passes of selftrain, DDT and RPS (0 = the
            default, 320; ``coloc_core.localizer.DEFAULT_FIT_SIZE``).
        first_labels: ``selftrain``: who labels the pixels of the head's first round. ``auto`` (the
            default): the DDT of EfficientNet-Lite0 at the same side and stride when the head reads
            another EfficientNet-Lite at its default layer (the default Lite2 head), else the head's
            own backbone's DDT; ``own``: always the head's own backbone's DDT (one backbone instead
            of two, in about the same time; the seed's gain is measured in docs/RESULTS.md, issue 10).
    """

    model: str = ""
    method: str = "auto"
    backbone: str = "auto"
    feature_layer: str = "auto"
    stride16: str = "auto"
    images: str = ""
    format: str = "folder"
    split: str = "all"
    out: str = ""
    threshold: float = -1.0
    batch_size: int = 8
    num_actors: int = 0
    actor_cpus: float = 1.0
    decode_cpus: float = 0.5
    use_gpu: bool = False
    rows_per_file: int = 5000
    limit: int = 0
    crop_bottom: int = -1
    boxes: str = "one"
    pick: str = "score"
    halves: str = "auto"
    image_size: int = 0
    fit_size: int = 0
    first_labels: str = "auto"

    RANGES: ClassVar[dict[str, Range]] = {
        "threshold": Range(high=1, open_high=True),  # negative: the model's own τ
        "image_size": NON_NEGATIVE,
        "fit_size": NON_NEGATIVE,
        "batch_size": AT_LEAST_ONE,
        "num_actors": NON_NEGATIVE,  # 0: sized to the cluster
        "actor_cpus": POSITIVE,
        "decode_cpus": POSITIVE,
        "rows_per_file": AT_LEAST_ONE,
        "limit": NON_NEGATIVE,
        "crop_bottom": Range(-1),  # -1: the format's own
    }


def crop_bottom_of(crop_bottom: int, fmt: str) -> int:
    """The rows ``crop_bottom`` cuts off each image of a ``fmt`` collection (-1: the format's own)."""
    return crop_bottom if crop_bottom >= 0 else default_crop_bottom(fmt)


def crop_bottom_note(crop_bottom: int) -> str:
    """A run header's note of the rows cut off each image's bottom ("" for none)."""
    return f"; the bottom {crop_bottom} rows of each image cut off" if crop_bottom > 0 else ""


def resolve_train_config(cfg: TrainJobConfig) -> TrainJobConfig:
    """Validate a training job config (no I/O, no mutation) and resolve ``model.backbone=auto``.

    Every number of the tree (method, dataset, run) must be finite and in its declared range
    (:func:`coloc_core.config.check_numbers`), so ``--optim.lr=nan`` is refused here, before Ray starts.

    Returns:
        ``cfg``, with ``model.backbone=auto`` replaced by :func:`default_backbone` of its method and
        ``dataset.crop_bottom=-1`` by the format's own.

    Raises:
        ValueError: naming the first bad key.
    """
    validate(cfg)
    if cfg.method not in TRAIN_METHODS:
        raise ValueError(f"method={cfg.method!r} is not one of {', '.join(TRAIN_METHODS)}")
    for key in ("image_size", "fit_size"):
        value = getattr(cfg, key)
        if value and cfg.method != "selftrain":
            raise ValueError(
                f"{key}={value} applies to method=selftrain; method={cfg.method} trains at "
                "augment.crop (and model.image_size)"
            )
        if 0 < value < 32:
            raise ValueError(f"{key}={value} must be 0 (the default) or at least 32")
    _check_first_labels(cfg.first_labels, cfg.method)
    if cfg.dataset.format not in DATASET_FORMATS:
        raise ValueError(f"dataset.format={cfg.dataset.format!r} is not one of {', '.join(DATASET_FORMATS)}")
    if not cfg.dataset.root:
        raise ValueError("dataset.root is required (--data: a local folder or s3://bucket/prefix)")
    crop_bottom = crop_bottom_of(cfg.dataset.crop_bottom, cfg.dataset.format)
    cfg = replace(cfg, dataset=replace(cfg.dataset, crop_bottom=crop_bottom))
    if cfg.model.backbone == "auto":
        cfg = replace(cfg, model=replace(cfg.model, backbone=default_backbone(cfg.method)))
    _check_backbone("model.backbone", cfg.model.backbone)
    if cfg.model.weights == "auto" and cfg.model.backbone not in AUTO_WEIGHTS_BACKBONES:
        raise ValueError(
            f"model.weights=auto has no ImageNet file for model.backbone={cfg.model.backbone!r} here: pass "
            "model.weights=<file, local or s3://> or model.weights=none (random initialisation)"
        )
    if cfg.optim.batch_size < cfg.run.num_workers:
        raise ValueError(
            f"optim.batch_size={cfg.optim.batch_size} is smaller than run.num_workers={cfg.run.num_workers}"
        )
    return cfg


def check_label_config(cfg: LabelJobConfig) -> LabelJobConfig:
    """Validate a labeling job config without any I/O (so the command line fails before Ray starts).

    Every number must be finite and in range; the choices must be known; ``images``, ``out`` and, for
    ``method=model``, ``model`` are required.

    Returns:
        ``cfg`` with ``method=auto`` resolved (``model`` when a model is given, else ``selftrain``),
        ``backbone=auto`` (:func:`default_backbone` of the method) and ``crop_bottom=-1`` (the
        format's own).

    Raises:
        ValueError: naming the first bad key.
    """
    check_numbers(cfg)  # also when the config was built in code, not by the command line
    if cfg.method == "auto":
        cfg = replace(cfg, method="model" if cfg.model else "selftrain")
    missing = [f"--{key}" for key in ("images", "out") if not getattr(cfg, key)]
    if missing:
        raise ValueError(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required "
            "(--images: an image folder or a dataset root; --out: the predictions folder; local or s3://)"
        )
    if cfg.method not in LABEL_METHODS:
        raise ValueError(f"method={cfg.method!r} is not one of {', '.join(LABEL_METHODS)}")
    if cfg.backbone == "auto":
        cfg = replace(cfg, backbone=default_backbone(cfg.method))
    if cfg.method == "model" and not cfg.model:
        raise ValueError(
            "method=model needs --model=<model file, local or s3://> "
            "(or --method=selftrain | ddt | rps | caam | full, fitted on the images themselves)"
        )
    if cfg.feature_layer not in ("auto", "output", "pre_head"):
        raise ValueError(f"feature_layer={cfg.feature_layer!r} is not one of auto, output, pre_head")
    if cfg.stride16 not in ("auto", "plain", "dilated"):
        raise ValueError(f"stride16={cfg.stride16!r} is not one of auto, plain, dilated")
    if cfg.format not in DATASET_FORMATS:
        raise ValueError(f"format={cfg.format!r} is not one of {', '.join(DATASET_FORMATS)}")
    cfg = replace(cfg, crop_bottom=crop_bottom_of(cfg.crop_bottom, cfg.format))
    if cfg.boxes not in LABEL_BOXES:
        raise ValueError(f"boxes={cfg.boxes!r} is not one of {', '.join(LABEL_BOXES)}")
    if cfg.pick not in LABEL_PICKS:
        raise ValueError(f"pick={cfg.pick!r} is not one of {', '.join(LABEL_PICKS)}")
    if cfg.halves not in LABEL_HALVES:
        raise ValueError(f"halves={cfg.halves!r} is not one of {', '.join(LABEL_HALVES)}")
    _check_first_labels(cfg.first_labels, cfg.method)
    if cfg.method != "model":
        _check_backbone("backbone", cfg.backbone)
    else:
        for key in ("image_size", "fit_size"):
            if getattr(cfg, key):
                raise ValueError(
                    f"{key}={getattr(cfg, key)} applies to the methods fitted here; a model file reads "
                    f"the size stored in it (drop --{key}, or fit with --method)"
                )
    for key in ("image_size", "fit_size"):
        if 0 < getattr(cfg, key) < 32:
            raise ValueError(f"{key}={getattr(cfg, key)} must be 0 (the method's default) or at least 32")
    if cfg.rows_per_file < 1 or cfg.batch_size < 1:
        raise ValueError("rows_per_file and batch_size must be >= 1")
    if cfg.num_actors < 0:
        raise ValueError(f"num_actors={cfg.num_actors} must be >= 0 (0: sized to the cluster)")
    if cfg.threshold >= 1.0:
        raise ValueError(f"threshold={cfg.threshold} must be < 1 (negative = the model's own τ)")
    return cfg


def _check_first_labels(value: str, method: str) -> None:
    if value not in FIRST_LABELS:
        raise ValueError(f"first_labels={value!r} is not one of {', '.join(FIRST_LABELS)}")
    if value != "auto" and method != "selftrain":
        raise ValueError(
            f"first_labels={value} applies to method=selftrain (the self-trained head's first round); "
            f"method={method} has no such round"
        )


def _check_backbone(key: str, name: str) -> None:
    if name not in BACKBONES:
        raise ValueError(f"{key}={name!r} is not a known backbone; one of {', '.join(BACKBONES)}")


def check_table_inputs(predictions: str, gt: str = "", model: str = "", needs_manifest: bool = False) -> None:
    """The local inputs of a command that reads a predictions folder must be there.

    The cheap look before Ray (or torch) of ``coloc evaluate``, ``calibrate``, ``export`` and ``render``:

    - ``--predictions``, when local, must be a folder with ``part-*.parquet`` files at its top (what
      ``coloc label --out`` writes);
    - ``--gt`` and ``--model``, when given and local, must exist;
    - with ``needs_manifest`` (``coloc calibrate`` without ``--model``), a local predictions folder must
      hold the ``_manifest.json`` that names the model it was labelled with.

    ``s3://`` URIs are not looked up here; the job says what is missing there.

    Raises:
        ValueError: naming the option, the path and what is wrong.
    """
    folder = _local_path(predictions)
    if folder is not None:
        if not os.path.exists(folder):
            raise ValueError(f"--predictions={predictions}: no such folder")
        if not os.path.isdir(folder) or not glob.glob(os.path.join(glob.escape(folder), "part-*.parquet")):
            raise ValueError(
                f"--predictions={predictions}: no part-*.parquet files there "
                "(it takes the --out folder of coloc label)"
            )
        if needs_manifest and not os.path.exists(os.path.join(folder, "_manifest.json")):
            raise ValueError(
                f"--predictions={predictions} has no _manifest.json naming the model it was labelled "
                "with: give --model"
            )
    if _missing_local_path(gt):
        raise ValueError(f"--gt={gt}: no such file or folder")
    if _missing_local_path(model):
        raise ValueError(f"--model={model}: no such file")


def _local_path(uri: str | None) -> str | None:
    """The path of a local path or ``file://`` URI; None for an empty or remote one (not looked up)."""
    if not uri or ("://" in uri and not uri.startswith("file://")):
        return None
    return uri[len("file://") :] if uri.startswith("file://") else uri


def _missing_local_path(uri: str | None) -> bool:
    """True for a local path or ``file://`` URI that does not exist; remote URIs are not looked up."""
    path = _local_path(uri)
    return path is not None and not os.path.exists(path)


def check_train_paths(cfg: TrainJobConfig) -> TrainJobConfig:
    """The cheap look at the world before Ray starts: the local paths a training job reads must exist.

    ``dataset.root`` and a ``model.weights`` file, when local (a plain path or ``file://``). ``s3://``
    URIs are not looked up here (no network on the driver before the job); the job reports them.

    Raises:
        ValueError: naming the key and the path.
    """
    if _missing_local_path(cfg.dataset.root):
        raise ValueError(f"--data (dataset.root)={cfg.dataset.root}: no such file or folder")
    weights = cfg.model.weights
    if weights and weights.lower() not in ("auto", "none") and _missing_local_path(weights):
        raise ValueError(f"model.weights={weights}: no such file")
    return cfg


def check_label_paths(cfg: LabelJobConfig) -> LabelJobConfig:
    """The local paths a labeling job reads must exist: ``--images`` and, for ``method=model``, ``--model``.

    Call it after :func:`check_label_config`. ``s3://`` URIs are not looked up here (the job says when
    an input bucket or folder is missing).

    Raises:
        ValueError: naming the option and the path.
    """
    if _missing_local_path(cfg.images):
        raise ValueError(f"--images={cfg.images}: no such file or folder")
    if cfg.method == "model" and _missing_local_path(cfg.model):
        raise ValueError(f"--model={cfg.model}: no such file or folder")
    return cfg
