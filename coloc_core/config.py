"""The configuration tree of the method: every hyperparameter lives here, as a dataclass default.

Defaults follow ``SPEC.md`` (Ki et al., ICCV 2021 and the choices the project made where the paper
is silent). Run/cluster settings (storage paths, workers) live in the ``pipelines/config`` package; this
module has no I/O and no Ray.

Overrides use dotted keys, e.g. ``apply_overrides(cfg, ["loss.theta_bg=1.5", "model.backbone=tiny"])``;
values are parsed against the type of the field they replace, so a typo or a wrong type is an error
instead of a silently ignored flag.

Every numeric option is checked by :func:`check_numbers` (called by :func:`validate`): it must be a
finite number (``nan``/``inf`` parse as floats, so they are refused here) and lie in the interval its
section declares in a ``RANGES`` class attribute (``{"lr": Range(0, open_low=True)}`` …). A numeric
field without a declared range is still checked for finiteness; a unit test makes sure every numeric
field of every job config declares one.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, Union

POOLINGS = ("topk", "mean", "max", "bottomk")
MAP_SCALINGS = ("raw", "max", "minmax", "sigmoid", "peak")
PAIRS = ("both", "positive", "negative")
CAML_ON = ("attention", "features")
PRETEXT_TASKS = ("rotation", "translation", "scale", "hflip", "vflip", "pst")


@dataclass(frozen=True)
class Range:
    """The interval a numeric option must lie in; ``None`` leaves that side unbounded.

    Attributes:
        low: smallest allowed value (``None`` = no lower bound).
        high: largest allowed value (``None`` = no upper bound).
        open_low: ``low`` itself is excluded (``> low`` instead of ``>= low``).
        open_high: ``high`` itself is excluded.
    """

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def contains(self, value: float) -> bool:
        """True when ``value`` is inside the interval (NaN never is)."""
        if math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.open_high else value > self.high))

    def describe(self) -> str:
        """The interval in words: ``"> 0"``, ``">= 1"``, ``"< 1"``, ``"in (0, 1]"``."""
        if self.low is not None and self.high is not None:
            left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
            return f"in {left}{_number(self.low)}, {_number(self.high)}{right}"
        if self.low is not None:
            return f"{'>' if self.open_low else '>='} {_number(self.low)}"
        if self.high is not None:
            return f"{'<' if self.open_high else '<='} {_number(self.high)}"
        return "a finite number"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(value)


POSITIVE = Range(0, open_low=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
UNIT_OPEN = Range(0, 1, open_low=True, open_high=True)

#: The IoU criteria δ of CorLoc and MaxBoxAccV2 (Choe et al., CVPR 2020: MaxBoxAccV2 averages over these).
IOU_THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)
#: Spacing of MaxBoxAccV2's score-map threshold grid τ = ``np.arange(0, 1, interval)`` (1,000 values).
CAM_CURVE_INTERVAL = 0.001
#: Spacing of the τ grid ``coloc calibrate`` searches (100 values; one box per image and τ).
CALIBRATION_CURVE_INTERVAL = 0.01


# The backbones coloc_core.backbones registers (= available_backbones(); a unit test keeps them equal),
# named here so a command line is checked without importing torch. ``AUTO_WEIGHTS_BACKBONES``: those
# that ``model.weights=auto`` can build here (packaged ImageNet file, or random init for ``tiny``).
BACKBONES = (
    "efficientnet_lite0",
    "efficientnet_lite2",
    "resnet18",
    "resnet50",
    "seresnet50",
    "tiny",
    "vgg16",
    "vgg16_bn",
)
AUTO_WEIGHTS_BACKBONES = ("efficientnet_lite0", "efficientnet_lite2", "tiny")


@dataclass
class ModelConfig:
    """Network: backbone, ECA gate and PTAP pooling (SPEC §1-2).

    Attributes:
        backbone: registered backbone name (``coloc_core.backbones.available_backbones()``). ``coloc
            train`` defaults to ``auto``: ``efficientnet_lite2`` for its self-trained head,
            ``efficientnet_lite0`` for CAML (``pipelines.config.default_backbone``).
        weights: ``"auto"`` (the packaged ImageNet weights where the backbone has them, else an error
            explaining where to put them), a file path / ``s3://`` URI, or ``None`` for random init.
        output_stride: backbone output stride; ``None`` keeps the backbone's default (SPEC §1).
        pooling: PTAP channel pooling, one of ``topk``, ``mean``, ``max``, ``bottomk`` (Table 6).
            Default ``mean`` (of the ECA-gated features), not SPEC §2's top-70%: on both real photo
            sets, over three seeds, it matched or beat top-70% (docs/RESULTS.md, Table 6).
        pool_ratio: fraction of channels kept by ``topk``/``bottomk``: K = max(1, floor(ratio * C)).
        eca: apply the ECA channel gate (Eq. 1) before pooling.
        eca_kernel: ECA 1-D kernel size; ``None`` uses ECA's adaptive rule.
        image_size: network input side in pixels.
    """

    backbone: str = "efficientnet_lite0"
    weights: str | None = "auto"
    output_stride: int | None = None
    pooling: str = "mean"
    pool_ratio: float = 0.7
    eca: bool = True
    eca_kernel: int | None = None
    image_size: int = 224

    RANGES: ClassVar[dict[str, Range]] = {
        "output_stride": AT_LEAST_ONE,
        "pool_ratio": Range(0, 1, open_low=True),
        "eca_kernel": AT_LEAST_ONE,
        "image_size": AT_LEAST_ONE,
    }


@dataclass
class PretextConfig:
    """Pretext tasks (SPEC §3); several may be enabled at once, each with its own head and labels.

    Attributes:
        tasks: comma-separated subset of rotation, translation, scale, hflip, vflip, pst.
    """

    tasks: tuple[str, ...] = ("rotation",)


@dataclass
class LossConfig:
    """CAML and the total loss (SPEC §4, Eq. 3-5).

    Attributes:
        use_cls: include the pretext classification loss L_cls (Table 3 "-L_cls" turns it off).
        use_caml: include L_caml (off = the rotation baseline of PsyNet).
        caml_weight: lambda in L_total = L_cls + lambda * L_caml.
        margin: triplet margin m.
        theta_bg: background threshold ratio: M_bg = 1[(1 - Â) > theta_bg * min(1 - Â)].
        map_scaling: how A becomes Â before thresholding (the paper is silent): ``raw``, ``max``,
            ``minmax``, ``sigmoid`` or ``peak`` (Â = map_peak * A / max(A), so max(Â) < 1).
        map_peak: the peak value of Â for ``peak`` scaling.
        pairs: ``both`` (Eq. 4), ``positive`` (L2 between positives only, Table 5) or ``negative``
            (push negatives beyond the margin only, Table 5).
        caml_on: ``attention`` (A, the paper) or ``features`` (A ⊙ F_w, Table 4).
    """

    use_cls: bool = True
    use_caml: bool = True
    caml_weight: float = 1.0
    margin: float = 1.0
    theta_bg: float = 2.3
    map_scaling: str = "peak"
    map_peak: float = 0.6
    pairs: str = "both"
    caml_on: str = "attention"

    RANGES: ClassVar[dict[str, Range]] = {
        "caml_weight": NON_NEGATIVE,
        "margin": NON_NEGATIVE,
        "theta_bg": POSITIVE,
        "map_peak": UNIT_OPEN,
    }


@dataclass
class OptimConfig:
    """SGD and its schedule (SPEC §5).

    Attributes:
        lr: initial learning rate.
        momentum: SGD momentum.
        weight_decay: L2 weight decay.
        batch_size: global batch (split across workers).
        epochs: training epochs.
        lr_milestones: epochs (0-based) at which the learning rate is multiplied by lr_gamma.
        lr_gamma: the multiplier.
    """

    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 80
    lr_milestones: tuple[int, ...] = (60,)
    lr_gamma: float = 0.2

    RANGES: ClassVar[dict[str, Range]] = {
        "lr": POSITIVE,
        "momentum": Range(0, 1, open_high=True),
        "weight_decay": NON_NEGATIVE,
        "batch_size": AT_LEAST_ONE,
        "epochs": AT_LEAST_ONE,
        "lr_milestones": NON_NEGATIVE,
        "lr_gamma": POSITIVE,
    }


@dataclass
class AugmentConfig:
    """Image sizes of the train/test transforms (SPEC §5): resize, then a random crop with reflect padding.

    Attributes:
        resize: training images are resized to resize x resize.
        crop: random crop side (also the evaluation/labeling resize).
        crop_padding: reflect padding in pixels before the random crop.
    """

    resize: int = 256
    crop: int = 224
    crop_padding: int = 4

    RANGES: ClassVar[dict[str, Range]] = {
        "resize": AT_LEAST_ONE,
        "crop": AT_LEAST_ONE,
        "crop_padding": NON_NEGATIVE,
    }


@dataclass
class BoxConfig:
    """Boxes and metrics (SPEC §6).

    Attributes:
        threshold: τ for CorLoc and pseudo-label boxes (a calibrated τ stored with a model replaces it).
        cam_curve_interval: spacing of the τ grid of MaxBoxAccV2.
        iou_thresholds: IoU criteria δ of CorLoc and MaxBoxAcc.
        multi_contour: MaxBoxAccV2 takes the best of all contours' boxes.
    """

    threshold: float = 0.2
    cam_curve_interval: float = CAM_CURVE_INTERVAL
    iou_thresholds: tuple[float, ...] = IOU_THRESHOLDS
    multi_contour: bool = True

    RANGES: ClassVar[dict[str, Range]] = {
        "threshold": Range(0, 1, open_high=True),
        "cam_curve_interval": UNIT_OPEN,
        "iou_thresholds": Range(0, 1, open_low=True),
    }


@dataclass
class ColocConfig:
    """The whole method configuration.

    Attributes:
        seed: seed of pretext labels, augmentation and initialisation.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    pretext: PretextConfig = field(default_factory=PretextConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    boxes: BoxConfig = field(default_factory=BoxConfig)
    seed: int = 0

    RANGES: ClassVar[dict[str, Range]] = {"seed": Range(0, 2**63 - 1)}


T = TypeVar("T")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(choices)}")


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(_show(v) for v in value)
    return str(value)


def check_numbers(cfg: Any, prefix: str = "") -> Any:
    """Check every numeric leaf of dataclass tree ``cfg``: finite, and inside its section's ``RANGES``.

    Works on any config dataclass (the method's, a job's); a section declares its intervals in a
    ``RANGES`` class attribute keyed by field name. Tuples are checked item by item; ``None`` (an
    optional number left unset) and booleans are skipped.

    Returns:
        ``cfg`` unchanged.

    Raises:
        ValueError: naming the dotted key, its value and the allowed interval.
    """
    ranges: dict[str, Range] = getattr(type(cfg), "RANGES", {})
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_numbers(value, prefix=f"{key}.")
            continue
        items = value if isinstance(value, (tuple, list)) else (value,)
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                continue
            if not math.isfinite(item):
                raise ValueError(f"{key}={_show(value)} is not a finite number")
            bounds = ranges.get(f.name)
            if bounds is not None and not bounds.contains(item):
                raise ValueError(f"{key}={_show(value)} must be {bounds.describe()}")
    return cfg


def validate(cfg: ColocConfig) -> ColocConfig:
    """Check every value of ``cfg`` and return it unchanged.

    Numbers go through :func:`check_numbers` (finite, in range); then choices and the rules that
    tie several values together.

    Raises:
        ValueError: on an unknown choice or a non-finite or out-of-range number, naming the key.
    """
    check_numbers(cfg)
    _check_choice("model.pooling", cfg.model.pooling, POOLINGS)
    if cfg.model.eca_kernel is not None and cfg.model.eca_kernel % 2 == 0:
        raise ValueError(f"model.eca_kernel={cfg.model.eca_kernel} must be odd")
    _check_choice("loss.map_scaling", cfg.loss.map_scaling, MAP_SCALINGS)
    _check_choice("loss.pairs", cfg.loss.pairs, PAIRS)
    _check_choice("loss.caml_on", cfg.loss.caml_on, CAML_ON)
    if not cfg.pretext.tasks:
        raise ValueError("pretext.tasks must name at least one task")
    for task in cfg.pretext.tasks:
        _check_choice("pretext.tasks", task, PRETEXT_TASKS)
    if len(set(cfg.pretext.tasks)) != len(cfg.pretext.tasks):
        raise ValueError(f"pretext.tasks has duplicates: {cfg.pretext.tasks}")
    if not (cfg.loss.use_cls or cfg.loss.use_caml):
        raise ValueError("at least one of loss.use_cls and loss.use_caml must be true")
    if not cfg.boxes.iou_thresholds:
        raise ValueError("boxes.iou_thresholds must hold at least one IoU threshold")
    if cfg.augment.crop > cfg.augment.resize:
        raise ValueError(f"augment.crop={cfg.augment.crop} exceeds augment.resize={cfg.augment.resize}")
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass tree as plain nested dicts/lists (JSON/YAML-safe)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    result = plain(cfg)
    assert isinstance(result, dict)
    return result


def _parse_scalar(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("none", "null", "~"):
        return None
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    return text.strip()


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or a ``key=value`` string) to the field type ``annotation``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        if value is None or (isinstance(value, str) and _parse_scalar(value) is None):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise ValueError(f"{key}: cannot read {value!r} as {annotation}: {'; '.join(errors)}")
    if origin is tuple:
        if isinstance(value, str):
            text = value.strip().strip("()[]")
            items: list[Any] = [v for v in (p.strip() for p in text.split(",")) if v]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            items = [value]
        inner = args[0] if args else str
        return tuple(_coerce(v, inner, key) for v in items)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        parsed = _parse_scalar(str(value))
        if not isinstance(parsed, bool):
            raise ValueError(f"{key}: expected true/false, got {value!r}")
        return parsed
    if annotation is int:
        if isinstance(value, bool):
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        try:
            return int(float(value)) if isinstance(value, str) and "." in value else int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key}: expected an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key}: expected a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, (str, int, float)):
            raise ValueError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from nested dicts, rejecting unknown keys.

    Raises:
        KeyError: on a key that is not a field (the message lists the valid ones).
    """
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise KeyError(f"unknown config key {full!r}; valid keys here: {', '.join(sorted(names))}")
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                raise ValueError(f"{full}: expected a mapping, got {value!r}")
            kwargs[key] = from_dict(annotation, value, prefix=f"{full}.")  # type: ignore[arg-type]
        else:
            kwargs[key] = _coerce(value, annotation, full)
    return cls(**kwargs)


def apply_overrides(cfg: T, overrides: list[str] | dict[str, Any]) -> T:
    """Return a copy of dataclass tree ``cfg`` with dotted-key overrides applied.

    Args:
        cfg: any dataclass instance (e.g. ``ColocConfig``).
        overrides: ``["loss.theta_bg=1.5", ...]`` (strings, leading ``--`` allowed) or
            ``{"loss.theta_bg": 1.5}``.

    Raises:
        KeyError: on an unknown key; ValueError on a value of the wrong type.
    """
    items: list[tuple[str, Any]] = []
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        for text in overrides:
            body = text[2:] if text.startswith("--") else text
            if "=" not in body:
                raise ValueError(f"override {text!r} is not of the form key=value")
            key, value = body.split("=", 1)
            items.append((key.strip(), value))
    result = cfg
    for key, value in items:
        result = _replace_path(result, key.split("."), value, key)
    return result


def _replace_path(node: Any, parts: list[str], value: Any, full: str) -> Any:
    names = {f.name for f in dataclasses.fields(node)}
    head = parts[0]
    if head not in names:
        raise KeyError(f"unknown config key {full!r}; valid keys here: {', '.join(sorted(names))}")
    current = getattr(node, head)
    if len(parts) == 1:
        if dataclasses.is_dataclass(current):
            raise KeyError(f"{full!r} is a section, not a value")
        new_value = _coerce(value, _field_types(type(node))[head], full)
    else:
        if not dataclasses.is_dataclass(current):
            raise KeyError(f"{full!r}: {head!r} is a value, not a section")
        new_value = _replace_path(current, parts[1:], value, full)
    return dataclasses.replace(node, **{head: new_value})


def flat_keys(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a dataclass tree as ``{"loss.theta_bg": 2.3, ...}`` (for CLI help)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flat_keys(value, prefix=f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out
