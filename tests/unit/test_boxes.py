"""Score maps, boxes and IoU against hand-computed values and an independent per-threshold loop."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from coloc_core import _level_sets
from coloc_core.boxes import (
    SCOREMAP_SIZE,
    best_iou_at_thresholds,
    boxes_at_thresholds,
    boxes_from_scoremap,
    boxes_to_original,
    cam_thresholds,
    check_box_convention,
    check_scoremap_validity,
    iou_matrix,
    match_boxes,
    normalize_scoremap,
    region_boxes_from_scoremap,
    resize_boxes,
    scoremap_from_attention,
    scoremaps_from_attention,
)

# --------------------------------------------------------------------------------------------
# An independent, straightforward implementation of the protocol: one contour search per
# threshold, plain Python IoU. The fast path must agree with it exactly.
# --------------------------------------------------------------------------------------------


def _iou_py(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = iw * ih
    union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return inter / union if union > 0 else 0.0


def _loop_boxes(scoremap: np.ndarray, tau: float, multi: bool) -> list[tuple[int, int, int, int]]:
    h, w = scoremap.shape
    u8 = (scoremap * 255).astype(np.uint8)
    _, binary = cv2.threshold(u8, int(tau * np.max(u8)), 255, cv2.THRESH_BINARY)
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    if len(contours) == 0:
        return [(0, 0, 0, 0)]
    if not multi:
        contours = [max(contours, key=cv2.contourArea)]
    out = []
    for c in contours:
        x, y, bw, bh = cv2.boundingRect(c)
        out.append((x, y, min(x + bw, w - 1), min(y + bh, h - 1)))
    return out


def _loop_best_iou(scoremap: np.ndarray, gt: np.ndarray, taus: np.ndarray, multi: bool) -> np.ndarray:
    gts = [tuple(int(v) for v in g) for g in gt]
    return np.array([max(_iou_py(b, g) for b in _loop_boxes(scoremap, t, multi) for g in gts) for t in taus])


def _minmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    return (a - a.min()) / (a.max() - a.min()) if a.max() > a.min() else np.zeros_like(a)


def _random_maps(rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """Score maps of many kinds: smooth, blobs, holes, plateaus, noise, border, degenerate."""
    maps: list[tuple[str, np.ndarray]] = []
    for _ in range(4):
        small = rng.random(tuple(rng.integers(2, 20, 2)))
        maps.append(("smooth", _minmax(cv2.resize(small, (224, 224), interpolation=cv2.INTER_CUBIC))))
    yy, xx = np.mgrid[:96, :128]
    blobs = np.zeros((96, 128))
    for _ in range(4):
        cy, cx, s = rng.uniform(0, 96), rng.uniform(0, 128), rng.uniform(3, 15)
        blobs += rng.uniform(0.3, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    maps.append(("blobs", _minmax(blobs)))
    r = np.hypot(yy - 40.0, xx - 70.0)
    maps.append(("rings", _minmax(np.exp(-((r - 25) ** 2) / 30.0) + 0.5 * np.exp(-((r - 10) ** 2) / 8.0))))
    plateau = rng.random(tuple(rng.integers(2, 7, 2)))
    maps.append(("plateaus", _minmax(cv2.resize(plateau, (70, 50), interpolation=cv2.INTER_NEAREST))))
    maps.append(("noise", rng.integers(0, 256, (37, 41)).astype(np.float64) / 255.0))
    sparse = rng.random((60, 60))
    maps.append(("specks", np.where(sparse > 0.85, sparse, 0.0)))
    border = np.zeros((40, 30))
    border[0, :] = 1.0
    border[:, -1] = 0.6
    border[-5:, :4] = 0.8
    maps.append(("border", border))
    peak = np.zeros((224, 224))
    peak[rng.integers(0, 224), rng.integers(0, 224)] = 1.0
    maps.append(("peak", peak))
    maps.append(("zeros", np.zeros((224, 224))))
    maps.append(("ones", np.ones((9, 11))))
    maps.append(("tiny", rng.random((1, 1))))
    maps.append(("row", rng.random((1, 23))))
    maps.append(("float32", _minmax(rng.random((30, 30))).astype(np.float32)))
    return maps


def _random_gt(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    n = int(rng.integers(1, 4))
    x0, y0 = rng.integers(0, w, n), rng.integers(0, h, n)
    # x1/y1 may fall outside the map: the protocol accepts such GT boxes
    return np.stack([x0, y0, x0 + rng.integers(0, w + 3, n), y0 + rng.integers(0, h + 3, n)], axis=1)


# --------------------------------------------------------------------------------------------
# IoU
# --------------------------------------------------------------------------------------------


def test_iou_hand_computed() -> None:
    # 5x5 box vs 2x5 box, overlap 2x4 pixels: 8 / (25 + 10 - 8)
    assert iou_matrix([1, 2, 5, 6], [3, 1, 4, 5])[0, 0] == pytest.approx(8 / 27)
    # inclusive pixels: a single-pixel box overlaps itself fully (torchvision would say 0 / 0)
    assert iou_matrix([0, 0, 0, 0], [0, 0, 0, 0])[0, 0] == 1.0
    # corners touching share one pixel: 1 / (4 + 4 - 1)
    assert iou_matrix([0, 0, 1, 1], [1, 1, 2, 2])[0, 0] == pytest.approx(1 / 7)
    assert iou_matrix([0, 0, 1, 1], [2, 2, 3, 3])[0, 0] == 0.0


def test_iou_matrix_shape_and_symmetry() -> None:
    rng = np.random.default_rng(0)
    a, b = _random_gt(rng, 50, 50), _random_gt(rng, 50, 50)
    m = iou_matrix(a, b)
    assert m.shape == (len(a), len(b)) and m.dtype == np.float64
    np.testing.assert_array_equal(m, iou_matrix(b, a).T)
    expected = [[_iou_py(tuple(x), tuple(y)) for y in b.tolist()] for x in a.tolist()]
    np.testing.assert_array_equal(m, np.array(expected))


def test_iou_does_not_modify_inputs() -> None:
    a = np.array([[1, 2, 5, 6]])
    b = np.array([[3, 1, 4, 5]])
    iou_matrix(a, b)
    np.testing.assert_array_equal(a, [[1, 2, 5, 6]])
    np.testing.assert_array_equal(b, [[3, 1, 4, 5]])


@pytest.mark.parametrize(
    "bad",
    [
        [3, 0, 2, 5],
        [0, 4, 5, 3],
        [-1, 0, 2, 2],
        [0, 0, np.nan, 2],
        [0, 0, 1],
        [[[0, 0, 1, 1]]],
        ["a", "b", "c", "d"],
    ],
)
def test_invalid_boxes_raise(bad: object) -> None:
    with pytest.raises(ValueError):
        check_box_convention(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        iou_matrix(bad, [0, 0, 1, 1])  # type: ignore[arg-type]


def test_check_box_convention_accepts_valid_boxes() -> None:
    assert check_box_convention([0, 0, 0, 0]).shape == (1, 4)
    assert check_box_convention(np.array([[1, 2, 3, 4], [0, 0, 9, 9]], dtype=np.uint8)).dtype == np.int64


# --------------------------------------------------------------------------------------------
# Score maps
# --------------------------------------------------------------------------------------------


def test_normalize_scoremap_is_pure_and_min_max() -> None:
    cam = np.array([[2.0, 4.0], [6.0, 10.0]])
    out = normalize_scoremap(cam)
    np.testing.assert_array_equal(cam, [[2.0, 4.0], [6.0, 10.0]])
    np.testing.assert_array_equal(out, [[0.0, 0.25], [0.5, 1.0]])
    assert out.dtype == np.float64


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_normalize_scoremap_non_finite_gives_zeros(value: float) -> None:
    cam = np.arange(12, dtype=np.float64).reshape(3, 4)
    cam[1, 2] = value
    np.testing.assert_array_equal(normalize_scoremap(cam), np.zeros((3, 4)))


def test_normalize_scoremap_constant_gives_zeros() -> None:
    np.testing.assert_array_equal(normalize_scoremap(np.full((3, 3), 7.0)), np.zeros((3, 3)))


def test_scoremap_from_attention_matches_manual_pipeline() -> None:
    rng = np.random.default_rng(1)
    attn = rng.random((14, 14)).astype(np.float32) * 5
    expected = cv2.resize(attn.astype(np.float64), (224, 224), interpolation=cv2.INTER_CUBIC)
    expected = (expected - expected.min()) / (expected - expected.min()).max()
    out = scoremap_from_attention(attn)
    assert out.shape == (224, 224) and out.dtype == np.float64
    np.testing.assert_array_equal(out, expected)
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_array_equal(scoremap_from_attention(torch.from_numpy(attn)), out)
    # bf16 tensors are cast to float32 first, like .float().numpy()
    bf16 = torch.from_numpy(attn).to(torch.bfloat16)
    np.testing.assert_array_equal(scoremap_from_attention(bf16), scoremap_from_attention(bf16.float()))


def test_scoremap_from_attention_size_and_degenerate_maps() -> None:
    out = scoremap_from_attention(np.random.default_rng(0).random((7, 9)), size=(32, 48))
    assert out.shape == (32, 48)
    np.testing.assert_array_equal(scoremap_from_attention(np.ones((7, 7))), np.zeros((224, 224)))
    nan_map = np.ones((7, 7))
    nan_map[3, 3] = np.nan
    np.testing.assert_array_equal(scoremap_from_attention(nan_map), np.zeros((224, 224)))
    with pytest.raises(ValueError):
        scoremap_from_attention(np.ones((2, 3, 4)))


def test_scoremaps_from_attention_is_per_map() -> None:
    rng = np.random.default_rng(2)
    batch = torch.from_numpy(rng.random((3, 1, 7, 7)).astype(np.float32))
    out = scoremaps_from_attention(batch, size=(56, 56))
    assert out.shape == (3, 56, 56)
    for i in range(3):
        np.testing.assert_array_equal(out[i], scoremap_from_attention(batch[i, 0], size=(56, 56)))


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (np.array([[0.5, np.nan]]), ValueError),
        (np.array([[0.5, 1.01]]), ValueError),
        (np.array([[-0.01, 0.5]]), ValueError),
        (np.zeros((2, 2, 2)), ValueError),
        (np.zeros((2, 2), dtype=np.int64), TypeError),
        ([[0.0, 1.0]], TypeError),
    ],
)
def test_invalid_scoremaps_raise(bad: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        check_scoremap_validity(bad)  # type: ignore[arg-type]
    with pytest.raises(error):
        boxes_from_scoremap(bad, 0.5)  # type: ignore[arg-type]
    with pytest.raises(error):
        best_iou_at_thresholds(bad, [[0, 0, 1, 1]], [0.5])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Boxes: hand-computed cases
# --------------------------------------------------------------------------------------------

# floor(255 * S): 0.9 -> 229, 1.0 -> 255, 0.3 -> 76. A 2x2 blob at (x, y) in [1, 2] and a
# vertical 2-pixel line at x = 4, y in [2, 3].
TOY = np.array(
    [
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.9, 0.9, 0.0, 0.0, 0.0],
        [0.0, 0.9, 1.0, 0.0, 0.3, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.3, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    ]
)


def test_boxes_hand_computed_single_and_multi() -> None:
    # tau = 0.5: int(127.5) = 127, only the blob passes; its box is [x, y, x + w, y + h]
    np.testing.assert_array_equal(boxes_from_scoremap(TOY, 0.5), [[1, 1, 3, 3]])
    np.testing.assert_array_equal(boxes_from_scoremap(TOY, 0.5, multi_contour=True), [[1, 1, 3, 3]])
    # tau = 0.2: int(51.0...) = 51, the line (76) passes too; single keeps the larger contour area
    np.testing.assert_array_equal(boxes_from_scoremap(TOY, 0.2), [[1, 1, 3, 3]])
    multi = boxes_from_scoremap(TOY, 0.2, multi_contour=True)  # in OpenCV's RETR_TREE order
    np.testing.assert_array_equal(sorted(multi.tolist()), [[1, 1, 3, 3], [4, 2, 5, 4]])
    # tau = 0.999: int(254.7) = 254, the single 255 pixel; its box is clipped nowhere
    np.testing.assert_array_equal(boxes_from_scoremap(TOY, 0.999), [[2, 2, 3, 3]])


def test_boxes_clip_to_the_last_pixel() -> None:
    # the whole map passes: boundingRect = (0, 0, 5, 4) -> [0, 0, min(5, 4), min(4, 3)]
    np.testing.assert_array_equal(boxes_from_scoremap(np.ones((4, 5)), 0.5), [[0, 0, 4, 3]])


def test_no_contour_gives_zero_box() -> None:
    zeros = np.zeros((8, 8))
    for multi in (False, True):
        np.testing.assert_array_equal(boxes_from_scoremap(zeros, 0.3, multi), [[0, 0, 0, 0]])
        for boxes in boxes_at_thresholds(zeros, [0.0, 0.5], multi):
            np.testing.assert_array_equal(boxes, [[0, 0, 0, 0]])


def test_holes_are_boxes_in_multi_mode() -> None:
    # a 2-pixel-thick square ring in a 9x9 map: outer contour pixels 1..7, hole pixels 3..5,
    # the hole's contour runs on the ring pixels 2..6
    yy, xx = np.mgrid[:9, :9]
    ring = np.abs(np.stack([yy - 4, xx - 4])).max(0)
    scoremap = ((ring >= 2) & (ring <= 3)).astype(np.float64)
    np.testing.assert_array_equal(boxes_from_scoremap(scoremap, 0.5), [[1, 1, 8, 8]])
    multi = boxes_from_scoremap(scoremap, 0.5, multi_contour=True)
    np.testing.assert_array_equal(sorted(multi.tolist()), [[1, 1, 8, 8], [2, 2, 7, 7]])


def test_boxes_do_not_modify_the_scoremap() -> None:
    scoremap = TOY.copy()
    boxes_at_thresholds(scoremap, cam_thresholds(0.1), multi_contour=True)
    best_iou_at_thresholds(scoremap, [[1, 1, 2, 2]], cam_thresholds(0.1))
    np.testing.assert_array_equal(scoremap, TOY)


def test_cam_thresholds_are_the_protocols() -> None:
    taus = cam_thresholds()
    assert len(taus) == 1000 and taus[0] == 0.0 and taus[-1] == pytest.approx(0.999)
    assert taus.tolist() == list(np.arange(0, 1, 0.001))
    with pytest.raises(ValueError):
        cam_thresholds(0.0)


# --------------------------------------------------------------------------------------------
# Fast path == straightforward loop
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("multi", [False, True])
def test_boxes_at_thresholds_equal_one_search_per_threshold(multi: bool) -> None:
    rng = np.random.default_rng(3)
    taus = np.concatenate([cam_thresholds(0.02), [0.2, 0.999]])
    for name, scoremap in _random_maps(rng):
        fast = boxes_at_thresholds(scoremap, taus, multi)
        assert len(fast) == len(taus)
        for tau, boxes in zip(taus, fast, strict=True):
            assert boxes.dtype == np.int64
            np.testing.assert_array_equal(boxes, np.array(_loop_boxes(scoremap, tau, multi)), err_msg=name)
            np.testing.assert_array_equal(boxes, boxes_from_scoremap(scoremap, tau, multi), err_msg=name)


@pytest.fixture(params=["level_sets", "contours"])
def fast_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the numba level-set kernel and again with the OpenCV contour path."""
    if request.param == "level_sets":
        if not _level_sets.available():
            pytest.skip("numba is not installed")
    else:
        monkeypatch.setattr(_level_sets, "available", lambda: False)
    return str(request.param)


@pytest.mark.parametrize("multi", [False, True])
def test_fast_best_iou_equals_straightforward_loop(multi: bool, fast_path: str) -> None:
    rng = np.random.default_rng(4)
    taus = cam_thresholds(0.01)
    for name, scoremap in _random_maps(rng):
        gt = _random_gt(rng, *scoremap.shape)
        expected = _loop_best_iou(scoremap, gt, taus, multi)
        np.testing.assert_array_equal(
            best_iou_at_thresholds(scoremap, gt, taus, multi), expected, err_msg=name
        )
        slow = best_iou_at_thresholds(scoremap, gt, taus, multi, fast=False)
        np.testing.assert_array_equal(slow, expected, err_msg=name)


def _adversarial_masks() -> list[tuple[str, np.ndarray]]:
    """Score maps whose contours test the connectivity rules: holes, nested holes, diagonal leaks."""
    maps = []
    ring = np.zeros((12, 12))
    ring[2:10, 2:10] = 1.0
    ring[4:8, 4:8] = 0.0  # one hole
    ring[5:7, 5:7] = 0.5  # an island in the hole, with its own level
    maps.append(("nested", ring))
    diag = np.ones((7, 7))
    diag[3, 3] = 0.0
    diag[2, 2] = 0.0  # 8-connected to (3, 3) but not 4-connected: two holes
    diag[4, 4] = 0.0
    maps.append(("diagonal holes", diag))
    leak = np.ones((6, 6))
    leak[1:3, 1:3] = 0.0
    leak[3, 0] = 0.0  # touches the image edge: background, not a hole
    leak[2, 0] = 0.0  # connects the hole to the edge through a 4-neighbour
    maps.append(("hole leaking to the edge", leak))
    diag_fg = np.zeros((6, 6))
    diag_fg[1, 1] = diag_fg[2, 2] = diag_fg[3, 3] = 1.0  # one 8-connected component
    diag_fg[3, 5] = 0.7
    maps.append(("diagonal foreground", diag_fg))
    checker = (np.indices((9, 9)).sum(axis=0) % 2).astype(np.float64)
    maps.append(("checkerboard", checker))
    edge_hole = np.ones((8, 8))
    edge_hole[1:7, 1:7] = 0.0  # the hole's grown box reaches the last pixel (clipped to W - 1)
    maps.append(("hole next to the edge", edge_hole))
    return maps


@pytest.mark.parametrize("multi", [False, True])
def test_fast_best_iou_on_adversarial_masks(multi: bool, fast_path: str) -> None:
    rng = np.random.default_rng(6)
    taus = np.array([-0.5, 0.0, 0.3, 0.5, 0.6, 0.99, 1.0, 1.7])  # beyond [0, 1) too
    for name, scoremap in _adversarial_masks():
        h, w = scoremap.shape
        for gt in (_random_gt(rng, h, w), np.array([[0, 0, w - 1, h - 1]]), np.array([[3, 3, 6, 6]])):
            expected = _loop_best_iou(scoremap, gt, taus, multi)
            got = best_iou_at_thresholds(scoremap, gt, taus, multi)
            np.testing.assert_array_equal(got, expected, err_msg=f"{name} {gt.tolist()}")


def test_level_sets_see_holes_that_the_outer_box_misses() -> None:
    # A ring whose hole matches the GT: only the hole's box reaches IoU 1, so dropping holes would fail.
    ring = np.zeros((20, 20))
    ring[2:18, 2:18] = 1.0
    ring[6:14, 6:14] = 0.0
    gt = np.array([[5, 5, 15, 15]])  # the hole [6, 13] grown by one pixel, x1 = x + w
    best = best_iou_at_thresholds(ring, gt, np.array([0.5]))
    assert best[0] == 1.0
    assert best_iou_at_thresholds(ring, gt, np.array([0.5]), multi_contour=False)[0] < 0.5


def test_fast_best_iou_full_threshold_grid() -> None:
    # the protocol's 1,000 thresholds on a realistic map and a GT box near its peak
    rng = np.random.default_rng(5)
    scoremap = scoremap_from_attention(rng.random((14, 14)) + 2 * np.eye(14)[::-1])
    gt = np.array([[60, 40, 180, 170], [0, 150, 60, 223]])
    taus = cam_thresholds()
    for multi in (False, True):
        expected = _loop_best_iou(scoremap, gt, taus, multi)
        np.testing.assert_array_equal(best_iou_at_thresholds(scoremap, gt, taus, multi), expected)


# --------------------------------------------------------------------------------------------
# Coordinate changes
# --------------------------------------------------------------------------------------------


def test_resize_boxes_truncates_like_the_protocol() -> None:
    # 10 * 224 / 100 = 22.4, 20 * 224 / 150 = 29.87, 99 * 224 / 100 = 221.76, 149 * 224 / 150 = 222.51
    np.testing.assert_array_equal(
        resize_boxes([10, 20, 99, 149], (150, 100), (224, 224)), [[22, 29, 221, 222]]
    )
    boxes = np.array([[0.5, 1.5, 10.7, 20.2], [3, 4, 5, 6]])
    out = resize_boxes(boxes, (480, 640), (224, 224))
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, (boxes * [224 / 640, 224 / 480, 224 / 640, 224 / 480]).astype(int))
    np.testing.assert_array_equal(boxes, [[0.5, 1.5, 10.7, 20.2], [3, 4, 5, 6]])


def test_boxes_to_original_scales_and_clips() -> None:
    out = boxes_to_original([[0, 0, 112, 56], [0, 0, 224, 224]], orig_hw=(300, 500))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], [0, 0, 250, 75])
    np.testing.assert_allclose(out[1], [0, 0, 499, 299])  # clipped into the image
    # round trip through the protocol's truncating resize stays within one pixel
    b224 = np.array([[13, 27, 150, 201]])
    back = resize_boxes(boxes_to_original(b224, (517, 333)), (517, 333), (224, 224))
    assert np.abs(back - b224).max() <= 1


def test_sizes_are_height_first_on_a_non_square_image() -> None:
    # A 400-wide, 100-high image: (H, W) = (100, 400). Its full-image box is [0, 0, 399, 99].
    # A call with (W, H) would scale x by 224/100 and y by 224/400 instead.
    full = [0, 0, 399, 99]
    np.testing.assert_array_equal(resize_boxes(full, (100, 400)), [[0, 0, 223, 221]])
    np.testing.assert_array_equal(resize_boxes(full, (100, 400), SCOREMAP_SIZE), [[0, 0, 223, 221]])
    # Back: x by 400/224, y by 100/224 (then clipped into the 400x100 image).
    np.testing.assert_allclose(
        boxes_to_original([[0, 0, 223, 112]], (100, 400)), [[0, 0, 223 * 400 / 224, 50]], rtol=1e-6
    )
    # Score maps of another shape are (H, W) too: a 112-high, 448-wide map onto a 100x400 image.
    back = boxes_to_original([[0, 0, 448, 56]], (100, 400), size=(112, 448))
    np.testing.assert_allclose(back, [[0, 0, 399, 50]])
    # The old (W, H) keywords are gone, so a caller not updated fails loudly.
    with pytest.raises(TypeError):
        boxes_to_original([[0, 0, 1, 1]], orig_wh=(400, 100))  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        resize_boxes([[0, 0, 1, 1]], from_wh=(400, 100), to_wh=(224, 224))  # type: ignore[call-arg]


# --------------------------------------------------------------------------------------------
# Every region's box (labeling with boxes=all) and one-to-one matching (box recall / precision)
# --------------------------------------------------------------------------------------------


def test_region_boxes_are_the_multi_contour_boxes_without_holes_largest_first():
    s = np.zeros((40, 60))
    s[2:10, 3:13] = 1.0  # small region
    s[15:35, 20:50] = 0.9  # large region with a hole
    s[22:28, 30:40] = 0.0
    multi = boxes_from_scoremap(s, 0.5, multi_contour=True)
    regions = region_boxes_from_scoremap(s, 0.5)
    # protocol boxes: x1/y1 one past the last pixel; the hole's contour is a third multi-contour box
    assert regions.tolist() == [[20, 15, 50, 35], [3, 2, 13, 10]]
    assert len(multi) == 3 and {tuple(b) for b in regions} < {tuple(b) for b in multi}
    # the first region is the single-box mode's box
    assert regions[0].tolist() == boxes_from_scoremap(s, 0.5).reshape(-1).tolist()
    assert region_boxes_from_scoremap(np.zeros((8, 8)), 0.5).shape == (0, 4)
    with pytest.raises(ValueError):
        region_boxes_from_scoremap(np.full((4, 4), np.nan), 0.5)


def test_match_boxes_is_one_to_one_by_decreasing_score():
    gt = np.array([[0, 0, 9, 9], [20, 20, 29, 29]])
    pred = np.array([[0, 0, 9, 9], [1, 1, 9, 9], [20, 20, 29, 29], [50, 50, 60, 60]])
    # IoU([1,1,9,9], [0,0,9,9]) = 81/100: a duplicate of the first object; by score it comes first
    pred_hit, gt_hit = match_boxes(pred, [0.5, 0.9, 0.4, 0.8], gt, 0.5)
    assert pred_hit.tolist() == [False, True, True, False]
    assert gt_hit.tolist() == [True, True]
    pred_hit, gt_hit = match_boxes(pred, [0.5, 0.9, 0.4, 0.8], gt, 0.85)  # 0.81 < 0.85: the exact box wins
    assert pred_hit.tolist() == [True, False, True, False]
    empty_hit, gt_none = match_boxes(np.zeros((0, 4)), [], gt)
    assert empty_hit.shape == (0,) and gt_none.tolist() == [False, False]
    with pytest.raises(ValueError, match="scores"):
        match_boxes(pred, [0.5], gt)
