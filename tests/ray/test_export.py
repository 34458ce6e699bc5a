"""Export of a predictions table to COCO JSON and YOLO files (the job entry point, local and S3)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jobs.export import main as export_main
from pipelines import storage
from pipelines.label import MANIFEST
from tests.ray import labeling_data as data

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]

ROOT = "s3://bucket/photos"


@pytest.fixture
def table_dir(tmp_path):
    heat = np.zeros((7, 7), np.uint8)
    heat[2:5, 2:5] = 255
    items = [
        (f"{ROOT}/a/one.jpg", 200, 100, heat, (10.0, 20.0, 109.0, 59.0), 0.7),
        (f"{ROOT}/a/two.png", 64, 48, heat, (0.0, 0.0, 63.0, 47.0), 0.1),
        (f"{ROOT}/b/broken.jpg", None, None, None, None, None),  # an error row
        (f"{ROOT}/b/three.jpeg", 300, 400, heat, (150.5, 100.25, 299.0, 399.0), 0.5),
    ]
    table = data.prediction_rows(items, model="m1")
    out = str(tmp_path / "pred")
    data.write_parts(out, table, rows_per_file=2)
    storage.write_text_atomic(storage.join(out, MANIFEST), json.dumps({"images": ROOT}))
    return out, [i for i in items if i[3] is not None]


def test_coco_export_loads_back_and_matches_the_table(tmp_path, table_dir):
    pred, good = table_dir
    out = str(tmp_path / "coco.json")
    assert export_main([f"--predictions={pred}", f"--out={out}", "--category=raccoon", "--to=coco"]) == 0
    coco = json.load(open(out))
    assert coco["categories"] == [{"id": 1, "name": "raccoon", "supercategory": "raccoon"}]
    assert [im["file_name"] for im in coco["images"]] == ["a/one.jpg", "a/two.png", "b/three.jpeg"]
    assert [(im["width"], im["height"]) for im in coco["images"]] == [(200, 100), (64, 48), (300, 400)]
    assert len(coco["annotations"]) == 3
    for im, ann, item in zip(coco["images"], coco["annotations"], good, strict=True):
        x0, y0, x1, y1 = item[4]
        assert ann["image_id"] == im["id"] and ann["category_id"] == 1 and ann["iscrowd"] == 0
        assert ann["bbox"] == pytest.approx([x0, y0, x1 - x0 + 1, y1 - y0 + 1], abs=0.01)
        assert ann["area"] == pytest.approx((x1 - x0 + 1) * (y1 - y0 + 1), abs=0.02)
        assert ann["score"] == pytest.approx(item[5], abs=1e-6)
        assert ann["bbox"][0] + ann["bbox"][2] <= im["width"] + 1e-6
        assert ann["bbox"][1] + ann["bbox"][3] <= im["height"] + 1e-6
    assert len({a["id"] for a in coco["annotations"]}) == 3


def test_yolo_export_matches_the_table(tmp_path, table_dir):
    pred, good = table_dir
    out = str(tmp_path / "yolo")
    assert export_main([f"--predictions={pred}", f"--out={out}", "--category=raccoon", "--to=yolo"]) == 0
    assert open(os.path.join(out, "classes.txt")).read() == "raccoon\n"
    files = sorted(
        os.path.relpath(os.path.join(d, f), out)
        for d, _, fs in os.walk(out)
        for f in fs
        if f != "classes.txt"
    )
    assert files == ["a/one.txt", "a/two.txt", "b/three.txt"]  # no file for the error row
    for rel, item in zip(files, good, strict=True):
        _, w_img, h_img, _, (x0, y0, x1, y1), _ = item
        fields = open(os.path.join(out, rel)).read().split()
        assert fields[0] == "0" and len(fields) == 5
        cx, cy, w, h = (float(v) for v in fields[1:])
        bw, bh = x1 - x0 + 1, y1 - y0 + 1
        assert (cx, cy, w, h) == pytest.approx(
            ((x0 + bw / 2) / w_img, (y0 + bh / 2) / h_img, bw / w_img, bh / h_img), abs=1e-5
        )
        assert 0 < w <= 1 and 0 < h <= 1
    assert open(os.path.join(out, "a/two.txt")).read().split()[1:] == [
        "0.500000",
        "0.500000",
        "1.000000",
        "1.000000",
    ]


def test_coco_export_to_s3_and_bad_arguments(s3_server, tmp_path, table_dir):
    pred, _ = table_dir
    out = s3_server.uri(s3_server.unique_prefix("export"), "labels.json")
    assert export_main([f"--predictions={pred}", f"--out={out}", "--category=bird"]) == 0
    coco = json.loads(storage.read_text(out))
    assert len(coco["images"]) == 3 and coco["categories"][0]["name"] == "bird"
    assert export_main([f"--predictions={pred}", f"--out={out}"]) == 2  # no category
    assert export_main([f"--predictions={pred}", f"--out={out}", "--category=x", "--to=voc"]) == 2
