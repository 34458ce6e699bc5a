"""One training step and one inference step: device-agnostic and free of Ray.

The Ray layer (``pipelines/train.py``, ``pipelines/label.py``) calls these on whatever device a worker
has; a CPU unit test calls the very same functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coloc_core.config import ColocConfig, OptimConfig
from coloc_core.loss import ContrastiveAttentionMapLoss
from coloc_core.model import ColocOutput
from coloc_core.pretext import PretextTransform


def build_caml(cfg: ColocConfig) -> ContrastiveAttentionMapLoss:
    """CAML configured from ``cfg.loss``."""
    lc = cfg.loss
    return ContrastiveAttentionMapLoss(
        margin=lc.margin,
        theta_bg=lc.theta_bg,
        map_scaling=lc.map_scaling,
        map_peak=lc.map_peak,
        pairs=lc.pairs,
    )


def compute_loss(
    model: nn.Module,
    images: Tensor,
    cfg: ColocConfig,
    transform: PretextTransform | None = None,
    generator: torch.Generator | None = None,
    caml: ContrastiveAttentionMapLoss | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """L_total = L_cls + λ·L_caml for one batch (Eq. 5), plus what to log.

    The original and the transformed images go through the network as one batch of 2B.

    Args:
        model: a :class:`coloc_core.model.ColocNet` (possibly DDP-wrapped).
        images: normalised inputs x.
        cfg: the method config.
        transform: the pretext transform; drawn with ``generator`` when omitted.
        generator: RNG for the pretext labels.
        caml: a prebuilt CAML module (built from ``cfg`` when omitted).

    Shape:
        images: (B, 3, H, W) float.

    Returns:
        The scalar loss and detached metrics: ``loss``, ``loss_cls``, ``loss_caml``, ``bg_fraction``
        and ``acc_<task>`` (pretext accuracy on T(x)).
    """
    if transform is None:
        transform = PretextTransform.sample(
            cfg.pretext.tasks, images.shape[0], generator=generator, device=images.device
        )
    return loss_from_views(model, images, transform.images(images), transform, cfg, caml=caml)


def loss_from_views(
    model: nn.Module,
    inputs: Tensor,
    transformed: Tensor,
    transform: PretextTransform,
    cfg: ColocConfig,
    caml: ContrastiveAttentionMapLoss | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The loss of :func:`compute_loss` given both views already computed.

    ``transformed`` must be the network input of T(x) (the warped image, or, for a model whose
    backbone starts later, the cached features of the warped image).

    Shape:
        inputs, transformed: (B, ...) network inputs of the same shape.
    """
    batch = inputs.shape[0]
    tasks = cfg.pretext.tasks
    out: ColocOutput = model(torch.cat([inputs, transformed], dim=0))
    attn = out.attention.float()
    attn_ori, attn_trans = attn[:batch], attn[batch:]

    zero = attn.new_zeros(())
    loss_cls = zero
    metrics: dict[str, Tensor] = {}
    for task in tasks:
        logits = out.logits[task][batch:].float()
        labels = transform.labels[task].to(logits.device)
        loss_cls = loss_cls + F.cross_entropy(logits, labels)
        metrics[f"acc_{task}"] = (logits.argmax(dim=1) == labels).float().mean().detach()

    caml = caml if caml is not None else build_caml(cfg)
    if cfg.loss.caml_on == "features":
        attended = out.attention.unsqueeze(1) * out.weighted
        caml_out = caml(
            attn_ori,
            attn_trans,
            transform,
            embed_ori=attended[:batch].float(),
            embed_trans=attended[batch:].float(),
        )
    else:
        caml_out = caml(attn_ori, attn_trans, transform)

    total = zero
    if cfg.loss.use_cls:
        total = total + loss_cls
    else:
        # Keep the heads in the graph with zero weight so DDP sees a gradient for every parameter.
        total = total + 0.0 * sum(v.sum() for v in out.logits.values())
    if cfg.loss.use_caml:
        total = total + cfg.loss.caml_weight * caml_out.loss
    else:
        total = total + 0.0 * attn.sum()
    metrics.update(
        loss=total.detach(),
        loss_cls=loss_cls.detach(),
        loss_caml=caml_out.loss.detach(),
        bg_fraction=caml_out.bg_fraction,
    )
    return total, metrics


def train_step(
    model: nn.Module,
    images: Tensor,
    cfg: ColocConfig,
    optimizer: torch.optim.Optimizer,
    transform: PretextTransform | None = None,
    generator: torch.Generator | None = None,
    autocast_dtype: torch.dtype | None = None,
    caml: ContrastiveAttentionMapLoss | None = None,
) -> dict[str, float]:
    """One SGD step on one batch.

    Args:
        model: the network (possibly DDP-wrapped).
        images: normalised inputs x, (B, 3, H, W).
        cfg: the method config.
        optimizer: the optimizer to step.
        transform: the pretext transform (drawn with ``generator`` when omitted).
        generator: RNG for the pretext labels.
        caml: a prebuilt CAML module.
        autocast_dtype: e.g. ``torch.bfloat16`` on GPU; ``None`` runs in full precision.

    Raises:
        FloatingPointError: when the loss, a gradient or (after the update) a weight is not finite:
            training must stop (SPEC §5). A non-finite gradient is caught before the update, so the
            weights stay the last finite ones.

    Returns:
        The metrics of :func:`compute_loss` as floats.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    ctx = (
        torch.autocast(device_type=images.device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else nullcontext()
    )
    with ctx:
        loss, metrics = compute_loss(model, images, cfg, transform=transform, generator=generator, caml=caml)
    value = float(loss.detach())
    if not math.isfinite(value):
        details = ", ".join(f"{k}={float(v):.4g}" for k, v in metrics.items())
        raise FloatingPointError(f"non-finite loss {value} ({details}); stopping training")
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    _check_finite(model, "gradient", [p.grad for p in params if p.grad is not None], f"loss {value:.4g}")
    optimizer.step()
    lrs = sorted({float(group["lr"]) for group in optimizer.param_groups})
    _check_finite(model, "weight", params, f"after the update, lr {', '.join(f'{lr:.4g}' for lr in lrs)}")
    return {k: float(v) for k, v in metrics.items()}


def _total_norm(tensors: Sequence[Tensor]) -> Tensor:
    """The 2-norm of all ``tensors`` together, as a 0-d tensor: NaN or inf anywhere make it non-finite.

    One fused reduction per device and dtype where torch has it (``get_total_norm``, torch >= 2.6).
    (Not the inf-norm: the fused CUDA max does not promise to propagate NaN; a sum of squares does.)
    """
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)
    if get_total_norm is not None:
        return get_total_norm(tensors, norm_type=2.0)  # type: ignore[no-any-return]
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def _check_finite(model: nn.Module, what: str, tensors: Sequence[Tensor], context: str) -> None:
    """Raise ``FloatingPointError`` when a value of ``tensors`` (gradients or weights) is NaN or inf.

    The common case costs one fused norm and one host sync. Only when the norm is not finite are the
    tensors checked one by one: to name the first bad parameter, and because huge but finite values
    (beyond ~1e19) overflow the norm without being an error.
    """
    detached = [t.detach() for t in tensors]
    if not detached or math.isfinite(float(_total_norm(detached))):
        return
    ids = {id(t) for t in tensors}
    for name, param in model.named_parameters():
        tensor = param.grad if what == "gradient" else param
        if tensor is not None and id(tensor) in ids and not bool(torch.isfinite(tensor).all()):
            raise FloatingPointError(f"non-finite {what} in {name} ({context}); stopping training")
    if not all(bool(torch.isfinite(t).all()) for t in detached):  # a tensor the model does not name
        raise FloatingPointError(f"non-finite {what} ({context}); stopping training")


@torch.inference_mode()
def inference_step(model: nn.Module, images: Tensor) -> Tensor:
    """Attention maps A_ori of a batch, in eval mode.

    Shape:
        images: (B, 3, H, W) normalised float. Returns (B, h, w) float32.
    """
    model.eval()
    out: ColocOutput = model(images)
    return out.attention.float()


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.SGD:
    """SGD per SPEC §5 (lr 1e-3, momentum 0.9, no weight decay by default)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_at_epoch(epoch: int, cfg: OptimConfig) -> float:
    """Step schedule as a pure function of the (0-based) epoch: lr · γ^(milestones passed)."""
    passed = sum(1 for milestone in cfg.lr_milestones if epoch >= milestone)
    return cfg.lr * cfg.lr_gamma**passed


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
