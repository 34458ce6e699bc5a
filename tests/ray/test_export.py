"""Export of a predictions table to S3 (the loopback S3 server): COCO, YOLO, Label Studio, bad arguments.

The formats themselves are tested on local tables in tests/unit/test_export_job.py (its ``table_dir``).
"""

from __future__ import annotations

import json

import pytest
import yaml

from jobs.export import main as export_main
from pipelines import storage
from tests.unit.test_export_job import _export, write_table

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]


@pytest.fixture
def table_dir(tmp_path):
    return write_table(tmp_path)


def test_coco_export_to_s3_and_bad_arguments(s3_server, tmp_path, table_dir):
    pred, _ = table_dir
    out = s3_server.uri(s3_server.unique_prefix("export"), "labels.json")
    assert export_main([f"--predictions={pred}", f"--out={out}", "--category=bird"]) == 0
    coco = json.loads(storage.read_text(out))
    assert len(coco["images"]) == 3 and coco["categories"][0]["name"] == "bird"
    assert export_main([f"--predictions={pred}", f"--out={out}"]) == 2  # no category
    assert export_main([f"--predictions={pred}", f"--out={out}", "--category=x", "--to=pascal"]) == 2
    assert export_main([f"--predictions={pred}", f"--out={out}", "--category=x", "--top_k=-1"]) == 2
    assert export_main([f"--predictions={pred}", f"--out={out}", "--category=x", "--min_score=nan"]) == 2


def test_yolo_and_label_studio_exports_to_s3(s3_server, table_dir):
    pred, _ = table_dir
    prefix = s3_server.unique_prefix("export-yolo")
    out = s3_server.uri(prefix, "yolo")
    assert _export(pred, out, "yolo", "--val_fraction=0.5") == 0
    cfg = yaml.safe_load(storage.read_text(storage.join(out, "data.yaml")))
    assert cfg["path"] == out and cfg["names"] == {0: "raccoon"}
    lines = storage.read_text(storage.join(out, "train.txt")).split()
    lines += storage.read_text(storage.join(out, "val.txt")).split()
    assert sorted(lines) == ["./images/a/one.jpg", "./images/a/two.png", "./images/b/three.jpeg"]
    assert storage.read_text(storage.join(out, "labels/a/one.txt")).startswith("0 ")
    tasks_uri = s3_server.uri(prefix, "tasks.json")
    assert _export(pred, tasks_uri, "label_studio") == 0
    assert len(json.loads(storage.read_text(tasks_uri))) == 3
