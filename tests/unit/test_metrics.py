"""CorLoc and MaxBoxAcc accumulators: hand-computed toy sets, merging, state round trips, errors."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from coloc_core.boxes import scoremap_from_attention
from coloc_core.metrics import CorLocAccumulator, LocalizationAccumulator, MaxBoxAccAccumulator

# Image A (5x6): floor(255 * S) is 229/255 on a 2x2 blob (x, y in [1, 2]) and 76 on a vertical line
# (x = 4, y in [2, 3]). Its box is [1, 1, 3, 3] at every tau of the toy grid; the line adds [4, 2, 5, 4]
# while 76 > int(tau * 255), i.e. for tau in {0, 0.25}.
IMAGE_A = np.array(
    [
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.9, 0.9, 0.0, 0.0, 0.0],
        [0.0, 0.9, 1.0, 0.0, 0.3, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.3, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    ]
)
GT_A = np.array([[1, 1, 2, 2]])  # IoU([1, 1, 3, 3], GT_A) = 4 / 9; the line's box misses it

# Image B (4x4): 102 on a 2x2 block (x, y in [1, 2]) with 255 at (2, 2). Box [1, 1, 3, 3] for
# tau in {0, 0.25} (thresholds 0 and 63), [2, 2, 3, 3] for tau in {0.5, 0.75} (127 and 191).
IMAGE_B = np.array(
    [
        [0.0, 0.0, 0.0, 0.0],
        [0.0, 0.4, 0.4, 0.0],
        [0.0, 0.4, 1.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
    ]
)
GT_B = np.array([[2, 2, 3, 3]])  # IoU 4 / 9 at tau in {0, 0.25}, 1 at tau in {0.5, 0.75}


def _random_set(rng: np.random.Generator, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for _ in range(n):
        scoremap = scoremap_from_attention(rng.random(tuple(rng.integers(3, 15, 2))), size=(64, 64))
        ys, xs = np.nonzero(scoremap > rng.uniform(0.3, 0.8))
        jitter = rng.integers(-4, 5, 4)
        gt = np.array([xs.min(), ys.min(), xs.max(), ys.max()]) + jitter
        gt = np.clip(gt, 0, 70)
        gt[2:] = np.maximum(gt[2:], gt[:2])
        out.append((scoremap, gt[None]))
    return out


# --------------------------------------------------------------------------------------------
# MaxBoxAcc
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("multi", [False, True])
def test_maxboxacc_two_image_toy_set(multi: bool) -> None:
    acc = MaxBoxAccAccumulator(cam_curve_interval=0.25, multi_contour=multi)  # tau in {0, .25, .5, .75}
    best_a = acc.update(IMAGE_A, GT_A)
    best_b = acc.update(IMAGE_B, GT_B)
    np.testing.assert_allclose(best_a, [4 / 9] * 4)
    np.testing.assert_allclose(best_b, [4 / 9, 4 / 9, 1, 1])
    # delta 0.3: both images at every tau; 0.5 and 0.7: only B, at tau 0.5 and 0.75
    np.testing.assert_array_equal(acc.num_correct, [[2, 2, 2, 2], [0, 0, 1, 1], [0, 0, 1, 1]])
    np.testing.assert_allclose(acc.accuracies(), [[100] * 4, [0, 0, 50, 50], [0, 0, 50, 50]])
    assert acc.compute() == {
        "maxboxacc@0.3": 100.0,
        "maxboxacc@0.5": 50.0,
        "maxboxacc@0.7": 50.0,
        "maxboxaccv2": pytest.approx(200 / 3),
        "best_threshold@0.3": 0.0,
        "best_threshold@0.5": 0.5,
        "best_threshold@0.7": 0.5,
        "num_images": 2.0,
    }


def test_maxboxacc_oracle_heatmap_is_100() -> None:
    # the score map is the GT box itself. The protocol's box is [x, y, x + w, y + h], one pixel
    # larger than the GT on each far side, so the IoU is 100 * 120 / (101 * 121) = 0.98, not 1.
    gt = np.array([[50, 60, 149, 179]])
    scoremap = np.zeros((224, 224))
    scoremap[60:180, 50:150] = 1.0
    for multi in (False, True):
        acc = MaxBoxAccAccumulator(multi_contour=multi)
        best = acc.update(scoremap, gt)
        np.testing.assert_allclose(best, 12000 / 12221)
        result = acc.compute()
        assert result["maxboxacc@0.3"] == result["maxboxacc@0.7"] == result["maxboxaccv2"] == 100.0
    corloc = CorLocAccumulator()
    assert corloc.update(scoremap, gt) == pytest.approx(12000 / 12221)
    assert corloc.compute()["corloc_mean"] == 100.0


def _slow_num_correct(
    data: list[tuple[np.ndarray, np.ndarray]], multi: bool, interval: float, deltas: tuple[float, ...]
) -> np.ndarray:
    # independent straightforward loop: one contour search per threshold
    taus = np.arange(0, 1, interval)
    counts = np.zeros((len(deltas), len(taus)), dtype=np.int64)
    for scoremap, gt in data:
        h, w = scoremap.shape
        u8 = (scoremap * 255).astype(np.uint8)
        for j, tau in enumerate(taus):
            mask = (u8 > int(tau * u8.max())).astype(np.uint8)
            contours = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
            if not contours:
                boxes = [(0, 0, 0, 0)]
            else:
                chosen = contours if multi else [max(contours, key=cv2.contourArea)]
                boxes = []
                for c in chosen:
                    x, y, bw, bh = cv2.boundingRect(c)
                    boxes.append((x, y, min(x + bw, w - 1), min(y + bh, h - 1)))
            best = 0.0
            for b in boxes:
                for g in gt.tolist():
                    iw = max(0, min(b[2], g[2]) - max(b[0], g[0]) + 1)
                    ih = max(0, min(b[3], g[3]) - max(b[1], g[1]) + 1)
                    union = (
                        (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
                        + (g[2] - g[0] + 1) * (g[3] - g[1] + 1)
                        - iw * ih
                    )
                    best = max(best, iw * ih / union)
            for i, d in enumerate(deltas):
                counts[i, j] += best >= d
    return counts


@pytest.mark.parametrize("multi", [False, True])
def test_fast_and_slow_accumulators_agree_with_a_plain_loop(multi: bool) -> None:
    data = _random_set(np.random.default_rng(0), 6)
    fast = MaxBoxAccAccumulator(cam_curve_interval=0.01, multi_contour=multi)
    slow = MaxBoxAccAccumulator(cam_curve_interval=0.01, multi_contour=multi, fast=False)
    for scoremap, gt in data:
        fast.update(scoremap, gt)
        slow.update(scoremap, gt)
    expected = _slow_num_correct(data, multi, 0.01, fast.iou_thresholds)
    np.testing.assert_array_equal(fast.num_correct, expected)
    np.testing.assert_array_equal(slow.num_correct, expected)
    assert fast.compute() == slow.compute()


def test_maxboxacc_merge_equals_one_pass_and_state_round_trips() -> None:
    data = _random_set(np.random.default_rng(1), 9)
    whole = MaxBoxAccAccumulator(cam_curve_interval=0.005)
    parts = [MaxBoxAccAccumulator(cam_curve_interval=0.005) for _ in range(3)]
    for i, (scoremap, gt) in enumerate(data):
        whole.update(scoremap, gt)
        parts[i % 3].update(scoremap, gt)
    # partial states travel as JSON-safe dicts (e.g. between Ray tasks)
    states = [json.loads(json.dumps(p.state_dict())) for p in parts]
    merged = MaxBoxAccAccumulator.from_state_dict(states[0])
    for state in states[1:]:
        merged.merge(MaxBoxAccAccumulator.from_state_dict(state))
    np.testing.assert_array_equal(merged.num_correct, whole.num_correct)
    assert merged.count == whole.count == 9
    assert merged.compute() == whole.compute()
    # merging leaves the other accumulator untouched
    before = parts[1].num_correct.copy()
    parts[0].merge(parts[1])
    np.testing.assert_array_equal(parts[1].num_correct, before)


def test_maxboxacc_errors() -> None:
    acc = MaxBoxAccAccumulator(cam_curve_interval=0.1)
    with pytest.raises(ValueError):
        acc.compute()
    with pytest.raises(ValueError):
        acc.update(np.full((4, 4), np.nan), [[0, 0, 1, 1]])
    with pytest.raises(ValueError):
        acc.update(np.full((4, 4), 1.5), [[0, 0, 1, 1]])
    with pytest.raises(ValueError):
        acc.update(IMAGE_A, [[3, 0, 1, 1]])
    with pytest.raises(ValueError):
        acc.update(IMAGE_A, np.zeros((0, 4)))
    assert acc.count == 0
    with pytest.raises(ValueError):
        acc.merge(MaxBoxAccAccumulator(cam_curve_interval=0.2))
    with pytest.raises(ValueError):
        acc.merge(MaxBoxAccAccumulator(cam_curve_interval=0.1, multi_contour=False))
    with pytest.raises(ValueError):
        MaxBoxAccAccumulator(iou_thresholds=(0.5, 1.5))
    with pytest.raises(ValueError):
        MaxBoxAccAccumulator(cam_curve_interval=1.0)


# --------------------------------------------------------------------------------------------
# CorLoc
# --------------------------------------------------------------------------------------------


def test_corloc_two_image_toy_set() -> None:
    # tau = 0.2 (threshold 51): A keeps the blob (area 1 > the line's 0) -> IoU 4/9;
    # B keeps its 2x2 block [1, 1, 3, 3] -> IoU 4/9. Only delta = 0.3 is reached.
    acc = CorLocAccumulator()
    assert acc.update(IMAGE_A, GT_A) == pytest.approx(4 / 9)
    assert acc.update(IMAGE_B, GT_B) == pytest.approx(4 / 9)
    assert acc.compute() == {
        "corloc@0.3": 100.0,
        "corloc@0.5": 0.0,
        "corloc@0.7": 0.0,
        "corloc_mean": pytest.approx(100 / 3),
        "threshold": 0.2,
        "num_images": 2.0,
    }
    # tau = 0.5 (threshold 127): B's box shrinks to [2, 2, 3, 3] = its GT
    acc = CorLocAccumulator(threshold=0.5)
    acc.update(IMAGE_A, GT_A)
    assert acc.update(IMAGE_B, GT_B) == 1.0
    result = acc.compute()
    assert (result["corloc@0.3"], result["corloc@0.5"], result["corloc@0.7"]) == (100.0, 50.0, 50.0)


def test_corloc_counts_every_image_and_uses_any_gt_box() -> None:
    acc = CorLocAccumulator(iou_thresholds=(0.5,))
    acc.update_box([0, 0, 9, 9], [[100, 100, 120, 120], [0, 0, 9, 9]])  # second GT matches
    acc.update_box([0, 0, 9, 9], [[50, 50, 60, 60]])  # a miss still counts in the denominator
    acc.update(np.zeros((20, 20)), [[5, 5, 10, 10]])  # no contour: box [0, 0, 0, 0]
    assert acc.compute()["corloc@0.5"] == pytest.approx(100 / 3)


def test_corloc_merge_and_state_round_trip() -> None:
    data = _random_set(np.random.default_rng(2), 8)
    whole, left, right = CorLocAccumulator(), CorLocAccumulator(), CorLocAccumulator()
    for i, (scoremap, gt) in enumerate(data):
        whole.update(scoremap, gt)
        (left if i < 3 else right).update(scoremap, gt)
    merged = CorLocAccumulator.from_state_dict(json.loads(json.dumps(left.state_dict())))
    merged.merge(CorLocAccumulator.from_state_dict(json.loads(json.dumps(right.state_dict()))))
    assert merged.compute() == whole.compute()
    with pytest.raises(ValueError):
        merged.merge(CorLocAccumulator(threshold=0.3))


def test_corloc_errors() -> None:
    acc = CorLocAccumulator()
    with pytest.raises(ValueError):
        acc.compute()
    with pytest.raises(ValueError):
        acc.update(np.array([[0.5, np.nan]]), [[0, 0, 1, 1]])
    with pytest.raises(ValueError):
        acc.update_box([[0, 0, 1, 1], [0, 0, 2, 2]], [[0, 0, 1, 1]])
    with pytest.raises(ValueError):
        acc.update_box([0, 0, 1, 1], [[0, 0, -1, 1]])
    assert acc.count == 0


# --------------------------------------------------------------------------------------------
# Misses and the evaluation core (CorLoc + MaxBoxAcc together)
# --------------------------------------------------------------------------------------------


def _faked_misses(acc_class, acc, misses: int):
    """Misses as evaluate and train counted them before ``add_misses``: a merged all-zero state."""
    state = acc.state_dict()
    state["num_correct"] = np.zeros_like(np.asarray(state["num_correct"])).tolist()
    state["count"] = misses
    return acc_class.from_state_dict(acc.state_dict()).merge(acc_class.from_state_dict(state))


@pytest.mark.parametrize("acc_class", [CorLocAccumulator, MaxBoxAccAccumulator])
def test_add_misses_counts_images_that_are_never_a_hit(acc_class) -> None:
    acc = acc_class() if acc_class is CorLocAccumulator else acc_class(cam_curve_interval=0.25)
    acc.update(IMAGE_B, GT_B)
    faked = _faked_misses(acc_class, acc, 3)
    assert acc.add_misses(3) is acc
    assert acc.count == 4
    np.testing.assert_array_equal(acc.num_correct, faked.num_correct)
    assert acc.compute() == faked.compute()
    assert acc.add_misses(0).count == 4
    for bad in (-1, 1.5):
        with pytest.raises(ValueError):
            acc.add_misses(bad)  # type: ignore[arg-type]  # 1.5: what the check refuses
    assert acc.count == 4


def test_only_misses_give_zero_not_an_error() -> None:
    acc = LocalizationAccumulator((0.5,), cam_curve_interval=0.25).add_misses(2)
    assert acc.count == 2
    assert acc.compute() == {
        "corloc@0.5": 0.0,
        "corloc_mean": 0.0,
        "maxboxacc@0.5": 0.0,
        "maxboxaccv2": 0.0,
        "best_threshold@0.5": 0.0,
    }


def test_localization_accumulator_is_corloc_and_maxboxacc_on_the_same_images() -> None:
    data = _random_set(np.random.default_rng(3), 7)
    core = LocalizationAccumulator(threshold=0.3, cam_curve_interval=0.01, multi_contour=False)
    corloc = CorLocAccumulator(threshold=0.3)
    maxbox = MaxBoxAccAccumulator(cam_curve_interval=0.01, multi_contour=False)
    for scoremap, gt in data:
        assert core.update(scoremap, gt) == corloc.update(scoremap, gt)
        maxbox.update(scoremap, gt)
    core.add_misses(2)
    corloc.add_misses(2)
    maxbox.add_misses(2)
    expected = {k: v for k, v in corloc.compute().items() if k not in ("threshold", "num_images")}
    expected.update({k: v for k, v in maxbox.compute().items() if k != "num_images"})
    assert core.compute() == expected
    assert list(core.compute()) == list(expected)  # the same keys in the same order
    assert (core.count, core.threshold) == (9, 0.3)


def test_localization_accumulator_merges_and_round_trips_its_state() -> None:
    data = _random_set(np.random.default_rng(4), 8)
    whole = LocalizationAccumulator(cam_curve_interval=0.01)
    parts = [LocalizationAccumulator(cam_curve_interval=0.01) for _ in range(2)]
    for i, (scoremap, gt) in enumerate(data):
        whole.update(scoremap, gt)
        parts[i % 2].update(scoremap, gt)
    whole.add_misses(1)
    merged = LocalizationAccumulator(cam_curve_interval=0.01)
    for part in parts:  # partial states travel as JSON-safe dicts (e.g. between Ray tasks)
        merged.merge(LocalizationAccumulator.from_state_dict(json.loads(json.dumps(part.state_dict()))))
    merged.add_misses(1)
    assert merged.count == whole.count == 9
    assert merged.compute() == whole.compute()
    with pytest.raises(ValueError):
        merged.merge(LocalizationAccumulator(threshold=0.5, cam_curve_interval=0.01))
    state = parts[0].state_dict()
    state["corloc"]["count"] += 1
    with pytest.raises(ValueError):
        LocalizationAccumulator.from_state_dict(state)
    with pytest.raises(ValueError):
        LocalizationAccumulator().compute()
