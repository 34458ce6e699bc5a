"""The torchvision-derived backbones: VGG16 (with and without BN), ResNet18/50, SE-ResNet50.

Kept apart from :mod:`coloc_core.backbones` so that a process which builds another backbone (the
default EfficientNet-Lite0: every labeling actor and fit task) never imports torchvision, about 2 s
of every process start on a small machine. The registry in :mod:`coloc_core.backbones` imports this
module when one of these names is built.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.models.vgg import cfgs as vgg_cfgs
from torchvision.models.vgg import make_layers as vgg_make_layers

from coloc_core.backbones import Backbone

# ----------------------------------------------------------------------------------------------- VGG


class VGG16Backbone(Backbone):
    """torchvision VGG16 ``features`` with pool4 and pool5 as 3x3 stride-1 max-pools (padding 1).

    The PsyNet-style VGG16 of the paper: no FC layers; F is conv5_3 after ReLU and the stride-1
    pool5, 28x28x512 at 224. Module indices equal torchvision's, so ``features.N.*`` keys load as is.

    Shape: (B, 3, H, W) -> (B, 512, H/8, W/8) (floor at each of the three stride-2 pools).
    """

    out_channels = 512
    stride = 8
    head_prefixes: tuple[str, ...] = ("classifier.", "pre_logits.", "head.")

    def __init__(self, batch_norm: bool = False) -> None:
        super().__init__()
        # Only the conv trunk: building torchvision.models.vgg16 would allocate 120M FC parameters.
        layers = list(vgg_make_layers(vgg_cfgs["D"], batch_norm=batch_norm).children())
        pools = [i for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]
        for i in pools[3:]:  # pool4, pool5
            layers[i] = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.features = nn.Sequential(*layers)
        for m in self.modules():  # torchvision's VGG initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (B, 3, H, W) -> (B, 512, H/8, W/8), >= 0."""
        out: Tensor = self.features(x)
        return out


# -------------------------------------------------------------------------------------------- ResNet


def _layer4_stride1(net: ResNet) -> None:
    """Set the stride of layer4's first block (its strided conv and its downsample) to 1, no dilation.

    Where the stride sits differs by block type (BasicBlock: conv1; Bottleneck: conv2; Cadene:
    conv1), so every strided conv of the block is reset.
    """
    for module in net.layer4[0].modules():
        if isinstance(module, nn.Conv2d) and module.stride != (1, 1):
            module.stride = (1, 1)


class ResNetBackbone(Backbone):
    """A torchvision ResNet trunk (no avgpool/fc) with layer4 at stride 1 (not dilated).

    Attribute names equal torchvision's (``conv1``, ``bn1``, ``layer1`` …), which timm's ResNets
    share, so both load as is.

    Shape: (B, 3, H, W) -> (B, C, H/16, W/16), C = 2048 (ResNet50) or 512 (ResNet18).
    """

    stride = 16
    head_prefixes: tuple[str, ...] = ("fc.",)

    def __init__(self, net: ResNet, out_channels: int) -> None:
        super().__init__()
        _layer4_stride1(net)
        self.out_channels = out_channels
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (B, 3, H, W) -> (B, C, H/16, W/16), >= 0."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out: Tensor = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return out


class SEModule(nn.Module):
    """Squeeze-and-excitation gate with 1x1 convs (Hu et al., CVPR 2018), reduction 16.

    Parameter names (``fc1``, ``fc2``, both with bias) equal Cadene's and timm's.

    Shape: (B, C, h, w) -> (B, C, h, w).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (B, C, h, w) -> (B, C, h, w)."""
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * gate


class SEBottleneck(Bottleneck):
    """torchvision's Bottleneck with an SE gate on the residual branch, before the sum."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.se_module = SEModule(self.conv3.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (B, C_in, h, w) -> (B, 4·planes, h/stride, w/stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se_module(self.bn3(self.conv3(out)))
        result: Tensor = self.relu(out + identity)
        return result


class SEResNet50Backbone(ResNetBackbone):
    """SE-ResNet50 (reduction 16) with layer4 at stride 1: 14x14x2048 at 224.

    Loads Cadene ``pretrainedmodels`` files (``layer0.conv1``, ``layer1.0.se_module.fc1``,
    ``last_linear``) and timm files (``conv1``, ``layer1.0.se.fc1``, ``fc``). Cadene's (Caffe-style)
    network differs in two places that its weights were trained with: a down-sampling block carries
    its stride on the first 1x1 conv instead of the 3x3, and the stem max-pool has no padding and
    rounds up. Loading a Cadene file switches to that layout, and the persistent buffer
    ``cadene_layout`` records it, so that a saved state_dict restores the same layout on load.

    Shape: (B, 3, H, W) -> (B, 2048, H/16, W/16).
    """

    head_prefixes: tuple[str, ...] = ("fc.", "last_linear.")
    cadene_layout: Tensor

    def __init__(self) -> None:
        super().__init__(ResNet(SEBottleneck, [3, 4, 6, 3]), 2048)
        self.register_buffer("cadene_layout", torch.tensor(False))

    def set_cadene_layout(self, cadene: bool) -> None:
        """Switch the stride placement and stem pool between Cadene's layout and torchvision's/timm's."""
        for layer in (self.layer2, self.layer3):  # layer4 has stride 1 either way
            block = layer[0]
            strided = (2, 2)
            block.conv1.stride, block.conv2.stride = (strided, (1, 1)) if cadene else ((1, 1), strided)
        self.maxpool.padding = 0 if cadene else 1
        self.maxpool.ceil_mode = cadene
        self.cadene_layout.fill_(cadene)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        flag = state_dict.get(prefix + "cadene_layout")
        if isinstance(flag, Tensor):
            self.set_cadene_layout(bool(flag.item()))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def map_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Cadene and timm names → ours (``layer0.`` dropped, ``.se.`` → ``.se_module.``).

        Args:
            state: a state_dict without wrapper prefixes and head keys.

        Returns:
            A new dict, with ``cadene_layout`` set from the naming when the file has none.
        """
        cadene = any(k.startswith("layer0.") for k in state)
        out: dict[str, Tensor] = {}
        for key, value in state.items():
            new = key.removeprefix("layer0.")
            new = new.replace(".se.", ".se_module.")
            out[new] = value
        out.setdefault("cadene_layout", torch.tensor(cadene))
        return out


def vgg16(batch_norm: bool) -> Backbone:
    """VGG16 (``batch_norm``: VGG16-BN) trunk, pool4/pool5 at stride 1."""
    return VGG16Backbone(batch_norm=batch_norm)


def resnet50() -> Backbone:
    """ResNet50 trunk, layer4 at stride 1."""
    return ResNetBackbone(ResNet(Bottleneck, [3, 4, 6, 3]), 2048)


def resnet18() -> Backbone:
    """ResNet18 trunk, layer4 at stride 1."""
    return ResNetBackbone(ResNet(BasicBlock, [2, 2, 2, 2]), 512)


def seresnet50() -> Backbone:
    """SE-ResNet50 trunk, layer4 at stride 1."""
    return SEResNet50Backbone()
