"""The CAML training driver on Ray Train: data preparation, TorchTrainer wiring, resume, export.

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

Worker: :mod:`pipelines.train_worker` (the per-epoch loop, evaluation, the checkpoint folder). The
driver hands it one typed :class:`pipelines.train_worker.LoopConfig` through ``train_loop_config``.

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
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import ray
import torch
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from torch import Tensor

from coloc_core.checkpoint import model_payload, save_model_file
from coloc_core.config import ColocConfig
from coloc_core.datasets import ImageRecord
from coloc_core.errors import InvalidInputError
from coloc_core.model import build_model
from pipelines import console, ingest, memory, storage
from pipelines.config import TrainJobConfig, crop_bottom_of, dump, resolve_train_config
from pipelines.train_worker import (
    CHECKPOINT_FILES,
    METRICS_FILE,
    STATE_FILE,
    TEST_DATASET,
    TRAIN_DATASET,
    LoopConfig,
    ResumePoint,
    format_metrics,
    read_checkpoint_metrics,
    read_checkpoint_state,
    train_loop_per_worker,
)

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
# Ray Train V2's list of the checkpoints its controller registered, in the run folder.
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"
_EPOCH_FOLDER = re.compile(r"^epoch_(\d{4,})$")


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
        # Ray Train V2 hands the loop's return value back as ``Result.return_value``; the static types
        # are V1's, whose loop returns None.
        train_loop_per_worker,  # type: ignore[arg-type]
        train_loop_config=LoopConfig(
            cfg=cfg,
            # Lets a restart after a worker failure tell its own checkpoints from earlier invocations'.
            invocation=uuid.uuid4().hex,
            resume_from=resume_from,
            num_decode_errors=num_errors,
            num_test_images=num_test,
            num_test_decode_errors=data.num_test_errors,
        ).to_train_loop_config(),
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

    history = list(result.return_value or [])  # type: ignore[attr-defined]  # V2's Result, see above
    checkpoint = result.checkpoint
    metrics: dict[str, Any] = dict(history[-1]) if history else {}
    state: dict[str, Any] | None = None
    if checkpoint is not None:
        state = read_checkpoint_state(checkpoint)
        if not metrics:
            metrics = read_checkpoint_metrics(checkpoint)
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
            typical_of=lambda payload: _typical_box(payload, cfg, run_uri),
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


def read_split_records(cfg: TrainJobConfig, split: str) -> list[ImageRecord]:
    """The records of one split of the run's data set, cut to ``cfg.dataset.limit`` when it is set."""
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
    records = read_split_records(cfg, cfg.dataset.train_split)
    if not records:
        raise InvalidInputError(f"no images in split {cfg.dataset.train_split!r} of {cfg.dataset.root}")
    test_records: list[ImageRecord] = []
    if cfg.dataset.test_split:
        test_records = [r for r in read_split_records(cfg, cfg.dataset.test_split) if r.boxes]
        if not test_records:
            log.info("split %r has no boxes: no evaluation during training", cfg.dataset.test_split)
    shared = bool(test_records) and [r.path for r in test_records] == [r.path for r in records]
    console.set_total(len(records) + (0 if shared else len(test_records)))  # run_training's progress bar
    crop_bottom = crop_bottom_of(cfg.dataset.crop_bottom, cfg.dataset.format)
    decoded = ingest.images_dataset(
        records,
        size=cfg.augment.resize,
        decode_cpus=run.decode_cpus,
        eval_size=cfg.augment.crop if shared else None,
        crop_bottom=crop_bottom,
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
        raise InvalidInputError(
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
        test_decoded = ingest.images_dataset(
            test_records, size=cfg.augment.crop, decode_cpus=run.decode_cpus, crop_bottom=crop_bottom
        )
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


def prepare_resume(run_uri: str) -> ResumePoint | None:
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
        The folder URI and its completed epochs, or None when the run has no whole checkpoint.
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
            return ResumePoint(uri=folder, epoch=epoch)
        log.warning("checkpoint folder %s is not complete (%s): not resumed from", folder, problem)
    return None


def _checkpoint_problem(folder: str, files: set[str], epoch: int) -> str | None:
    """Why a checkpoint folder cannot be resumed from, or None when it can."""
    missing = sorted(CHECKPOINT_FILES - files)
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
        missing = [n for n in names if not CHECKPOINT_FILES <= folders.get(n, set())]
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


def _typical_box(
    payload: dict[str, Any], cfg: TrainJobConfig, run_uri: str
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The trained model's typical box on the train images (``pipelines.label_fit.typical_box``).

    The pass the fitted labelers run after their fit, with the run folder as scratch space, so a CAML
    model's scores take the size and content terms as theirs do: (``box_sizes``, ``box_contents``).
    """
    from pipelines.label_fit import typical_box, typical_box_images  # noqa: PLC0415
    from pipelines.label_inputs import list_inputs  # noqa: PLC0415
    from pipelines.selftrain import selftrain_label_config  # noqa: PLC0415 - it imports this module

    label_cfg = selftrain_label_config(cfg, run_uri)
    inputs = list_inputs(label_cfg)
    images = typical_box_images(inputs.num_rows)
    with console.progress(f"typical box ({images} train images)", total=images):
        return typical_box(payload, inputs, label_cfg)


def export_model(
    state_dict: dict[str, Tensor],
    cfg: ColocConfig,
    uri: str,
    meta: dict[str, Any],
    typical_of: Callable[[dict[str, Any]], tuple[dict[str, Any] | None, dict[str, Any] | None]] | None = None,
) -> None:
    """Write the one-file model (``coloc_core.checkpoint`` payload) atomically to ``uri``.

    ``typical_of(payload)``: the model's typical box, size and content (``box_sizes`` and
    ``box_contents``, two terms of its box scores), each None where unknown.
    """
    model = build_model(cfg, weights=False)
    model.load_state_dict(state_dict)
    payload = model_payload(model, cfg, meta=meta)
    if typical_of is not None:
        payload["box_sizes"], payload["box_contents"] = typical_of(payload)
    with storage.atomic_write(uri, "wb") as fh:
        save_model_file(fh, payload)
