"""The pure parts of the export formats: Ultralytics' label rule, the YOLO split, data.yaml, Label Studio."""

from __future__ import annotations

import pytest
import yaml

from pipelines.export import (
    image_url,
    label_studio_task,
    ultralytics_label_path,
    yolo_data_yaml,
    yolo_split,
)


@pytest.mark.parametrize(
    ("image", "label"),
    [
        ("/out/images/a/x.jpg", "/out/labels/a/x.txt"),
        ("/out/images/x.tar.png", "/out/labels/x.tar.txt"),
        ("/images/out/images/b/y.jpeg", "/images/out/labels/b/y.txt"),  # the last /images/
        ("/out/images/c/images/z.jpg", "/out/images/c/labels/z.txt"),
    ],
)
def test_ultralytics_label_path_follows_the_img2label_rule(image, label):
    assert ultralytics_label_path(image) == label


def test_ultralytics_label_path_needs_an_images_component():
    with pytest.raises(ValueError, match="no /images/"):
        ultralytics_label_path("/data/photos/x.jpg")


def test_yolo_split_is_deterministic_and_near_the_fraction():
    names = [f"folder_{k % 7}/image_{k:05d}.jpg" for k in range(4000)]
    first = [yolo_split(n, 0.2) for n in names]
    assert first == [yolo_split(n, 0.2) for n in names]  # same every call
    assert set(first) == {"train", "val"}
    assert 0.17 < first.count("val") / len(names) < 0.23
    assert all(yolo_split(n, 0.0) == "train" for n in names)
    # A larger fraction only moves images from train to val (a threshold on one hash per image).
    wider = [yolo_split(n, 0.5) for n in names]
    assert all(w == "val" for f, w in zip(first, wider, strict=True) if f == "val")


@pytest.mark.parametrize("category", ["raccoon", 'a "quoted": name', "oiseau: é", "yes", "123"])
def test_data_yaml_parses_with_the_category_as_a_string(category):
    cfg = yaml.safe_load(yolo_data_yaml("/out/ds #1", category, "val.txt"))
    assert cfg == {"path": "/out/ds #1", "train": "train.txt", "val": "val.txt", "names": {0: category}}


def test_image_url_joins_the_prefix_and_the_relative_path():
    assert image_url("s3://b/photos/a/x.jpg", "s3://b/photos", "") == "s3://b/photos/a/x.jpg"
    assert image_url("/p/a/x.jpg", "/p", "/data/local-files/?d=p/") == "/data/local-files/?d=p/a/x.jpg"
    assert image_url("/p/a/x.jpg", "/p", "/data/local-files/?d=") == "/data/local-files/?d=a/x.jpg"
    assert image_url("/p/a/x.jpg", "/p", "https://h/img") == "https://h/img/a/x.jpg"
    assert image_url("/elsewhere/x.jpg", "/p", "https://h/img") == "/elsewhere/x.jpg"  # not below the root


def test_label_studio_task_in_percent_with_scores():
    row = {"width": 200, "height": 100, "score": 0.8}
    boxes = [
        {"x0": 10.0, "y0": 20.0, "x1": 109.0, "y1": 59.0, "score": 0.8},
        {"x0": -5.0, "y0": 0.0, "x1": 400.0, "y1": 99.0, "score": None},  # clipped; no score
    ]
    task = label_studio_task(row, boxes, "raccoon", "/p/a.jpg", "model-1")
    assert task["data"] == {"image": "/p/a.jpg"}
    (prediction,) = task["predictions"]
    assert (prediction["model_version"], prediction["score"]) == ("model-1", 0.8)
    first, second = prediction["result"]
    assert first["value"] == {
        "x": 5.0,
        "y": 20.0,
        "width": 50.0,  # (109 - 10 + 1) / 200
        "height": 40.0,  # (59 - 20 + 1) / 100
        "rotation": 0,
        "rectanglelabels": ["raccoon"],
    }
    assert first["score"] == 0.8 and "score" not in second
    assert (second["value"]["x"], second["value"]["width"], second["value"]["height"]) == (0.0, 100.0, 100.0)
    for region in (first, second):
        assert region["type"] == "rectanglelabels" and region["image_rotation"] == 0
        assert (region["from_name"], region["to_name"]) == ("label", "image")
        assert (region["original_width"], region["original_height"]) == (200, 100)
    assert "score" not in label_studio_task({**row, "score": None}, [], "c", "i", "m")["predictions"][0]
