"""The confidence of a box: :func:`box_score`.

The per-image math of the labeling stage that :mod:`coloc_core.boxes` does not cover: the stability
of the box over a range of τ (:func:`box_stability`) plus the excess map mass it captures
(:func:`box_compactness`), on the score map of SPEC §6 (the stored map is
:mod:`coloc_core.heatmap`'s), plus, for a fitted or trained model, how typical the box's size is
of the collection it was fitted or trained on (:func:`box_typicality`, with the
:func:`box_size_statistics` that the fit or the export stores in the model file), plus, for a
fitted or trained model, how typical its content is (the term of :mod:`coloc_core.box_content`, passed in),
plus, for a fitted labeler, how much more of its map repeats apart than the collection's boxes' does
(:func:`box_repetition`, :func:`box_repeat_excess`; a box around several objects).
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard

import numpy as np

#: The stability term compares the boxes at τ·LOW and τ·HIGH (τ at least SCORE_MIN_TAU, the upper one
#: capped at 0.99).
SCORE_LOW, SCORE_HIGH, SCORE_MIN_TAU = 0.5, 2.0, 0.05


def box_stability(scoremap: np.ndarray, threshold: float) -> float:
    """How stable the box at τ is: IoU(box at τ/2, box at min(2τ, 0.99)), in [0, 1].

    Each box is the single largest-contour box of SPEC §6, with τ raised to :data:`SCORE_MIN_TAU`
    first. 1 when the region keeps its extent over a four-fold range of thresholds (a sharp-edged,
    well separated region), low when a small change of τ makes the box jump (a diffuse map, competing
    blobs); 0 for a constant map (no box).

    Shape:
        scoremap: (H, W) float in [0, 1].
    """
    from coloc_core.boxes import boxes_at_thresholds, iou_matrix  # noqa: PLC0415

    s = _scoremap_2d(scoremap)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    if not np.isfinite(s).all() or float(s.max(initial=0.0)) <= 0.0:
        return 0.0
    tau = max(float(threshold), SCORE_MIN_TAU)
    low, high = boxes_at_thresholds(s, [tau * SCORE_LOW, min(tau * SCORE_HIGH, 0.99)], multi_contour=False)
    a, b = np.asarray(low).reshape(-1, 4)[:1], np.asarray(high).reshape(-1, 4)[:1]
    if not a.any() or not b.any():
        return 0.0
    return float(iou_matrix(a, b)[0, 0])


def box_compactness(scoremap: np.ndarray, box: np.ndarray | list[float] | tuple[float, ...]) -> float:
    """The excess map mass a box captures: Σ_inside S / Σ S − area_inside / area_image, in [−1, 1].

    0 for the whole-image box, a flat map and a box on a uniform map; close to 1 when a small box
    holds nearly all of the map's mass. The box is pixel-inclusive, in the score map's coordinates.
    """
    s = _scoremap_2d(scoremap)
    height, width = s.shape
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"invalid box {box}")
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, width - 1), min(y1, height - 1)
    total = float(s.sum())
    if total <= 0.0 or not np.isfinite(total):
        return 0.0
    inside = float(s[y0 : y1 + 1, x0 : x1 + 1].sum())
    return inside / total - (x1 - x0 + 1) * (y1 - y0 + 1) / float(height * width)


#: The typicality term: the deviation (in spreads) that costs the whole term (−1), and the smallest
#: spread (in natural-log units of the area share) a collection may have.
TYPICAL_SCALE, TYPICAL_MIN_SPREAD = 8.0, 0.05
#: The typical box is measured on at most this many images of a collection (:func:`evenly_spread`).
TYPICAL_BOX_IMAGES = 200


def evenly_spread(count: int, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` of ``count`` items, spread evenly over them (all when fewer).

    Shape: returns (min(count, limit),) int64, sorted.
    """
    if count <= limit:
        return np.arange(count, dtype=np.int64)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(np.int64))


def scoremap_box_area(scoremap: np.ndarray, threshold: float) -> float:
    """The area share of the single largest-contour box of a score map at τ (SPEC §6's box)."""
    from coloc_core.boxes import boxes_from_scoremap  # noqa: PLC0415

    s = _scoremap_2d(scoremap)
    box = np.asarray(boxes_from_scoremap(s, threshold, multi_contour=False)).reshape(-1, 4)[0]
    return box_area_share(box, s.shape)


def box_area_share(box: np.ndarray | list[float] | tuple[float, ...], shape: tuple[int, int]) -> float:
    """The share of the map a pixel-inclusive box covers, in (0, 1] (clipped to the map)."""
    height, width = int(shape[0]), int(shape[1])
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    x0, y0 = min(max(x0, 0), width - 1), min(max(y0, 0), height - 1)
    x1, y1 = min(max(x1, x0), width - 1), min(max(y1, y0), height - 1)
    return (x1 - x0 + 1) * (y1 - y0 + 1) / float(height * width)


def box_size_statistics(area_shares: np.ndarray | list[float]) -> dict[str, float | int]:
    """The typical box of a collection: median and spread of ln(area share) over its images' boxes.

    ``spread`` is the median absolute deviation, at least :data:`TYPICAL_MIN_SPREAD`. The fitted
    labelers and the CAML export store the result with the model (``box_sizes`` of the model file),
    measured on a sample of the collection at the model's τ; :func:`box_typicality` reads it.

    Raises:
        ValueError: no area share, or one outside (0, 1].
    """
    a = np.asarray(area_shares, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError("box_size_statistics needs at least one box")
    if not (np.isfinite(a).all() and (a > 0).all() and (a <= 1.0 + 1e-9).all()):
        raise ValueError("area shares must be in (0, 1]")
    logs = np.log(a)
    median = float(np.median(logs))
    spread = max(float(np.median(np.abs(logs - median))), TYPICAL_MIN_SPREAD)
    return {"median": median, "spread": spread, "images": int(a.size)}


def box_typicality(area_share: float, box_sizes: dict[str, Any]) -> float:
    """How typical a box's size is of its collection: −min(|ln a − median| / (8 · spread), 1), in [−1, 0].

    0 for a box of the collection's median size, −1/8 per spread away from it, −1 from
    :data:`TYPICAL_SCALE` spreads on. A box far smaller or larger than the collection's usual one is
    more often a part of the object, a merge of several, or clutter (docs/RESULTS.md, issue 10: "Box
    score").
    """
    spread = max(float(box_sizes["spread"]), TYPICAL_MIN_SPREAD)
    deviation = abs(math.log(max(float(area_share), 1e-12)) - float(box_sizes["median"])) / spread
    return -min(deviation / TYPICAL_SCALE, 1.0)


def payload_box_sizes(payload: dict[str, Any], threshold: float) -> dict[str, Any] | None:
    """The ``box_sizes`` a model file stores, when they apply at τ = ``threshold``; else None.

    They were measured at the model's own τ (their ``threshold``): boxes cut at another τ have other
    sizes, so a labeling run with ``--threshold`` other than that one scores without the typicality
    term (nor the repetition term: ``repeats``, :func:`repeat_statistic`, present in the files of
    fitted labelers since it was added).
    """
    sizes = payload.get("box_sizes")
    measured_at = float(sizes.get("threshold", payload.get("threshold", -1.0))) if sizes else -1.0
    if not sizes or not math.isclose(float(threshold), measured_at, abs_tol=1e-6):
        return None
    out: dict[str, Any] = {
        "median": float(sizes["median"]),
        "spread": float(sizes["spread"]),
        "images": int(sizes["images"]),
    }
    if sizes.get("repeats") is not None:
        out["repeats"] = float(sizes["repeats"])
    return out


#: Two cells of a box's map show the same part when the cosine of their features is at least this.
REPEAT_COSINE = 0.4
#: The collection's usual repetition (:func:`repeat_statistic`): this quantile of its boxes' values.
REPEAT_QUANTILE = 0.75
#: A finer feature grid is averaged over k×k blocks down to at most this many cells a side first: the
#: measure compares every cell of the box with every other (the default labelers' grid is 30×30 at 480
#: pixels and is used as it is; a stride-4 backbone's 56×56 at 224 would cost ten times as much).
REPEAT_MAX_GRID = 32


def box_repetition(
    heat: np.ndarray,
    features: np.ndarray,
    box: np.ndarray | list[float] | tuple[float, ...],
    threshold: float,
    map_shape: tuple[int, int] = (224, 224),
) -> float:
    """How much of a box's map mass shows a part that the box holds again, apart: in [0, 1].

    On the feature grid: the cells of the box whose map is at least τ (the mask) are compared by the
    cosine of their features. For each such cell, the mask's cells like it (cosine ≥
    :data:`REPEAT_COSINE`) form connected groups (8-connectivity); its ratio is the size of the
    largest group it is not in over that of its own, capped at 1. The result is the mean ratio,
    weighted by the map. Near 0 when each part of the box's object appears once (or its like cells
    touch: fur, a car's body); high for a box around two or more objects of the kind, each part
    repeated in each one. A single object's paired parts (ears, paws, wheels) repeat too, but hold
    little of its map, which is why the score compares the value with the collection's usual one
    (:func:`box_repeat_excess`; docs/RESULTS.md, issue 10: "Parts that repeat").

    Args:
        heat: the map at feature resolution, in [0, 1] (the dequantised stored heatmap). Shape: (h, w);
            a grid finer than :data:`REPEAT_MAX_GRID` a side is averaged over blocks first.
        features: the features the map was computed from. Shape: (C, h, w).
        box: [x0, y0, x1, y1], inclusive pixels of a score map of ``map_shape`` (the SPEC §6 224×224).
        threshold: τ.
        map_shape: (H, W) of the score map ``box`` is given in.
    """
    from scipy import ndimage  # noqa: PLC0415

    a = _scoremap_2d(heat)
    f = np.asarray(features, dtype=np.float32)
    if f.ndim != 3 or f.shape[1:] != a.shape:
        raise ValueError(f"features must be (C, {a.shape[0]}, {a.shape[1]}), got {f.shape}")
    k = max(1, math.ceil(max(a.shape) / REPEAT_MAX_GRID))
    if k > 1:
        a, f = _block_mean(a[None], k)[0], _block_mean(f, k)
    gh, gw = a.shape
    mh, mw = int(map_shape[0]), int(map_shape[1])
    x0, y0, x1, y1 = (float(v) for v in box)
    gx0, gy0 = max(int(math.floor(x0 * gw / mw)), 0), max(int(math.floor(y0 * gh / mh)), 0)
    gx1 = min(max(int(math.ceil((x1 + 1.0) * gw / mw)), gx0 + 1), gw)
    gy1 = min(max(int(math.ceil((y1 + 1.0) * gh / mh)), gy0 + 1), gh)
    inside = a[gy0:gy1, gx0:gx1]
    mask = inside >= float(threshold)
    ys, xs = np.nonzero(mask)
    weights = inside[ys, xs].astype(np.float64)
    if len(ys) < 2 or float(weights.sum()) <= 0.0 or not np.isfinite(inside).all():
        return 0.0
    cells = f[:, gy0:gy1, gx0:gx1][:, ys, xs]
    cells = cells / np.maximum(np.linalg.norm(cells, axis=0, keepdims=True), 1e-12)
    like = (cells.T @ cells) >= REPEAT_COSINE
    np.fill_diagonal(like, True)
    ratios = np.zeros(len(ys))
    # Cells with the same set of like cells share their groups: one labelling per distinct set.
    rows, inverse = np.unique(like, axis=0, return_inverse=True)
    by_row = np.argsort(inverse.reshape(-1), kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(inverse.reshape(-1), minlength=len(rows)))])
    grid = np.zeros(mask.shape, dtype=bool)
    eight = np.ones((3, 3), dtype=bool)
    for r in np.flatnonzero(rows.sum(axis=1) >= 2):  # a set of one cell has one group
        row = rows[r]
        grid[:] = False
        grid[ys[row], xs[row]] = True
        labels, count = ndimage.label(grid, structure=eight)
        if count < 2:
            continue
        sizes = np.bincount(labels.reshape(-1)).astype(np.float64)
        sizes[0] = 0.0
        first = int(np.argmax(sizes))  # the largest group, then the largest of the others
        second = float(np.partition(sizes, -2)[-2])
        members = by_row[bounds[r] : bounds[r + 1]]
        own = labels[ys[members], xs[members]]
        other = np.where(own == first, second, sizes[first])
        ratios[members] = np.minimum(1.0, other / sizes[own])
    return float((ratios * weights).sum() / weights.sum())


def _block_mean(x: np.ndarray, k: int) -> np.ndarray:
    """(C, h, w) → (C, ceil(h/k), ceil(w/k)): the mean of each k×k block (the last ones padded by edge)."""
    c, h, w = x.shape
    ph, pw = -h % k, -w % k
    padded = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="edge")
    return padded.reshape(c, (h + ph) // k, k, (w + pw) // k, k).mean(axis=(2, 4))


def repeat_statistic(repetitions: np.ndarray | list[float]) -> float:
    """The collection's usual repetition: the :data:`REPEAT_QUANTILE` quantile of its boxes' values.

    Stored as ``repeats`` in the model file's ``box_sizes`` (measured in the same pass as the sizes).

    Raises:
        ValueError: no value, or one outside [0, 1].
    """
    r = np.asarray(repetitions, dtype=np.float64).reshape(-1)
    if r.size == 0:
        raise ValueError("repeat_statistic needs at least one value")
    if not (np.isfinite(r).all() and (r >= 0).all() and (r <= 1.0 + 1e-9).all()):
        raise ValueError("repetitions must be in [0, 1]")
    return float(np.quantile(r, REPEAT_QUANTILE))


def has_repeats(box_sizes: dict[str, Any] | None) -> TypeGuard[dict[str, Any]]:
    """Whether a typical box (``box_sizes``) has the collection's ``repeats``: the repetition term applies."""
    return box_sizes is not None and box_sizes.get("repeats") is not None


def box_repeat_excess(repetition: float, box_sizes: dict[str, Any]) -> float:
    """How much more a box repeats than the collection's boxes usually do: max(0, r − repeats), in [0, 1].

    The score subtracts it (:func:`box_score`). Relative to the collection's own ``repeats``, so a kind
    whose single objects repeat their parts (paired limbs, wheels) is not marked down for them.
    """
    return max(0.0, float(repetition) - float(box_sizes["repeats"]))


def box_score(
    scoremap: np.ndarray,
    box: np.ndarray | list[float] | tuple[float, ...],
    threshold: float,
    box_sizes: dict[str, Any] | None = None,
    content: float = 0.0,
    repetition: float | None = None,
) -> float:
    """Confidence of the box at τ: stability + compactness (+ typicality) + content (− repetition excess).

    The typicality term needs ``box_sizes``; the repetition's excess ``repetition`` and ``box_sizes``
    with ``repeats``.

    :func:`box_stability` + :func:`box_compactness`, in [−1, 2]; with the collection's
    ``box_sizes`` (:func:`box_size_statistics`, stored with a fitted model) plus
    :func:`box_typicality`, in [−2, 2]; plus ``content``, the box's content term in [−1, 1]
    (:mod:`coloc_core.box_content`: how much the box's crop looks like the collection's boxes, which
    needs the image and the backbone, so it is computed there and passed in), in [−3, 3]; less
    :func:`box_repeat_excess` (``repetition``: the box's :func:`box_repetition`, which needs the
    features; the collection's ``repeats`` in ``box_sizes``), in [−4, 3].

    Each term alone ranks boxes the wrong way on some collections (docs/RESULTS.md, "Box score"):
    compactness penalises large boxes, so it ranks IoU backwards where objects fill the frame
    (Spearman −0.40 for DDT on raccoon); stability rewards any sharp region, the object or a crisp
    distractor (−0.20 for DDT on generated birds on clutter). Their sum had the best worst case over
    the three sets measured and separates images without the object best (ROC AUC 0.74 for DDT).
    The typicality term, relative to the collection, lifts the ranking where the object's size is
    consistent (raccoon: Spearman 0.24 → 0.35 for the self-trained head). The content term is the
    first term measured to lift every labeler on every set (docs/RESULTS.md, issue 10). The
    repetition term marks down boxes around several objects (DDT on kangaroo: Spearman 0.25 → 0.32).

    Shape:
        scoremap: (H, W) float in [0, 1]; box: [x0, y0, x1, y1] inclusive pixel coords in that map.
    """
    score = box_stability(scoremap, threshold) + box_compactness(scoremap, box)
    if box_sizes is not None:
        s = _scoremap_2d(scoremap)
        score += box_typicality(box_area_share(box, s.shape), box_sizes)
    if not math.isfinite(content):
        raise ValueError(f"content term must be finite, got {content}")
    if repetition is not None and has_repeats(box_sizes):
        score -= box_repeat_excess(repetition, box_sizes)
    return score + float(content)


def _scoremap_2d(scoremap: np.ndarray) -> np.ndarray:
    s = np.asarray(scoremap, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scoremap must be (H, W), got {s.shape}")
    return s
