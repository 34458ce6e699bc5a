"""The CAML training worker: what each Ray Train worker runs, and the checkpoint folder it writes.

The driver (:mod:`pipelines.train`) hands every worker one :class:`LoopConfig` (typed, picklable)
through ``train_loop_config``; :func:`train_loop_per_worker` builds a :class:`TrainWorker` from it and
runs it. Each epoch (:meth:`TrainWorker.train_epoch`):

- the shard's 256×256 uint8 rows go through the SPEC §5 random crop (reflect padding) of
  :func:`pipelines.ingest.augment_batch`, seeded by ``(seed, epoch, index)``, inside the
  ``iter_torch_batches`` collate function: it runs in Ray Data's prefetch threads, so it overlaps the
  training step, and a new epoch gets new crops while a resumed run repeats exactly the crops an
  uninterrupted run would have seen;
- :func:`train_batch` normalises on the worker's device and calls ``coloc_core.step.train_step``
  (pretext warps + network + L_cls + L_caml; bf16 autocast and channels_last on GPU only); the CAML
  module is built once per worker;
- metrics are averaged over all workers' images (``all_reduce``), rank 0 evaluates on the test split
  every ``run.eval_every`` epochs and at the last epoch (:func:`evaluate`: CorLoc, MaxBoxAccV2:
  reported, never used to pick a checkpoint), and every worker calls ``ray.train.report`` with rank
  0's checkpoint (:meth:`TrainWorker.save`).

Evaluation on rank 0 keeps the other workers waiting in ``ray.train.report`` (a Ray barrier without
a timeout, not a torch collective), so a long evaluation cannot trip the process-group timeout.

Checkpoint folder (one per epoch, ``epoch_0001`` …, the last ``run.checkpoints_to_keep`` kept;
:func:`save_checkpoint` writes it, :func:`load_checkpoint` reads it back)::

    state.pt       {"model": state_dict, "optimizer": state_dict, "epoch": completed epochs,
                    "invocation": id, "stop_at": epoch}   (torch.load(weights_only=True) safe)
    config.yaml    the resolved TrainJobConfig
    metrics.json   that epoch's metrics

A worker starts from Ray's latest checkpoint (``ray.train.get_checkpoint()``), or from
``LoopConfig.resume_from`` when that one is newer (see :func:`pipelines.train.prepare_resume`). The
``invocation`` id in ``state.pt`` tells a restart after a worker failure (same invocation: keep its
stopping epoch ``stop_at``) from a new invocation (``run.stop_after_epochs`` counts again).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import ray.train
import ray.train.torch
import torch
import yaml
from ray.data.collate_fn import NumpyBatchCollateFn
from torch import Tensor, nn

from coloc_core.checkpoint import unwrap
from coloc_core.config import ColocConfig, from_dict
from coloc_core.loss import ContrastiveAttentionMapLoss
from coloc_core.model import ColocNet, build_model, normalize_images
from coloc_core.pretext import PretextTransform
from coloc_core.step import build_caml, lr_at_epoch, make_optimizer, set_lr, train_step
from pipelines import console, ingest, storage
from pipelines.config import TrainJobConfig, dump

log = logging.getLogger("pipelines.train")  # the worker's lines read as the training stage's

TRAIN_DATASET = "train"
TEST_DATASET = "test"
STATE_FILE = "state.pt"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
CHECKPOINT_FILES = frozenset({STATE_FILE, CONFIG_FILE, METRICS_FILE})
EVAL_BATCH_SIZE = 64
# Metrics of coloc_core.step.train_step averaged over the epoch's images (plus acc_<task> per task).
_STEP_METRICS = ("loss", "loss_cls", "loss_caml", "bg_fraction")
# The one key of ``train_loop_config`` (Ray Train wants a dict there): the LoopConfig.
LOOP_CONFIG_KEY = "loop"


# ------------------------------------------------------------------------------------- loop config


@dataclass(frozen=True)
class ResumePoint:
    """A whole checkpoint folder found in storage by the driver (:func:`pipelines.train.prepare_resume`).

    Attributes:
        uri: the checkpoint folder's URI (local, ``file://`` or ``s3://``).
        epoch: its completed epochs.
    """

    uri: str
    epoch: int


@dataclass(frozen=True)
class LoopConfig:
    """What the driver tells every training worker (picklable; sent inside ``train_loop_config``).

    Attributes:
        cfg: the resolved job config.
        invocation: an id of this ``run_training`` call; stored in each checkpoint, so a restart after
            a worker failure tells its own checkpoints from earlier invocations'.
        resume_from: the newest whole checkpoint folder in storage, or None.
        num_decode_errors: training images that could not be decoded (reported in the metrics).
        num_test_images: test images with boxes (0: no evaluation, no test dataset).
        num_test_decode_errors: test images that could not be decoded (they count as misses).
    """

    cfg: TrainJobConfig
    invocation: str
    resume_from: ResumePoint | None = None
    num_decode_errors: int = 0
    num_test_images: int = 0
    num_test_decode_errors: int = 0

    def to_train_loop_config(self) -> dict[str, Any]:
        """The ``train_loop_config`` dict of ``TorchTrainer`` that carries this object."""
        return {LOOP_CONFIG_KEY: self}

    @classmethod
    def from_train_loop_config(cls, config: dict[str, Any]) -> LoopConfig:
        """The LoopConfig inside a ``train_loop_config`` dict (inverse of :meth:`to_train_loop_config`).

        Raises:
            TypeError: when ``config`` does not carry one.
        """
        loop = config.get(LOOP_CONFIG_KEY)
        if not isinstance(loop, cls):
            raise TypeError(
                f"train_loop_config[{LOOP_CONFIG_KEY!r}] is {type(loop).__name__}, not {cls.__name__}"
            )
        return loop


def stopping_epoch(cfg: TrainJobConfig, start: int, state: dict[str, Any] | None, invocation: str) -> int:
    """The epoch (exclusive, 0-based) at which this invocation stops, having completed ``start`` epochs.

    A restart after a worker failure (``state`` written by the same ``invocation``) keeps the
    invocation's stopping point; otherwise ``run.stop_after_epochs`` counts from ``start`` (0: run to
    ``optim.epochs``).
    """
    if state is not None and state.get("invocation") == invocation:
        return int(state["stop_at"])
    if cfg.run.stop_after_epochs > 0:
        return min(cfg.optim.epochs, start + cfg.run.stop_after_epochs)
    return cfg.optim.epochs


def evaluates_after(cfg: TrainJobConfig, epoch: int) -> bool:
    """Whether the model is evaluated after the 0-based ``epoch``: every ``run.eval_every``, and the last."""
    every = cfg.run.eval_every
    return epoch + 1 == cfg.optim.epochs or (every > 0 and (epoch + 1) % every == 0)


# ------------------------------------------------------------------------------------------ worker


def train_loop_per_worker(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The Ray Train worker loop (see the module docstring). Returns the reported metrics (rank 0)."""
    return TrainWorker(LoopConfig.from_train_loop_config(config)).run()


class TrainWorker:
    """One Ray Train worker's model, optimizer, loss and data shards, restored from a checkpoint if any.

    Must be built inside a Ray Train worker (it reads ``ray.train``'s context, checkpoint and shards).
    """

    def __init__(self, loop: LoopConfig) -> None:
        cfg = self.cfg = loop.cfg
        self.loop = loop
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        _setup_worker_logging(self.rank)
        self.device = ray.train.torch.get_device()
        self.use_gpu = self.device.type == "cuda"

        torch.manual_seed(
            cfg.seed
        )  # identical initial weights on every rank (DDP broadcasts rank 0's anyway)
        checkpoint, state = self._latest_checkpoint()
        # Pretrained weights only matter for a fresh start; a checkpoint overwrites every tensor.
        model = build_model(cfg, weights=state is None)
        if state is not None:
            model.load_state_dict(state["model"])
        if self.use_gpu:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model = ray.train.torch.prepare_model(model)
        self.optimizer = make_optimizer(self.model, cfg.optim)
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.caml: ContrastiveAttentionMapLoss = build_caml(cfg)  # once per worker, not per step

        self.start = int(state["epoch"]) if state is not None else 0
        self.stop_at = stopping_epoch(cfg, self.start, state, loop.invocation)
        if self.rank == 0:
            if state is not None:
                console.note(log, "resuming after epoch %d from checkpoint %s", self.start, checkpoint.path)
            log.info(
                "training epochs %d..%d of %d on %d worker(s), device %s",
                self.start + 1,
                self.stop_at,
                cfg.optim.epochs,
                self.world,
                self.device,
            )
        self.local_batch = max(1, cfg.optim.batch_size // self.world)
        self.shard = ray.train.get_dataset_shard(TRAIN_DATASET)
        self.test_shard = ray.train.get_dataset_shard(TEST_DATASET) if loop.num_test_images else None

    def _latest_checkpoint(self) -> tuple[Any, dict[str, Any] | None]:
        """Ray's checkpoint, or the driver's ``resume_from`` when newer; with its ``state.pt``."""
        state = None
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            state = read_checkpoint_state(checkpoint)
        found = self.loop.resume_from
        if found is not None and (state is None or int(state["epoch"]) < found.epoch):
            # A checkpoint Ray's controller had not registered (or whose snapshot was set aside) when
            # the previous driver was killed: see pipelines.train.prepare_resume.
            checkpoint = open_checkpoint(found.uri)
            state = read_checkpoint_state(checkpoint)
        return checkpoint, state

    def run(self) -> list[dict[str, Any]]:
        """Train epochs ``start..stop_at``, evaluating and reporting each; the reported metrics."""
        history: list[dict[str, Any]] = []
        for epoch in range(self.start, self.stop_at):
            metrics = self.train_epoch(epoch)
            if self.test_shard is not None and evaluates_after(self.cfg, epoch) and self.rank == 0:
                started = time.perf_counter()
                metrics.update(self.evaluate())
                metrics["eval_s"] = time.perf_counter() - started
            if self.rank == 0:
                console.note(
                    log, "epoch %d/%d: %s", epoch + 1, self.cfg.optim.epochs, format_metrics(metrics)
                )
            with tempfile.TemporaryDirectory() as folder:
                saved = None
                if self.rank == 0:
                    self.save(folder, epoch=epoch + 1, metrics=metrics)
                    saved = ray.train.Checkpoint.from_directory(folder)
                ray.train.report(metrics, checkpoint=saved, checkpoint_dir_name=f"epoch_{epoch + 1:04d}")
            history.append(metrics)
        return history

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over this worker's shard; the metrics averaged over all workers' images."""
        cfg = self.cfg
        lr = lr_at_epoch(epoch, cfg.optim)
        set_lr(self.optimizer, lr)
        generator = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch, self.rank))
        task_keys = [f"acc_{t}" for t in cfg.pretext.tasks]
        keys = [*_STEP_METRICS, *task_keys]
        sums = torch.zeros(len(keys) + 1, dtype=torch.float64)
        started = time.perf_counter()
        batches = self.shard.iter_torch_batches(
            batch_size=self.local_batch,
            collate_fn=AugmentCollate(cfg.seed, epoch, cfg.augment.crop, cfg.augment.crop_padding),
            drop_last=False,
        )
        for images in batches:
            step = train_batch(
                self.model,
                images,
                cfg,
                self.optimizer,
                generator=generator,
                use_gpu=self.use_gpu,
                caml=self.caml,
            )
            n = images.shape[0]
            sums[:-1] += torch.tensor([step[k] for k in keys], dtype=torch.float64) * n
            sums[-1] += n
        seconds = time.perf_counter() - started
        totals = _all_reduce_sum(sums.to(self.device)).cpu()
        count = float(totals[-1])
        means = {k: float(totals[i]) / max(count, 1.0) for i, k in enumerate(keys)}
        return {
            "epoch": epoch + 1,
            **means,
            "pretext_acc": sum(means[k] for k in task_keys) / len(task_keys),
            "lr": lr,
            "images": int(count),
            "images_per_s": count / seconds if seconds > 0 else 0.0,
            "epoch_s": seconds,
            "num_decode_errors": int(self.loop.num_decode_errors),
        }

    def evaluate(self) -> dict[str, float]:
        """The current model's metrics on the whole test split (:func:`evaluate`; rank 0 only)."""
        assert self.test_shard is not None
        return evaluate(
            unwrap(self.model),
            self.test_shard.iter_batches(batch_size=EVAL_BATCH_SIZE, batch_format="numpy"),
            self.cfg,
            device=self.device,
            num_errors=int(self.loop.num_test_decode_errors),
        )

    def save(self, folder: str, *, epoch: int, metrics: dict[str, Any]) -> None:
        """Write this worker's checkpoint of ``epoch`` completed epochs into a local folder."""
        save_checkpoint(
            folder,
            self.model,
            self.optimizer,
            self.cfg,
            epoch=epoch,
            metrics=metrics,
            extra={"invocation": self.loop.invocation, "stop_at": self.stop_at},
        )


def train_batch(
    model: nn.Module,
    images: Tensor,
    cfg: ColocConfig,
    optimizer: torch.optim.Optimizer,
    *,
    transform: PretextTransform | None = None,
    generator: torch.Generator | None = None,
    use_gpu: bool = False,
    caml: ContrastiveAttentionMapLoss | None = None,
) -> dict[str, float]:
    """One training step on a batch of uint8 images as Ray Data delivers them.

    Normalises on the images' device (the worker's), then ``coloc_core.step.train_step`` (pretext warp,
    network, L_cls + L_caml, SGD step). On GPU: channels_last input and bf16 autocast. ``caml``: the
    worker's CAML module (built from ``cfg`` when omitted).

    Shape:
        images: (B, H, W, 3) uint8 on the worker's device.

    Raises:
        FloatingPointError: on a non-finite loss, gradient or weight.
    """
    net = cast(ColocNet, unwrap(model))
    x = normalize_images(images, net.mean, net.std)
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
        caml=caml,
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

    # Ray types the collated result as an unbound TypeVar; ours is one tensor.
    def __call__(self, batch: dict[str, np.ndarray]) -> Tensor:  # type: ignore[override]
        """Numpy batch (``index``, ``image``) → (B, crop, crop, 3) uint8 tensor."""
        out = ingest.augment_batch(
            {ingest.INDEX: batch[ingest.INDEX], ingest.IMAGE: batch[ingest.IMAGE]},
            seed=self.seed,
            epoch=self.epoch,
            crop=self.crop,
            padding=self.padding,
        )
        return torch.from_numpy(np.ascontiguousarray(out[ingest.IMAGE]))


def format_metrics(metrics: dict[str, Any]) -> str:
    """``key=value`` pairs, floats to 4 significant digits (for logs)."""
    parts = []
    for key in sorted(metrics):
        value = metrics[key]
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


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


# -------------------------------------------------------------------------------------- checkpoints


@dataclass
class SavedCheckpoint:
    """A checkpoint folder read back (:func:`load_checkpoint`).

    Attributes:
        state: ``state.pt``: ``model`` and ``optimizer`` state_dicts (CPU tensors), ``epoch`` and the
            ``extra`` entries it was saved with.
        cfg: ``config.yaml``, the resolved job config.
        metrics: ``metrics.json``, that epoch's metrics.
    """

    state: dict[str, Any]
    cfg: TrainJobConfig
    metrics: dict[str, Any]


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


def load_checkpoint(folder: str) -> SavedCheckpoint:
    """Read back what :func:`save_checkpoint` wrote into a local folder.

    Raises:
        ValueError: when ``state.pt`` is not a training checkpoint's.
    """
    state = load_state_file(os.path.join(folder, STATE_FILE))
    with open(os.path.join(folder, CONFIG_FILE)) as fh:
        cfg = from_dict(TrainJobConfig, yaml.safe_load(fh))
    with open(os.path.join(folder, METRICS_FILE)) as fh:
        metrics = dict(json.load(fh))
    return SavedCheckpoint(state=state, cfg=cfg, metrics=metrics)


def load_state_file(path: str) -> dict[str, Any]:
    """Read a checkpoint's ``state.pt`` (CPU tensors; ``weights_only`` safe)."""
    with open(path, "rb") as fh:
        state = torch.load(fh, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise ValueError(f"{path} is not a coloc training checkpoint (expected model/optimizer/epoch)")
    return state


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


def read_checkpoint_metrics(checkpoint: Any) -> dict[str, Any]:
    """The ``metrics.json`` of a ``ray.train.Checkpoint``; empty when it has none."""
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
        device: unused, kept for callers: the network runs where its parameters are (bf16 autocast
            and channels_last on CUDA, ``coloc_core.predict.attention_maps``).
        num_errors: test images that could not be decoded. They count as misses: CorLoc and MaxBoxAcc
            are over *all* test images.

    Returns:
        ``corloc@δ``, ``corloc_mean``, ``maxboxacc@δ``, ``maxboxaccv2``, ``best_threshold@δ``,
        ``corloc_threshold`` (τ) and ``num_test_images`` (decoded + errors).
    """
    from coloc_core.boxes import SCOREMAP_SIZE, resize_boxes, scoremaps_from_attention
    from coloc_core.localizer import ColocNetLocalizer
    from coloc_core.metrics import LocalizationAccumulator
    from coloc_core.predict import attention_maps

    box_cfg = cfg.boxes
    acc = LocalizationAccumulator(
        box_cfg.iou_thresholds,
        box_cfg.threshold,
        cam_curve_interval=box_cfg.cam_curve_interval,
        multi_contour=box_cfg.multi_contour,
    )
    localizer = ColocNetLocalizer(model).eval()  # type: ignore[arg-type]
    for batch in batches:
        # The one inference path (the labeling actors' and the Python API's): normalise, channels_last
        # and bf16 autocast on CUDA, inference mode; the model stays on ``device``.
        attention = attention_maps(localizer, batch[ingest.IMAGE])
        scoremaps = scoremaps_from_attention(torch.from_numpy(attention), SCOREMAP_SIZE)
        widths, heights = batch[ingest.WIDTH], batch[ingest.HEIGHT]
        for i, gt in enumerate(_gt_boxes(batch[ingest.BOXES])):
            acc.update(scoremaps[i], resize_boxes(gt, (float(heights[i]), float(widths[i])), SCOREMAP_SIZE))
    acc.add_misses(num_errors)  # undecodable test images: counted, never hit
    if acc.count == 0:
        return {}
    out = acc.compute()
    out["corloc_threshold"] = acc.threshold
    out["num_test_images"] = float(acc.count)
    return out


def _gt_boxes(column: Any) -> Iterator[np.ndarray]:
    """Flattened ``x0, y0, x1, y1, ...`` lists → (G, 4) float arrays."""
    for value in column:
        yield np.asarray(value, dtype=np.float64).reshape(-1, 4)
