"""Best contour-box IoU at every threshold level of a uint8 score map, in one pass (MaxBoxAccV2 core).

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
gives the best IoU of every one of the 256 masks in O(H·W·α + levels·components·G) instead of up to
256 contour searches. Box convention and IoU arithmetic are the protocol's
(``x1 = min(x0 + w, W - 1)``, inclusive areas, float64 ``inter / union``), so results agree with the
contour path bit for bit (checked by the unit tests on random and adversarial maps).

The kernel is compiled with numba when it is installed (a declared dependency); ``available()`` says
whether it can run, and callers fall back to the OpenCV path otherwise.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

try:  # numba is a dependency, but keep the metric usable (through OpenCV) without it
    from numba import njit
except ImportError:  # pragma: no cover - exercised only where numba is missing
    njit = None  # type: ignore[assignment]


def available() -> bool:
    """Whether the compiled kernel can run here."""
    return njit is not None


def _best_iou_levels_py(u8: np.ndarray, gt: np.ndarray) -> np.ndarray:  # noqa: C901 - one kernel
    """best[t + 1] = best IoU over every contour box of the mask ``u8 > t`` (t = -1..255) with any GT box.

    A mask with no contour (empty) has the single box ``[0, 0, 0, 0]``, as in the protocol. Pixels are
    indexed on a grid padded by one pixel on every side (never added to any set), so neighbours need
    no bounds checks.
    """
    height, width = u8.shape
    pw = width + 2
    num_gt = gt.shape[0]

    # Pixels sorted by value (counting sort, raster order within a value), as padded indices.
    start = np.zeros(257, np.int64)
    for r in range(height):
        for c in range(width):
            start[u8[r, c] + 1] += 1
    for v in range(256):
        start[v + 1] += start[v]
    fill = start[:256].copy()
    order = np.empty(height * width, np.int32)
    order_r = np.empty(height * width, np.int32)
    order_c = np.empty(height * width, np.int32)
    for r in range(height):
        for c in range(width):
            v = u8[r, c]
            k = fill[v]
            order[k] = (r + 1) * pw + c + 1
            order_r[k] = r
            order_c[k] = c
            fill[v] = k + 1

    gt_area = np.empty(num_gt, np.int64)
    for g in range(num_gt):
        gt_area[g] = (gt[g, 2] - gt[g, 0] + 1) * (gt[g, 3] - gt[g, 1] + 1)

    npad = (height + 2) * pw
    parent = np.empty(npad, np.int32)  # -1 = not in the current set
    size = np.empty(npad, np.int32)
    bbox = np.empty((npad, 4), np.int32)  # min_r, min_c, max_r, max_c (unpadded coordinates)
    edge = np.empty(npad, np.bool_)  # the component touches the image edge
    live = np.empty(height * width, np.int32)  # live roots, swap-removed
    live_pos = np.empty(npad, np.int32)
    neighbours = np.array([-pw - 1, -pw, -pw + 1, -1, 1, pw - 1, pw, pw + 1], np.int32)
    neighbours4 = np.array([-pw, -1, 1, pw], np.int32)

    # Indexed by t + 1 for the mask u8 > t, t = -1..255.
    fg_best = np.full(257, -1.0)  # -1: no foreground component at this level
    hole_best = np.full(257, -1.0)  # -1: no hole at this level

    for sweep in range(2):  # 0: foreground, 8-connected, v = 255..0; 1: background, 4-connected, v = 0..254
        parent[:] = -1
        offsets = neighbours if sweep == 0 else neighbours4
        num_live = 0
        current = -1.0
        for step in range(256 if sweep == 0 else 255):
            v = 255 - step if sweep == 0 else step
            for k in range(start[v], start[v + 1]):
                p = order[k]
                r = order_r[k]
                c = order_c[k]
                parent[p] = p
                size[p] = 1
                bbox[p, 0] = r
                bbox[p, 1] = c
                bbox[p, 2] = r
                bbox[p, 3] = c
                edge[p] = r == 0 or c == 0 or r == height - 1 or c == width - 1
                live[num_live] = p
                live_pos[p] = num_live
                num_live += 1
                rp = p  # root of p's component, kept up to date across its neighbours
                for off in offsets:
                    b = p + off
                    if parent[b] < 0:
                        continue
                    while parent[b] != b:  # find, with path halving
                        parent[b] = parent[parent[b]]
                        b = parent[b]
                    if b == rp:
                        continue
                    a = rp
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
            if start[v + 1] > start[v]:  # the mask changed: score its components
                current = -1.0
                for j in range(num_live):
                    root = live[j]
                    if sweep == 0:
                        x0 = bbox[root, 1]
                        y0 = bbox[root, 0]
                        x1 = min(bbox[root, 3] + 1, width - 1)
                        y1 = min(bbox[root, 2] + 1, height - 1)
                    else:
                        if edge[root]:
                            continue  # background connected to the outside, not a hole
                        x0 = bbox[root, 1] - 1
                        y0 = bbox[root, 0] - 1
                        x1 = min(bbox[root, 3] + 2, width - 1)
                        y1 = min(bbox[root, 2] + 2, height - 1)
                    area = (x1 - x0 + 1) * (y1 - y0 + 1)
                    for g in range(num_gt):
                        iw = min(x1, gt[g, 2]) - max(x0, gt[g, 0]) + 1
                        ih = min(y1, gt[g, 3]) - max(y0, gt[g, 1]) + 1
                        inter = max(0, iw) * max(0, ih)
                        union = area + gt_area[g] - inter
                        iou = inter / union if union > 0 else 0.0
                        if iou > current:
                            current = iou
            if sweep == 0:
                fg_best[v] = current  # after v the foreground is u8 >= v: the mask u8 > v - 1
            else:
                hole_best[v + 1] = current  # after v the background is u8 <= v: the mask u8 > v

    # The empty mask's single box [0, 0, 0, 0].
    empty = 0.0
    for g in range(num_gt):
        iw = min(0, gt[g, 2]) - max(0, gt[g, 0]) + 1
        ih = min(0, gt[g, 3]) - max(0, gt[g, 1]) + 1
        inter = max(0, iw) * max(0, ih)
        union = 1 + gt_area[g] - inter
        iou = inter / union if union > 0 else 0.0
        if iou > empty:
            empty = iou

    best = np.empty(257, np.float64)
    for i in range(257):
        if fg_best[i] < 0.0:  # no foreground pixel above t = i - 1
            best[i] = empty
        else:
            best[i] = max(fg_best[i], hole_best[i])
    return best


def _compile() -> object:
    if njit is None:
        return None
    try:  # cache the machine code next to this file (or in numba's user cache dir)
        return njit(cache=True, nogil=True)(_best_iou_levels_py)
    except RuntimeError:  # no writable cache location (read-only install): compile per process
        return njit(cache=False, nogil=True)(_best_iou_levels_py)


_kernel = _compile()


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
    if _kernel is None:
        raise RuntimeError("the level-set kernel needs numba (pip install numba)")
    u8 = np.ascontiguousarray(u8, dtype=np.uint8)
    gt = np.ascontiguousarray(gt_boxes, dtype=np.int64).reshape(-1, 4)
    return np.asarray(_kernel(u8, gt), dtype=np.float64)  # type: ignore[operator]
