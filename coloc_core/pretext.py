"""Pretext tasks (SPEC §3): label sampling, image warps, map warps and their inverses.

Randomness is separated from application: :func:`sample_labels` draws one label per sample and task;
:class:`PretextTransform` applies the composed transform deterministically to images, attention maps
(the same transform at map resolution) and back (the inverse, with a validity mask).

Conventions (normalised coordinates in [-1, 1], ``align_corners=False``). For the affine tasks the
2x3 matrix theta maps an output pixel p to the input point theta @ [p, 1] it samples from, exactly as
``torch.nn.functional.affine_grid`` does:

| task | classes | transform |
|---|---|---|
| rotation | 4 | ``torch.rot90(x, label, dims=(-2, -1))`` (label * 90° counter-clockwise), exact |
| translation | 3 | theta translation (label - 1) * 0.1 in x and y; zero fill |
| scale | 3 | theta = diag(s), s = 1.3 / 1.0 / 0.7 for label 0 / 1 / 2; reflection fill |
| hflip | 2 | label 0 = flipped left-right, label 1 = unchanged |
| vflip | 2 | label 0 = flipped upside down, label 1 = unchanged |
| pst | 5 | PsyNet's point-symmetric transform: translation (label - 2) * 3, reflection fill |

(scale 1.3 shows more of the scene, its border filled by reflection; 0.7 zooms in.)

PST is kept as PsyNet defines it for comparability, although two of its classes cannot be told apart:
a shift by ±6 with reflection padding is a flip in both axes, so labels 0 and 4 both give the image
turned by 180°. PST is not invertible (reflection folds the plane), so CAML uses only its triplet in
the transformed frame.

Validity: when a map is brought back with T⁻¹, pixels whose source lies outside the transformed
view carry no information; forward warps of zero-filled tasks (translation) likewise. These pixels are
marked invalid and excluded from CAML's distances. Reflection-filled tasks warp maps with reflection
too, so their forward maps stay valid everywhere (the transformed image really shows the reflection).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

NUM_CLASSES: dict[str, int] = {
    "rotation": 4,
    "translation": 3,
    "scale": 3,
    "hflip": 2,
    "vflip": 2,
    "pst": 5,
}
# The label of "no transform" per task (used to build identity transforms).
IDENTITY_LABEL: dict[str, int] = {
    "rotation": 0,
    "translation": 1,
    "scale": 1,
    "hflip": 1,
    "vflip": 1,
    "pst": 2,
}
_SCALES = (1.3, 1.0, 0.7)
_IMAGE_FILL = {"translation": "zeros", "scale": "reflection", "pst": "reflection"}
_AFFINE_TASKS = frozenset(_IMAGE_FILL)
_NON_INVERTIBLE = frozenset({"pst"})


def sample_labels(
    tasks: Sequence[str],
    batch_size: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Tensor]:
    """Draw one uniform label per sample for every task.

    Returns:
        ``{task: (B,) int64}``, on ``device``.
    """
    labels = {}
    for task in tasks:
        if task not in NUM_CLASSES:
            raise ValueError(f"unknown pretext task {task!r}; expected one of {sorted(NUM_CLASSES)}")
        drawn = torch.randint(NUM_CLASSES[task], (batch_size,), generator=generator)
        labels[task] = drawn.to(device) if device is not None else drawn
    return labels


# ----------------------------------------------------------------------------------------- kernels


def rotate90(x: Tensor, k: Tensor) -> Tensor:
    """Rotate each sample by k[i] * 90° counter-clockwise (``torch.rot90`` on the last two dims).

    Shape:
        x: (B, C, H, W) with H == W when the batch mixes odd and even k; k: (B,) int.
    """
    k = k.to(torch.long) % 4
    out = torch.empty_like(x) if x.shape[-1] == x.shape[-2] else None
    if out is None:
        if bool((k % 2 == 1).any()):
            raise ValueError(f"rotating non-square maps {tuple(x.shape)} by 90° changes their shape")
        out = torch.empty_like(x)
    for r in range(4):
        index = (k == r).nonzero(as_tuple=True)[0]
        if index.numel():
            out[index] = torch.rot90(x[index], r, dims=(-2, -1))
    return out


def flip(x: Tensor, flipped: Tensor, dim: int) -> Tensor:
    """Flip the samples where ``flipped`` is true along ``dim`` (-1: left-right, -2: up-down).

    Shape:
        x: (B, C, H, W); flipped: (B,) bool.
    """
    mask = flipped.to(torch.bool).view(-1, *([1] * (x.ndim - 1)))
    return torch.where(mask, x.flip(dim), x)


def affine_theta(task: str, labels: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """The 2x3 sampling matrix of an affine task for each label.

    Shape:
        labels: (B,) int. Returns (B, 2, 3).
    """
    b = labels.shape[0]
    theta = torch.zeros(b, 2, 3, dtype=dtype, device=labels.device)
    lab = labels.to(dtype)
    if task == "translation":
        theta[:, 0, 0] = 1.0
        theta[:, 1, 1] = 1.0
        theta[:, 0, 2] = (lab - 1.0) * 0.1
        theta[:, 1, 2] = (lab - 1.0) * 0.1
    elif task == "scale":
        scales = torch.tensor(_SCALES, dtype=dtype, device=labels.device)[labels.long()]
        theta[:, 0, 0] = scales
        theta[:, 1, 1] = scales
    elif task == "pst":
        theta[:, 0, 0] = 1.0
        theta[:, 1, 1] = 1.0
        theta[:, 0, 2] = (lab - 2.0) * 3.0
        theta[:, 1, 2] = (lab - 2.0) * 3.0
    else:
        raise ValueError(f"{task!r} is not an affine pretext task")
    return theta


def invert_theta(theta: Tensor) -> Tensor:
    """Inverse of 2x3 affine sampling matrices. Shape: (B, 2, 3) -> (B, 2, 3)."""
    linear = theta[:, :, :2]
    inv_linear = torch.linalg.inv(linear)
    inv_shift = -(inv_linear @ theta[:, :, 2:])
    return torch.cat([inv_linear, inv_shift], dim=2)


def warp_affine(x: Tensor, theta: Tensor, padding_mode: str = "zeros", mode: str = "bilinear") -> Tensor:
    """Sample x at theta @ p for every output pixel p (``affine_grid`` + ``grid_sample``).

    Shape:
        x: (B, C, H, W); theta: (B, 2, 3). Returns (B, C, H, W).
    """
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


def in_view(theta: Tensor, height: int, width: int) -> Tensor:
    """Which output pixels sample from inside the input view.

    Shape:
        theta: (B, 2, 3). Returns (B, 1, height, width) bool.
    """
    grid = F.affine_grid(theta, [theta.shape[0], 1, height, width], align_corners=False)
    inside = (grid.abs() <= 1.0 + 1e-6).all(dim=-1)
    return inside.unsqueeze(1)


# --------------------------------------------------------------------------------------- transform


@dataclass
class PretextTransform:
    """A composed pretext transform with fixed per-sample labels.

    Tasks are applied in the given order (T = T_n ∘ ... ∘ T_1); the inverse runs backwards.

    Attributes:
        tasks: enabled tasks, in application order.
        labels: ``{task: (B,) int64}`` as drawn by :func:`sample_labels`.
    """

    tasks: tuple[str, ...]
    labels: dict[str, Tensor]

    @classmethod
    def sample(
        cls,
        tasks: Sequence[str],
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> PretextTransform:
        """Draw labels and build the transform."""
        return cls(tuple(tasks), sample_labels(tasks, batch_size, generator=generator, device=device))

    @property
    def invertible(self) -> bool:
        """False when a task (PST) has no inverse; CAML then uses only the transformed-frame triplet."""
        return not any(task in _NON_INVERTIBLE for task in self.tasks)

    def _apply(self, x: Tensor, task: str, inverse: bool, is_map: bool) -> tuple[Tensor, Tensor | None]:
        """One task on a (B, C, H, W) tensor; returns it and an in-view mask (None = all in view)."""
        labels = self.labels[task].to(x.device)
        if task == "rotation":
            return rotate90(x, (4 - labels) % 4 if inverse else labels), None
        if task in ("hflip", "vflip"):
            return flip(x, labels == 0, dim=-1 if task == "hflip" else -2), None
        theta = affine_theta(task, labels, dtype=torch.float32)
        if inverse:
            theta = invert_theta(theta)
        fill = _IMAGE_FILL[task]
        if not is_map:
            return warp_affine(x, theta, padding_mode=fill), None
        if fill == "reflection" and not inverse:
            return warp_affine(x, theta, padding_mode="reflection"), None
        # Maps brought from outside the view: sample with border padding (no darkened edge) and
        # report the out-of-view pixels so CAML can ignore them.
        return warp_affine(x, theta, padding_mode="border"), in_view(theta, x.shape[-2], x.shape[-1])

    def images(self, images: Tensor) -> Tensor:
        """T(x) for network inputs. Shape: (B, 3, H, W) -> (B, 3, H, W)."""
        x = images
        for task in self.tasks:
            x, _ = self._apply(x, task, inverse=False, is_map=False)
        return x

    def _maps(self, maps: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        squeeze = maps.ndim == 3
        x = maps.unsqueeze(1) if squeeze else maps
        valid = torch.ones(x.shape[0], 1, x.shape[-2], x.shape[-1], device=x.device, dtype=x.dtype)
        order = reversed(self.tasks) if inverse else self.tasks
        for task in order:
            x, inside = self._apply(x, task, inverse=inverse, is_map=True)
            # Carry validity through the same geometric step (nearest: it is a mask).
            if task in _AFFINE_TASKS:
                labels = self.labels[task].to(x.device)
                theta = affine_theta(task, labels)
                theta = invert_theta(theta) if inverse else theta
                pad = "reflection" if (_IMAGE_FILL[task] == "reflection" and not inverse) else "zeros"
                valid = warp_affine(valid, theta, padding_mode=pad, mode="nearest")
            else:
                valid, _ = self._apply(valid, task, inverse=inverse, is_map=True)
            if inside is not None:
                valid = valid * inside.to(valid.dtype)
        valid_mask = valid > 0.5
        if squeeze:
            return x.squeeze(1), valid_mask.squeeze(1)
        return x, valid_mask

    def maps(self, maps: Tensor) -> tuple[Tensor, Tensor]:
        """T applied to maps at their own resolution.

        Shape:
            maps: (B, h, w) or (B, C, h, w). Returns the warped maps (same shape) and a validity
            mask, (B, h, w) or (B, 1, h, w) bool.
        """
        return self._maps(maps, inverse=False)

    def inverse_maps(self, maps: Tensor) -> tuple[Tensor, Tensor]:
        """T⁻¹ applied to maps, with the validity mask of pixels seen in the transformed view.

        Raises:
            ValueError: when the transform is not invertible (PST).
        """
        if not self.invertible:
            raise ValueError(f"pretext transform {self.tasks} is not invertible (PST folds the plane)")
        return self._maps(maps, inverse=True)
