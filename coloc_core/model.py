"""ColocNet: backbone -> pretext logits (plain features) + attention map (PTAP), one typed output."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from coloc_core.attention import PTAP
from coloc_core.backbones import Backbone, build_backbone
from coloc_core.config import ColocConfig
from coloc_core.pretext import NUM_CLASSES


@dataclass
class ColocOutput:
    """Everything one forward pass produces.

    Attributes:
        features: F, the backbone's last conv map, (B, C, h, w), post-ReLU.
        weighted: F_w = F ⊙ ECA gate, (B, C, h, w) (equal to F without ECA).
        attention: A = PTAP(F), (B, h, w).
        logits: per pretext task, (B, num_classes), from a 1x1 conv + GAP on the plain F.
    """

    features: Tensor
    weighted: Tensor
    attention: Tensor
    logits: dict[str, Tensor]


class ColocNet(nn.Module):
    """The co-localization network of Ki et al. (ICCV 2021, Fig. 3).

    Args:
        backbone: a feature extractor from :mod:`coloc_core.backbones`.
        tasks: enabled pretext tasks (one head each).
        pooling, pool_ratio, eca, eca_kernel: PTAP settings (:class:`coloc_core.attention.PTAP`).
    """

    def __init__(
        self,
        backbone: Backbone,
        tasks: tuple[str, ...] = ("rotation",),
        pooling: str = "topk",
        pool_ratio: float = 0.7,
        eca: bool = True,
        eca_kernel: int | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        channels = backbone.out_channels
        self.ptap = PTAP(channels, pooling=pooling, ratio=pool_ratio, eca=eca, eca_kernel=eca_kernel)
        for task in tasks:
            if task not in NUM_CLASSES:
                raise ValueError(f"unknown pretext task {task!r}; expected one of {sorted(NUM_CLASSES)}")
        self.tasks = tuple(tasks)
        self.heads = nn.ModuleDict(
            {task: nn.Conv2d(channels, NUM_CLASSES[task], kernel_size=1) for task in self.tasks}
        )

    @property
    def mean(self) -> tuple[float, float, float]:
        """Input normalisation mean of the backbone (RGB, for images scaled to [0, 1])."""
        return self.backbone.mean

    @property
    def std(self) -> tuple[float, float, float]:
        """Input normalisation std of the backbone."""
        return self.backbone.std

    def forward(self, images: Tensor) -> ColocOutput:
        """Run the network.

        Shape:
            images: (B, 3, H, W) float, normalised with :attr:`mean`/:attr:`std`.
        """
        features = self.backbone(images)
        attention, weighted = self.ptap(features)
        logits = {task: head(features).mean(dim=(2, 3)) for task, head in self.heads.items()}
        return ColocOutput(features=features, weighted=weighted, attention=attention, logits=logits)


def build_model(cfg: ColocConfig, weights: str | None | bool = True) -> ColocNet:
    """Build ColocNet from a config.

    Args:
        cfg: the method config (``cfg.model`` and ``cfg.pretext.tasks`` are used).
        weights: ``True`` loads ``cfg.model.weights``; ``False``/``None`` skips pretrained weights
            (e.g. when a trained checkpoint is loaded right after); a string overrides the source.
    """
    m = cfg.model
    if weights is True:
        source = m.weights
    elif weights is False or weights is None:
        source = None
    else:
        source = weights
    backbone = build_backbone(m.backbone, weights=source, output_stride=m.output_stride)
    return colocnet_on(backbone, cfg)


def colocnet_on(backbone: Backbone, cfg: ColocConfig) -> ColocNet:
    """ColocNet with the PTAP and pretext settings of ``cfg`` on an already built backbone."""
    m = cfg.model
    return ColocNet(
        backbone,
        tasks=cfg.pretext.tasks,
        pooling=m.pooling,
        pool_ratio=m.pool_ratio,
        eca=m.eca,
        eca_kernel=m.eca_kernel,
    )


def normalize_images(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 or [0, 1] images to normalised float network input.

    Shape:
        images: (B, H, W, 3) uint8 (as Ray Data carries them) or (B, 3, H, W) float in [0, 1].
        Returns (B, 3, H, W) float32.
    """
    if images.dtype == torch.uint8:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"uint8 images must be (B, H, W, 3), got {tuple(images.shape)}")
        x = images.permute(0, 3, 1, 2).float().div_(255.0)
    else:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"float images must be (B, 3, H, W), got {tuple(images.shape)}")
        x = images.float()
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype)[None, :, None, None]
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype)[None, :, None, None]
    return (x - mean_t) / std_t
