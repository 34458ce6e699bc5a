"""CorLoc and MaxBoxAcc(V2) as streaming accumulators (SPEC §6, the wsolevaluation protocol).

Both accumulators follow the same life cycle: ``update`` once per image (inside a Ray task, say),
``state_dict`` to ship the partial counts as a plain JSON-safe dict, ``from_state_dict`` + ``merge``
on the driver, ``compute`` once at the end. Counts are integers, so merging in any order gives the
same numbers as one accumulator over all images.

Keys returned by ``compute`` (δ printed with ``f"{δ:g}"``, e.g. ``0.5``):

* CorLoc: ``"corloc@0.5"`` per IoU threshold δ, ``"corloc_mean"`` (mean over the δ's),
  ``"threshold"`` (the score-map threshold τ used) and ``"num_images"``.
* MaxBoxAcc: ``"maxboxacc@0.5"`` per δ, ``"maxboxaccv2"`` (mean over the δ's; MaxBoxAccV2 of Choe
  et al., CVPR 2020, with the default δ ∈ ``coloc_core.config.IOU_THRESHOLDS`` = {0.3, 0.5, 0.7} and
  multi-contour boxes),
  ``"best_threshold@0.5"`` (the first τ reaching the maximum for that δ) and ``"num_images"``.

All values are percentages in [0, 100].

:class:`LocalizationAccumulator` is the evaluation core that training's per-epoch evaluation and
``pipelines.evaluate`` share: both accumulators on the same images (score map + GT boxes at score-map
size), with :meth:`LocalizationAccumulator.add_misses` for images that have no prediction (an
undecodable image, an error row, an image missing from a table): counted, never a hit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from coloc_core.boxes import (
    best_iou_at_thresholds,
    boxes_from_scoremap,
    cam_thresholds,
    check_box_convention,
    iou_matrix,
)
from coloc_core.config import CAM_CURVE_INTERVAL, IOU_THRESHOLDS


def _key(prefix: str, delta: float) -> str:
    return f"{prefix}@{delta:g}"


def _check_iou_thresholds(iou_thresholds: Sequence[float]) -> tuple[float, ...]:
    deltas = tuple(float(d) for d in iou_thresholds)
    if not deltas:
        raise ValueError("iou_thresholds must not be empty")
    if any(not 0.0 < d <= 1.0 for d in deltas):
        raise ValueError(f"IoU thresholds must lie in (0, 1], got {deltas}")
    if len({_key("", d) for d in deltas}) != len(deltas):
        raise ValueError(f"IoU thresholds must be distinct, got {deltas}")
    return deltas


def _miss_count(count: int) -> int:
    if int(count) != count or count < 0:
        raise ValueError(f"the number of missed images must be a non-negative integer, got {count}")
    return int(count)


def _gt_array(gt_boxes_224: npt.ArrayLike) -> np.ndarray:
    gt = check_box_convention(gt_boxes_224)
    if len(gt) == 0:
        raise ValueError("an image needs at least one GT box")
    return gt


class CorLocAccumulator:
    """CorLoc@δ: the percentage of ALL images whose single box has IoU >= δ with some GT box.

    The box is the largest-contour box of the score map at the fixed threshold τ (default 0.2, the
    paper's setting), i.e. ``boxes_from_scoremap(scoremap, τ, multi_contour=False)``.

    Args:
        iou_thresholds: the δ values.
        threshold: τ.
    """

    def __init__(self, iou_thresholds: Sequence[float] = IOU_THRESHOLDS, threshold: float = 0.2) -> None:
        self.iou_thresholds = _check_iou_thresholds(iou_thresholds)
        if not np.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold}")
        self.threshold = float(threshold)
        self.num_correct = np.zeros(len(self.iou_thresholds), dtype=np.int64)
        self.count = 0

    def update(self, scoremap: np.ndarray, gt_boxes_224: npt.ArrayLike) -> float:
        """Add one image.

        Args:
            scoremap: Shape: (H, W), float in [0, 1] (see ``boxes.scoremap_from_attention``).
            gt_boxes_224: GT boxes in score-map coordinates. Shape: (G, 4) or (4,), G >= 1.

        Returns:
            The image's IoU (best over its GT boxes).
        """
        gt = _gt_array(gt_boxes_224)
        box = boxes_from_scoremap(scoremap, self.threshold, multi_contour=False)
        return self.update_box(box[0], gt)

    def update_box(self, pred_box: npt.ArrayLike, gt_boxes_224: npt.ArrayLike) -> float:
        """Add one image from an already computed box.

        Args:
            pred_box: ``[x0, y0, x1, y1]`` in score-map coordinates. Shape: (4,) or (1, 4).
            gt_boxes_224: Shape: (G, 4) or (4,), G >= 1.

        Returns:
            The image's IoU (best over its GT boxes).
        """
        pred = check_box_convention(pred_box)
        if len(pred) != 1:
            raise ValueError(f"CorLoc takes exactly one predicted box per image, got {len(pred)}")
        iou = float(iou_matrix(pred, _gt_array(gt_boxes_224)).max())
        self.num_correct += np.array([iou >= d for d in self.iou_thresholds], dtype=np.int64)
        self.count += 1
        return iou

    def add_misses(self, count: int) -> CorLocAccumulator:
        """Add ``count`` images without a prediction: counted, wrong at every δ; returns self."""
        self.count += _miss_count(count)
        return self

    def merge(self, other: CorLocAccumulator) -> CorLocAccumulator:
        """Add another accumulator's counts to this one (``other`` is left unchanged); returns self.

        Raises:
            ValueError: if the two were configured differently.
        """
        if (other.iou_thresholds, other.threshold) != (self.iou_thresholds, self.threshold):
            raise ValueError("cannot merge CorLoc accumulators with different settings")
        self.num_correct = self.num_correct + other.num_correct
        self.count += other.count
        return self

    def compute(self) -> dict[str, float]:
        """CorLoc per δ and their mean, in percent.

        Raises:
            ValueError: if no image was added.
        """
        if self.count == 0:
            raise ValueError("CorLoc of an empty set is undefined: no image was added")
        values = self.num_correct.astype(np.float64) * 100.0 / float(self.count)
        out = {_key("corloc", d): float(v) for d, v in zip(self.iou_thresholds, values, strict=True)}
        out["corloc_mean"] = float(np.mean(values))
        out["threshold"] = self.threshold
        out["num_images"] = float(self.count)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state (JSON-safe)."""
        return {
            "iou_thresholds": list(self.iou_thresholds),
            "threshold": self.threshold,
            "num_correct": [int(v) for v in self.num_correct],
            "count": int(self.count),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> CorLocAccumulator:
        """Rebuild an accumulator from :meth:`state_dict`."""
        acc = cls(iou_thresholds=state["iou_thresholds"], threshold=state["threshold"])
        counts = np.asarray(state["num_correct"], dtype=np.int64)
        if counts.shape != acc.num_correct.shape:
            raise ValueError(f"num_correct has shape {counts.shape}, expected {acc.num_correct.shape}")
        acc.num_correct = counts
        acc.count = int(state["count"])
        return acc


class MaxBoxAccAccumulator:
    """MaxBoxAcc_δ = max over τ of the percentage of images whose box(es) at τ reach IoU >= δ.

    τ runs over ``np.arange(0, 1, cam_curve_interval)``; each δ picks its own best τ. With
    ``multi_contour=True`` an image counts when any of its contour boxes reaches δ (MaxBoxAccV2).

    Args:
        iou_thresholds: the δ values.
        cam_curve_interval: spacing of the τ grid.
        multi_contour: one box per contour (V2) instead of the largest contour only (V1).
        fast: exact fast path: for V2 the compiled level-set kernel (every contour box of every
            mask from two union-find sweeps, ``coloc_core/_level_sets.py``; needs numba), otherwise one
            contour search per distinct mask instead of one per τ. ``fast=False`` is the
            straightforward reference loop; all give identical counts.
    """

    def __init__(
        self,
        iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
        cam_curve_interval: float = CAM_CURVE_INTERVAL,
        multi_contour: bool = True,
        fast: bool = True,
    ) -> None:
        self.iou_thresholds = _check_iou_thresholds(iou_thresholds)
        self.cam_curve_interval = float(cam_curve_interval)
        self.thresholds = cam_thresholds(self.cam_curve_interval)
        self.multi_contour = bool(multi_contour)
        self.fast = bool(fast)
        self.num_correct = np.zeros((len(self.iou_thresholds), len(self.thresholds)), dtype=np.int64)
        self.count = 0

    def update(self, scoremap: np.ndarray, gt_boxes_224: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Add one image.

        Args:
            scoremap: Shape: (H, W), float in [0, 1].
            gt_boxes_224: GT boxes in score-map coordinates. Shape: (G, 4) or (4,), G >= 1.

        Returns:
            The image's best IoU at every τ. Shape: (T,), float64.
        """
        best = best_iou_at_thresholds(
            scoremap,
            _gt_array(gt_boxes_224),
            self.thresholds,
            multi_contour=self.multi_contour,
            fast=self.fast,
        )
        deltas = np.asarray(self.iou_thresholds, dtype=np.float64)
        self.num_correct = self.num_correct + (best[None, :] >= deltas[:, None])
        self.count += 1
        return best

    def add_misses(self, count: int) -> MaxBoxAccAccumulator:
        """Add ``count`` images without a prediction: counted, wrong at every (δ, τ); returns self."""
        self.count += _miss_count(count)
        return self

    def merge(self, other: MaxBoxAccAccumulator) -> MaxBoxAccAccumulator:
        """Add another accumulator's counts to this one (``other`` is left unchanged); returns self.

        Raises:
            ValueError: if the two were configured differently.
        """
        mine = (self.iou_thresholds, self.cam_curve_interval, self.multi_contour)
        theirs = (other.iou_thresholds, other.cam_curve_interval, other.multi_contour)
        if mine != theirs:
            raise ValueError(
                f"cannot merge MaxBoxAcc accumulators with different settings: {mine} vs {theirs}"
            )
        self.num_correct = self.num_correct + other.num_correct
        self.count += other.count
        return self

    def accuracies(self) -> npt.NDArray[np.float64]:
        """Box accuracy in percent at every (δ, τ). Shape: (D, T), float64.

        Raises:
            ValueError: if no image was added.
        """
        if self.count == 0:
            raise ValueError("MaxBoxAcc of an empty set is undefined: no image was added")
        return self.num_correct.astype(np.float64) * 100.0 / float(self.count)

    def compute(self) -> dict[str, float]:
        """MaxBoxAcc per δ, their mean (``maxboxaccv2``) and the best τ per δ.

        Raises:
            ValueError: if no image was added.
        """
        acc = self.accuracies()
        best_index = acc.argmax(axis=1)  # first τ reaching the maximum
        maxima = acc.max(axis=1)
        out: dict[str, float] = {}
        for d, m in zip(self.iou_thresholds, maxima, strict=True):
            out[_key("maxboxacc", d)] = float(m)
        out["maxboxaccv2"] = float(np.mean(maxima))
        for d, i in zip(self.iou_thresholds, best_index, strict=True):
            out[_key("best_threshold", d)] = float(self.thresholds[i])
        out["num_images"] = float(self.count)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state (JSON-safe); ``fast`` is a local choice and is not part of it."""
        return {
            "iou_thresholds": list(self.iou_thresholds),
            "cam_curve_interval": self.cam_curve_interval,
            "multi_contour": self.multi_contour,
            "num_correct": [[int(v) for v in row] for row in self.num_correct],
            "count": int(self.count),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], fast: bool = True) -> MaxBoxAccAccumulator:
        """Rebuild an accumulator from :meth:`state_dict`."""
        acc = cls(
            iou_thresholds=state["iou_thresholds"],
            cam_curve_interval=state["cam_curve_interval"],
            multi_contour=state["multi_contour"],
            fast=fast,
        )
        counts = np.asarray(state["num_correct"], dtype=np.int64)
        if counts.shape != acc.num_correct.shape:
            raise ValueError(f"num_correct has shape {counts.shape}, expected {acc.num_correct.shape}")
        acc.num_correct = counts
        acc.count = int(state["count"])
        return acc


class LocalizationAccumulator:
    """CorLoc at τ and MaxBoxAcc over the τ grid on the same images: the evaluation core.

    ``update`` adds an image with a prediction (its score map and GT boxes), ``add_misses`` images
    without one; ``state_dict`` / ``from_state_dict`` / ``merge`` as for the two accumulators it holds
    (:attr:`corloc`, :attr:`maxboxacc`).

    Args:
        iou_thresholds: the δ values of both.
        threshold: CorLoc's τ.
        cam_curve_interval: spacing of MaxBoxAcc's τ grid.
        multi_contour: MaxBoxAccV2 (every contour's box) instead of V1 (the largest contour's).
        fast: MaxBoxAcc's exact fast path (:class:`MaxBoxAccAccumulator`).
    """

    def __init__(
        self,
        iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
        threshold: float = 0.2,
        cam_curve_interval: float = CAM_CURVE_INTERVAL,
        multi_contour: bool = True,
        fast: bool = True,
    ) -> None:
        self.corloc = CorLocAccumulator(iou_thresholds, threshold=threshold)
        self.maxboxacc = MaxBoxAccAccumulator(
            iou_thresholds, cam_curve_interval, multi_contour=multi_contour, fast=fast
        )

    @property
    def count(self) -> int:
        """Images added (with a prediction or missed)."""
        return self.corloc.count

    @property
    def threshold(self) -> float:
        """CorLoc's τ."""
        return self.corloc.threshold

    def update(self, scoremap: np.ndarray, gt_boxes_224: npt.ArrayLike) -> float:
        """Add one image with a prediction.

        Args:
            scoremap: Shape: (H, W), float in [0, 1] (see ``boxes.scoremap_from_attention``).
            gt_boxes_224: GT boxes in score-map coordinates. Shape: (G, 4) or (4,), G >= 1.

        Returns:
            The IoU of its CorLoc box (best over its GT boxes).
        """
        gt = _gt_array(gt_boxes_224)
        iou = self.corloc.update(scoremap, gt)
        self.maxboxacc.update(scoremap, gt)
        return iou

    def add_misses(self, count: int) -> LocalizationAccumulator:
        """Add ``count`` images without a prediction: counted, never a hit (every δ and τ); returns self."""
        self.corloc.add_misses(count)
        self.maxboxacc.add_misses(count)
        return self

    def merge(self, other: LocalizationAccumulator) -> LocalizationAccumulator:
        """Add another accumulator's counts to this one (``other`` is left unchanged); returns self.

        Raises:
            ValueError: if the two were configured differently.
        """
        self.corloc.merge(other.corloc)
        self.maxboxacc.merge(other.maxboxacc)
        return self

    def compute(self) -> dict[str, float]:
        """``corloc@δ``, ``corloc_mean``, ``maxboxacc@δ``, ``maxboxaccv2`` and ``best_threshold@δ``.

        In percent (τ for ``best_threshold``); without CorLoc's ``threshold`` (:attr:`threshold`) and
        ``num_images`` (:attr:`count`).

        Raises:
            ValueError: if no image was added.
        """
        out = {k: v for k, v in self.corloc.compute().items() if k not in ("threshold", "num_images")}
        out.update({k: v for k, v in self.maxboxacc.compute().items() if k != "num_images"})
        return out

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state (JSON-safe): the two accumulators' states."""
        return {"corloc": self.corloc.state_dict(), "maxboxacc": self.maxboxacc.state_dict()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], fast: bool = True) -> LocalizationAccumulator:
        """Rebuild an accumulator from :meth:`state_dict`."""
        corloc = CorLocAccumulator.from_state_dict(state["corloc"])
        maxboxacc = MaxBoxAccAccumulator.from_state_dict(state["maxboxacc"], fast=fast)
        if corloc.count != maxboxacc.count:
            raise ValueError(f"CorLoc counts {corloc.count} images, MaxBoxAcc {maxboxacc.count}")
        settings = (corloc.iou_thresholds, corloc.threshold, maxboxacc.cam_curve_interval)
        acc = cls(*settings, multi_contour=maxboxacc.multi_contour, fast=fast)
        acc.corloc, acc.maxboxacc = corloc, maxboxacc
        return acc
