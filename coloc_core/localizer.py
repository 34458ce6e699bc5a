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
  :func:`coloc_core.fits.feature_statistics` + :func:`coloc_core.fits.ddt_from_moments`.
- ``rps``: the representer-point map of Song et al. (ICCV 2023): with v the collection mean of the
  spatially averaged features and u the mean of the L2-normalised pixel features,
  w = normalize(v − u·‖v‖/‖u‖) and A = ReLU(⟨normalize(F_ij), w⟩);
  :func:`coloc_core.fits.rps_from_statistics`.
- ``selftrain``: a head learned on the collection from its own DDT map (self-training, in the
  spirit of PSOL, Zhang et al., CVPR 2020): pixels whose DDT projection is clearly positive are
  foreground, clearly negative background, and Fisher's linear discriminant between the two (with
  shrinkage) gives the head; the head's own map relabels the pixels for the next round, and the last
  round fits a quadratic discriminant (each class its own covariance). A = √ReLU(Fᵀ Q F + w · F + b),
  the signed square root of the two classes' log-likelihood ratio (older files: the linear A = ReLU(w
  · F + b)). Every round is one streamed pass (:mod:`coloc_core.fits`: ``class_statistics``,
  ``lda_from_class_statistics``, ``qda_from_class_statistics``, driven by ``fit_selftrain``), so it
  fits into Ray like DDT's moments do.

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

The fitted kinds' collection statistics and fits are in :mod:`coloc_core.fits`; the confidence of a
box (:func:`coloc_core.box_score.box_score`) is in :mod:`coloc_core.box_score`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor, nn

from coloc_core.backbones import IMAGENET_MEAN, IMAGENET_STD, Backbone, build_backbone
from coloc_core.checkpoint import FORMAT, model_from_payload, model_id
from coloc_core.config import BoxConfig
from coloc_core.errors import InvalidInputError
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
        vector: (C,) unit first principal direction (sign: see :func:`coloc_core.fits.ddt_from_moments`).
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
        vector: (C,) unit direction w from :func:`coloc_core.fits.rps_from_statistics`.
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
    """The self-trained head (see :func:`coloc_core.fits.fit_selftrain`).

    Linear: A = ReLU(w · F_ij + b). Quadratic (``quadratic`` given, the default fit): the
    log-likelihood ratio s = F_ijᵀ Q F_ij + w · F_ij + b of two Gaussian classes, mapped through its
    signed square root, A = √ReLU(s) (:func:`coloc_core.fits.qda_from_class_statistics`).

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
        ddt_mean: (C,) mean descriptor from :func:`coloc_core.fits.ddt_from_moments` (``ddt`` only).
        ddt_vector: (C,) principal direction from :func:`coloc_core.fits.ddt_from_moments` (``ddt`` only).
        threshold: τ; ``None`` = :data:`DEFAULT_THRESHOLDS` of the kind.
        map_size: (h, w) of the ``full`` map.
        meta: free-form extras.
        backbone_state: backbone weights to use instead of ``weights`` (e.g. the very backbone a DDT
            was fitted with).
        feature_layer: the backbone layer the map is computed on (``Backbone.feature_layers``).
        dilate: the backbone's ``dilate`` option (None = its default).
        rps_vector: (C,) direction from :func:`coloc_core.fits.rps_from_statistics` (``rps`` only).
        head_weight: (C,) weight from :func:`coloc_core.fits.fit_selftrain` (``selftrain`` only).
        head_bias: its bias (``selftrain`` only).
        head_quadratic: (C, C) quadratic term from :func:`coloc_core.fits.fit_selftrain` (``selftrain``
            only; None = a linear head).
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
            raise InvalidInputError("a ddt payload needs ddt_mean and ddt_vector (see ddt_from_moments)")
        return DDTLocalizer(net, ddt_mean, ddt_vector, layer)
    if kind == "rps":
        if rps_vector is None:
            raise InvalidInputError("an rps payload needs rps_vector (see rps_from_statistics)")
        return RPSLocalizer(net, rps_vector, layer)
    if kind == "selftrain":
        if head is None:
            raise InvalidInputError("a selftrain payload needs head_weight and head_bias (see fit_selftrain)")
        return SelfTrainLocalizer(net, head[0], head[1], layer, quadratic=head[2])
    raise ValueError(f"{kind!r} is not a backbone-based training-free kind")


def payload_kind(payload: dict[str, Any]) -> str:
    """The payload's kind (``colocnet`` when absent).

    Raises:
        InvalidInputError: (a ``ValueError``) on an unknown kind: the model file is not one this
            version reads.
    """
    kind = str(payload.get("kind", "colocnet"))
    if kind not in KINDS:
        raise InvalidInputError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")
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
