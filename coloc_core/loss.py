"""Contrastive attention map loss (CAML) and the total loss, SPEC §4.

Eq. 3-5 of Ki et al., "Contrastive Attention Maps for Self-supervised Co-localization", ICCV 2021:

    M_bg = 1[(1 - Â) > θ_bg · min(1 - Â)],   A_bg = A ⊙ M_bg                             (Eq. 3)
    L_caml = E_x [ d(T⁻¹(A_trans), A_ori) - d(T⁻¹(A_trans), A_ori ⊙ M_bg(A_ori)) + m ]_+
           + [ d(T(A_ori), A_trans) - d(T(A_ori), A_trans ⊙ M_bg(A_trans)) + m ]_+         (Eq. 4)
    L_total = L_cls + λ · L_caml                                                          (Eq. 5)

d is the Euclidean distance between whole maps (flattened per image), restricted to the pixels that
the warp keeps in view. Â is A after a *map scaling*: the paper does not say how A is scaled, and the
rule degenerates for the obvious choices (with max(Â) = 1 every pixel but the peak is background), so
the scaling is an option; ``peak`` (Â = p · A / max A, p < 1) is the project's choice, see
``docs/RESULTS.md``. The mask carries no gradient. CAML is per-sample: no cross-worker communication
is needed (DDP averages the gradients).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from coloc_core.pretext import PretextTransform

_EPS = 1e-12


def scale_map(maps: Tensor, scaling: str = "peak", peak: float = 0.6) -> Tensor:
    """Â: a per-image rescaling of attention maps before background thresholding.

    Args:
        maps: A, non-negative attention maps.
        scaling: ``raw`` (A itself), ``max`` (A / max A), ``minmax`` ((A - min) / (max - min)),
            ``sigmoid`` (σ(A)) or ``peak`` (peak · A / max A).
        peak: max(Â) for ``peak``; must be below 1 so that min(1 - Â) > 0.

    Shape:
        maps: (B, h, w). Returns (B, h, w).
    """
    flat = maps.flatten(1)
    if scaling == "raw":
        return maps
    if scaling == "sigmoid":
        return torch.sigmoid(maps)
    top = flat.amax(dim=1).view(-1, 1, 1)
    if scaling == "max":
        return maps / top.clamp_min(_EPS)
    if scaling == "peak":
        return peak * maps / top.clamp_min(_EPS)
    if scaling == "minmax":
        low = flat.amin(dim=1).view(-1, 1, 1)
        return (maps - low) / (top - low).clamp_min(_EPS)
    raise ValueError(f"unknown map scaling {scaling!r}")


def background_mask(maps: Tensor, theta_bg: float, scaling: str = "peak", peak: float = 0.6) -> Tensor:
    """M_bg of Eq. 3: 1 where (1 - Â) > θ_bg · min(1 - Â), per image. No gradient.

    Shape:
        maps: (B, h, w). Returns (B, h, w) float in {0, 1}.
    """
    with torch.no_grad():
        reverse = 1.0 - scale_map(maps.detach().float(), scaling, peak)
        floor = reverse.flatten(1).amin(dim=1).view(-1, 1, 1)
        return (reverse > theta_bg * floor).to(maps.dtype)


def _masked_distance(a: Tensor, b: Tensor, valid: Tensor | None) -> Tensor:
    """Euclidean distance between whole maps per sample, over valid pixels. (B, ...) -> (B,)."""
    diff = a - b
    if valid is not None:
        diff = diff * valid.to(diff.dtype)
    # sqrt with an epsilon inside keeps the gradient finite when two maps coincide.
    return torch.sqrt(diff.flatten(1).pow(2).sum(dim=1) + _EPS)


def triplet_terms(
    anchor: Tensor, positive: Tensor, negative: Tensor, valid: Tensor | None, margin: float, pairs: str
) -> Tensor:
    """Per-sample triplet loss on whole maps.

    ``both``: [d(a,p) - d(a,n) + m]_+ ; ``positive``: d(a,p) ; ``negative``: [m - d(a,n)]_+.

    Shape:
        anchor, positive, negative: (B, ...) the same shape; valid: broadcastable bool or None.
        Returns (B,).
    """
    if pairs == "both":
        return F.relu(
            _masked_distance(anchor, positive, valid) - _masked_distance(anchor, negative, valid) + margin
        )
    if pairs == "positive":
        return _masked_distance(anchor, positive, valid)
    if pairs == "negative":
        return F.relu(margin - _masked_distance(anchor, negative, valid))
    raise ValueError(f"unknown pairs option {pairs!r}; expected both, positive or negative")


@dataclass
class CamlOutput:
    """L_caml and what to log about it.

    Attributes:
        loss: scalar, mean over the batch of the summed triplet terms.
        per_sample: (B,) the summed triplet terms.
        bg_fraction: scalar, fraction of pixels M_bg marks as background (A_ori and A_trans).
    """

    loss: Tensor
    per_sample: Tensor
    bg_fraction: Tensor


class ContrastiveAttentionMapLoss(torch.nn.Module):
    """CAML, Eq. 3-4 of Ki et al. (ICCV 2021).

    Args:
        margin: m.
        theta_bg: θ_bg.
        map_scaling, map_peak: how Â is obtained (:func:`scale_map`).
        pairs: ``both`` | ``positive`` | ``negative`` (Table 5 ablations).
    """

    def __init__(
        self,
        margin: float = 1.0,
        theta_bg: float = 2.3,
        map_scaling: str = "peak",
        map_peak: float = 0.6,
        pairs: str = "both",
    ) -> None:
        super().__init__()
        if pairs not in ("both", "positive", "negative"):
            raise ValueError(f"unknown pairs option {pairs!r}")
        scale_map(torch.ones(1, 1, 1), map_scaling, map_peak)  # validate early
        self.margin = margin
        self.theta_bg = theta_bg
        self.map_scaling = map_scaling
        self.map_peak = map_peak
        self.pairs = pairs

    def forward(
        self,
        attn_ori: Tensor,
        attn_trans: Tensor,
        transform: PretextTransform,
        embed_ori: Tensor | None = None,
        embed_trans: Tensor | None = None,
    ) -> CamlOutput:
        """Compute L_caml.

        Args:
            attn_ori: A_ori = PTAP(x).
            attn_trans: A_trans = PTAP(T(x)).
            transform: the pretext transform T that produced T(x).
            embed_ori: optional map of x to contrast instead of A_ori (see embed_trans).
            embed_trans: optional maps to contrast instead of A (Table 4: the attended
                feature maps A ⊙ F_w); the background mask still comes from A.

        Shape:
            attn_ori, attn_trans: (B, h, w); embed_*: (B, C, h, w).
        """
        mask_ori = background_mask(attn_ori, self.theta_bg, self.map_scaling, self.map_peak)
        mask_trans = background_mask(attn_trans, self.theta_bg, self.map_scaling, self.map_peak)
        if embed_ori is None or embed_trans is None:
            emb_ori, emb_trans = attn_ori, attn_trans
            m_ori, m_trans = mask_ori, mask_trans
        else:
            emb_ori, emb_trans = embed_ori, embed_trans
            m_ori, m_trans = mask_ori.unsqueeze(1), mask_trans.unsqueeze(1)

        # Triplet in the transformed frame: (T(A_ori), A_trans, A_trans ⊙ M_bg).
        ori2trans, valid_fwd = transform.maps(emb_ori)
        terms = triplet_terms(ori2trans, emb_trans, emb_trans * m_trans, valid_fwd, self.margin, self.pairs)
        # Triplet in the original frame: (T⁻¹(A_trans), A_ori, A_ori ⊙ M_bg), when T can be undone.
        if transform.invertible:
            trans2ori, valid_inv = transform.inverse_maps(emb_trans)
            terms = terms + triplet_terms(
                trans2ori, emb_ori, emb_ori * m_ori, valid_inv, self.margin, self.pairs
            )
        bg_fraction = 0.5 * (mask_ori.mean() + mask_trans.mean())
        return CamlOutput(loss=terms.mean(), per_sample=terms, bg_fraction=bg_fraction.detach())
