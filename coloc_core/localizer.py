"""What the labeling actors run: one interface over the trained model and the training-free baselines.

A :class:`Localizer` maps a batch of normalised images to one attention map per image at feature
resolution; everything after that (score map, box at τ, score) is shared by every kind, so a
baseline and a trained ColocNet are labelled, stored and evaluated the same way.

Kinds (``payload["kind"]``; a model file without ``"kind"`` is a trained ColocNet):

- ``colocnet``: the trained network of Ki et al. (ICCV 2021); the map is its PTAP attention A.
- ``caam``: class-agnostic activation map, the channel mean of the pretrained backbone's last feature
  map F (PsyNet, Baek et al., AAAI 2020): A = mean_c F[c].
- ``ddt``: Deep Descriptor Transforming (Wei et al., IJCAI 2017): the first principal component of the
  collection's pixel descriptors, A = ReLU((F - mean) · v); fitted from streamed moments with
  :func:`feature_statistics` + :func:`ddt_from_moments`.
- ``rps``: the representer-point map of Song et al. (ICCV 2023): with v the collection mean of the
  spatially averaged features and u the mean of the L2-normalised pixel features,
  w = normalize(v − u·‖v‖/‖u‖) and A = ReLU(⟨normalize(F_ij), w⟩); :func:`rps_from_statistics`.
- ``selftrain``: a head learned on the collection from its own DDT map (self-training, in the
  spirit of PSOL, Zhang et al., CVPR 2020): pixels whose DDT projection is clearly positive are
  foreground, clearly negative background, and Fisher's linear discriminant between the two (with
  shrinkage) gives the head; the head's own map relabels the pixels for the next round, and the last
  round fits a quadratic discriminant (each class its own covariance). A = √ReLU(Fᵀ Q F + w · F + b),
  the signed square root of the two classes' log-likelihood ratio (older files: the linear A = ReLU(w
  · F + b)). Every round is one streamed pass (:func:`class_statistics`,
  :func:`lda_from_class_statistics`, :func:`qda_from_class_statistics`, driven by
  :func:`fit_selftrain`), so it fits into Ray like DDT's moments do.

The training-free kinds read the backbone at a named layer (``Backbone.features_at``: ``output`` or,
for EfficientNet-Lite0, ``pre_head``, the last MBConv block) and keep the backbone's ``dilate``
choice; both are stored in the payload's config.
- ``full``: the whole-image box. Its map is all ones except one corner cell at zero: SPEC §6 turns an
  exactly constant map into zeros (the empty box [0, 0, 0, 0]), while this map keeps the corner at
  zero and everything else at one after min-max scaling, so the single largest contour spans the
  whole image at any τ up to about 0.8.

The baselines are stored in the same model-file format as :mod:`coloc_core.checkpoint` (``format``,
``config``, ``state_dict``, ``model_id``, ``threshold``, ``meta``) plus ``kind``; the backbone weights
are embedded so the file alone reproduces the maps and ``model_id`` names exactly those weights.

This module also holds the per-image math of the labeling stage that :mod:`coloc_core.boxes` does not
cover: :func:`box_score` (the confidence of a box; the stored map is :mod:`coloc_core.heatmap`'s).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from coloc_core.backbones import IMAGENET_MEAN, IMAGENET_STD, Backbone, build_backbone
from coloc_core.checkpoint import FORMAT, model_from_payload, model_id
from coloc_core.config import BoxConfig
from coloc_core.model import ColocNet

KINDS = ("colocnet", "caam", "ddt", "rps", "selftrain", "full")
#: τ stored with a fitted or training-free payload when none is given, per kind. DDT and RPS: raccoon's
#: best for the default layer and input size (docs/RESULTS.md, issue 10 section); kangaroo's own best
#: is higher (0.2 for DDT, 0.3 for RPS). Self-trained (quadratic) head: raccoon's best, 0.25; it ties
#: 0.2 on kangaroo and beats it on the generated birds (whose best is 0.3). Calibrate (``coloc
#: calibrate``) where a few boxes exist. The DDT, RPS and head maps are the positive part of a
#: projection (or of a log-likelihood ratio's root), so their useful τ is lower than a CAM's.
DEFAULT_THRESHOLDS = {"ddt": 0.1, "rps": 0.2, "selftrain": 0.25, "caam": 0.2, "full": 0.2}

#: Side of the square input of model files that do not store one (SPEC §5's evaluation resize): CAML
#: models without an ``augment.crop``, and files of the other kinds written before ``input_size``.
BASELINE_INPUT_SIZE = 224

#: Default input side of each fitted or training-free kind when it labels (:func:`baseline_payload`):
#: the fitted kinds read 480×480 images (30×30 maps at stride 16). Measured with the head on raccoon
#: at 320 / 416 / 480 / 544 (the smallest side within 0.5 MaxBoxAccV2 of the best), confirmed on
#: kangaroo and the generated birds; DDT and RPS gain at 480 too (docs/RESULTS.md, "Input size").
DEFAULT_INPUT_SIZES = {"ddt": 480, "rps": 480, "selftrain": 480, "caam": 224, "full": 224}

#: Default side of the images the fitted kinds' collection statistics are gathered at (the fit passes).
#: Smaller than the labeling side on purpose: at 416 the first principal component of kangaroo's maps
#: is a border factor, and a head fitted at 320 labels better at 480 than one fitted at 480
#: (docs/RESULTS.md, "Input size"). Each fit pass also costs less than at the labeling side.
DEFAULT_FIT_SIZE = 320


class Localizer(nn.Module):
    """Base class: normalised images → attention maps at feature resolution.

    Attributes:
        kind: one of :data:`KINDS`.
        model_id: the payload's id (set by :func:`localizer_from_payload`, ``""`` otherwise).
        threshold: τ stored with the payload (``BoxConfig().threshold`` otherwise).
    """

    kind: str = ""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self._mean = tuple(float(v) for v in mean)
        self._std = tuple(float(v) for v in std)
        self.model_id = ""
        self.threshold = BoxConfig().threshold

    @property
    def mean(self) -> tuple[float, ...]:
        """Input normalisation mean (RGB, images scaled to [0, 1])."""
        return self._mean

    @property
    def std(self) -> tuple[float, ...]:
        """Input normalisation std."""
        return self._std

    def forward(self, images: Tensor) -> Tensor:
        """Attention maps.

        Shape:
            images: (B, 3, H, W) float, normalised with :attr:`mean`/:attr:`std`.
            Returns (B, h, w) float32 (any range; scaling happens downstream).
        """
        raise NotImplementedError


class ColocNetLocalizer(Localizer):
    """A trained ColocNet: its PTAP attention map A (Eq. 2 of Ki et al., ICCV 2021)."""

    kind = "colocnet"

    def __init__(self, net: ColocNet) -> None:
        super().__init__(net.mean, net.std)
        self.net = net

    def forward(self, images: Tensor) -> Tensor:  # noqa: D102
        return self.net(images).attention.float()  # type: ignore[no-any-return]


class CAAMLocalizer(Localizer):
    """Class-agnostic activation map: the channel mean of the backbone's last feature map (PsyNet)."""

    kind = "caam"

    def __init__(self, backbone: Backbone, layer: str = "output") -> None:
        super().__init__(backbone.mean, backbone.std)
        self.backbone = backbone
        self.channels = backbone.feature_channels(layer)  # checks the layer
        self.layer = layer

    def features(self, images: Tensor) -> Tensor:
        """The backbone feature map F at :attr:`layer`, (B, C, h, w) float32."""
        return self.backbone.features_at(images, self.layer).float()

    def forward(self, images: Tensor) -> Tensor:  # noqa: D102
        return self.from_features(self.features(images))

    def from_features(self, feats: Tensor) -> Tensor:
        """The map from an already computed feature map F at :attr:`layer`: (B, C, h, w) → (B, h, w)."""
        return feats.mean(dim=1)


class DDTLocalizer(CAAMLocalizer):
    """Deep Descriptor Transforming: A = ReLU((F - mean) · v), v the first principal direction.

    Args:
        backbone: the pretrained feature extractor.
        mean: (C,) mean descriptor of the collection.
        vector: (C,) unit first principal direction (sign: see :func:`ddt_from_moments`).
        layer: the backbone layer F is read at.
    """

    kind = "ddt"
    ddt_mean: Tensor
    ddt_vector: Tensor

    def __init__(self, backbone: Backbone, mean: Tensor, vector: Tensor, layer: str = "output") -> None:
        super().__init__(backbone, layer)
        channels = self.channels
        if mean.shape != (channels,) or vector.shape != (channels,):
            raise ValueError(
                f"DDT mean/vector must be ({channels},), got {tuple(mean.shape)} and {tuple(vector.shape)}"
            )
        self.register_buffer("ddt_mean", mean.detach().float().clone())
        self.register_buffer("ddt_vector", vector.detach().float().clone())

    def from_features(self, feats: Tensor) -> Tensor:  # noqa: D102
        centred = feats - self.ddt_mean[None, :, None, None]
        return torch.relu(torch.einsum("bchw,c->bhw", centred, self.ddt_vector))


class RPSLocalizer(CAAMLocalizer):
    """Representer-point map (Song et al., ICCV 2023): A = ReLU(⟨normalize(F_ij), w⟩).

    Args:
        backbone: the pretrained feature extractor.
        vector: (C,) unit direction w from :func:`rps_from_statistics`.
        layer: the backbone layer F is read at.
    """

    kind = "rps"
    rps_vector: Tensor

    def __init__(self, backbone: Backbone, vector: Tensor, layer: str = "output") -> None:
        super().__init__(backbone, layer)
        if vector.shape != (self.channels,):
            raise ValueError(f"RPS vector must be ({self.channels},), got {tuple(vector.shape)}")
        self.register_buffer("rps_vector", vector.detach().float().clone())

    def from_features(self, feats: Tensor) -> Tensor:  # noqa: D102
        unit = torch.nn.functional.normalize(feats, dim=1)
        return torch.relu(torch.einsum("bchw,c->bhw", unit, self.rps_vector))


class SelfTrainLocalizer(CAAMLocalizer):
    """The self-trained head (see :func:`fit_selftrain`).

    Linear: A = ReLU(w · F_ij + b). Quadratic (``quadratic`` given, the default fit): the
    log-likelihood ratio s = F_ijᵀ Q F_ij + w · F_ij + b of two Gaussian classes, mapped through its
    signed square root, A = √ReLU(s) (:func:`qda_from_class_statistics`).

    Args:
        backbone: the pretrained feature extractor.
        weight: (C,) linear term (for a linear head: the unit discriminant direction).
        bias: its offset (a scalar; > 0 where the head calls a pixel foreground).
        layer: the backbone layer F is read at.
        quadratic: (C, C) symmetric quadratic term, or None for a linear head.
    """

    kind = "selftrain"
    head_weight: Tensor
    head_bias: Tensor
    head_quadratic: Tensor | None

    def __init__(
        self,
        backbone: Backbone,
        weight: Tensor,
        bias: Tensor | float,
        layer: str = "output",
        quadratic: Tensor | None = None,
    ) -> None:
        super().__init__(backbone, layer)
        if weight.shape != (self.channels,):
            raise ValueError(
                f"self-trained head weight must be ({self.channels},), got {tuple(weight.shape)}"
            )
        if quadratic is not None and quadratic.shape != (self.channels, self.channels):
            raise ValueError(
                f"self-trained head quadratic term must be ({self.channels}, {self.channels}), "
                f"got {tuple(quadratic.shape)}"
            )
        self.register_buffer("head_weight", weight.detach().float().clone())
        self.register_buffer("head_bias", torch.as_tensor(bias, dtype=torch.float32).reshape(()).clone())
        if quadratic is None:
            self.head_quadratic = None
        else:
            self.register_buffer("head_quadratic", quadratic.detach().float().clone())

    def from_features(self, feats: Tensor) -> Tensor:  # noqa: D102
        linear = torch.einsum("bchw,c->bhw", feats, self.head_weight) + self.head_bias
        if self.head_quadratic is None:
            return torch.relu(linear)
        pixels = feats.permute(0, 2, 3, 1)
        quadratic = ((pixels @ self.head_quadratic) * pixels).sum(dim=-1)
        return torch.sqrt(torch.relu(quadratic + linear))


class FullImageLocalizer(Localizer):
    """The whole-image baseline: ones everywhere but one zero corner cell (see the module docstring).

    Args:
        map_size: (h, w) of the map it returns, at least 2x2.
    """

    kind = "full"
    template: Tensor

    def __init__(self, map_size: tuple[int, int] = (7, 7)) -> None:
        super().__init__(IMAGENET_MEAN, IMAGENET_STD)
        h, w = int(map_size[0]), int(map_size[1])
        if h < 2 or w < 2:
            raise ValueError(f"map_size must be at least 2x2, got {map_size}")
        template = torch.ones(h, w)
        template[0, 0] = 0.0
        self.register_buffer("template", template)

    def forward(self, images: Tensor) -> Tensor:  # noqa: D102
        return self.template.to(device=images.device).expand(images.shape[0], -1, -1).clone()


# --------------------------------------------------------------------------------------------- DDT fit


def feature_moments(features: Tensor) -> tuple[Tensor, Tensor, int]:
    """First and second moments of the pixel descriptors of a batch, to be summed across batches.

    Shape:
        features: (B, C, h, w). Returns sum_x (C,), sum_xxT (C, C), both float64, and the count B*h*w.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be (B, C, h, w), got {tuple(features.shape)}")
    x = features.detach().permute(0, 2, 3, 1).reshape(-1, features.shape[1]).double()
    return x.sum(dim=0), x.T @ x, int(x.shape[0])


#: Keys of :func:`feature_statistics`: sums over the pixels (or images) of a batch, to be added up.
STATISTICS = (
    "sum_x",
    "sum_xxT",
    "count",
    "sum_xn",
    "sum_n",
    "sum_unit",
    "sum_gap",
    "images",
    "sum_x_border",
    "border_count",
)


def feature_statistics(features: Tensor) -> dict[str, Tensor]:
    """Every streamed statistic the training-free fits need, for one batch (add them across batches).

    With x the (C,) pixel descriptors and n = ‖x‖: ``sum_x`` Σx, ``sum_xxT`` ΣxxT (DDT),
    ``sum_xn`` Σx·n and ``sum_n`` Σn (DDT's sign), ``sum_unit`` Σx/‖x‖ (RPS's u), ``count`` the number
    of pixels; ``sum_gap`` the sum over images of the spatially averaged feature (RPS's v) and
    ``images`` their number; ``sum_x_border`` Σx over the pixels of the map's outer ring and
    ``border_count`` their number (DDT's choice of component, :func:`ddt_from_moments`). All float64
    (counts int64 tensors).

    Shape:
        features: (B, C, h, w).
    """
    sx, sxx, count = feature_moments(features)
    x = features.detach().permute(0, 2, 3, 1).reshape(-1, features.shape[1]).double()
    norms = x.norm(dim=1)
    unit = x / norms.clamp_min(1e-12)[:, None]
    ring = torch.ones(features.shape[2], features.shape[3], dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    border = features.detach().permute(0, 2, 3, 1)[:, ring].reshape(-1, features.shape[1]).double()
    return {
        "sum_x": sx,
        "sum_xxT": sxx,
        "count": torch.tensor(count, dtype=torch.int64),
        "sum_xn": (x * norms[:, None]).sum(dim=0),
        "sum_n": norms.sum(),
        "sum_unit": unit.sum(dim=0),
        "sum_gap": features.detach().double().mean(dim=(2, 3)).sum(dim=0),
        "images": torch.tensor(features.shape[0], dtype=torch.int64),
        "sum_x_border": border.sum(dim=0),
        "border_count": torch.tensor(int(border.shape[0]), dtype=torch.int64),
    }


def rps_from_statistics(sum_gap: Tensor, images: int, sum_unit: Tensor, count: int) -> Tensor:
    """The representer-point direction w = normalize(v − u·‖v‖/‖u‖) (Song et al., ICCV 2023).

    v = ``sum_gap / images`` (mean of the spatially averaged features), u = ``sum_unit / count`` (mean
    of the L2-normalised pixel features); see :func:`feature_statistics`.

    Raises:
        ValueError: no images, non-finite sums, or a degenerate direction (v parallel to u).
    """
    if images < 1 or count < 1:
        raise ValueError(f"RPS needs at least one image, got {images} images / {count} descriptors")
    v, u = sum_gap.double() / images, sum_unit.double() / count
    if not (torch.isfinite(v).all() and torch.isfinite(u).all()) or float(u.norm()) == 0.0:
        raise ValueError("RPS statistics are not finite (or every feature is zero)")
    w = v - u * v.norm() / u.norm()
    if float(w.norm()) <= 1e-12 * max(float(v.norm()), 1e-12):
        raise ValueError("RPS direction is degenerate: every pixel feature points the same way")
    return (w / w.norm()).float()


#: Self-training defaults, chosen on raccoon and confirmed on kangaroo (docs/RESULTS.md, issue 10):
#: rounds of the discriminant, its shrinkage (share of the mean eigenvalue added to the diagonal) and
#: the band: pixels within ``band`` standard deviations of the previous map's zero are left out.
SELFTRAIN_ROUNDS = 3
SELFTRAIN_SHRINKAGE = 1.0
SELFTRAIN_BAND = 0.5
#: Keys of :func:`class_statistics` (per-class sums, to be added up across batches).
CLASS_STATISTICS = ("fg_x", "fg_xxT", "fg_count", "bg_x", "bg_xxT", "bg_count")


def class_statistics(features: Tensor, weight: Tensor, bias: float, level: float) -> dict[str, Tensor]:
    """Per-class moments of a batch's pixels under the linear map s = w · x + b.

    Foreground: s > ``level``; background: s < −``level``; the band in between is left out. Sums are
    float64 (counts int64) and add up across batches.

    Shape:
        features: (B, C, h, w); weight: (C,).
    """
    x = features.detach().permute(0, 2, 3, 1).reshape(-1, features.shape[1]).double()
    s = x @ weight.double() + float(bias)
    out: dict[str, Tensor] = {}
    for name, mask in (("fg", s > level), ("bg", s < -level)):
        part = x[mask]
        out[f"{name}_x"] = part.sum(dim=0)
        out[f"{name}_xxT"] = part.T @ part
        out[f"{name}_count"] = torch.tensor(int(part.shape[0]), dtype=torch.int64)
    return out


def linear_score_std(weight: Tensor, sum_x: Tensor, sum_xxT: Tensor, count: int) -> float:
    """Standard deviation over the collection's pixels of s = w · x (+ any constant), from moments."""
    mean = sum_x.double() / count
    cov = sum_xxT.double() / count - torch.outer(mean, mean)
    w = weight.double()
    return float(torch.sqrt((w @ cov @ w).clamp_min(0.0)))


def _class_moments(stats: dict[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
    """[(μ_fg, Σ_fg), (μ_bg, Σ_bg)] (float64, Σ symmetrised) from summed :func:`class_statistics`.

    Raises:
        ValueError: fewer than two pixels in a class.
    """
    fg, bg = int(stats["fg_count"]), int(stats["bg_count"])
    if fg < 2 or bg < 2:
        raise ValueError(
            f"self-training needs foreground and background pixels, got {fg} and {bg}: "
            "the collection's maps have no contrast"
        )
    moments = []
    for name, n in (("fg", fg), ("bg", bg)):
        mean = stats[f"{name}_x"].double() / n
        cov = stats[f"{name}_xxT"].double() / n - torch.outer(mean, mean)
        moments.append((mean, 0.5 * (cov + cov.T)))
    return moments


def lda_from_class_statistics(
    stats: dict[str, Tensor], shrinkage: float = SELFTRAIN_SHRINKAGE
) -> tuple[Tensor, float]:
    """Fisher's linear discriminant between the foreground and background pixels of :func:`class_statistics`.

    S = ½(Σ_fg + Σ_bg) + shrinkage · tr(S)/C · I; w = S⁻¹(μ_fg − μ_bg); b = −w · (μ_fg + μ_bg)/2, both
    scaled so that ‖w‖ = 1 (the map's scale does not matter downstream).

    Returns:
        (weight (C,) float32, bias).

    Raises:
        ValueError: fewer than two pixels in a class, or non-finite sums.
    """
    (mf, cf), (mb, cb) = _class_moments(stats)
    scatter = 0.5 * (cf + cb)
    channels = scatter.shape[0]
    scatter = scatter + float(shrinkage) * float(torch.trace(scatter)) / channels * torch.eye(
        channels, dtype=scatter.dtype
    )
    if not torch.isfinite(scatter).all() or not torch.isfinite(mf - mb).all():
        raise ValueError("self-training statistics are not finite")
    w = torch.linalg.solve(scatter, mf - mb)
    norm = float(w.norm())
    if not norm > 0.0:
        raise ValueError("self-training: the two classes have the same mean feature")
    bias = -0.5 * float(w @ (mf + mb)) / norm
    return (w / norm).float(), bias


def qda_from_class_statistics(
    stats: dict[str, Tensor], shrinkage: float = SELFTRAIN_SHRINKAGE
) -> tuple[Tensor, Tensor, float]:
    """Quadratic discriminant between the foreground and background pixels of :func:`class_statistics`.

    Each class is a Gaussian N(μ_k, Σ_k + t·I), both shrunk towards the same isotropic target
    t = shrinkage · (tr Σ_fg + tr Σ_bg) / 2C (the target of :func:`lda_from_class_statistics`; one
    shared target keeps the log-determinants comparable). With P_k = (Σ_k + t·I)⁻¹ the log-likelihood
    ratio log p_fg(x) − log p_bg(x) is xᵀQx + w·x + b with Q = ½(P_bg − P_fg), w = P_fg μ_fg −
    P_bg μ_bg, b = ½(μ_bgᵀP_bg μ_bg − μ_fgᵀP_fg μ_fg + log det P_fg − log det P_bg).

    Returns:
        (Q (C, C), w (C,), b), float32 tensors and a float.

    Raises:
        ValueError: fewer than two pixels in a class, or non-finite sums.
    """
    moments = _class_moments(stats)
    channels = moments[0][0].shape[0]
    spread = float(torch.trace(moments[0][1]) + torch.trace(moments[1][1]))
    target = float(shrinkage) * 0.5 * spread / channels
    if not all(torch.isfinite(m).all() and torch.isfinite(c).all() for m, c in moments) or not target > 0:
        raise ValueError("self-training statistics are not finite (or shrinkage is not positive)")
    parts = []
    for mean, cov in moments:
        precision = torch.linalg.inv(cov + target * torch.eye(channels, dtype=cov.dtype))
        precision = 0.5 * (precision + precision.T)
        parts.append((mean, precision, float(torch.linalg.slogdet(precision)[1])))
    (mf, pf, ldf), (mb, pb, ldb) = parts
    quadratic = 0.5 * (pb - pf)
    weight = pf @ mf - pb @ mb
    bias = 0.5 * (float(mb @ pb @ mb) - float(mf @ pf @ mf) + ldf - ldb)
    return quadratic.float(), weight.float(), bias


def fit_selftrain(
    statistics: dict[str, Tensor],
    class_pass: Any,
    rounds: int = SELFTRAIN_ROUNDS,
    shrinkage: float = SELFTRAIN_SHRINKAGE,
    band: float = SELFTRAIN_BAND,
    quadratic: bool = True,
) -> tuple[Tensor, float, Tensor | None, list[dict[str, int]]]:
    """Self-train the head: the DDT map labels the pixels, then each head relabels them.

    Every round is one ``class_pass``. The rounds before the last fit Fisher's linear discriminant;
    the last one fits the quadratic discriminant (:func:`qda_from_class_statistics`) when
    ``quadratic`` (the default), else a linear one too. A quadratic last round lets each class keep
    its own spread (the background of a collection varies far more than its object does); measured in
    docs/RESULTS.md (issue 10).

    Args:
        statistics: summed :func:`feature_statistics` of the collection (the DDT fit's pass).
        class_pass: ``class_pass(weight, bias, level)`` → summed :func:`class_statistics` of the same
            collection (one streamed pass; a plain loop in tests, Ray Data in the labeling stage).
        rounds: discriminants fitted in turn (each on the previous map's labels), at least 1.
        shrinkage: see :func:`lda_from_class_statistics` and :func:`qda_from_class_statistics`.
        band: pixels with |s| ≤ band · std(s) are left out of a round.
        quadratic: fit the last round's head as a quadratic discriminant.

    Returns:
        (weight (C,), bias, quadratic term (C, C) or None, one ``{"round", "foreground",
        "background"}`` pixel count per round): the arguments of :class:`SelfTrainLocalizer`.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    count = int(statistics["count"])
    mean, vector = ddt_from_statistics(statistics)
    weight, bias = vector, -float(mean.double() @ vector.double())
    history: list[dict[str, int]] = []
    square: Tensor | None = None
    for r in range(rounds):
        level = band * linear_score_std(weight, statistics["sum_x"], statistics["sum_xxT"], count)
        stats = class_pass(weight, bias, level)
        if quadratic and r == rounds - 1:
            square, weight, bias = qda_from_class_statistics(stats, shrinkage)
        else:
            weight, bias = lda_from_class_statistics(stats, shrinkage)
        history.append(
            {"round": r + 1, "foreground": int(stats["fg_count"]), "background": int(stats["bg_count"])}
        )
    return weight, bias, square, history


def ddt_from_moments(
    sum_x: Tensor,
    sum_xxT: Tensor,
    count: int,
    sum_xn: Tensor | None = None,
    sum_n: Tensor | float | None = None,
    sum_x_border: Tensor | None = None,
    border_count: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Mean descriptor and principal direction from streamed moments (DDT, Wei et al. 2017).

    cov = sum_xxT / n - mean meanᵀ; the direction is the eigenvector of the largest eigenvalue. Its
    sign is chosen so that the projection correlates positively with the descriptor norm ‖x‖ (the
    object is where features are strong) when ``sum_xn``/``sum_n`` are given: Cov(proj, ‖x‖) =
    v · (E[x‖x‖] − E[x] E[‖x‖]) > 0, which works for signed features (an earlier layer) as well as
    post-ReLU ones; without them, ``vector.sum() > 0`` (post-ReLU features only).

    With ``sum_x_border``/``border_count`` (the descriptors of the maps' outer ring), the direction is
    the one of the :data:`DDT_CANDIDATES` largest components (each signed as above) whose projection
    is highest inside the maps relative to their border, in units of its own standard deviation:
    v · (E[x | interior] − E[x | border]) / √λ. The first component is usually that one; where it
    is not (a factor of the photos' framing, e.g. padding at the border, that varies more than the
    object: measured on kangaroo at 416×416, docs/RESULTS.md), this weak centre prior keeps the
    object's component.

    Shape:
        sum_x: (C,); sum_xxT: (C, C); sum_xn: (C,); sum_x_border: (C,). Returns mean (C,) and unit
        vector (C,), float32.

    Raises:
        ValueError: when ``count < 2``, the shapes disagree, or the moments are not finite.
    """
    if count < 2:
        raise ValueError(f"DDT needs at least 2 descriptors, got {count}")
    channels = sum_x.shape[0]
    if sum_x.ndim != 1 or sum_xxT.shape != (channels, channels):
        raise ValueError(f"moment shapes disagree: {tuple(sum_x.shape)} and {tuple(sum_xxT.shape)}")
    sx, sxx = sum_x.double(), sum_xxT.double()
    if not (torch.isfinite(sx).all() and torch.isfinite(sxx).all()):
        raise ValueError("DDT moments are not finite")
    mean = sx / count
    cov = sxx / count - torch.outer(mean, mean)
    cov = 0.5 * (cov + cov.T)
    values, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues
    cov_norm = None
    if sum_xn is not None and sum_n is not None:
        cov_norm = sum_xn.double() / count - mean * (float(sum_n) / count)

    def signed(vector: Tensor) -> Tensor:
        agree = float(vector @ cov_norm) if cov_norm is not None else float(vector.sum())
        return -vector if agree < 0 else vector

    vector = signed(vectors[:, -1])
    inner = count - int(border_count or 0)
    if sum_x_border is not None and border_count and inner > 0:
        ring = sum_x_border.double() / int(border_count)
        lift = (sx - sum_x_border.double()) / inner - ring  # interior mean − border mean
        best = -math.inf
        for k in range(1, min(DDT_CANDIDATES, channels) + 1):
            if float(values[-k]) <= 0:
                break
            candidate = signed(vectors[:, -k])
            contrast = float(candidate @ lift) / math.sqrt(float(values[-k]))
            if contrast > best:
                best, vector = contrast, candidate
    return mean.float(), (vector / vector.norm()).float()


#: Components :func:`ddt_from_moments` chooses among by their centre-versus-border contrast.
DDT_CANDIDATES = 3


def ddt_from_statistics(statistics: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """:func:`ddt_from_moments` of summed :func:`feature_statistics` (uses every key it finds)."""
    border = statistics.get("border_count")
    return ddt_from_moments(
        statistics["sum_x"],
        statistics["sum_xxT"],
        int(statistics["count"]),
        statistics.get("sum_xn"),
        statistics.get("sum_n"),
        statistics.get("sum_x_border"),
        None if border is None else int(border),
    )


# ------------------------------------------------------------------------------------------ box score


#: The stability term compares the boxes at τ·LOW and τ·HIGH (τ at least SCORE_MIN_TAU, the upper one
#: capped at 0.99).
SCORE_LOW, SCORE_HIGH, SCORE_MIN_TAU = 0.5, 2.0, 0.05


def box_stability(scoremap: np.ndarray, threshold: float) -> float:
    """How stable the box at τ is: IoU(box at τ/2, box at min(2τ, 0.99)), in [0, 1].

    Each box is the single largest-contour box of SPEC §6, with τ raised to :data:`SCORE_MIN_TAU`
    first. 1 when the region keeps its extent over a four-fold range of thresholds (a sharp-edged,
    well separated region), low when a small change of τ makes the box jump (a diffuse map, competing
    blobs); 0 for a constant map (no box).

    Shape:
        scoremap: (H, W) float in [0, 1].
    """
    from coloc_core.boxes import boxes_at_thresholds, iou_matrix  # noqa: PLC0415

    s = _scoremap_2d(scoremap)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    if not np.isfinite(s).all() or float(s.max(initial=0.0)) <= 0.0:
        return 0.0
    tau = max(float(threshold), SCORE_MIN_TAU)
    low, high = boxes_at_thresholds(s, [tau * SCORE_LOW, min(tau * SCORE_HIGH, 0.99)], multi_contour=False)
    a, b = np.asarray(low).reshape(-1, 4)[:1], np.asarray(high).reshape(-1, 4)[:1]
    if not a.any() or not b.any():
        return 0.0
    return float(iou_matrix(a, b)[0, 0])


def box_compactness(scoremap: np.ndarray, box: np.ndarray | list[float] | tuple[float, ...]) -> float:
    """The excess map mass a box captures: Σ_inside S / Σ S − area_inside / area_image, in [−1, 1].

    0 for the whole-image box, a flat map and a box on a uniform map; close to 1 when a small box
    holds nearly all of the map's mass. The box is pixel-inclusive, in the score map's coordinates.
    """
    s = _scoremap_2d(scoremap)
    height, width = s.shape
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"invalid box {box}")
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, width - 1), min(y1, height - 1)
    total = float(s.sum())
    if total <= 0.0 or not np.isfinite(total):
        return 0.0
    inside = float(s[y0 : y1 + 1, x0 : x1 + 1].sum())
    return inside / total - (x1 - x0 + 1) * (y1 - y0 + 1) / float(height * width)


def box_score(
    scoremap: np.ndarray, box: np.ndarray | list[float] | tuple[float, ...], threshold: float
) -> float:
    """Confidence of the box at τ: :func:`box_stability` + :func:`box_compactness`, in [−1, 2].

    Each term alone ranks boxes the wrong way on some collections (docs/RESULTS.md, "Box score"):
    compactness penalises large boxes, so it ranks IoU backwards where objects fill the frame
    (Spearman −0.40 for DDT on raccoon); stability rewards any sharp region, the object or a crisp
    distractor (−0.20 for DDT on generated birds on clutter). Their sum had the best worst case over
    the three sets measured and separates images without the object best (ROC AUC 0.74 for DDT).

    Shape:
        scoremap: (H, W) float in [0, 1]; box: [x0, y0, x1, y1] inclusive pixel coords in that map.
    """
    return box_stability(scoremap, threshold) + box_compactness(scoremap, box)


def _scoremap_2d(scoremap: np.ndarray) -> np.ndarray:
    s = np.asarray(scoremap, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scoremap must be (H, W), got {s.shape}")
    return s


# ------------------------------------------------------------------------------------------- payloads


def _baseline_id(kind: str, state: dict[str, Tensor], config: dict[str, Any] | None = None) -> str:
    # Prefix keys with the kind so that e.g. CAAM and DDT on the same backbone get different ids; the
    # layer, dilation and input side change the maps without changing the weights, so they are part of
    # the key (the side only when it is not the historical 224, so older files keep their ids).
    if not state:
        return hashlib.sha256(kind.encode()).hexdigest()[:16]
    variant = ""
    if config and (config.get("feature_layer", "output") != "output" or config.get("dilate") is not None):
        variant = f"[{config.get('feature_layer', 'output')},dilate={config.get('dilate')}]"
    if config and int(config.get("input_size", BASELINE_INPUT_SIZE)) != BASELINE_INPUT_SIZE:
        variant += f"@{int(config['input_size'])}"
    return model_id({f"{kind}{variant}.{k}": v for k, v in state.items()})


def baseline_payload(
    kind: str,
    backbone: str = "efficientnet_lite0",
    weights: str | None = "auto",
    output_stride: int | None = None,
    ddt_mean: Tensor | None = None,
    ddt_vector: Tensor | None = None,
    threshold: float | None = None,
    map_size: tuple[int, int] = (7, 7),
    meta: dict[str, Any] | None = None,
    backbone_state: dict[str, Tensor] | None = None,
    feature_layer: str = "output",
    dilate: bool | None = None,
    rps_vector: Tensor | None = None,
    head_weight: Tensor | None = None,
    head_bias: float | None = None,
    head_quadratic: Tensor | None = None,
    input_size: int | None = None,
    fit_size: int | None = None,
) -> dict[str, Any]:
    """Build a model-file payload for a fitted or training-free localizer (every kind but ``colocnet``).

    Args:
        kind: ``caam`` | ``ddt`` | ``rps`` | ``selftrain`` | ``full``.
        backbone: backbone name (``coloc_core.backbones.build_backbone``).
        weights: its weights source (``"auto"``, a path/URI or None); the loaded weights are embedded
            in the payload.
        output_stride: backbone output stride (None = its default).
        ddt_mean: (C,) mean descriptor from :func:`ddt_from_moments` (``ddt`` only).
        ddt_vector: (C,) principal direction from :func:`ddt_from_moments` (``ddt`` only).
        threshold: τ; ``None`` = :data:`DEFAULT_THRESHOLDS` of the kind.
        map_size: (h, w) of the ``full`` map.
        meta: free-form extras.
        backbone_state: backbone weights to use instead of ``weights`` (e.g. the very backbone a DDT
            was fitted with).
        feature_layer: the backbone layer the map is computed on (``Backbone.feature_layers``).
        dilate: the backbone's ``dilate`` option (None = its default).
        rps_vector: (C,) direction from :func:`rps_from_statistics` (``rps`` only).
        head_weight: (C,) weight from :func:`fit_selftrain` (``selftrain`` only).
        head_bias: its bias (``selftrain`` only).
        head_quadratic: (C, C) quadratic term from :func:`fit_selftrain` (``selftrain`` only; None = a
            linear head).
        input_size: side of the square images the map is computed on when labeling; ``None`` =
            :data:`DEFAULT_INPUT_SIZES` of the kind.
        fit_size: side the statistics of a fitted kind (ddt, rps, selftrain) were gathered at, recorded
            in the config (provenance; labeling reads ``input_size``); ``None`` for the other kinds.

    Raises:
        ValueError: on an unknown kind, an unknown layer, missing vectors of the kind, or an input
            side below 32.
    """
    if kind not in ("caam", "ddt", "rps", "selftrain", "full"):
        raise ValueError(f"baseline kind {kind!r} is not one of caam, ddt, rps, selftrain, full")
    size = int(DEFAULT_INPUT_SIZES[kind] if input_size is None else input_size)
    if size < 32:
        raise ValueError(f"input_size must be at least 32, got {size}")
    config: dict[str, Any] = {
        "backbone": backbone,
        "output_stride": output_stride,
        "weights": weights,
        "feature_layer": feature_layer,
        "dilate": dilate,
        "input_size": size,
    }
    if fit_size is not None:
        if int(fit_size) < 32:
            raise ValueError(f"fit_size must be at least 32, got {fit_size}")
        config["fit_size"] = int(fit_size)
    localizer: Localizer
    if kind == "full":
        config = {"map_size": [int(map_size[0]), int(map_size[1])], "input_size": size}
        localizer = FullImageLocalizer(map_size)
    else:
        if backbone_state is not None:
            net = build_backbone(backbone, weights=None, output_stride=output_stride, dilate=dilate)
            net.load_state_dict(backbone_state)
            config["weights"] = "embedded"
        else:
            net = build_backbone(backbone, weights=weights, output_stride=output_stride, dilate=dilate)
        head = (
            None
            if head_weight is None
            else (head_weight, 0.0 if head_bias is None else head_bias, head_quadratic)
        )
        localizer = _training_free(kind, net, feature_layer, ddt_mean, ddt_vector, rps_vector, head)
    state = {k: v.detach().cpu().clone() for k, v in localizer.state_dict().items()}
    return {
        "format": FORMAT,
        "kind": kind,
        "config": config,
        "state_dict": state,
        "model_id": _baseline_id(kind, state, config),
        "threshold": float(DEFAULT_THRESHOLDS[kind] if threshold is None else threshold),
        "meta": dict(meta or {}),
    }


def _training_free(
    kind: str,
    net: Backbone,
    layer: str,
    ddt_mean: Tensor | None = None,
    ddt_vector: Tensor | None = None,
    rps_vector: Tensor | None = None,
    head: tuple[Tensor, Tensor | float, Tensor | None] | None = None,
) -> Localizer:
    if kind == "caam":
        return CAAMLocalizer(net, layer)
    if kind == "ddt":
        if ddt_mean is None or ddt_vector is None:
            raise ValueError("a ddt payload needs ddt_mean and ddt_vector (see ddt_from_moments)")
        return DDTLocalizer(net, ddt_mean, ddt_vector, layer)
    if kind == "rps":
        if rps_vector is None:
            raise ValueError("an rps payload needs rps_vector (see rps_from_statistics)")
        return RPSLocalizer(net, rps_vector, layer)
    if kind == "selftrain":
        if head is None:
            raise ValueError("a selftrain payload needs head_weight and head_bias (see fit_selftrain)")
        return SelfTrainLocalizer(net, head[0], head[1], layer, quadratic=head[2])
    raise ValueError(f"{kind!r} is not a backbone-based training-free kind")


def payload_kind(payload: dict[str, Any]) -> str:
    """The payload's kind (``colocnet`` when absent).

    Raises:
        ValueError: on an unknown kind.
    """
    kind = str(payload.get("kind", "colocnet"))
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


def payload_input_size(payload: dict[str, Any]) -> int:
    """Side of the square image a model file's network expects (labeling resizes every image to it).

    A trained ColocNet: the crop it was trained at (``augment.crop`` of its stored config; SPEC §5
    evaluates at that size); every other kind: the ``input_size`` of its config (the labeling side), or
    :data:`BASELINE_INPUT_SIZE` for files written before that key.
    """
    config = payload.get("config") or {}
    if payload_kind(payload) == "colocnet":
        augment = config.get("augment") or {}
        return int(augment.get("crop", BASELINE_INPUT_SIZE))
    return int(config.get("input_size", BASELINE_INPUT_SIZE))


def localizer_from_payload(payload: dict[str, Any]) -> Localizer:
    """Rebuild the localizer of a model file (eval mode, CPU), with ``model_id`` and ``threshold`` set.

    Raises:
        ValueError: on an unknown kind or weights that do not fit the stored config.
    """
    kind = payload_kind(payload)
    localizer: Localizer
    if kind == "colocnet":
        net, _ = model_from_payload(payload)
        localizer = ColocNetLocalizer(net)
    elif kind == "full":
        size = payload["config"].get("map_size", [7, 7])
        localizer = FullImageLocalizer((int(size[0]), int(size[1])))
        localizer.load_state_dict(payload["state_dict"])
    else:
        cfg = payload["config"]
        backbone = build_backbone(
            cfg["backbone"], weights=None, output_stride=cfg.get("output_stride"), dilate=cfg.get("dilate")
        )
        state = payload["state_dict"]
        localizer = _training_free(
            kind,
            backbone,
            str(cfg.get("feature_layer", "output")),
            state.get("ddt_mean"),
            state.get("ddt_vector"),
            state.get("rps_vector"),
            None
            if "head_weight" not in state
            else (state["head_weight"], state["head_bias"], state.get("head_quadratic")),
        )
        localizer.load_state_dict(state)
    localizer.model_id = str(payload.get("model_id", ""))
    localizer.threshold = float(payload.get("threshold", BoxConfig().threshold))
    localizer.eval()
    return localizer
