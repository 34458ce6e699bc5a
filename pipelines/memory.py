"""Will CAML training fit in memory? An estimate per worker, checked before the data is prepared.

A CPU training worker's peak resident memory (RSS) is, to a good approximation, linear in its batch:

    peak = WORKER_BASE_BYTES + PARAM_COPIES × parameter bytes + ACTIVATION_FACTOR × saved × local batch

- ``saved`` (:func:`saved_activation_bytes`): the bytes autograd keeps for the backward pass per
  training image, measured by one forward pass of the actual model at ``augment.crop`` on the two views
  ``coloc_core.step.train_step`` feeds per image (the image and its pretext warp). It carries the
  model and the image size: EfficientNet-Lite0 at 224 keeps 204 MiB per image (two views).
- ``ACTIVATION_FACTOR``: what the step holds besides the saved tensors at its peak (the gradients of
  the activations during backward, the forward's temporaries, the allocator's slack), and
  ``WORKER_BASE_BYTES``: the process itself (Python, torch, Ray worker, the batch being prefetched).
  Both are calibrated on the peak RSS measured by ``bench/bench_train_memory.py`` (docs/BENCHMARKS.md),
  which reproduces the issue's observation (a worker at global batch 64 on one CPU worker grew to 13 GB).
- ``PARAM_COPIES``: weights, gradients, SGD momentum and DDP's gradient buckets.

The check (:func:`check_memory`) compares ``workers on the node × peak`` with what the node can give
before Ray's memory monitor kills a worker: ``total × RAY_memory_usage_threshold`` (0.95 by default)
minus what is in use now (other processes, the Ray object store's contents). On a single-node cluster
(the local case) the node is this machine (``psutil``); on a multi-node cluster every node that can host
a worker (GPU nodes when ``run.use_gpu``) counts with Ray's ``memory`` resource, the workers spread
evenly over them. On GPU the activations live in GPU memory: only the base and the parameters count.

When it does not fit, training stops before any data is read (:class:`MemoryBudgetError`, exit 2), with
the largest ``optim.batch_size`` that fits. Not automatic gradient accumulation: it would keep the
global batch for SGD but change BatchNorm's batch statistics (smaller micro-batches), i.e. the method;
lowering the batch is the user's informed choice (``run.check_memory=false`` skips the check).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from coloc_core.config import ColocConfig
from coloc_core.model import build_model

GIB = 1024**3
# Calibrated on bench/bench_train_memory.py (docs/BENCHMARKS.md, "Training memory per worker"): the
# measured peaks of the CAML step at batch 8, 16, 32 lie on 1.21 GiB + 1.01 × saved × batch; the base
# adds ~0.3 GiB for what a Ray worker holds besides the step (core worker, Ray Train, prefetched
# batches; not measured), and the factor 4% of margin, so the estimate errs on the high side.
WORKER_BASE_BYTES = int(1.5 * GIB)
ACTIVATION_FACTOR = 1.05
PARAM_COPIES = 4
DEFAULT_MEMORY_THRESHOLD = 0.95  # Ray's memory monitor default (RAY_memory_usage_threshold)
VIEWS_PER_IMAGE = 2  # train_step runs the network on x and T(x) in one batch


class MemoryBudgetError(ValueError):
    """The training workers would not fit in the node's memory (a configuration error: exit 2)."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of one training worker, and its parts (bytes).

    Attributes:
        local_batch: images per step on one worker (``optim.batch_size // run.num_workers``).
        saved_per_image: bytes autograd keeps for backward per training image (both views).
        param_bytes: the model's parameters (float32).
        peak: the estimated peak RSS of the worker.
    """

    local_batch: int
    saved_per_image: int
    param_bytes: int
    peak: int

    def with_batch(self, local_batch: int) -> MemoryEstimate:
        """The same model and image size at another per-worker batch."""
        return MemoryEstimate(
            local_batch, self.saved_per_image, self.param_bytes, _peak(self, local_batch, use_gpu=False)
        )


def _peak(parts: MemoryEstimate, local_batch: int, *, use_gpu: bool) -> int:
    activations = 0 if use_gpu else ACTIVATION_FACTOR * parts.saved_per_image * local_batch
    return int(WORKER_BASE_BYTES + PARAM_COPIES * parts.param_bytes + activations)


def saved_activation_bytes(cfg: ColocConfig, model: torch.nn.Module | None = None) -> int:
    """Bytes autograd saves for backward per training image, at ``augment.crop`` (float32, CPU).

    One forward pass of ``cfg``'s model (``model``, or one built without pretrained weights: the
    shapes are what counts) on the two views of one image, in training mode, with
    ``torch.autograd.graph.saved_tensors_hooks`` adding up the distinct storages it keeps, parameters
    excluded. Takes a fraction of a second.
    """
    if model is None:
        model = build_model(cfg, weights=False)
    model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    crop = cfg.augment.crop
    x = torch.zeros(VIEWS_PER_IMAGE, 3, crop, crop)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    del out
    return int(sum(saved.values()))


def estimate_worker_memory(
    cfg: ColocConfig, num_workers: int, *, use_gpu: bool = False, saved_per_image: int | None = None
) -> MemoryEstimate:
    """The peak memory of one training worker of ``cfg`` (module docstring).

    Args:
        cfg: the method config (model, ``augment.crop``, ``optim.batch_size``).
        num_workers: workers sharing the global batch.
        use_gpu: activations in GPU memory (not counted against the node's RAM).
        saved_per_image: :func:`saved_activation_bytes`, when already measured.
    """
    local_batch = max(1, cfg.optim.batch_size // num_workers)
    model = build_model(cfg, weights=False)
    if saved_per_image is None:
        saved_per_image = saved_activation_bytes(cfg, model)
    param_bytes = 4 * sum(p.numel() for p in model.parameters())
    parts = MemoryEstimate(local_batch, saved_per_image, param_bytes, 0)
    return MemoryEstimate(
        local_batch, saved_per_image, param_bytes, _peak(parts, local_batch, use_gpu=use_gpu)
    )


def memory_threshold() -> float:
    """Ray's memory-monitor threshold (fraction of a node's memory), ``RAY_memory_usage_threshold``."""
    try:
        value = float(os.environ.get("RAY_memory_usage_threshold", DEFAULT_MEMORY_THRESHOLD))
    except ValueError:
        return DEFAULT_MEMORY_THRESHOLD
    return value if 0.0 < value <= 1.0 else DEFAULT_MEMORY_THRESHOLD


def _meminfo() -> tuple[int, int]:
    """(total, available) bytes of this machine: ``/proc/meminfo``, else ``os.sysconf``."""
    try:
        with open("/proc/meminfo") as fh:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh if line.strip()}
        return fields["MemTotal"], fields.get("MemAvailable", fields.get("MemFree", 0))
    except (OSError, KeyError, ValueError, IndexError):
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page


def local_node_budget(threshold: float | None = None) -> int:
    """Bytes this machine can still give before Ray's memory monitor acts: total × threshold − in use."""
    total, available = _meminfo()
    limit = total * (memory_threshold() if threshold is None else threshold)
    return max(0, int(limit - (total - available)))


def check_fits(estimate: MemoryEstimate, *, workers_on_node: int, budget: int, global_batch: int) -> None:
    """Raise :class:`MemoryBudgetError` when ``workers_on_node`` workers of ``estimate`` exceed ``budget``.

    The message gives the estimate, the budget and the largest ``optim.batch_size`` (a multiple of the
    worker count) that fits, or says that even a batch of 1 per worker does not.
    """
    need = workers_on_node * estimate.peak
    if need <= budget:
        return
    num_workers = max(1, global_batch // estimate.local_batch)
    fits = 0
    for local in range(estimate.local_batch - 1, 0, -1):
        if workers_on_node * estimate.with_batch(local).peak <= budget:
            fits = local
            break
    advice = (
        f"lower --optim.batch_size to {fits * num_workers} or less"
        if fits
        else "even a batch of 1 per worker does not fit: lower --augment.crop or use a smaller "
        "--model.backbone"
    )
    raise MemoryBudgetError(
        f"training would need about {need / GIB:.1f} GiB on one node ({workers_on_node} worker(s) × "
        f"{estimate.peak / GIB:.1f} GiB at {estimate.local_batch} images per worker, "
        f"{estimate.saved_per_image / 2**20:.0f} MiB of activations per image) but the node has "
        f"{budget / GIB:.1f} GiB before Ray's memory monitor kills a worker: {advice} "
        "(or run.check_memory=false to skip this estimate)"
    )


def workers_per_node(num_workers: int, num_nodes: int) -> int:
    """Workers on the busiest node when ``num_workers`` spread evenly over ``num_nodes``."""
    return math.ceil(num_workers / max(1, num_nodes))
