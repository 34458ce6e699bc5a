"""Training on Ray Train: TorchTrainer wiring, per-epoch checkpoints, resume, evaluation and export.

Driver (:func:`run_training`):

1. Validate and log the resolved config (``pipelines.config.dump``).
2. Check memory (:func:`check_memory`, ``run.check_memory``): each worker's peak estimated from its
   batch, ``augment.crop`` and the model (:mod:`pipelines.memory`) against the node's memory; a run
   that would not fit stops here (``MemoryBudgetError``), before any image is read.
3. List the records of the train split (and of the test split, for evaluation, when it has boxes)
   with ``coloc_core.datasets`` through :func:`pipelines.ingest.read_records` (local or ``s3://``).
4. Decode once with Ray Data (:func:`prepare_data`: :func:`pipelines.ingest.images_dataset` at
   ``augment.resize`` for training, ``augment.crop`` for the test split; one decode makes both when
   the test split lists the same images), with a progress line every 10 s, split off the error rows
   (counted, logged, excluded) and keep the good rows materialized in the object store. Nothing is
   decoded while the trainer runs, so the training workers can hold every CPU of a small machine
   without starving a Ray Data task.
5. ``TorchTrainer(...).fit()``; the ``train`` dataset is split across the workers
   (``streaming_split``), the ``test`` dataset is not (rank 0 evaluates the whole test split).
6. Export the last epoch's model as one file (``coloc_core.checkpoint`` format), written atomically
   through :mod:`pipelines.storage` to ``run.export`` or ``<storage_path>/<name>/model.pt``.

Worker (:func:`train_loop_per_worker`), each epoch:

- the shard's 256×256 uint8 rows go through the SPEC §5 random crop (reflect padding) of
  :func:`pipelines.ingest.augment_batch`, seeded by ``(seed, epoch, index)``, inside the
  ``iter_torch_batches`` collate function: it runs in Ray Data's prefetch threads, so it overlaps the
  training step, and a new epoch gets new crops while a resumed run repeats exactly the crops an
  uninterrupted run would have seen;
- :func:`train_batch` normalises on the worker's device and calls ``coloc_core.step.train_step``
  (pretext warps + network + L_cls + L_caml; bf16 autocast and channels_last on GPU only);
- metrics are averaged over all workers' images (``all_reduce``), rank 0 evaluates on the test split
  every ``run.eval_every`` epochs and at the last epoch (CorLoc, MaxBoxAccV2: reported, never used to
  pick a checkpoint), and every worker calls ``ray.train.report`` with rank 0's checkpoint.

Checkpoint folder (one per epoch, ``epoch_0001`` …, the last ``run.checkpoints_to_keep`` kept)::

    state.pt       {"model": state_dict, "optimizer": state_dict, "epoch": completed epochs,
                    "invocation": id, "stop_at": epoch}   (torch.load(weights_only=True) safe)
    config.yaml    the resolved TrainJobConfig
    metrics.json   that epoch's metrics

Resume: starting :func:`run_training` again with the same ``run.storage_path`` and ``run.name`` makes
Ray Train V2 restore its checkpoint list from storage; ``ray.train.get_checkpoint()`` then returns the
latest one and the loop continues at the next epoch (the lr schedule is a pure function of the epoch).
Pretext labels are drawn from a generator seeded by ``(seed, epoch, rank)`` and the crops by
``(seed, epoch, index)``, so a resumed run reproduces the uninterrupted one on the same worker count.
After a kill of the driver (the controller and the workers die with it), the rerun resumes the same
way; what the kill may leave half-written (Ray's checkpoint snapshot cut short, a checkpoint folder
uploaded in part) is dealt with by :func:`prepare_resume` before the trainer starts, and the loop
resumes from the newest whole checkpoint folder when Ray has none as new. The same path serves Ray
Train's failure handling: after a worker failure the worker group is
restarted (``FailureConfig(max_failures)``) and resumes from the latest checkpoint the controller has
*registered*. The controller collects reports when it polls the workers (every
``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, 2 s by default), so a folder uploaded within the last poll may
not count yet and its epoch is trained again. A non-finite loss, gradient or weight is an error too
(``FloatingPointError`` from ``train_step``): it fails again after every restart and then ends the
run with that message. ``run.stop_after_epochs`` ends an invocation cleanly after N epochs; a restart
after a failure keeps the invocation's original stopping point (stored in the checkpoint as
``stop_at``). A run stopped before ``optim.epochs`` exports no model.

Evaluation on rank 0 keeps the other workers waiting in ``ray.train.report`` (a Ray barrier without
a timeout, not a torch collective), so a long evaluation cannot trip the process-group timeout.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import yaml
from ray.data.collate_fn import NumpyBatchCollateFn
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from torch import Tensor, nn

from coloc_core.checkpoint import model_payload, save_model_file, unwrap
from coloc_core.config import ColocConfig, from_dict, to_dict
from coloc_core.datasets import ImageRecord
from coloc_core.model import ColocNet, build_model, normalize_images
from coloc_core.pretext import PretextTransform
from coloc_core.step import inference_step, lr_at_epoch, make_optimizer, set_lr, train_step
from pipelines import console, ingest, memory, storage
from pipelines.config import TrainJobConfig, dump, resolve_train_config

log = logging.getLogger(__name__)

TRAIN_DATASET = "train"
TEST_DATASET = "test"
STATE_FILE = "state.pt"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.pt"
# Ray Train V2's list of the checkpoints its controller registered, in the run folder.
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"
_CHECKPOINT_FILES = frozenset({STATE_FILE, CONFIG_FILE, METRICS_FILE})
_EPOCH_FOLDER = re.compile(r"^epoch_(\d{4,})$")
EVAL_BATCH_SIZE = 64
# Metrics of coloc_core.step.train_step averaged over the epoch's images (plus acc_<task> per task).
_STEP_METRICS = ("loss", "loss_cls", "loss_caml", "bg_fraction")


@dataclass
class TrainResult:
    """What a training invocation produced.

    Attributes:
        metrics: the last reported epoch's metrics (``epoch`` is 1-based: the number of completed
            epochs); read from the latest checkpoint when this invocation had nothing left to train.
        checkpoint_path: URI of the latest checkpoint folder (``s3://`` kept), None if there is none.
        model_path: URI of the exported model file; None when the run stopped (``run.stop_after_epochs``)
            before ``optim.epochs``.
        history: the metrics of every epoch reported by this invocation (after a worker-failure
            restart: those of the final attempt).
        run_path: URI of the run folder, ``<storage_path>/<name>``.
    """

    metrics: dict[str, Any]
    checkpoint_path: str | None
    model_path: str | None
    history: list[dict[str, Any]] = field(default_factory=list)
    run_path: str = ""


# ------------------------------------------------------------------------------------------ driver


def run_training(cfg: TrainJobConfig) -> TrainResult:
    """Train (or resume) the run ``cfg.run.name`` on Ray Train and export the final model.

    ``method=selftrain`` (the default) fits the self-trained head instead
    (:func:`pipelines.selftrain.run_selftrain`: Ray Data passes, no Ray Train, no checkpoints);
    ``method=caml`` trains the paper's network as described here.

    Needs a running Ray (``ray.init()`` from the job); AWS variables for an ``s3://`` dataset or
    storage must be in the Ray workers' environment (set before ``ray.init`` or in ``runtime_env``).

    Raises:
        ValueError: on an invalid config or an empty training split.
        ray.train.TrainingFailedError: when the workers fail more than ``run.max_failures`` times, or
            on a non-finite loss, gradient or weight (a ``FloatingPointError`` inside).
    """
    cfg = resolve_train_config(cfg)
    _warn_if_relative(cfg.run.storage_path)
    if cfg.method == "selftrain":
        from pipelines.selftrain import run_selftrain  # noqa: PLC0415 - it imports this module

        return run_selftrain(cfg)
    log.info("training config (resolved):\n%s", dump(cfg))
    run = cfg.run

    if run.check_memory:
        check_memory(cfg)  # before minutes of decoding
    with console.progress("decode the images (train, test)", total=None):  # prepare_data sets the total
        data = prepare_data(cfg)
    num_train, num_errors, num_test = data.num_train, data.num_errors, data.num_test
    datasets: dict[str, Any] = {TRAIN_DATASET: data.train}
    if data.test is not None:
        datasets[TEST_DATASET] = data.test

    run_uri = storage.join(storage.absolute_uri(run.storage_path), run.name)
    resume_from = prepare_resume(run_uri)
    storage_fs, storage_path = _ray_storage(run.storage_path)
    resources = {"CPU": run.cpus_per_worker}
    if run.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "cfg": to_dict(cfg),
            # Lets a restart after a worker failure tell its own checkpoints from earlier invocations'.
            "invocation": uuid.uuid4().hex,
            "resume_from": resume_from,
            "num_decode_errors": num_errors,
            "num_test_images": num_test,
            "num_test_decode_errors": data.num_test_errors,
        },
        scaling_config=ScalingConfig(
            num_workers=run.num_workers, use_gpu=run.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=run.name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=FailureConfig(max_failures=run.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=run.checkpoints_to_keep),
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=[TRAIN_DATASET]),
    )
    log.info(
        "training %s: %d images (%d decode errors), %d test images, %d worker(s), run folder %s",
        run.name,
        num_train,
        num_errors,
        num_test,
        run.num_workers,
        run_uri,
    )
    result = trainer.fit()

    history = list(result.return_value or [])
    checkpoint = result.checkpoint
    metrics: dict[str, Any] = dict(history[-1]) if history else {}
    state: dict[str, Any] | None = None
    if checkpoint is not None:
        state = read_checkpoint_state(checkpoint)
        if not metrics:
            metrics = _read_checkpoint_metrics(checkpoint)
    completed = int(state["epoch"]) if state else 0
    checkpoint_uri = _checkpoint_uri(checkpoint, run.storage_path) if checkpoint is not None else None
    if metrics:
        log.info("run %s, epoch %d/%d: %s", run.name, completed, cfg.optim.epochs, format_metrics(metrics))

    model_uri = None
    if state is not None and completed >= cfg.optim.epochs:
        model_uri = run.export or storage.join(run_uri, MODEL_FILE)
        export_model(
            state["model"],
            cfg,
            model_uri,
            meta={
                "epoch": completed,
                "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                "run": run.name,
                "checkpoint": checkpoint_uri or "",
                "dataset": {"root": cfg.dataset.root, "format": cfg.dataset.format},
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        )
        log.info("exported the model of epoch %d to %s", completed, model_uri)
    else:
        log.info(
            "run %s stopped after epoch %d of %d; start it again to continue (no model exported yet)",
            run.name,
            completed,
            cfg.optim.epochs,
        )
    return TrainResult(
        metrics=metrics,
        checkpoint_path=checkpoint_uri,
        model_path=model_uri,
        history=history,
        run_path=run_uri,
    )


def check_memory(cfg: TrainJobConfig) -> memory.MemoryEstimate:
    """Estimate a worker's peak memory and check it against the nodes (:mod:`pipelines.memory`).

    One node (a local cluster, or a cluster of one machine): this machine's memory under Ray's
    memory-monitor threshold, minus what is in use now, for all ``run.num_workers`` workers. More
    nodes: each node that can host a worker (a GPU for ``run.use_gpu``, else a CPU) offers Ray's
    ``memory`` resource, and the workers spread evenly over them.

    Raises:
        pipelines.memory.MemoryBudgetError: when it does not fit (the message names the batch that does).
    """
    run = cfg.run
    estimate = memory.estimate_worker_memory(cfg, run.num_workers, use_gpu=run.use_gpu)
    kind = "GPU" if run.use_gpu else "CPU"
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get(kind, 0) > 0]
    if len(nodes) <= 1:
        budget, on_node = memory.local_node_budget(), run.num_workers
    else:
        budget = min(int(n["Resources"].get("memory", 0)) for n in nodes)
        on_node = memory.workers_per_node(run.num_workers, len(nodes))
    log.info(
        "memory: about %.1f GiB per training worker (%d images per step, %.0f MiB of activations per "
        "image, %s at %d px); %d worker(s) on a node with %.1f GiB to give",
        estimate.peak / memory.GIB,
        estimate.local_batch,
        estimate.saved_per_image / 2**20,
        cfg.model.backbone,
        cfg.augment.crop,
        on_node,
        budget / memory.GIB,
    )
    memory.check_fits(estimate, workers_on_node=on_node, budget=budget, global_batch=cfg.optim.batch_size)
    return estimate


def _read_records(cfg: TrainJobConfig, split: str) -> list[ImageRecord]:
    records = ingest.read_records(cfg.dataset.format, cfg.dataset.root, split)
    return records[: cfg.dataset.limit] if cfg.dataset.limit > 0 else records


@dataclass
class PreparedData:
    """The decoded, materialized datasets of a CAML run and their counts.

    Attributes:
        train: good training rows at ``augment.resize`` (error rows excluded).
        test: good test rows (with boxes) at ``augment.crop``, or None without evaluation.
        num_train: good training images.
        num_errors: training images that could not be used (error rows).
        num_test: test images with boxes (decoded or not).
        num_test_errors: test images that could not be used.
        decoded: images decoded in all (each decode of the same file counts).
    """

    train: Any
    test: Any | None
    num_train: int
    num_errors: int
    num_test: int
    num_test_errors: int
    decoded: int


def prepare_data(cfg: TrainJobConfig) -> PreparedData:
    """List, decode (with progress lines) and materialize the train split and the test split.

    When the test split lists the same images as the training split (``boxes_csv`` and ``folder``
    collections, or ``dataset.test_split`` set to the training split), every image is decoded once:
    one decode makes both the ``augment.resize`` training image and the ``augment.crop`` evaluation
    image (:func:`pipelines.ingest.images_dataset` with ``eval_size``), and the test rows are the
    good training rows (JPEGs are then decoded at the DCT scale that covers the training size, so an
    evaluation image can differ by a grey level from a separate decode). Otherwise each split is
    decoded on its own.

    Raises:
        ValueError: on an empty training split, or fewer good images than workers.
    """
    run = cfg.run
    records = _read_records(cfg, cfg.dataset.train_split)
    if not records:
        raise ValueError(f"no images in split {cfg.dataset.train_split!r} of {cfg.dataset.root}")
    test_records: list[ImageRecord] = []
    if cfg.dataset.test_split:
        test_records = [r for r in _read_records(cfg, cfg.dataset.test_split) if r.boxes]
        if not test_records:
            log.info("split %r has no boxes: no evaluation during training", cfg.dataset.test_split)
    shared = bool(test_records) and [r.path for r in test_records] == [r.path for r in records]
    console.set_total(len(records) + (0 if shared else len(test_records)))  # run_training's progress bar
    decoded = ingest.images_dataset(
        records,
        size=cfg.augment.resize,
        decode_cpus=run.decode_cpus,
        eval_size=cfg.augment.crop if shared else None,
    )
    # Materialized good rows: decoded once, reused every epoch, and no Ray Data task runs while the
    # trainer holds the CPUs. The string columns stay (dropping them would copy every image once more);
    # AugmentCollate reads only ``index`` and ``image``.
    what = "preparing the training images" + (" (also the test split: the same images)" if shared else "")
    materialized = ingest.materialize_with_progress(decoded, len(records), what)
    # The error rows dropped (and, with a shared decode, the evaluation image) in one pass; the
    # errors are listed only when there are some (each was logged by its decode task already).
    train = ingest.drop_errors(
        materialized, run.decode_cpus, drop=[ingest.EVAL_IMAGE] if shared else []
    ).materialize()
    num_good = train.count()
    errors = ingest.error_list(materialized, run.decode_cpus) if num_good < len(records) else []
    log.info("ingest: %d images read, %d usable, %d errors", len(records), num_good, len(errors))
    if num_good < run.num_workers:
        raise ValueError(
            f"only {num_good} decodable training images for {run.num_workers} workers "
            f"({len(errors)} decode errors, e.g. {errors[:1]})"
        )
    num_decoded = len(records)
    if shared:
        # The test rows: a projection of the same decode (an object-store copy, no decode) with the
        # evaluation image as their ``image``.
        test = ingest.drop_errors(
            materialized, run.decode_cpus, drop=[ingest.IMAGE], rename={ingest.EVAL_IMAGE: ingest.IMAGE}
        ).materialize()
        return PreparedData(train, test, num_good, len(errors), len(test_records), len(errors), num_decoded)
    test, num_test_errors = None, 0
    if test_records:
        test_decoded = ingest.images_dataset(test_records, size=cfg.augment.crop, decode_cpus=run.decode_cpus)
        test, test_errors = ingest.split_errors(
            test_decoded, num_cpus=run.decode_cpus, total=len(test_records), what="preparing the test images"
        )
        num_test_errors = len(test_errors)
        num_decoded += len(test_records)
    return PreparedData(train, test, num_good, len(errors), len(test_records), num_test_errors, num_decoded)


def _warn_if_relative(storage_path: str) -> None:
    local = storage.strip_scheme(storage_path)
    if not storage.is_s3(storage_path) and not os.path.isabs(local):
        # A submitted job runs in a temporary copy of its working dir: a relative path would vanish.
        log.warning(
            "run.storage_path=%r is relative: checkpoints go to %s", storage_path, os.path.abspath(local)
        )


def _ray_storage(storage_path: str) -> tuple[Any | None, str]:
    """``(storage_filesystem, storage_path)`` for ``ray.train.RunConfig``.

    S3 goes through an explicit pyarrow filesystem so a custom endpoint (``AWS_ENDPOINT_URL``) is
    honoured by the controller and the workers alike.
    """
    if storage.is_s3(storage_path):
        fs, path = storage.pyarrow_filesystem_for(storage_path)
        return fs, path.rstrip("/")
    return None, storage.absolute_uri(storage_path)


def _checkpoint_uri(checkpoint: Any, storage_path: str) -> str:
    path = str(checkpoint.path)
    return f"s3://{path.lstrip('/')}" if storage.is_s3(storage_path) else path


def prepare_resume(run_uri: str) -> dict[str, Any] | None:
    """Make a run folder that a killed driver left half-written resumable; its newest whole checkpoint.

    Ray Train V2 resumes from the checkpoints its controller registered in ``SNAPSHOT_FILE``. The
    controller dies with its driver, so a SIGKILL of the driver can leave that file cut short (Ray
    then fails at start-up with a JSON error, on every rerun) and a checkpoint folder uploaded in part.
    Before the trainer is created:

    - a snapshot that does not parse, or that names a checkpoint folder that is missing or incomplete,
      is set aside as ``SNAPSHOT_FILE + ".unreadable"`` (a warning says so): Ray starts with an empty
      list, and the checkpoint returned here is resumed from instead;
    - the newest ``epoch_NNNN`` folder holding all three files with a ``state.pt`` that loads and
      names that epoch is returned (folders uploaded in part are passed over, with a warning, and
      overwritten when their epoch is trained again).

    The worker loop resumes from this checkpoint when it is newer than Ray's (``ray.train.get_checkpoint``):
    also the case of a folder uploaded completely just before the kill, before the controller
    registered it. Checkpoints of a set-aside snapshot are no longer counted by
    ``run.checkpoints_to_keep`` (they stay in storage).

    Returns:
        ``{"uri": folder URI, "epoch": completed epochs}``, or None when the run has no whole checkpoint.
    """
    folders: dict[str, set[str]] = {}
    for uri in storage.list_files(run_uri):
        parts = uri[len(run_uri) :].strip("/").split("/")
        if len(parts) == 2 and _EPOCH_FOLDER.match(parts[0]):
            folders.setdefault(parts[0], set()).add(parts[1])
    _set_aside_unreadable_snapshot(run_uri, folders)
    for name in sorted(folders, key=lambda n: int(n.split("_")[1]), reverse=True):
        epoch = int(name.split("_")[1])
        folder = storage.join(run_uri, name)
        problem = _checkpoint_problem(folder, folders[name], epoch)
        if problem is None:
            return {"uri": folder, "epoch": epoch}
        log.warning("checkpoint folder %s is not complete (%s): not resumed from", folder, problem)
    return None


def _checkpoint_problem(folder: str, files: set[str], epoch: int) -> str | None:
    """Why a checkpoint folder cannot be resumed from, or None when it can."""
    missing = sorted(_CHECKPOINT_FILES - files)
    if missing:
        return f"missing {', '.join(missing)}"
    try:
        state = torch.load(
            io.BytesIO(storage.read_bytes(storage.join(folder, STATE_FILE))),
            map_location="cpu",
            weights_only=True,
        )
        json.loads(storage.read_bytes(storage.join(folder, METRICS_FILE)))
    except storage.StorageUnavailableError:
        raise
    except Exception as err:  # noqa: BLE001 - a torn file: any reading error says so
        return f"{STATE_FILE} or {METRICS_FILE} does not read: {type(err).__name__}"
    if not isinstance(state, dict) or state.get("epoch") != epoch or "model" not in state:
        return f"{STATE_FILE} is not the state of epoch {epoch}"
    return None


def _set_aside_unreadable_snapshot(run_uri: str, folders: dict[str, set[str]]) -> None:
    """Rename Ray Train's snapshot away when it does not parse or names a missing or partial folder."""
    uri = storage.join(run_uri, SNAPSHOT_FILE)
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        return
    try:
        names = [r["checkpoint_dir_name"] for r in json.loads(data)["checkpoint_results"]]
        missing = [n for n in names if not _CHECKPOINT_FILES <= folders.get(n, set())]
        problem = f"it names missing or partial checkpoint folders {missing}" if missing else None
    except (ValueError, KeyError, TypeError) as err:  # JSONDecodeError is a ValueError
        problem = f"{type(err).__name__}: {err}"
    if problem is None:
        return
    aside = uri + ".unreadable"
    storage.write_bytes_atomic(aside, data)
    storage.remove(uri)
    log.warning(
        "Ray Train's checkpoint snapshot %s is unreadable (%s), as a driver killed while writing it "
        "leaves it: set aside as %s; resuming from the newest complete checkpoint folder instead",
        uri,
        problem,
        aside,
    )


def open_checkpoint(uri: str) -> Any:
    """A ``ray.train.Checkpoint`` for a checkpoint folder URI (local, ``file://`` or ``s3://``)."""
    if storage.is_s3(uri):
        fs, path = storage.pyarrow_filesystem_for(uri)
        return ray.train.Checkpoint(path=path.rstrip("/"), filesystem=fs)
    return ray.train.Checkpoint(path=os.path.abspath(storage.strip_scheme(uri)))


def read_checkpoint_state(checkpoint: Any) -> dict[str, Any]:
    """The ``state.pt`` dict of a ``ray.train.Checkpoint`` (local or remote), on CPU."""
    with checkpoint.as_directory() as folder:
        return load_state_file(os.path.join(folder, STATE_FILE))


def load_state_file(path: str) -> dict[str, Any]:
    """Read a checkpoint's ``state.pt`` (CPU tensors; ``weights_only`` safe)."""
    with open(path, "rb") as fh:
        state = torch.load(fh, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise ValueError(f"{path} is not a coloc training checkpoint (expected model/optimizer/epoch)")
    return state


def _read_checkpoint_metrics(checkpoint: Any) -> dict[str, Any]:
    with checkpoint.as_directory() as folder:
        path = os.path.join(folder, METRICS_FILE)
        if not os.path.exists(path):
            return {}
        with open(path) as fh:
            return dict(json.load(fh))


def model_from_checkpoint(checkpoint: Any) -> tuple[ColocNet, TrainJobConfig]:
    """Rebuild the trained ColocNet (eval mode, CPU) and its config from a training checkpoint."""
    with checkpoint.as_directory() as folder:
        state = load_state_file(os.path.join(folder, STATE_FILE))
        with open(os.path.join(folder, CONFIG_FILE)) as fh:
            cfg = from_dict(TrainJobConfig, yaml.safe_load(fh))
    model = build_model(cfg, weights=False)
    model.load_state_dict(state["model"])
    model.eval()
    return model, cfg


def export_model(state_dict: dict[str, Tensor], cfg: ColocConfig, uri: str, meta: dict[str, Any]) -> None:
    """Write the one-file model (``coloc_core.checkpoint`` payload) atomically to ``uri``."""
    model = build_model(cfg, weights=False)
    model.load_state_dict(state_dict)
    payload = model_payload(model, cfg, meta=meta)
    with storage.atomic_write(uri, "wb") as fh:
        save_model_file(fh, payload)


def format_metrics(metrics: dict[str, Any]) -> str:
    """``key=value`` pairs, floats to 4 significant digits (for logs)."""
    parts = []
    for key in sorted(metrics):
        value = metrics[key]
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


# ------------------------------------------------------------------------------------------ worker


def train_batch(
    model: nn.Module,
    images: Tensor,
    cfg: ColocConfig,
    optimizer: torch.optim.Optimizer,
    *,
    transform: PretextTransform | None = None,
    generator: torch.Generator | None = None,
    use_gpu: bool = False,
) -> dict[str, float]:
    """One training step on a batch of uint8 images as Ray Data delivers them.

    Normalises on the images' device (the worker's), then ``coloc_core.step.train_step`` (pretext warp,
    network, L_cls + L_caml, SGD step). On GPU: channels_last input and bf16 autocast.

    Shape:
        images: (B, H, W, 3) uint8 on the worker's device.

    Raises:
        FloatingPointError: on a non-finite loss, gradient or weight.
    """
    x = normalize_images(images, unwrap(model).mean, unwrap(model).std)
    if use_gpu:
        x = x.contiguous(memory_format=torch.channels_last)
    return train_step(
        model,
        x,
        cfg,
        optimizer,
        transform=transform,
        generator=generator,
        autocast_dtype=torch.bfloat16 if use_gpu else None,
    )


class AugmentCollate(NumpyBatchCollateFn):
    """``index`` + ``augment.resize``² ``image`` rows → the epoch's random crops, one uint8 tensor.

    Runs :func:`pipelines.ingest.augment_batch` (reflect padding + random crop, seeded by
    ``(seed, epoch, index)``) in Ray Data's prefetch threads of ``iter_torch_batches``; Ray then moves
    the (B, crop, crop, 3) uint8 tensor to the worker's device.
    """

    def __init__(self, seed: int, epoch: int, crop: int, padding: int) -> None:
        super().__init__()
        self.seed, self.epoch, self.crop, self.padding = seed, epoch, crop, padding

    def __call__(self, batch: dict[str, np.ndarray]) -> Tensor:
        """Numpy batch (``index``, ``image``) → (B, crop, crop, 3) uint8 tensor."""
        out = ingest.augment_batch(
            {ingest.INDEX: batch[ingest.INDEX], ingest.IMAGE: batch[ingest.IMAGE]},
            seed=self.seed,
            epoch=self.epoch,
            crop=self.crop,
            padding=self.padding,
        )
        return torch.from_numpy(np.ascontiguousarray(out[ingest.IMAGE]))


def _setup_worker_logging(rank: int) -> None:
    """Rank 0 logs at INFO to stderr (forwarded to the driver / job log); other ranks only warnings.

    The driver's console shows the NOTICE lines (per epoch) and warnings by default, all with --verbose.
    """
    console.worker_logging(logging.INFO if rank == 0 else logging.WARNING)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _all_reduce_sum(values: Tensor) -> Tensor:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def train_loop_per_worker(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The Ray Train worker loop (see the module docstring). Returns the reported metrics (rank 0)."""
    cfg = from_dict(TrainJobConfig, config["cfg"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    _setup_worker_logging(rank)
    device = ray.train.torch.get_device()
    use_gpu = device.type == "cuda"

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank (DDP broadcasts rank 0's anyway)
    state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        state = read_checkpoint_state(checkpoint)
    found = config.get("resume_from")
    if found is not None and (state is None or int(state["epoch"]) < int(found["epoch"])):
        # A checkpoint Ray's controller had not registered (or whose snapshot was set aside) when
        # the previous driver was killed: see prepare_resume.
        checkpoint = open_checkpoint(found["uri"])
        state = read_checkpoint_state(checkpoint)
    # Pretrained weights only matter for a fresh start; a checkpoint overwrites every tensor.
    model = build_model(cfg, weights=state is None)
    if state is not None:
        model.load_state_dict(state["model"])
    if use_gpu:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model = ray.train.torch.prepare_model(model)
    optimizer = make_optimizer(model, cfg.optim)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])

    start = int(state["epoch"]) if state is not None else 0
    if state is not None and state.get("invocation") == config["invocation"]:
        stop_at = int(state["stop_at"])  # a restart after a worker failure: same stopping point
    elif cfg.run.stop_after_epochs > 0:
        stop_at = min(cfg.optim.epochs, start + cfg.run.stop_after_epochs)
    else:
        stop_at = cfg.optim.epochs
    if rank == 0:
        if state is not None:
            console.note(log, "resuming after epoch %d from checkpoint %s", start, checkpoint.path)
        log.info(
            "training epochs %d..%d of %d on %d worker(s), device %s",
            start + 1,
            stop_at,
            cfg.optim.epochs,
            world,
            device,
        )

    local_batch = max(1, cfg.optim.batch_size // world)
    shard = ray.train.get_dataset_shard(TRAIN_DATASET)
    test_shard = ray.train.get_dataset_shard(TEST_DATASET) if config["num_test_images"] else None
    history: list[dict[str, Any]] = []

    for epoch in range(start, stop_at):
        lr = lr_at_epoch(epoch, cfg.optim)
        set_lr(optimizer, lr)
        generator = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch, rank))
        task_keys = [f"acc_{t}" for t in cfg.pretext.tasks]
        keys = [*_STEP_METRICS, *task_keys]
        sums = torch.zeros(len(keys) + 1, dtype=torch.float64)
        started = time.perf_counter()
        batches = shard.iter_torch_batches(
            batch_size=local_batch,
            collate_fn=AugmentCollate(cfg.seed, epoch, cfg.augment.crop, cfg.augment.crop_padding),
            drop_last=False,
        )
        for images in batches:
            step = train_batch(model, images, cfg, optimizer, generator=generator, use_gpu=use_gpu)
            n = images.shape[0]
            sums[:-1] += torch.tensor([step[k] for k in keys], dtype=torch.float64) * n
            sums[-1] += n
        seconds = time.perf_counter() - started
        totals = _all_reduce_sum(sums.to(device)).cpu()
        count = float(totals[-1])
        means = {k: float(totals[i]) / max(count, 1.0) for i, k in enumerate(keys)}
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            **means,
            "pretext_acc": sum(means[k] for k in task_keys) / len(task_keys),
            "lr": lr,
            "images": int(count),
            "images_per_s": count / seconds if seconds > 0 else 0.0,
            "epoch_s": seconds,
            "num_decode_errors": int(config["num_decode_errors"]),
        }
        last = epoch + 1 == cfg.optim.epochs
        every = cfg.run.eval_every
        if test_shard is not None and (last or (every > 0 and (epoch + 1) % every == 0)):
            if rank == 0:
                started = time.perf_counter()
                metrics.update(
                    evaluate(
                        unwrap(model),
                        test_shard.iter_batches(batch_size=EVAL_BATCH_SIZE, batch_format="numpy"),
                        cfg,
                        device=device,
                        num_errors=int(config["num_test_decode_errors"]),
                    )
                )
                metrics["eval_s"] = time.perf_counter() - started
        if rank == 0:
            console.note(log, "epoch %d/%d: %s", epoch + 1, cfg.optim.epochs, format_metrics(metrics))
        with tempfile.TemporaryDirectory() as folder:
            saved = None
            if rank == 0:
                save_checkpoint(
                    folder,
                    model,
                    optimizer,
                    cfg,
                    epoch=epoch + 1,
                    metrics=metrics,
                    extra={"invocation": config["invocation"], "stop_at": stop_at},
                )
                saved = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(metrics, checkpoint=saved, checkpoint_dir_name=f"epoch_{epoch + 1:04d}")
        history.append(metrics)
    return history


def save_checkpoint(
    folder: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: TrainJobConfig,
    *,
    epoch: int,
    metrics: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``state.pt``, ``config.yaml`` and ``metrics.json`` into a local folder.

    Args:
        folder: an existing local folder (it becomes the checkpoint).
        model: the (possibly DDP-wrapped) model; its bare state_dict is saved, on CPU.
        optimizer: its state (momentum buffers) is saved too.
        cfg: the resolved job config, saved as YAML.
        epoch: the number of completed epochs (the next run starts at this 0-based epoch).
        metrics: that epoch's metrics, saved as JSON.
        extra: more entries of ``state.pt`` (the invocation id and its stopping epoch).
    """
    state = {
        "model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "epoch": int(epoch),
        **(extra or {}),
    }
    torch.save(state, os.path.join(folder, STATE_FILE))
    with open(os.path.join(folder, CONFIG_FILE), "w") as fh:
        fh.write(dump(cfg))
    with open(os.path.join(folder, METRICS_FILE), "w") as fh:
        json.dump(metrics, fh, indent=1, sort_keys=True, default=float)


# -------------------------------------------------------------------------------------- evaluation


def evaluate(
    model: nn.Module,
    batches: Iterable[dict[str, np.ndarray]],
    cfg: ColocConfig,
    *,
    device: torch.device | str = "cpu",
    num_errors: int = 0,
) -> dict[str, float]:
    """CorLoc@δ, their mean and MaxBoxAcc(V2) of ``model`` on test batches (SPEC §6), in percent.

    Attention maps become 224×224 score maps (``coloc_core.boxes``), ground-truth boxes are scaled
    from the original image size to 224 with truncation, and the ``coloc_core.metrics`` accumulators
    count the hits.

    Args:
        model: the bare ColocNet (not DDP-wrapped).
        batches: numpy batches with ``image`` (B, S, S, 3) uint8 (the plain resize), ``width`` and
            ``height`` (original size) and ``boxes`` (flattened ground-truth boxes in original pixels).
        cfg: the method config (``cfg.boxes``: τ, the τ grid, the IoU thresholds δ, multi-contour).
        device: where the network runs (bf16 autocast on CUDA).
        num_errors: test images that could not be decoded. They count as misses: CorLoc and MaxBoxAcc
            are over *all* test images.

    Returns:
        ``corloc@δ``, ``corloc_mean``, ``maxboxacc@δ``, ``maxboxaccv2``, ``best_threshold@δ``,
        ``corloc_threshold`` (τ) and ``num_test_images`` (decoded + errors).
    """
    from coloc_core.boxes import SCOREMAP_SIZE, resize_boxes, scoremaps_from_attention
    from coloc_core.metrics import CorLocAccumulator, MaxBoxAccAccumulator

    device = torch.device(device)
    box_cfg = cfg.boxes
    corloc = CorLocAccumulator(box_cfg.iou_thresholds, threshold=box_cfg.threshold)
    maxbox = MaxBoxAccAccumulator(
        box_cfg.iou_thresholds,
        cam_curve_interval=box_cfg.cam_curve_interval,
        multi_contour=box_cfg.multi_contour,
    )
    for batch in batches:
        images = torch.from_numpy(np.ascontiguousarray(batch[ingest.IMAGE])).to(device)
        x = normalize_images(images, model.mean, model.std)  # type: ignore[arg-type]
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            attention = inference_step(model, x)
        scoremaps = scoremaps_from_attention(attention.float().cpu(), SCOREMAP_SIZE)
        widths, heights = batch[ingest.WIDTH], batch[ingest.HEIGHT]
        for i, gt in enumerate(_gt_boxes(batch[ingest.BOXES])):
            gt_224 = resize_boxes(gt, (float(heights[i]), float(widths[i])), SCOREMAP_SIZE)
            corloc.update(scoremaps[i], gt_224)
            maxbox.update(scoremaps[i], gt_224)
    if num_errors:
        # Undecodable images: counted, never hit (merged as an accumulator of misses).
        misses = corloc.state_dict() | {"num_correct": [0] * len(box_cfg.iou_thresholds), "count": num_errors}
        corloc.merge(CorLocAccumulator.from_state_dict(misses))
        state = maxbox.state_dict()
        zeros = [[0] * len(row) for row in state["num_correct"]]
        maxbox.merge(
            MaxBoxAccAccumulator.from_state_dict(state | {"num_correct": zeros, "count": num_errors})
        )
    if corloc.count == 0:
        return {}
    out = {k: v for k, v in corloc.compute().items() if k not in ("threshold", "num_images")}
    out["corloc_threshold"] = corloc.threshold
    out.update({k: v for k, v in maxbox.compute().items() if k != "num_images"})
    out["num_test_images"] = float(corloc.count)
    return out


def _gt_boxes(column: Any) -> Iterator[np.ndarray]:
    """Flattened ``x0, y0, x1, y1, ...`` lists → (G, 4) float arrays."""
    for value in column:
        yield np.asarray(value, dtype=np.float64).reshape(-1, 4)


def _autocast(device: torch.device) -> Any:
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()
