"""pipelines.evaluate and coloc_core.predict.locate on a non-square image: sizes reach boxes.py as (H, W).

A caller that passed (W, H) where ``coloc_core.boxes`` takes (H, W) would scale the ground truth (or the
predicted box) along the wrong axes; on a square image nobody would notice, on a 400×100 one the IoU
with the oracle drops far below every δ.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from coloc_core.boxes import resize_boxes
from coloc_core.config import CAM_CURVE_INTERVAL, IOU_THRESHOLDS
from coloc_core.predict import locate
from pipelines import evaluate, schema
from pipelines.predictions import encode_heatmap

WIDTH, HEIGHT = 400, 100
BOX = (20.0, 10.0, 119.0, 89.0)  # the left quarter of the image, nearly its full height


def _oracle_heatmap() -> np.ndarray:
    """255 on the box scaled to the 224×224 score map (the heatmap a perfect model would store)."""
    x0, y0, x1, y1 = (int(v) for v in resize_boxes(BOX, (HEIGHT, WIDTH))[0])
    heat = np.zeros((224, 224), dtype=np.uint8)
    heat[y0 : y1 + 1, x0 : x1 + 1] = 255
    return heat


def test_evaluate_part_scales_the_ground_truth_height_first(tmp_path: Path):
    cols = schema.empty_columns()
    data, h, w = encode_heatmap(_oracle_heatmap())
    row = {
        "path": "/images/wide.jpg",
        "width": WIDTH,
        "height": HEIGHT,
        "score": 0.5,
        "threshold": 0.2,
        "heatmap": data,
        "heatmap_h": h,
        "heatmap_w": w,
        "model": "oracle",
        "error": None,
    }
    row.update(zip(schema.BOX_COLUMNS, BOX, strict=True))
    for name, values in cols.items():
        values.append(row.get(name))
    part = tmp_path / "part-00000.parquet"
    buf = io.BytesIO()
    pq.write_table(schema.to_table(cols), buf)
    part.write_bytes(buf.getvalue())
    result = evaluate.evaluate_part(
        str(part), {evaluate.path_key("/images/wide.jpg"): [BOX]}, IOU_THRESHOLDS, CAM_CURVE_INTERVAL, None
    )
    assert result.ious == [pytest.approx(1.0, abs=0.03)]


def test_locate_maps_the_box_back_height_first():
    location = locate(_oracle_heatmap(), threshold=0.2, orig_wh=(WIDTH, HEIGHT))
    np.testing.assert_allclose(location.box, BOX, atol=2.0)
