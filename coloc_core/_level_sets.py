"""MaxBoxAccV2 core: the best contour-box IoU at every threshold of a score map, without contour searches.

The protocol (wsolevaluation, ``multi_contour_eval=True``) thresholds the quantized map ``u8 > t``,
runs ``cv2.findContours(RETR_TREE)`` and takes the bounding rectangle of every contour. The contours
of a binary image are, one for one (Suzuki & Abe's border following, which OpenCV implements):

- one *outer* border per 8-connected component of foreground pixels; its bounding rectangle is the
  component's own (the extreme pixels of a component lie on its outer border);
- one *hole* border per 4-connected component of background pixels that does not touch the image
  edge (OpenCV pads the image with background); the hole border runs over the foreground pixels
  4-adjacent to the hole, so its bounding rectangle is the hole's grown by one pixel on every side.

As t falls, the foreground only grows and the background only shrinks, so both families of components
come out of two union-find sweeps over the pixels sorted by value: the foreground from 255 down, the
background from 0 up. After each value every live component is scored against the GT boxes, which
gives the best IoU of every one of the 257 masks (t = -1..255) in O(H·W·α + levels·components·G)
instead of up to 256 contour searches. The foreground sweep also keeps the Euler number of the mask
(Gray's 2x2 bit-quads, updated per added pixel from a 256-entry table of its 8 neighbours), so the
number of holes per level (components - Euler number) is known before the background sweep, which then
stops at the highest level that has any hole. Box convention and IoU arithmetic are the protocol's
(``x1 = min(x0 + w, W - 1)``, inclusive areas, float64 ``inter / union``), so results agree with the
contour path bit for bit (checked by the unit tests on random and adversarial maps).

The kernel is compiled with numba when it is installed (a declared dependency); ``available()`` says
whether it can run, and callers fall back to the OpenCV path otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

try:  # numba is a dependency, but keep the metric usable (through OpenCV) without it
    from numba import njit
except ImportError:  # pragma: no cover - exercised only where numba is missing
    njit = None  # type: ignore[assignment]


def available() -> bool:
    """Whether the compiled kernel can run here."""
    return njit is not None


def _jit(fn: Callable[..., Any] | None = None, *, inline: bool = False) -> Any:
    """``numba.njit`` with on-disk caching (``inline=True``: inlined into its callers' IR)."""

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        if njit is None:
            return f  # plain Python: correct but slow; callers check available() first
        # error_model="numpy": no ZeroDivisionError branch (every division here has a positive divisor)
        options: dict[str, Any] = {
            "nogil": True,
            "error_model": "numpy",
            "inline": "always" if inline else "never",
        }
        try:  # cache the machine code next to this file (or in numba's user cache dir)
            return njit(cache=True, **options)(f)  # type: ignore[no-any-return]
        except RuntimeError:  # no writable cache location (read-only install): compile per process
            return njit(cache=False, **options)(f)  # type: ignore[no-any-return]

    return wrap if fn is None else wrap(fn)


@_jit
def _sort_pixels(u8: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Counting sort by value: pixels ``order[start[v]:start[v + 1]]`` have value v (raster order).

    Pixels are indexed on the grid padded by one pixel on every side; ``rows``/``cols`` are their
    unpadded coordinates.
    """
    height, width = u8.shape
    pw = width + 2
    start = np.zeros(257, np.int64)
    for r in range(height):
        for c in range(width):
            start[u8[r, c] + 1] += 1
    for v in range(256):
        start[v + 1] += start[v]
    fill = start[:256].copy()
    order = np.empty(height * width, np.int32)
    rows = np.empty(height * width, np.int32)
    cols = np.empty(height * width, np.int32)
    for r in range(height):
        for c in range(width):
            v = u8[r, c]
            k = fill[v]
            order[k] = (r + 1) * pw + c + 1
            rows[k] = r
            cols[k] = c
            fill[v] = k + 1
    return start, order, rows, cols


@_jit(inline=True)
def _find(parent: np.ndarray, b: int) -> int:
    # root of b, with path halving (no write where the grandparent is already the parent)
    while True:
        pb = parent[b]
        if pb == b:
            return b
        gp = parent[pb]
        if gp != pb:
            parent[b] = gp
        b = gp


@_jit(inline=True)
def _box_iou(x0: int, y0: int, x1: int, y1: int, gt: np.ndarray, gt_area: np.ndarray, best: float) -> float:
    # max(best, IoU of the box with every GT box), in the protocol's inclusive-pixel arithmetic
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    for g in range(gt.shape[0]):
        iw = min(x1, gt[g, 2]) - max(x0, gt[g, 0]) + 1
        ih = min(y1, gt[g, 3]) - max(y0, gt[g, 1]) + 1
        inter = max(0, iw) * max(0, ih)
        union = area + gt_area[g] - inter
        iou = inter / union if union > 0 else 0.0
        if iou > best:
            best = iou
    return best


def _quad_term(a: int, b: int, c: int, d: int) -> int:
    # Gray's bit-quad term of a 2x2 window (a b / c d) for 4 x the 8-connected Euler number
    n = a + b + c + d
    if n == 1:
        return 1
    if n == 3:
        return -1
    if n == 2 and a == d:  # a diagonal pair
        return -2
    return 0


def _euler_lut() -> np.ndarray:
    """Change of 4 x the Euler number when a pixel turns on, by the code of its 8 neighbours.

    Bit i of the code is neighbour i in the order TL, T, TR, L, R, BL, B, BR (the foreground sweep's
    offsets); the pixel is in four 2x2 quads, one per corner.
    """
    lut = np.zeros(256, np.int64)
    for code in range(256):
        tl, t, tr, lf, rt, bl, bm, br = ((code >> i) & 1 for i in range(8))
        delta = 0
        for x in (0, 1):
            sign = 1 if x else -1
            delta += sign * (
                _quad_term(tl, t, lf, x)
                + _quad_term(t, tr, x, rt)
                + _quad_term(lf, x, bl, bm)
                + _quad_term(x, rt, bm, br)
            )
        lut[code] = delta
    return lut


_EULER_LUT = _euler_lut()


@_jit
def _sweep(  # noqa: C901 - one kernel
    shape: tuple[int, int],
    start: np.ndarray,
    order: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    gt: np.ndarray,
    gt_area: np.ndarray,
    offsets: tuple[int, ...],
    foreground: bool,
    last_value: int,
    euler_lut: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One union-find sweep over the values up to ``last_value`` (inclusive, in sweep order).

    Foreground: values 255 down to 0, 8-connected components, outer boxes. Background: values 0 up to
    254, 4-connected components, hole boxes of those that do not touch the image edge.

    Returns:
        The best IoU per level (index t + 1 for the mask u8 > t; -1: no box) and, for the foreground
        sweep, the number of holes per level (same index), from the Euler number of the mask.
    """
    height, width = shape
    npad = (height + 2) * (width + 2)
    parent = np.full(npad, -1, np.int32)  # -1 = not in the current set
    size = np.empty(npad, np.int32)
    bbox = np.empty((npad, 4), np.int32)  # min_r, min_c, max_r, max_c (unpadded coordinates)
    edge = np.empty(npad, np.bool_)  # the component touches the image edge
    live = np.empty(height * width, np.int32)  # live roots, swap-removed
    live_pos = np.empty(npad, np.int32)
    best = np.full(257, -1.0)
    holes = np.zeros(257, np.int64)
    euler4 = 0  # 4 x the Euler number (8-connectivity) of the foreground, from its 2x2 quads
    num_live = 0
    current = -1.0
    for step in range(256 - last_value if foreground else last_value + 1):
        v = 255 - step if foreground else step
        for k in range(start[v], start[v + 1]):
            p = order[k]
            r = rows[k]
            c = cols[k]
            on_edge = r == 0 or c == 0 or r == height - 1 or c == width - 1
            rp = -1  # root of p's component once p has joined one
            code = 0  # which neighbours are in the set (bit i: offsets[i])
            bit = 1
            for off in offsets:
                pb = parent[p + off]
                if pb >= 0:
                    code |= bit
                bit <<= 1
                if pb < 0 or pb == rp:
                    continue  # not in the set, or a direct child of p's root
                b = _find(parent, pb)
                if b == rp:
                    continue
                if rp < 0:  # p joins b's component: only the root's data change
                    parent[p] = b
                    size[b] += 1
                    bbox[b, 0] = min(bbox[b, 0], r)
                    bbox[b, 1] = min(bbox[b, 1], c)
                    bbox[b, 2] = max(bbox[b, 2], r)
                    bbox[b, 3] = max(bbox[b, 3], c)
                    edge[b] = edge[b] or on_edge
                    rp = b
                    continue
                a = rp  # p links two components: union by size
                if size[a] < size[b]:
                    a, b = b, a
                parent[b] = a
                size[a] += size[b]
                bbox[a, 0] = min(bbox[a, 0], bbox[b, 0])
                bbox[a, 1] = min(bbox[a, 1], bbox[b, 1])
                bbox[a, 2] = max(bbox[a, 2], bbox[b, 2])
                bbox[a, 3] = max(bbox[a, 3], bbox[b, 3])
                edge[a] = edge[a] or edge[b]
                rp = a
                i = live_pos[b]  # b is no longer a root
                num_live -= 1
                last = live[num_live]
                live[i] = last
                live_pos[last] = i
            if foreground:
                euler4 += euler_lut[code]
            if rp < 0:  # no neighbour in the set: p starts a component
                parent[p] = p
                size[p] = 1
                bbox[p, 0] = r
                bbox[p, 1] = c
                bbox[p, 2] = r
                bbox[p, 3] = c
                edge[p] = on_edge
                live[num_live] = p
                live_pos[p] = num_live
                num_live += 1
        if start[v + 1] > start[v]:  # the mask changed: score its components
            current = -1.0
            for j in range(num_live):
                root = live[j]
                if foreground:
                    current = _box_iou(
                        bbox[root, 1],
                        bbox[root, 0],
                        min(bbox[root, 3] + 1, width - 1),
                        min(bbox[root, 2] + 1, height - 1),
                        gt,
                        gt_area,
                        current,
                    )
                elif not edge[root]:  # background not connected to the outside: a hole
                    current = _box_iou(
                        bbox[root, 1] - 1,
                        bbox[root, 0] - 1,
                        min(bbox[root, 3] + 2, width - 1),
                        min(bbox[root, 2] + 2, height - 1),
                        gt,
                        gt_area,
                        current,
                    )
        # foreground after v is u8 >= v: the mask u8 > v - 1; background after v is u8 <= v: the mask u8 > v
        best[v if foreground else v + 1] = current
        if foreground:  # Euler number = components - holes
            holes[v] = num_live - euler4 // 4
    return best, holes


@_jit
def _best_iou_levels(u8: np.ndarray, gt: np.ndarray, euler_lut: np.ndarray) -> np.ndarray:
    """best[t + 1] = best IoU over every contour box of the mask ``u8 > t`` (t = -1..255) with any GT box.

    A mask with no contour (empty) has the single box ``[0, 0, 0, 0]``, as in the protocol.
    """
    height, width = u8.shape
    pw = width + 2
    gt_area = np.empty(gt.shape[0], np.int64)
    for g in range(gt.shape[0]):
        gt_area[g] = (gt[g, 2] - gt[g, 0] + 1) * (gt[g, 3] - gt[g, 1] + 1)
    start, order, rows, cols = _sort_pixels(u8)
    shape = (height, width)
    eight = (-pw - 1, -pw, -pw + 1, -1, 1, pw - 1, pw, pw + 1)
    four = (-pw, -1, 1, pw)
    fg_best, holes = _sweep(shape, start, order, rows, cols, gt, gt_area, eight, True, 0, euler_lut)
    # Holes only exist at levels whose mask has a non-zero hole count; the background sweep stops at the
    # last of them (often none at all, or only the low levels of pits in the map).
    last = -1
    for i in range(257):
        if holes[i] > 0:
            last = i - 1  # the mask u8 > last has holes
    hole_best = np.full(257, -1.0)
    if last >= 0:
        hole_best, _ = _sweep(shape, start, order, rows, cols, gt, gt_area, four, False, last, euler_lut)
    empty = _box_iou(0, 0, 0, 0, gt, gt_area, 0.0)  # the empty mask's single box [0, 0, 0, 0]
    best = np.empty(257, np.float64)
    for i in range(257):
        best[i] = empty if fg_best[i] < 0.0 else max(fg_best[i], hole_best[i])
    return best


def best_iou_per_level(u8: npt.NDArray[np.uint8], gt_boxes: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Best contour-box IoU with any GT box of every mask ``u8 > t``, t = -1..255.

    Args:
        u8: quantized score map. Shape: (H, W), uint8.
        gt_boxes: protocol-convention GT boxes with integer coordinates. Shape: (G, 4), G >= 1.

    Returns:
        Shape: (257,), float64; entry ``t + 1`` is the mask ``u8 > t`` (t = -1: every pixel; t = 255:
        the empty mask). Integer thresholds outside [-1, 255] give the same masks as -1 and 255.

    Raises:
        RuntimeError: numba is not installed (check :func:`available` first).
    """
    if not available():
        raise RuntimeError("the level-set kernel needs numba (pip install numba)")
    u8 = np.ascontiguousarray(u8, dtype=np.uint8)
    gt = np.ascontiguousarray(gt_boxes, dtype=np.int64).reshape(-1, 4)
    return np.asarray(_best_iou_levels(u8, gt, _EULER_LUT), dtype=np.float64)
