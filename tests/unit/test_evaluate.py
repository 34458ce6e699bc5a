"""pipelines.evaluate on local predictions tables, without Ray: box recall and precision of every box,
the score ranking's intervals.

Evaluation through Ray Data, on S3, and the label → evaluate → calibrate jobs: tests/ray/test_evaluate.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.config import EvaluateJobConfig
from pipelines.evaluate import (
    gap_interval,
    kept_by_score,
    middle_of_best,
    run_evaluation,
    score_ranking,
    spearman_interval,
)
from tests.ray import labeling_data as data

pytestmark = [pytest.mark.timeout(180)]


def _boxes_csv_200x120(root, gt: dict) -> np.ndarray:
    """Write ``root/boxes.csv`` for 200x120 images ({name: [box, ...]}); a 7x7 heatmap of its centre."""
    lines = ["path,width,height,x0,y0,x1,y1"]
    lines += [f"{name},200,120,{x0},{y0},{x1},{y1}" for name, boxes in gt.items() for x0, y0, x1, y1 in boxes]
    (root / "boxes.csv").write_text("\n".join(lines) + "\n")
    heat = np.zeros((7, 7), np.uint8)
    heat[2:5, 2:5] = 255
    return heat


def test_box_recall_and_precision_count_every_box_of_a_boxes_all_table(tmp_path):
    import pyarrow as pa

    from pipelines import schema

    root = tmp_path / "herd"
    root.mkdir()
    gt = {
        "a.jpg": [(10, 10, 59, 59), (100, 20, 149, 79)],  # two animals
        "b.jpg": [(30, 30, 129, 99)],
        "c.jpg": [(0, 0, 49, 49), (60, 0, 99, 49)],  # not in the table: both boxes missed
    }
    heat = _boxes_csv_200x120(root, gt)
    items = [
        (str(root / "a.jpg"), 200, 120, heat, (10.0, 10.0, 59.0, 59.0), 0.8),
        (str(root / "b.jpg"), 200, 120, heat, (30.0, 30.0, 129.0, 99.0), 0.6),
    ]
    every = [
        # both animals of a.jpg, plus a box on nothing and a duplicate of the first one (lower score)
        schema.box_entries(
            [[10, 10, 59, 59], [101, 21, 149, 79], [160, 90, 199, 119], [12, 12, 59, 59]],
            [0.8, 0.5, 0.3, 0.2],
        ),
        schema.box_entries([[30, 30, 129, 99]], [0.6]),
    ]
    table = data.prediction_rows(items)
    field = schema.PREDICTIONS_SCHEMA.field(schema.BOXES)
    table = table.set_column(table.schema.get_field_index(schema.BOXES), field, pa.array(every, field.type))
    pred = str(tmp_path / "pred")
    data.write_parts(pred, table, rows_per_file=1)
    m = run_evaluation(
        EvaluateJobConfig(pred, gt=str(root), format="boxes_csv", split="all", sheet_images=0)
    ).metrics
    assert m["gt_boxes"] == 5
    assert m["box_recall@0.5"] == pytest.approx(100 * 3 / 5)  # a: 2, b: 1, c: 0 of 2
    assert m["box_precision@0.5"] == pytest.approx(100 * 3 / 5)  # 5 boxes, the duplicate is not a hit
    assert m["boxes_per_image"] == pytest.approx(5 / 2)
    assert m["single_box_recall@0.5"] == pytest.approx(100 * 2 / 5)
    assert m["single_box_precision@0.5"] == pytest.approx(100.0)
    # The same table without the boxes column: only the single box, and no single_* duplicate.
    one = str(tmp_path / "pred-one")
    data.write_parts(one, data.prediction_rows(items), rows_per_file=1)
    m1 = run_evaluation(
        EvaluateJobConfig(one, gt=str(root), format="boxes_csv", split="all", sheet_images=0)
    ).metrics
    assert m1["box_recall@0.5"] == pytest.approx(40.0) and m1["box_precision@0.5"] == pytest.approx(100.0)
    assert "single_box_recall@0.5" not in m1


def _one_image_set(tmp_path):
    """A boxes_csv set of one image and a one-row table that boxes it exactly (absolute path)."""
    root = tmp_path / "photos"
    root.mkdir()
    (root / "boxes.csv").write_text("path,width,height,x0,y0,x1,y1\na.jpg,200,120,10,10,59,59\n")
    heat = np.zeros((7, 7), np.uint8)
    heat[2:5, 2:5] = 255
    pred = str(tmp_path / "pred")
    data.write_parts(
        pred, data.prediction_rows([(str(root / "a.jpg"), 200, 120, heat, (10.0, 10.0, 59.0, 59.0), 0.8)]), 1
    )
    return root, pred


def test_box_corloc_and_the_ranking_measure_the_tables_own_boxes(tmp_path):
    # Three images whose map's largest contour is the centre of the image (the SPEC box of CorLoc@δ).
    # The table's boxes differ, as a best-scored region can: a.jpg's box finds its object off the centre,
    # b.jpg's misses, c.jpg's is the centre box; d.jpg is not in the table (a miss for both).
    root = tmp_path / "set"
    root.mkdir()
    centre = (57, 34, 142, 85)  # the 7x7 map's middle 3x3 cells, in a 200x120 image
    heat = _boxes_csv_200x120(
        root, {"a.jpg": [(150, 80, 199, 119)], **{k: [centre] for k in ("b.jpg", "c.jpg", "d.jpg")}}
    )
    items = [
        (str(root / "a.jpg"), 200, 120, heat, (150.0, 80.0, 199.0, 119.0), 0.9),
        (str(root / "b.jpg"), 200, 120, heat, (0.0, 0.0, 30.0, 20.0), 0.1),
        (str(root / "c.jpg"), 200, 120, heat, tuple(float(v) for v in centre), 0.5),
    ]
    pred = str(tmp_path / "pred")
    data.write_parts(pred, data.prediction_rows(items), rows_per_file=2)
    m = run_evaluation(
        EvaluateJobConfig(pred, gt=str(root), format="boxes_csv", split="all", sheet_images=0)
    ).metrics
    assert m["corloc@0.5"] == pytest.approx(50.0)  # the map's box: b and c of the four
    assert m["box_corloc@0.5"] == pytest.approx(50.0)  # the table's boxes: a and c of the four
    assert m["box_corloc@0.3"] == pytest.approx(50.0) and m["box_corloc@0.7"] == pytest.approx(50.0)
    # The score ranks the table's boxes: a (0.9, hit) > c (0.5, hit) > b (0.1, miss).
    # IoU ranks a = c > b, the scores a > c > b: ρ = √3/2 (the map's boxes, a miss and b a hit, would
    # give a negative ρ)
    assert m["spearman_score_iou"] == pytest.approx(np.sqrt(3) / 2)
    assert m["corloc@0.5_top_half_by_score"] == pytest.approx(100.0)
    assert m["corloc@0.5_bottom_half_by_score"] == pytest.approx(0.0)
    assert m["mean_iou"] == pytest.approx(2 / 3)
    # What a score filter keeps, among the three images with a prediction: the best-scored share,
    # counted as `coloc export --top_fraction` counts it (10% of 3 → a; 50% → a, c; 75% → all three)
    from pipelines.export.common import top_k_of_fraction

    assert [top_k_of_fraction(pred, q) for q in (0.1, 0.5, 0.75)] == [1, 2, 3]
    assert m["corloc@0.5_top_10pct_by_score"] == pytest.approx(100.0) and m[
        "score_cut_top_10pct"
    ] == pytest.approx(0.9)
    assert m["corloc@0.5_top_50pct_by_score"] == pytest.approx(100.0)
    assert m["score_cut_top_50pct"] == pytest.approx(0.5)
    assert m["corloc@0.5_top_75pct_by_score"] == pytest.approx(200 / 3)
    assert m["score_cut_top_75pct"] == pytest.approx(0.1)
    assert m["corloc@0.5_top_100pct_by_score"] == pytest.approx(200 / 3)
    report = (tmp_path / "pred" / "_eval" / "metrics.md").read_text()
    assert "## Keeping the best-scored boxes" in report
    assert "| 50% | 100.0% | 0.500 |" in report and "| 100% | 66.7% | 0.100 |" in report


def test_kept_by_score_keeps_the_best_scored_share_ties_in_table_order():
    scores = np.array([0.2, 0.9, 0.5, 0.5, -1.0, 0.5, 0.1, 0.7])
    ious = np.array([0.9, 0.8, 0.6, 0.1, 0.0, 0.7, 0.3, 0.2])
    m = kept_by_score(scores, ious, shares=(0.25, 0.5, 0.75, 1.0))
    # best first: 0.9 (hit), 0.7 (miss), then the three 0.5 in table order: 0.6 (hit), 0.1, 0.7 (hit)
    assert m["corloc@0.5_top_25pct_by_score"] == pytest.approx(50.0)  # 2 of 8
    assert m["score_cut_top_25pct"] == pytest.approx(0.7)
    assert m["corloc@0.5_top_50pct_by_score"] == pytest.approx(50.0)  # 0.9, 0.7, 0.5 (0.6), 0.5 (0.1)
    assert m["corloc@0.5_top_75pct_by_score"] == pytest.approx(400 / 6)  # ⌈6⌉: + 0.5 (0.7), 0.2 (0.9)
    assert m["score_cut_top_75pct"] == pytest.approx(0.2)
    assert m["corloc@0.5_top_100pct_by_score"] == pytest.approx(50.0)
    assert kept_by_score(scores, ious, delta=0.05, shares=(0.125,)) == {
        "corloc@0.05_top_12.5pct_by_score": 100.0,
        "score_cut_top_12.5pct": 0.9,
    }
    assert kept_by_score(np.array([1.0]), np.array([0.0]), shares=(0.1,))["score_cut_top_10pct"] == 1.0
    assert kept_by_score(np.array([]), np.array([])) == {}
    with pytest.raises(ValueError, match="share"):
        kept_by_score(scores, ious, shares=(0.0,))


def test_a_relative_ground_truth_root_meets_a_table_of_absolute_paths(tmp_path, monkeypatch):
    root, pred = _one_image_set(tmp_path)
    monkeypatch.chdir(tmp_path)

    def metrics(gt: str) -> dict:
        cfg = EvaluateJobConfig(pred, gt=gt, format="boxes_csv", split="all", sheet_images=0)
        return run_evaluation(cfg).metrics

    reference = metrics(str(root))
    assert (
        reference["gt_images"],
        reference["gt_images_not_in_table"],
        reference["predictions_without_gt"],
    ) == (
        1,
        0,
        0,
    )
    assert reference["mean_iou"] > 0
    for gt in ("photos", "./photos", f"file://{root}", "pred/../photos"):
        assert metrics(gt) == reference, gt


def test_ground_truth_of_another_set_is_refused_with_both_spellings(tmp_path):
    root, pred = _one_image_set(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "boxes.csv").write_text("path,width,height,x0,y0,x1,y1\nz.jpg,200,120,10,10,59,59\n")
    with pytest.raises(ValueError, match=r"none of the 1 images .* is in the ground truth .*a\.jpg.*z\.jpg"):
        run_evaluation(
            EvaluateJobConfig(pred, gt=str(other), format="boxes_csv", split="all", sheet_images=0)
        )


def test_spearman_interval_covers_the_true_rank_correlation():
    # Bivariate normal with Pearson r has the population Spearman (6/π)·asin(r/2): the 95% interval
    # measured on n = 100 samples must hold it about 95 times in 100.
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    r, n, trials = 0.5, 100, 400
    truth = 6.0 / np.pi * np.arcsin(r / 2.0)
    cov = np.array([[1.0, r], [r, 1.0]])
    held = 0
    for _ in range(trials):
        x = rng.multivariate_normal([0.0, 0.0], cov, size=n)
        low, high = spearman_interval(float(spearmanr(x[:, 0], x[:, 1]).statistic), n)
        held += low <= truth <= high
    assert 0.91 <= held / trials <= 0.99


def test_spearman_interval_shapes():
    low, high = spearman_interval(0.3, 200)
    assert 0.15 < low < 0.3 < high < 0.45
    narrow = spearman_interval(0.3, 2000)
    assert low < narrow[0] < 0.3 < narrow[1] < high
    assert spearman_interval(1.0, 50) == (1.0, 1.0)
    assert all(np.isnan(v) for v in spearman_interval(0.3, 3))
    assert all(np.isnan(v) for v in spearman_interval(float("nan"), 100))


def test_gap_interval_covers_the_true_difference_and_stays_in_range():
    rng = np.random.default_rng(1)
    p_a, p_b, n, trials = 0.9, 0.75, 100, 400
    held = 0
    for _ in range(trials):
        low, high = gap_interval(int(rng.binomial(n, p_a)), n, int(rng.binomial(n, p_b)), n)
        held += low <= 100.0 * (p_a - p_b) <= high
    assert 0.91 <= held / trials <= 0.99
    low, high = gap_interval(100, 100, 100, 100)  # both perfect: an interval around 0, not a point
    assert -5.0 < low < 0.0 < high < 5.0
    p = 11 / 12  # one hit and one miss added: 11 / 12 against 1 / 12, clipped at 100 points
    low = 100 * (p - (1 - p)) - 1.959964 * 100 * np.sqrt(2 * p * (1 - p) / 12)
    assert gap_interval(10, 10, 0, 10) == pytest.approx((low, 100.0))
    assert all(np.isnan(v) for v in gap_interval(1, 1, 0, 0))


def test_score_ranking_reports_the_gap_and_intervals():
    ious = np.linspace(0.0, 1.0, 40)
    scores = ious + np.random.default_rng(2).normal(0.0, 0.3, 40)
    m = score_ranking(scores, ious)
    assert m["spearman_score_iou_ci95_low"] < m["spearman_score_iou"] < m["spearman_score_iou_ci95_high"]
    gap = m["corloc@0.5_top_half_by_score"] - m["corloc@0.5_bottom_half_by_score"]
    assert m["corloc@0.5_half_gap"] == pytest.approx(gap)
    assert m["corloc@0.5_half_gap_ci95_low"] < gap < m["corloc@0.5_half_gap_ci95_high"]
    assert score_ranking(np.array([]), np.array([])) == {}


def test_calibration_takes_the_middle_of_the_tau_that_reach_the_maximum():
    # one run of ties: its middle (the upper of the middle two for an even count)
    assert middle_of_best([50, 70, 90, 90, 90, 60]) == 3
    assert middle_of_best([50, 90, 90, 90, 90, 60]) == 3
    # a single maximum is itself; two runs: the middle of all the τ that reach it, itself one of them
    assert middle_of_best([10, 20, 95, 20]) == 2
    curve = [90, 80, 90, 90, 80, 90]
    assert curve[middle_of_best(curve)] == 90 and middle_of_best(curve) == 3
    # float noise below the maximum does not break a tie
    assert middle_of_best([0.1 + 0.2, 0.3, 0.3]) == 1
    with pytest.raises(ValueError, match="non-empty and finite"):
        middle_of_best([])
    with pytest.raises(ValueError, match="non-empty and finite"):
        middle_of_best([1.0, float("nan")])
