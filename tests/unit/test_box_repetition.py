"""coloc_core.box_score's repetition term: parts a box holds twice, apart (a box around several objects)."""

from __future__ import annotations

import numpy as np
import pytest

from coloc_core.box_score import (
    REPEAT_QUANTILE,
    box_repeat_excess,
    box_repetition,
    box_score,
    payload_box_sizes,
    repeat_statistic,
)

GRID = 20
WHOLE = [0, 0, 223, 223]  # the whole 224×224 score map


def _animal(heat: np.ndarray, feats: np.ndarray, x: int, y: int) -> None:
    """A 6×8-cell object at (x, y): a head (feature 0) on top of a body (feature 1), map 1."""
    heat[y : y + 8, x : x + 6] = 1.0
    feats[0, y : y + 3, x : x + 6] = 1.0
    feats[1, y + 3 : y + 8, x : x + 6] = 1.0


def _scene(*corners: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    heat = np.zeros((GRID, GRID))
    feats = np.zeros((4, GRID, GRID), dtype=np.float32)
    feats[3] = 1.0  # the background's own feature
    for x, y in corners:
        feats[3, y : y + 8, x : x + 6] = 0.0
        _animal(heat, feats, x, y)
    return heat, feats


def test_one_object_has_no_repetition_and_two_apart_repeat_in_full():
    heat, feats = _scene((2, 2))
    assert box_repetition(heat, feats, WHOLE, 0.2) == 0.0
    heat, feats = _scene((2, 2), (12, 6))
    assert box_repetition(heat, feats, WHOLE, 0.2) == pytest.approx(1.0)


def test_the_box_and_the_threshold_decide_which_cells_count():
    heat, feats = _scene((2, 2), (12, 6))
    # A box around the first object only (grid cells 0-9 of 20 → score-map pixels 0-111).
    assert box_repetition(heat, feats, [0, 0, 111, 223], 0.2) == 0.0
    # The second object under τ: not part of the mask.
    heat[6:14, 12:18] = 0.1
    assert box_repetition(heat, feats, WHOLE, 0.2) == 0.0


def test_paired_small_parts_repeat_by_their_share_of_the_map():
    # One body with two small ears (feature 2) apart on top: only the ears' cells repeat.
    heat = np.zeros((GRID, GRID))
    feats = np.zeros((4, GRID, GRID), dtype=np.float32)
    heat[4:14, 4:14] = 1.0
    feats[1, 4:14, 4:14] = 1.0
    for x in (4, 12):
        heat[2:4, x : x + 2] = 1.0
        feats[2, 2:4, x : x + 2] = 1.0
    ears, body = 8, 100
    assert box_repetition(heat, feats, WHOLE, 0.2) == pytest.approx(ears / (ears + body))


def test_a_weaker_copy_counts_by_its_map_and_by_its_size():
    heat, feats = _scene((2, 2), (12, 6))
    heat[6:14, 12:18] = 0.5  # the second object half as strong: each of its cells weighs half
    assert box_repetition(heat, feats, WHOLE, 0.2) == pytest.approx(1.0)
    heat, feats = _scene((2, 2))
    heat[14:16, 14:17] = 1.0  # a small copy of the head (6 cells) apart: 6/18 for the first head
    feats[0, 14:16, 14:17] = 1.0
    feats[3, 14:16, 14:17] = 0.0
    first_head, second_head, body = 18 * (6 / 18), 6 * 1.0, 30 * 0.0
    expected = (first_head + second_head + body) / (18 + 6 + 30)
    assert box_repetition(heat, feats, WHOLE, 0.2) == pytest.approx(expected)


def test_bad_inputs_are_refused_or_give_zero():
    heat, feats = _scene((2, 2), (12, 6))
    with pytest.raises(ValueError, match="features must be"):
        box_repetition(heat, feats[:, :10], WHOLE, 0.2)
    assert box_repetition(np.zeros((GRID, GRID)), feats, WHOLE, 0.2) == 0.0
    assert box_repetition(heat, np.zeros_like(feats), WHOLE, 0.2) == 0.0  # features that say nothing


def test_the_collection_statistic_and_the_excess():
    values = np.linspace(0.0, 0.4, 101)
    assert repeat_statistic(values) == pytest.approx(0.4 * REPEAT_QUANTILE)
    for bad in ([], [0.2, 1.5], [float("nan")]):
        with pytest.raises(ValueError):
            repeat_statistic(bad)
    sizes = {"median": -1.0, "spread": 0.3, "images": 10, "repeats": 0.1}
    assert box_repeat_excess(0.05, sizes) == 0.0
    assert box_repeat_excess(0.6, sizes) == pytest.approx(0.5)


def test_the_score_subtracts_the_excess_only_with_the_collection_value_and_the_box_value():
    s = np.zeros((40, 40))
    s[10:20, 10:20] = 1.0
    box = [10, 10, 19, 19]
    plain = {"median": float(np.log(100 / 1600)), "spread": 0.3, "images": 10}
    sizes = {**plain, "repeats": 0.1}
    base = box_score(s, box, 0.2, sizes)
    assert box_score(s, box, 0.2, plain, repetition=0.9) == pytest.approx(base)
    assert box_score(s, box, 0.2, sizes, repetition=0.05) == pytest.approx(base)
    assert box_score(s, box, 0.2, sizes, repetition=0.9) == pytest.approx(base - 0.8)


def test_the_model_file_value_applies_at_its_own_threshold_only():
    payload = {"threshold": 0.25, "box_sizes": {"median": -1.0, "spread": 0.3, "images": 9, "repeats": 0.2}}
    assert payload_box_sizes(payload, 0.25) == {"median": -1.0, "spread": 0.3, "images": 9, "repeats": 0.2}
    assert payload_box_sizes(payload, 0.3) is None
    older = {"threshold": 0.25, "box_sizes": {"median": -1.0, "spread": 0.3, "images": 9}}
    assert "repeats" not in (payload_box_sizes(older, 0.25) or {})


def test_a_fine_grid_is_averaged_down_first_and_gives_the_same_answer():
    # The scenes above on a 4x finer grid (80×80 cells, as a stride-4 backbone gives): averaged over
    # 3×3 blocks to 27×27 before the cells are compared, so the cost stays that of a coarse grid.
    for corners, low, high in ((((2, 2),), 0.0, 0.05), (((2, 2), (12, 6)), 0.8, 1.0)):
        heat, feats = _scene(*corners)
        fine_heat = np.kron(heat, np.ones((4, 4)))
        fine_feats = np.stack([np.kron(f, np.ones((4, 4))) for f in feats]).astype(np.float32)
        assert low <= box_repetition(fine_heat, fine_feats, WHOLE, 0.2) <= high
