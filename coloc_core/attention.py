"""ECA channel gate and pixel-wise top-k attention pooling (PTAP), SPEC §2.

PTAP is Eq. 1-2 of Ki et al., "Contrastive Attention Maps for Self-supervised Co-localization",
ICCV 2021: the feature map is re-weighted per channel by an ECA gate (Wang et al., CVPR 2020), then
each pixel averages its K largest channel values. With K = C it is the channel mean and with K = 1 the
channel max, the two special cases the paper names.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive kernel size: t = int(|log2(C) + b| / gamma), k = t if odd else t + 1.

    Gives 5 for 512 channels and 7 for 2048.
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    t = int(abs(math.log2(channels) + b) / gamma)
    return t if t % 2 == 1 else t + 1


class ECAGate(nn.Module):
    """Efficient channel attention: g = sigmoid(Conv1d(GAP(F))) sliding over channels (Eq. 1).

    Args:
        channels: C, used for the adaptive kernel size.
        kernel_size: odd 1-D kernel size; ``None`` uses :func:`eca_kernel_size`.
    """

    def __init__(self, channels: int, kernel_size: int | None = None) -> None:
        super().__init__()
        k = eca_kernel_size(channels) if kernel_size is None else kernel_size
        if k < 1 or k % 2 == 0:
            raise ValueError(f"ECA kernel size must be odd and positive, got {k}")
        self.kernel_size = k
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

    def forward(self, features: Tensor) -> Tensor:
        """Return the gate.

        Shape:
            features: (B, C, h, w). Returns (B, C, 1, 1) in (0, 1).
        """
        pooled = features.mean(dim=(2, 3))  # (B, C)
        gate = self.conv(pooled.unsqueeze(1)).squeeze(1)  # slide over channels
        return torch.sigmoid(gate)[:, :, None, None]


def num_pooled_channels(channels: int, ratio: float) -> int:
    """K = max(1, floor(ratio * C))."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"pool ratio must be in (0, 1], got {ratio}")
    return max(1, int(math.floor(ratio * channels + 1e-9)))


def pool_channels(features: Tensor, pooling: str = "topk", ratio: float = 0.7) -> Tensor:
    """Pool a feature map over channels at every pixel (Eq. 2; Table 6 compares the options).

    Args:
        features: weighted feature map F_w.
        pooling: ``topk`` (mean of the K largest values per pixel), ``bottomk`` (the K smallest),
            ``mean`` (all channels) or ``max``.
        ratio: K / C for ``topk`` and ``bottomk``.

    Shape:
        features: (B, C, h, w). Returns (B, h, w), same dtype.
    """
    if features.ndim != 4:
        raise ValueError(f"expected (B, C, h, w) features, got shape {tuple(features.shape)}")
    if pooling == "mean":
        return features.mean(dim=1)
    if pooling == "max":
        return features.amax(dim=1)
    if pooling in ("topk", "bottomk"):
        k = num_pooled_channels(features.shape[1], ratio)
        values = torch.topk(features, k, dim=1, largest=pooling == "topk", sorted=False).values
        return values.mean(dim=1)
    raise ValueError(f"unknown pooling {pooling!r}; expected topk, bottomk, mean or max")


class PTAP(nn.Module):
    """Pixel-wise top-k attention pooling: ECA gate (optional) + channel pooling, Eq. 1-2.

    Args:
        channels: C of the incoming feature map.
        pooling: see :func:`pool_channels`.
        ratio: K / C.
        eca: apply the ECA gate; without it, F_w = F (Table 3's "-PTAP" uses mean pooling, no ECA).
        eca_kernel: ECA kernel size, ``None`` for the adaptive rule.
    """

    def __init__(
        self,
        channels: int,
        pooling: str = "topk",
        ratio: float = 0.7,
        eca: bool = True,
        eca_kernel: int | None = None,
    ) -> None:
        super().__init__()
        pool_channels(torch.zeros(1, channels, 1, 1), pooling, ratio)  # validate early
        self.pooling = pooling
        self.ratio = ratio
        self.gate: ECAGate | None = ECAGate(channels, eca_kernel) if eca else None

    def weight(self, features: Tensor) -> Tensor:
        """F_w = F ⊙ g (or F itself without ECA). Shape: (B, C, h, w) -> (B, C, h, w)."""
        if self.gate is None:
            return features
        return features * self.gate(features)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Return (A, F_w).

        Shape:
            features: (B, C, h, w). Returns A (B, h, w) and F_w (B, C, h, w).
        """
        weighted = self.weight(features)
        return pool_channels(weighted, self.pooling, self.ratio), weighted


def channel_mean_map(features: Tensor) -> Tensor:
    """CAAM (PsyNet): the plain channel mean of F. Shape: (B, C, h, w) -> (B, h, w)."""
    return features.mean(dim=1)
