"""Score maps, boxes at score-map thresholds, and box IoU (SPEC §6, the wsolevaluation protocol).

Every number here reproduces clovaai/wsolevaluation (Choe et al., CVPR 2020; ``inference.py``,
``evaluation.py``, ``util.py``) exactly; the functions are our own code.

Conventions, all inherited from that protocol:

* Boxes are ``[x0, y0, x1, y1]`` integer pixel indices, **inclusive** on both ends: the area of a box is
  ``(x1 - x0 + 1) * (y1 - y0 + 1)`` and two boxes that share one pixel intersect with area 1. This is
  NOT torchvision's continuous convention (``torchvision.ops.box_iou`` uses ``(x1 - x0) * (y1 - y0)``);
  never mix the two.
* A predicted box is the bounding rectangle ``(x, y, w, h)`` of one contour of the binary mask,
  written ``[x, y, min(x + w, W - 1), min(y + h, H - 1)]``. So x1/y1 are one past the contour's last
  pixel, clipped to the image; the protocol then treats them as inclusive. We keep that quirk.
* Score map -> mask at threshold tau: ``u8 = floor(255 * S)`` (``astype(uint8)``), mask =
  ``u8 > int(tau * max(u8))``; contours come from ``cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)``.
  No contour gives the single box ``[0, 0, 0, 0]``. Single-contour mode keeps the contour of largest
  ``cv2.contourArea`` (the first one on ties); multi-contour mode keeps one box per contour, holes
  included (RETR_TREE returns them too).

Fast path (``best_iou_at_thresholds(..., fast=True)`` and :func:`boxes_at_thresholds`): the mask at
tau depends on tau only through the integer threshold ``int(tau * max(u8))``, and two integer
thresholds give the same mask when no value of ``u8`` lies between them. So each distinct mask is
built once (at most 256 per map instead of one per tau) and its contours are searched on the
bounding rectangle of its pixels only: outside that rectangle the mask is zero and OpenCV pads the
image with a zero border itself, so the crop yields the same contours, in the same order, shifted by
the crop offset. Bounding rectangles, contour areas and IoUs are then computed for all masks at once
with NumPy. The results are identical to one contour search per threshold (see
``tests/unit/test_boxes.py`` and ``bench/bench_eval.py``).

Level-set path (``best_iou_at_thresholds`` in multi-contour mode, i.e. MaxBoxAccV2, when numba is
installed): no contour search at all. The contours of a mask are the outer borders of its 8-connected
foreground components and the borders of its 4-connected holes, so two union-find sweeps over the
pixels sorted by value give the boxes of all 257 masks at once (``coloc_core/_level_sets.py``); again
bit-identical to the per-threshold search, and about 20x faster than it.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt
import torch

from coloc_core import _level_sets
from coloc_core.config import CAM_CURVE_INTERVAL

FloatArray = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.int64]

SCOREMAP_SIZE: tuple[int, int] = (224, 224)
"""(H, W) of the protocol's score maps. Every image size in this module is (H, W), height first."""


# ----------------------------------------------------------------------------------------------
# Score maps
# ----------------------------------------------------------------------------------------------


def normalize_scoremap(cam: npt.ArrayLike) -> FloatArray:
    """Min-max normalise a map to [0, 1]; a constant or non-finite map becomes all zeros.

    Pure: the input is never modified (wsolevaluation's ``normalize_scoremap`` works in place).

    Args:
        cam: the map. Shape: (H, W), any float dtype (the dtype is kept).

    Returns:
        ``(cam - min) / max(cam - min)``, same shape and dtype as ``cam``.
    """
    arr = np.asarray(cam)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if arr.size == 0 or not np.isfinite(arr).all():
        return np.zeros_like(arr)
    lo = arr.min()
    if lo == arr.max():
        return np.zeros_like(arr)
    shifted = arr - lo
    return shifted / shifted.max()


def _attention_to_float64(attention: npt.ArrayLike | torch.Tensor) -> npt.NDArray[np.float64]:
    if isinstance(attention, torch.Tensor):
        attention = attention.detach().to(device="cpu", dtype=torch.float32).numpy()
    # The reference casts the network's float32 map to float64 (``t2n``) BEFORE resizing.
    return np.ascontiguousarray(np.asarray(attention, dtype=np.float64))


def scoremap_from_attention(
    attention: npt.ArrayLike | torch.Tensor, size: tuple[int, int] = SCOREMAP_SIZE
) -> npt.NDArray[np.float64]:
    """Turn one attention map into the protocol's score map.

    Bicubic upsampling (``cv2.resize(..., INTER_CUBIC)``) of the map cast to float64, then
    :func:`normalize_scoremap`. The result is float64 on purpose: the reference works in float64, and
    storing the map as float32 changes ``floor(255 * S)`` for some pixels (the float64 value just below
    1/255 gives 0, its float32 rounding gives 1), hence the boxes: keep it float64 until evaluation.

    Args:
        attention: the map at feature resolution (NumPy or torch, any float dtype, any device).
            Shape: (h, w).
        size: output (H, W).

    Returns:
        Score map in [0, 1]. Shape: (H, W), dtype float64. All zeros for a constant or non-finite map.

    Raises:
        ValueError: if ``attention`` is not 2-D or ``size`` is not positive.
    """
    arr = _attention_to_float64(attention)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"attention must be a non-empty 2-D map, got shape {arr.shape}")
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size}")
    resized = cv2.resize(arr, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.asarray(normalize_scoremap(resized), dtype=np.float64)


def scoremaps_from_attention(
    attention: npt.ArrayLike | torch.Tensor, size: tuple[int, int] = SCOREMAP_SIZE
) -> npt.NDArray[np.float64]:
    """Batched :func:`scoremap_from_attention` (each map is resized and normalised on its own).

    Args:
        attention: Shape: (B, h, w) (or (B, 1, h, w)), NumPy or torch.
        size: output (H, W).

    Returns:
        Shape: (B, H, W), dtype float64.

    Raises:
        ValueError: on any other shape.
    """
    arr = _attention_to_float64(attention)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise ValueError(f"attention must have shape (B, h, w), got {arr.shape}")
    out = np.empty((arr.shape[0], int(size[0]), int(size[1])), dtype=np.float64)
    for i in range(arr.shape[0]):
        out[i] = scoremap_from_attention(arr[i], size)
    return out


def check_scoremap_validity(scoremap: npt.ArrayLike) -> None:
    """Raise unless ``scoremap`` is a 2-D float array in [0, 1] without NaN.

    Args:
        scoremap: Shape: (H, W), float dtype.

    Raises:
        TypeError: not a NumPy array, or not a float dtype.
        ValueError: not 2-D, empty, contains NaN, or has values outside [0, 1].
    """
    if not isinstance(scoremap, np.ndarray):
        raise TypeError(f"scoremap must be a numpy array, got {type(scoremap).__name__}")
    if not np.issubdtype(scoremap.dtype, np.floating):
        raise TypeError(f"scoremap must have a float dtype, got {scoremap.dtype}")
    if scoremap.ndim != 2 or scoremap.size == 0:
        raise ValueError(f"scoremap must be a non-empty 2-D array, got shape {scoremap.shape}")
    if np.isnan(scoremap).any():
        raise ValueError("scoremap contains NaN")
    lo, hi = scoremap.min(), scoremap.max()
    if lo < 0 or hi > 1:
        raise ValueError(f"scoremap must lie in [0, 1], got min={lo}, max={hi}")


def check_box_convention(boxes: npt.ArrayLike) -> IntArray | FloatArray:
    """Validate ``[x0, y0, x1, y1]`` boxes and return them as an (N, 4) array.

    Args:
        boxes: Shape: (4,) or (N, 4), int or float.

    Returns:
        The boxes as an (N, 4) array (a new array when the input was not one already).

    Raises:
        ValueError: wrong shape, non-finite or negative coordinates, or x1 < x0 / y1 < y0.
    """
    arr = np.asarray(boxes)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"boxes must be numeric, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        arr = arr.astype(np.int64)  # unsigned coordinates would wrap in x1 - x0 + 1
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (4,) or (N, 4), got {np.shape(boxes)}")
    if not np.isfinite(arr).all():
        raise ValueError("box coordinates must be finite")
    if (arr < 0).any():
        raise ValueError("box coordinates must be non-negative")
    if (arr[:, 2] < arr[:, 0]).any() or (arr[:, 3] < arr[:, 1]).any():
        raise ValueError("boxes must satisfy x0 <= x1 and y0 <= y1")
    return arr


# ----------------------------------------------------------------------------------------------
# Thresholds and masks
# ----------------------------------------------------------------------------------------------


def cam_thresholds(cam_curve_interval: float = CAM_CURVE_INTERVAL) -> npt.NDArray[np.float64]:
    """The protocol's score-map thresholds ``np.arange(0, 1, interval)`` (1,000 values by default).

    Exactly the float values of the reference's ``list(np.arange(0, 1, cam_curve_interval))``, so that
    ``int(tau * max(u8))`` agrees to the last bit.

    Raises:
        ValueError: if the interval is not in (0, 1).
    """
    if not 0.0 < cam_curve_interval < 1.0:
        raise ValueError(f"cam_curve_interval must be in (0, 1), got {cam_curve_interval}")
    return np.arange(0, 1, cam_curve_interval)


def _quantize(scoremap: np.ndarray) -> npt.NDArray[np.uint8]:
    # floor(255 * S), computed in the score map's own dtype like the reference
    return (scoremap * 255).astype(np.uint8)


def _integer_thresholds(u8: npt.NDArray[np.uint8], thresholds: npt.ArrayLike) -> IntArray:
    thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if not np.isfinite(thr).all():
        raise ValueError("thresholds must be finite")
    # float64 product then truncation toward zero == int(tau * np.max(u8)) for every tau
    return (thr * np.float64(u8.max())).astype(np.int64)


def _boxes_of_contours(
    contours: Sequence[np.ndarray], height: int, width: int, with_areas: bool
) -> tuple[IntArray, npt.NDArray[np.float64]]:
    """Protocol boxes (and ``cv2.contourArea``) of every contour, vectorised.

    Returns:
        boxes (N, 4) int64 in the protocol convention and areas (N,) float64 (empty unless
        ``with_areas``).
    """
    n = len(contours)
    if n == 0:
        return np.zeros((0, 4), np.int64), np.zeros(0, np.float64)
    lens = np.fromiter(map(len, contours), dtype=np.int64, count=n)
    pts = np.concatenate(contours).reshape(-1, 2).astype(np.int64)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    x, y = np.ascontiguousarray(pts[:, 0]), np.ascontiguousarray(pts[:, 1])
    boxes = np.empty((n, 4), dtype=np.int64)
    boxes[:, 0] = np.minimum.reduceat(x, starts)
    boxes[:, 1] = np.minimum.reduceat(y, starts)
    # boundingRect gives w = last - first + 1, and the protocol writes x1 = min(x + w, W - 1)
    boxes[:, 2] = np.minimum(np.maximum.reduceat(x, starts) + 1, width - 1)
    boxes[:, 3] = np.minimum(np.maximum.reduceat(y, starts) + 1, height - 1)
    if not with_areas:
        return boxes, np.zeros(0, np.float64)
    # Shoelace over each closed contour, like cv2.contourArea: sum(prev.x * p.y - prev.y * p.x) / 2.
    # Integer sums are exact, so the float64 result equals OpenCV's to the bit.
    prev_x, prev_y = np.roll(x, 1), np.roll(y, 1)
    last = starts + lens - 1
    prev_x[starts], prev_y[starts] = x[last], y[last]
    cross = prev_x * y - prev_y * x
    areas = np.abs(np.add.reduceat(cross, starts).astype(np.float64) * 0.5)
    return boxes, areas


def _binarize(u8: npt.NDArray[np.uint8], t: int) -> npt.NDArray[np.uint8]:
    # u8 > t as 0/1 (cv2.threshold on uint8 is exactly "> int(thresh)", also for t < 0 or t >= 255)
    return np.asarray(cv2.threshold(u8, t, 1, cv2.THRESH_BINARY)[1], dtype=np.uint8)


def _find_contours(mask: npt.NDArray[np.uint8], offset: tuple[int, int] = (0, 0)) -> Sequence[np.ndarray]:
    return cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE, offset=offset)[0]


def _boxes_one_threshold(u8: npt.NDArray[np.uint8], t: int, multi_contour: bool) -> IntArray:
    # The protocol's definition, written straightforwardly: one contour search, per-contour OpenCV calls.
    height, width = u8.shape
    contours = _find_contours(_binarize(u8, t))
    if len(contours) == 0:
        return np.zeros((1, 4), dtype=np.int64)
    if not multi_contour:
        contours = [max(contours, key=cv2.contourArea)]  # first maximum wins
    boxes = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        boxes.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
    return np.asarray(boxes, dtype=np.int64)


def boxes_from_scoremap(scoremap: np.ndarray, threshold: float, multi_contour: bool = False) -> IntArray:
    """Boxes of the score map at one threshold (one contour search, the protocol's definition).

    Args:
        scoremap: Shape: (H, W), float in [0, 1].
        threshold: tau; the mask is ``u8 > int(tau * max(u8))``.
        multi_contour: one box per contour (MaxBoxAccV2) instead of the largest contour only.

    Returns:
        Boxes ``[x0, y0, x1, y1]`` (protocol convention), dtype int64. Shape: (n, 4), n >= 1;
        ``[[0, 0, 0, 0]]`` when no pixel passes.

    Raises:
        TypeError, ValueError: see :func:`check_scoremap_validity`.
    """
    check_scoremap_validity(scoremap)
    u8 = _quantize(scoremap)
    return _boxes_one_threshold(u8, int(_integer_thresholds(u8, [threshold])[0]), multi_contour)


def region_boxes_from_scoremap(scoremap: np.ndarray, threshold: float) -> IntArray:
    """One box per region of the mask at τ: every object box of the multi-contour extraction.

    The mask is the protocol's (``u8 > int(tau * max(u8))``, as :func:`boxes_from_scoremap`). Of the
    contours that ``boxes_from_scoremap(..., multi_contour=True)`` returns, the borders of *holes* are
    left out (a hole's box lies inside its region's box and is not an object), and so are exact
    duplicates; what remains is one box per 8-connected region, in the protocol's box convention.
    Ordered by contour area, largest first (ties: OpenCV's order), so the first box is the region of
    the single-box mode whenever the largest contour is unique.

    Args:
        scoremap: Shape: (H, W), float in [0, 1].
        threshold: tau.

    Returns:
        Boxes ``[x0, y0, x1, y1]``, dtype int64. Shape: (n, 4), n >= 0 (empty when no pixel passes:
        unlike :func:`boxes_from_scoremap`, no ``[0, 0, 0, 0]`` placeholder).

    Raises:
        TypeError, ValueError: see :func:`check_scoremap_validity`.
    """
    check_scoremap_validity(scoremap)
    u8 = _quantize(scoremap)
    t = int(_integer_thresholds(u8, [threshold])[0])
    contours = cv2.findContours(_binarize(u8, t), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
    if len(contours) == 0:
        return np.zeros((0, 4), dtype=np.int64)
    boxes, areas = _boxes_of_contours(contours, u8.shape[0], u8.shape[1], with_areas=True)
    order = np.argsort(-areas, kind="stable")
    seen: set[tuple[int, ...]] = set()
    keep = []
    for i in order:
        key = tuple(int(v) for v in boxes[i])
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return np.asarray(boxes[keep], dtype=np.int64).reshape(-1, 4)


def _distinct_masks(u8: npt.NDArray[np.uint8], int_thresholds: IntArray) -> tuple[IntArray, IntArray]:
    """Group integer thresholds by the mask they give.

    ``u8 > t`` only changes when t crosses a value present in ``u8``, so the mask is identified by the
    smallest present value above t (256 when none: empty mask).

    Returns:
        ``level_thresholds`` (L,) one integer threshold per distinct mask, ascending, and ``inverse``
        (T,) mapping each input threshold to its mask.
    """
    present = np.flatnonzero(np.bincount(u8.ravel(), minlength=256))
    t = np.clip(int_thresholds, -1, 255)
    pos = np.searchsorted(present, t, side="right")
    above = np.append(present, 256)[pos]
    keys, inverse = np.unique(above, return_inverse=True)
    return keys - 1, inverse.reshape(-1)


def _first_above(line_max: np.ndarray, thresholds: IntArray) -> IntArray:
    # index of the first entry > t, for each t (len(line_max) when none)
    running = np.maximum.accumulate(line_max.astype(np.int64))
    return np.searchsorted(running, thresholds, side="right").astype(np.int64)


def _boxes_per_mask(
    u8: npt.NDArray[np.uint8], level_thresholds: IntArray, with_areas: bool
) -> tuple[IntArray, npt.NDArray[np.float64], IntArray]:
    """Contour boxes of every mask ``u8 > t`` for the given t, one contour search per mask.

    Each search runs on the bounding rectangle of the mask's pixels (same contours, same order, see
    the module docstring).

    Returns:
        boxes (N, 4) int64 (protocol convention, full-image coordinates), areas (N,) float64 and
        counts (L,) int64: the number of contours of each mask, in order.
    """
    height, width = u8.shape
    row_max, col_max = u8.max(axis=1), u8.max(axis=0)
    y0 = _first_above(row_max, level_thresholds)
    y1 = height - _first_above(row_max[::-1], level_thresholds)
    x0 = _first_above(col_max, level_thresholds)
    x1 = width - _first_above(col_max[::-1], level_thresholds)
    contours: list[np.ndarray] = []
    counts = np.zeros(len(level_thresholds), dtype=np.int64)
    for i, (t, a, b, c, d) in enumerate(
        zip(level_thresholds.tolist(), y0.tolist(), y1.tolist(), x0.tolist(), x1.tolist(), strict=True)
    ):
        if a >= b:  # empty mask
            continue
        found = _find_contours(_binarize(u8[a:b, c:d], t), offset=(c, a))
        contours.extend(found)
        counts[i] = len(found)
    boxes, areas = _boxes_of_contours(contours, height, width, with_areas)
    return boxes, areas, counts


def _per_mask_boxes(
    u8: npt.NDArray[np.uint8], level_thresholds: IntArray, multi_contour: bool
) -> tuple[IntArray, IntArray]:
    """The protocol's box list of every mask, flattened.

    Returns:
        boxes (N, 4) int64 and counts (L,) int64 >= 1 (``[0, 0, 0, 0]`` stands in for no contour).
    """
    boxes, areas, counts = _boxes_per_mask(u8, level_thresholds, with_areas=not multi_contour)
    n_levels = len(level_thresholds)
    starts = np.zeros(n_levels, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    has = counts > 0
    if multi_contour:
        keep_boxes, keep_counts = boxes, counts
    else:
        # first contour of maximal area within each mask's segment
        if len(boxes):
            seg_starts = starts[has]
            seg_max = np.maximum.reduceat(areas, seg_starts)
            seg_id = np.repeat(np.arange(len(seg_starts)), counts[has])
            index = np.arange(len(areas))
            candidate = np.where(areas == seg_max[seg_id], index, len(areas))
            keep_boxes = boxes[np.minimum.reduceat(candidate, seg_starts)]
        else:
            keep_boxes = boxes
        keep_counts = has.astype(np.int64)
    # insert [0, 0, 0, 0] for masks without contour, keeping the mask order
    out_counts = np.where(has, keep_counts, 1)
    out = np.zeros((int(out_counts.sum()), 4), dtype=np.int64)
    out_starts = np.zeros(n_levels, dtype=np.int64)
    np.cumsum(out_counts[:-1], out=out_starts[1:])
    dest = np.repeat(out_starts[has], keep_counts[has]) + _ranks(keep_counts[has])
    out[dest] = keep_boxes
    return out, out_counts


def _ranks(counts: IntArray) -> IntArray:
    # 0..c-1 for each count c, concatenated
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total, dtype=np.int64) - starts


def boxes_at_thresholds(
    scoremap: np.ndarray, thresholds: npt.ArrayLike, multi_contour: bool = False
) -> list[IntArray]:
    """Boxes at every threshold, like the protocol's ``compute_bboxes_from_scoremaps``.

    Same boxes, in the same order, as :func:`boxes_from_scoremap` called once per threshold, but each
    distinct mask is searched once.

    Args:
        scoremap: Shape: (H, W), float in [0, 1].
        thresholds: tau values. Shape: (T,).
        multi_contour: one box per contour instead of the largest contour only.

    Returns:
        T arrays of shape (n_t, 4), dtype int64, n_t >= 1 (independent copies).
    """
    check_scoremap_validity(scoremap)
    u8 = _quantize(scoremap)
    levels, inverse = _distinct_masks(u8, _integer_thresholds(u8, thresholds))
    boxes, counts = _per_mask_boxes(u8, levels, multi_contour)
    ends = np.cumsum(counts)
    per_level = [boxes[e - c : e] for c, e in zip(counts.tolist(), ends.tolist(), strict=True)]
    return [per_level[i].copy() for i in inverse.tolist()]


# ----------------------------------------------------------------------------------------------
# IoU
# ----------------------------------------------------------------------------------------------


def iou_matrix(boxes_a: npt.ArrayLike, boxes_b: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """IoU of every pair of boxes with inclusive pixel areas (wsolevaluation's convention).

    ``area = (x1 - x0 + 1) * (y1 - y0 + 1)``; intersection ``max(0, min(x1) - max(x0) + 1)`` per axis.
    Not torchvision's continuous ``box_iou``. A pair whose union is not positive gets IoU 0.

    Args:
        boxes_a: Shape: (N, 4) or (4,), ``[x0, y0, x1, y1]``.
        boxes_b: Shape: (M, 4) or (4,).

    Returns:
        Shape: (N, M), float64.

    Raises:
        ValueError: invalid boxes (see :func:`check_box_convention`).
    """
    return _iou(check_box_convention(boxes_a), check_box_convention(boxes_b))


def _iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> npt.NDArray[np.float64]:
    # (N, 4) x (M, 4) -> (N, M), no validation; same operation order as the reference
    a = boxes_a[:, None, :]
    b = boxes_b[None, :, :]
    inter_w = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    inter_h = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    union = area_a + area_b - inter
    degenerate = union <= 0
    iou = np.asarray(inter / np.where(degenerate, 1, union), dtype=np.float64)
    iou[degenerate] = 0.0
    return iou


def match_boxes(
    pred_boxes: npt.ArrayLike, pred_scores: npt.ArrayLike, gt_boxes: npt.ArrayLike, iou_threshold: float = 0.5
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Greedy one-to-one matching of detections to ground truth (the PASCAL VOC / COCO rule).

    Predictions are taken by decreasing score (ties: the earlier one); each is matched to the
    still-unmatched GT box it overlaps most, when that IoU (:func:`iou_matrix`, inclusive pixels) is at
    least ``iou_threshold``. So a GT box is found at most once, and a second box on the same object
    counts as a false positive.

    Args:
        pred_boxes: Shape: (N, 4), ``[x0, y0, x1, y1]`` (N may be 0).
        pred_scores: Shape: (N,).
        gt_boxes: Shape: (M, 4) (M may be 0).
        iou_threshold: the IoU a match needs.

    Returns:
        ``(pred_matched (N,) bool, gt_matched (M,) bool)``.

    Raises:
        ValueError: invalid boxes, or scores whose length differs from the boxes'.
    """
    pred = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(pred):
        raise ValueError(f"{len(pred)} boxes but {len(scores)} scores")
    pred_matched = np.zeros(len(pred), dtype=bool)
    gt_matched = np.zeros(len(gt), dtype=bool)
    if len(pred) == 0 or len(gt) == 0:
        return pred_matched, gt_matched
    ious = iou_matrix(pred, gt)
    for i in np.argsort(-scores, kind="stable"):
        candidates = np.where(gt_matched, -1.0, ious[i])
        j = int(np.argmax(candidates))
        if candidates[j] >= iou_threshold:
            pred_matched[i] = gt_matched[j] = True
    return pred_matched, gt_matched


def best_iou_at_thresholds(
    scoremap: np.ndarray,
    gt_boxes: npt.ArrayLike,
    thresholds: npt.ArrayLike,
    multi_contour: bool = True,
    fast: bool = True,
) -> npt.NDArray[np.float64]:
    """Best IoU with any GT box of the box(es) at each threshold: the per-image core of MaxBoxAcc.

    Args:
        scoremap: Shape: (H, W), float in [0, 1].
        gt_boxes: GT boxes in score-map coordinates (see :func:`resize_boxes`). Shape: (G, 4), G >= 1.
        thresholds: tau values. Shape: (T,).
        multi_contour: best over all contour boxes (MaxBoxAccV2) instead of the largest contour's box.
        fast: exact fast path (module docstring): the level-set kernel in multi-contour mode when
            numba is installed and the GT boxes are integral, else one contour search per distinct
            mask; ``False`` runs the straightforward reference loop, one contour search per threshold.

    Returns:
        Shape: (T,), float64.

    Raises:
        TypeError, ValueError: invalid score map or boxes, or no GT box.
    """
    check_scoremap_validity(scoremap)
    gt = check_box_convention(gt_boxes)
    if len(gt) == 0:
        raise ValueError("at least one GT box is needed")
    u8 = _quantize(scoremap)
    if not fast:
        return np.array(
            [
                _iou(_boxes_one_threshold(u8, int(t), multi_contour), gt).max()
                for t in _integer_thresholds(u8, thresholds)
            ],
            dtype=np.float64,
        )
    int_thresholds = _integer_thresholds(u8, thresholds)
    if multi_contour and _level_sets.available() and np.array_equal(gt, np.floor(gt)):
        # every contour of every mask from two union-find sweeps (see coloc_core/_level_sets.py)
        per_level = _level_sets.best_iou_per_level(u8, gt.astype(np.int64))
        return np.asarray(per_level[np.clip(int_thresholds, -1, 255) + 1], dtype=np.float64)
    levels, inverse = _distinct_masks(u8, int_thresholds)
    boxes, counts = _per_mask_boxes(u8, levels, multi_contour)
    starts = np.cumsum(counts) - counts
    per_mask = np.maximum.reduceat(_iou(boxes, gt).max(axis=1), starts)
    return np.asarray(per_mask[inverse], dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# Coordinate changes
# ----------------------------------------------------------------------------------------------


def resize_boxes(
    boxes: npt.ArrayLike, from_hw: tuple[float, float], to_hw: tuple[float, float] = SCOREMAP_SIZE
) -> IntArray:
    """Rescale GT boxes between image sizes with truncation, like the protocol's ``resize_bbox``.

    ``x' = int(x * to_w / from_w)`` (float64, left to right), same for y.

    Args:
        boxes: Shape: (N, 4) or (4,), ``[x0, y0, x1, y1]`` in the ``from_hw`` image.
        from_hw: (height, width) of the source image.
        to_hw: (height, width) of the target image, by default the score map's :data:`SCOREMAP_SIZE`.

    Returns:
        Shape: (N, 4), int64.

    Raises:
        ValueError: invalid boxes or non-positive sizes.
    """
    arr = check_box_convention(boxes).astype(np.float64)
    fh, fw = float(from_hw[0]), float(from_hw[1])
    th, tw = float(to_hw[0]), float(to_hw[1])
    if min(fw, fh, tw, th) <= 0:
        raise ValueError(f"image sizes (H, W) must be positive, got {from_hw} -> {to_hw}")
    scale = np.array([tw, th, tw, th])
    return (arr * scale / np.array([fw, fh, fw, fh])).astype(np.int64)


def boxes_to_original(
    boxes: npt.ArrayLike, orig_hw: tuple[float, float], size: tuple[int, int] = SCOREMAP_SIZE
) -> npt.NDArray[np.float32]:
    """Map score-map boxes back to the original image's pixel coordinates (for pseudo-labels).

    ``x_orig = x * W / size_w`` and ``y_orig = y * H / size_h`` (the inverse scaling of
    :func:`resize_boxes`, coordinates taken as positions on the score-map grid), clipped into
    ``[0, W - 1]`` and ``[0, H - 1]``. Rounding back with :func:`resize_boxes` may lose one pixel to
    truncation, so compute protocol metrics on score-map boxes, not on these.

    Args:
        boxes: Shape: (N, 4) or (4,), in score-map coordinates.
        orig_hw: (H, W) of the original image.
        size: (H, W) of the score map.

    Returns:
        Shape: (N, 4), float32.

    Raises:
        ValueError: invalid boxes or non-positive sizes.
    """
    arr = check_box_convention(boxes).astype(np.float64)
    height, width = float(orig_hw[0]), float(orig_hw[1])
    size_h, size_w = float(size[0]), float(size[1])
    if min(width, height, size_h, size_w) <= 0:
        raise ValueError(f"sizes must be positive, got orig_hw={orig_hw}, size={size}")
    scaled = arr * np.array([width / size_w, height / size_h, width / size_w, height / size_h])
    upper = np.array([width - 1, height - 1, width - 1, height - 1])
    return np.clip(scaled, 0.0, upper).astype(np.float32)
