"""Evaluating predictions tables: oracle = 100, misses, score ranking, calibration, the three jobs."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from coloc_core.checkpoint import read_model_payload
from pipelines import storage
from pipelines.config import EvaluateJobConfig
from pipelines.evaluate import calibrate_threshold, run_evaluation, write_calibrated_model
from tests.ray import labeling_data as data

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def squares(tmp_path_factory, s3_server):
    root = tmp_path_factory.mktemp("squares")
    expected = data.square_collection(str(root), num_good=10, seed=5)
    images = s3_server.upload_dir(root, s3_server.unique_prefix("squares"))
    return str(root), images, expected


def _oracle_items(images: str, expected, halo: float = 0.0):
    return [
        (
            storage.join(images, e.rel),
            e.size[0],
            e.size[1],
            data.box_mask_224(e.box, e.size, halo),
            e.box,
            0.5,
        )
        for e in expected
    ]


def test_oracle_heatmaps_score_100_on_s3(ray_cluster, s3_server, squares):
    _, images, expected = squares
    pred = s3_server.uri(s3_server.unique_prefix("oracle"))
    data.write_parts(pred, data.prediction_rows(_oracle_items(images, expected)), rows_per_file=4)
    result = run_evaluation(EvaluateJobConfig(pred, gt=images, format="boxes_csv", split="all"))
    m = result.metrics
    for key in ("corloc@0.3", "corloc@0.5", "corloc@0.7", "corloc_mean", "maxboxacc@0.7", "maxboxaccv2"):
        assert m[key] == pytest.approx(100.0), (key, m)
    assert m["gt_images"] == 10 and m["rows"] == 10 and m["error_rows"] == 0
    assert result.out == storage.join(pred, "_eval")
    saved = json.loads(storage.read_text(storage.join(result.out, "metrics.json")))
    assert saved["metrics"]["maxboxaccv2"] == pytest.approx(100.0)
    md = storage.read_text(storage.join(result.out, "metrics.md"))
    assert "| corloc@0.5 | 100 |" in md and "| maxboxaccv2 | 100 |" in md
    sheet = Image.open(io.BytesIO(storage.read_bytes(storage.join(result.out, "sheet.png"))))
    assert sheet.size[0] > 8 * 160 and sheet.size[1] > 2 * 160


def test_misses_count_and_score_ranking(ray_cluster, tmp_path, squares):
    root, _, expected = squares
    items = _oracle_items(root, expected)
    # Shift the oracle map and box of image i right by 4·i pixels at 224 and give it a score falling
    # with i: the table's box (what the score ranks) loses IoU as the score falls.
    shifted = []
    for i, (path, w, h, heat, box, _) in enumerate(items[:8]):
        moved = np.zeros_like(heat)
        moved[:, 4 * i :] = heat[:, : 224 - 4 * i]
        dx = 4 * i * w / 224
        x0, y0, x1, y1 = box
        shifted.append((path, w, h, moved, (min(x0 + dx, w - 1), y0, min(x1 + dx, w - 1), y1), 1.0 - i / 10))
    shifted.append((items[8][0], items[8][1], items[8][2], None, None, None))  # an error row
    # items[9] is left out of the table: a miss.
    pred = str(tmp_path / "pred")
    data.write_parts(pred, data.prediction_rows(shifted), rows_per_file=3)
    m = run_evaluation(
        EvaluateJobConfig(pred, gt=root, format="boxes_csv", split="all", sheet_images=0)
    ).metrics
    assert m["gt_images_with_error_row"] == 1 and m["gt_images_not_in_table"] == 1
    assert m["corloc@0.3"] <= 80.0  # 2 of 10 GT images can never be hits
    assert m["spearman_score_iou"] == pytest.approx(1.0)
    assert m["corloc@0.5_top_half_by_score"] >= m["corloc@0.5_bottom_half_by_score"]
    assert not os.path.exists(os.path.join(pred, "_eval", "sheet.png"))


def test_calibration_finds_the_threshold_and_writes_a_model_file(tmp_path, squares):
    root, _, expected = squares
    pred = str(tmp_path / "pred")
    # Box at 255, a halo twice its size at 128: only τ above 128/255 keeps the halo out.
    data.write_parts(pred, data.prediction_rows(_oracle_items(root, expected, halo=0.5)), rows_per_file=5)
    result = calibrate_threshold(pred, gt_root=root, gt_format="boxes_csv", split="all")
    assert result.corloc == pytest.approx(100.0) and result.num_images == 10
    assert result.curve[0] < 100.0
    # Every τ from 0.51 on reaches 100 (the box is 255); the middle of that run is chosen.
    reaching = [t for t, c in zip(result.thresholds, result.curve, strict=True) if c == pytest.approx(100.0)]
    assert reaching[0] == pytest.approx(0.51) and reaching[-1] == pytest.approx(0.99)
    assert result.threshold == pytest.approx(0.75)
    assert result.tied == pytest.approx((0.51, 0.99))
    src = str(tmp_path / "model.pt")
    with open(src, "wb") as fh:
        fh.write(data.save_payload(data.tiny_colocnet_payload()))
    dst = str(tmp_path / "model.calibrated.pt")
    write_calibrated_model(src, dst, result)
    old, new = read_model_payload(open(src, "rb").read()), read_model_payload(open(dst, "rb").read())
    assert new["threshold"] == pytest.approx(0.75) and old["threshold"] == pytest.approx(0.2)
    assert new["model_id"] == old["model_id"] and new["meta"]["calibration"]["num_images"] == 10
    assert new["meta"]["calibration"]["tied"] == pytest.approx([0.51, 0.99])
    assert "box_sizes" not in new  # a model without a typical box (CAML) gets none
    # The calibration images' boxes at the chosen τ are the oracle boxes: their typical size is theirs.
    sizes = result.box_sizes
    assert sizes["images"] == 10 and sizes["threshold"] == pytest.approx(0.75)
    areas = [(e.box[2] - e.box[0]) * (e.box[3] - e.box[1]) / (e.size[0] * e.size[1]) for e in expected]
    assert sizes["median"] == pytest.approx(float(np.log(np.median(areas))), abs=0.2)
    # A fitted model's typical box, measured at its old τ, is replaced by the one at the new τ.
    with open(src, "wb") as fh:
        stale = {"median": -3.0, "spread": 0.2, "images": 4, "threshold": 0.2}
        fh.write(data.save_payload({**data.tiny_colocnet_payload(), "box_sizes": stale}))
    new = write_calibrated_model(src, dst, result)
    assert new["box_sizes"] == sizes


def test_label_evaluate_calibrate_jobs(ray_cluster, tmp_path, squares, capsys):
    from jobs.calibrate import main as calibrate_main
    from jobs.evaluate import main as evaluate_main
    from jobs.label import main as label_main

    root, _, _ = squares
    model = str(tmp_path / "bright.pt")
    with open(model, "wb") as fh:
        fh.write(data.save_payload(data.brightness_payload()))
    out = str(tmp_path / "pred")
    common = ["--batch_size=8", "--actor_cpus=0.5", "--decode_cpus=0.25", "--rows_per_file=4"]
    args = [f"--model={model}", f"--images={root}", "--format=boxes_csv", f"--out={out}", *common]
    assert label_main(args) == 0
    assert label_main(["--method=nope", *args[1:]]) == 2  # bad config: refused before any work
    assert label_main(["--no_such_key=1"]) == 2
    assert evaluate_main([f"--predictions={out}", f"--gt={root}", "--format=boxes_csv", "--split=all"]) == 0
    m = json.loads(open(os.path.join(out, "_eval", "metrics.json")).read())["metrics"]
    assert m["corloc@0.5"] == pytest.approx(100.0) and m["maxboxaccv2"] >= 90.0
    assert -1.0 <= m["spearman_score_iou"] <= 1.0
    assert os.path.exists(os.path.join(out, "_eval", "sheet.png"))
    calibrated = str(tmp_path / "bright.calibrated.pt")
    capsys.readouterr()
    assert calibrate_main([f"--predictions={out}", f"--gt={root}", "--split=all", f"--model={model}"]) == 0
    payload = read_model_payload(open(calibrated, "rb").read())
    assert 0.0 <= payload["threshold"] < 1.0 and "calibration" in payload["meta"]
    # the JSON summary says which τ tie at the maximum, the chosen one among them
    summary = json.loads(capsys.readouterr().out)
    low, high = summary["tied"]
    assert summary["threshold"] == pytest.approx(payload["threshold"])
    assert low <= summary["threshold"] <= high
