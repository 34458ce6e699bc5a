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
  :func:`feature_moments` + :func:`ddt_from_moments`.
- ``full``: the whole-image box. Its map is all ones except one corner cell at zero: SPEC §6 turns an
  exactly constant map into zeros (the empty box [0, 0, 0, 0]), while this map keeps the corner at
  zero and everything else at one after min-max scaling, so the single largest contour spans the
  whole image at any τ up to about 0.8.

The baselines are stored in the same model-file format as :mod:`coloc_core.checkpoint` (``format``,
``config``, ``state_dict``, ``model_id``, ``threshold``, ``meta``) plus ``kind``; the backbone weights
are embedded so the file alone reproduces the maps and ``model_id`` names exactly those weights.

This module also holds the per-image math of the labeling stage that :mod:`coloc_core.boxes` does not
cover: :func:`quantize_heatmap` / :func:`dequantize_heatmap` (the stored map) and :func:`box_score`
(the confidence of a box).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from coloc_core.backbones import Backbone, build_backbone
from coloc_core.checkpoint import FORMAT, model_from_payload, model_id
from coloc_core.config import BoxConfig
from coloc_core.model import ColocNet

KINDS = ("colocnet", "caam", "ddt", "full")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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

    def __init__(self, backbone: Backbone) -> None:
        super().__init__(backbone.mean, backbone.std)
        self.backbone = backbone

    def features(self, images: Tensor) -> Tensor:
        """The backbone feature map F, (B, C, h, w) float32."""
        return self.backbone(images).float()  # type: ignore[no-any-return]

    def forward(self, images: Tensor) -> Tensor:  # noqa: D102
        return self.features(images).mean(dim=1)


class DDTLocalizer(CAAMLocalizer):
    """Deep Descriptor Transforming: A = ReLU((F - mean) · v), v the first principal direction.

    Args:
        backbone: the pretrained feature extractor.
        mean: (C,) mean descriptor of the collection.
        vector: (C,) unit first principal direction (sign: ``vector.sum() > 0``).
    """

    kind = "ddt"
    ddt_mean: Tensor
    ddt_vector: Tensor

    def __init__(self, backbone: Backbone, mean: Tensor, vector: Tensor) -> None:
        super().__init__(backbone)
        channels = backbone.out_channels
        if mean.shape != (channels,) or vector.shape != (channels,):
            raise ValueError(
                f"DDT mean/vector must be ({channels},), got {tuple(mean.shape)} and {tuple(vector.shape)}"
            )
        self.register_buffer("ddt_mean", mean.detach().float().clone())
        self.register_buffer("ddt_vector", vector.detach().float().clone())

    def forward(self, images: Tensor) -> Tensor:  # noqa: D102
        feats = self.features(images)
        centred = feats - self.ddt_mean[None, :, None, None]
        return torch.relu(torch.einsum("bchw,c->bhw", centred, self.ddt_vector))


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


def ddt_from_moments(sum_x: Tensor, sum_xxT: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Mean descriptor and first principal direction from streamed moments (DDT, Wei et al. 2017).

    cov = sum_xxT / n - mean meanᵀ; the direction is the eigenvector of the largest eigenvalue, with
    its sign chosen so that the projection correlates positively with the overall activation
    (``vector.sum() > 0``: the object is where post-ReLU features are strong, not where they vanish).

    Shape:
        sum_x: (C,); sum_xxT: (C, C). Returns mean (C,) and unit vector (C,), float32.

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
    _, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues
    vector = vectors[:, -1]
    if vector.sum() < 0:
        vector = -vector
    return mean.float(), (vector / vector.norm()).float()


# ------------------------------------------------------------------------------- stored map and score


def quantize_heatmap(attention: np.ndarray) -> np.ndarray:
    """Min-max normalise an attention map and quantise it to uint8 (the stored heatmap).

    A constant or non-finite map becomes all zeros (as SPEC §6 does for score maps).

    Shape:
        attention: (h, w) float. Returns (h, w) uint8, 0 = the map's minimum, 255 = its maximum.
    """
    a = np.asarray(attention, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"attention must be (h, w), got {a.shape}")
    if not np.isfinite(a).all():
        return np.zeros(a.shape, dtype=np.uint8)
    lo, hi = float(a.min()), float(a.max())
    if hi - lo <= 0.0:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.rint((a - lo) / (hi - lo) * 255.0).astype(np.uint8)


def dequantize_heatmap(heatmap: np.ndarray) -> np.ndarray:
    """The stored uint8 heatmap back to float32 in [0, 1].

    Shape:
        heatmap: (h, w) uint8. Returns (h, w) float32.
    """
    return np.asarray(heatmap, dtype=np.float32) / 255.0


def box_score(scoremap: np.ndarray, box: np.ndarray | list[float] | tuple[float, ...]) -> float:
    """Confidence of a box: the excess activation mass it captures over its share of the area.

    score = (Σ_inside S / Σ S) − (area_inside / area_image), with S the 224×224 score map in [0, 1]
    and the box pixel-inclusive. It is in [−1, 1]; 0 for the whole-image box, the empty map and a box
    on a uniform map; close to 1 when a small box holds nearly all of the map's mass (a compact,
    confident object). Higher means the map singles out one compact region, which ranks IoU
    (measured in the README / report).

    Shape:
        scoremap: (H, W) float in [0, 1]; box: [x0, y0, x1, y1] inclusive pixel coords in that map.
    """
    s = np.asarray(scoremap, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scoremap must be (H, W), got {s.shape}")
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
    area = (x1 - x0 + 1) * (y1 - y0 + 1) / float(height * width)
    return inside / total - area


# ------------------------------------------------------------------------------------------- payloads


def _baseline_id(kind: str, state: dict[str, Tensor]) -> str:
    # Prefix keys with the kind so that e.g. CAAM and DDT on the same backbone get different ids.
    if not state:
        return hashlib.sha256(kind.encode()).hexdigest()[:16]
    return model_id({f"{kind}.{k}": v for k, v in state.items()})


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
) -> dict[str, Any]:
    """Build a model-file payload for a training-free baseline (``caam``, ``ddt`` or ``full``).

    Args:
        kind: ``caam`` | ``ddt`` | ``full``.
        backbone: backbone name (``coloc_core.backbones.build_backbone``).
        weights: its weights source (``"auto"``, a path/URI or None); the loaded weights are embedded
            in the payload.
        output_stride: backbone output stride (None = its default).
        ddt_mean: (C,) mean descriptor from :func:`ddt_from_moments` (``ddt`` only).
        ddt_vector: (C,) principal direction from :func:`ddt_from_moments` (``ddt`` only).
        threshold: τ; ``None`` = ``BoxConfig().threshold``.
        map_size: (h, w) of the ``full`` map.
        meta: free-form extras.
        backbone_state: backbone weights to use instead of ``weights`` (e.g. the very backbone a DDT
            was fitted with).

    Raises:
        ValueError: on an unknown kind or missing DDT vectors.
    """
    if kind not in ("caam", "ddt", "full"):
        raise ValueError(f"baseline kind {kind!r} is not one of caam, ddt, full")
    config: dict[str, Any] = {"backbone": backbone, "output_stride": output_stride, "weights": weights}
    localizer: Localizer
    if kind == "full":
        config = {"map_size": [int(map_size[0]), int(map_size[1])]}
        localizer = FullImageLocalizer(map_size)
    else:
        if backbone_state is not None:
            net = build_backbone(backbone, weights=None, output_stride=output_stride)
            net.load_state_dict(backbone_state)
            config["weights"] = "embedded"
        else:
            net = build_backbone(backbone, weights=weights, output_stride=output_stride)
        if kind == "caam":
            localizer = CAAMLocalizer(net)
        else:
            if ddt_mean is None or ddt_vector is None:
                raise ValueError("a ddt payload needs ddt_mean and ddt_vector (see ddt_from_moments)")
            localizer = DDTLocalizer(net, ddt_mean, ddt_vector)
    state = {k: v.detach().cpu().clone() for k, v in localizer.state_dict().items()}
    return {
        "format": FORMAT,
        "kind": kind,
        "config": config,
        "state_dict": state,
        "model_id": _baseline_id(kind, state),
        "threshold": float(BoxConfig().threshold if threshold is None else threshold),
        "meta": dict(meta or {}),
    }


def payload_kind(payload: dict[str, Any]) -> str:
    """The payload's kind (``colocnet`` when absent).

    Raises:
        ValueError: on an unknown kind.
    """
    kind = str(payload.get("kind", "colocnet"))
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


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
        backbone = build_backbone(cfg["backbone"], weights=None, output_stride=cfg.get("output_stride"))
        state = payload["state_dict"]
        if kind == "caam":
            localizer = CAAMLocalizer(backbone)
        else:
            localizer = DDTLocalizer(backbone, state["ddt_mean"], state["ddt_vector"])
        localizer.load_state_dict(state)
    localizer.model_id = str(payload.get("model_id", ""))
    localizer.threshold = float(payload.get("threshold", BoxConfig().threshold))
    localizer.eval()
    return localizer
