"""Export of a predictions table to COCO (dataset and results), YOLO and VOC files (the job entry point)."""

from __future__ import annotations

import json
import logging
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from jobs.export import main as export_main
from pipelines import storage
from pipelines.export import select_rows
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
    assert export_main([f"--predictions={pred}", f"--out={out}", "--category=x", "--to=pascal"]) == 2
    assert export_main([f"--predictions={pred}", f"--out={out}", "--category=x", "--top_k=-1"]) == 2
    assert export_main([f"--predictions={pred}", f"--out={out}", "--category=x", "--min_score=nan"]) == 2


def _export(pred, out, to, *extra):
    args = [f"--predictions={pred}", f"--out={out}", f"--to={to}", *extra]
    return export_main(args if to == "coco_results" else [*args, "--category=raccoon"])


def _evaluate(gt_file, results_file):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(gt_file)
    det = gt.loadRes(results_file)
    ev = COCOeval(gt, det, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return det, ev.stats


def test_coco_results_load_in_pycocotools_against_the_dataset_file(tmp_path, table_dir):
    pred, good = table_dir
    gt_file, res_file = str(tmp_path / "coco.json"), str(tmp_path / "results.json")
    assert _export(pred, gt_file, "coco") == 0
    assert _export(pred, res_file, "coco_results") == 0  # no --category needed
    results = json.load(open(res_file))
    assert isinstance(results, list) and len(results) == len(good)
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in results)
    anns = json.load(open(gt_file))["annotations"]
    for r, ann, item in zip(results, anns, good, strict=True):
        assert (r["image_id"], r["category_id"], r["bbox"]) == (ann["image_id"], 1, ann["bbox"])
        assert r["score"] == pytest.approx(item[5], abs=1e-6)
    det, stats = _evaluate(gt_file, res_file)
    assert len(det.getAnnIds()) == len(good)
    assert stats[0] == pytest.approx(1.0)  # AP@[.5:.95]: the results are the dataset's own boxes
    assert stats[8] == pytest.approx(1.0)  # AR@100


def test_filtered_results_keep_the_dataset_image_ids(tmp_path, table_dir, caplog):
    pred, good = table_dir
    gt_file, res_file = str(tmp_path / "coco.json"), str(tmp_path / "results.json")
    assert _export(pred, gt_file, "coco") == 0
    ids = {im["file_name"]: im["id"] for im in json.load(open(gt_file))["images"]}
    caplog.set_level(logging.INFO, logger="pipelines.export")
    assert _export(pred, res_file, "coco_results", "--min_score=0.4") == 0  # drops two.png (0.1)
    assert "--min_score=0.4 dropped 1 boxes" in caplog.text
    results = json.load(open(res_file))
    assert [r["image_id"] for r in results] == [ids["a/one.jpg"], ids["b/three.jpeg"]]
    _, stats = _evaluate(gt_file, res_file)
    assert stats[8] == pytest.approx(2 / 3)  # AR@100: two of the three images found
    # A dataset filtered the same way keeps the unfiltered ids: the pair loads, AP 1.
    filtered_gt = str(tmp_path / "coco-filtered.json")
    assert _export(pred, filtered_gt, "coco", "--min_score=0.4") == 0
    assert [im["id"] for im in json.load(open(filtered_gt))["images"]] == [
        ids["a/one.jpg"],
        ids["b/three.jpeg"],
    ]
    _, stats = _evaluate(filtered_gt, res_file)
    assert stats[0] == pytest.approx(1.0)


def _files(folder, ext):
    return sorted(
        os.path.relpath(os.path.join(d, f), folder)
        for d, _, fs in os.walk(folder)
        for f in fs
        if f.endswith(ext)
    )


@pytest.mark.parametrize(
    ("extra", "kept", "dropped"),
    [
        ((), ["one", "two", "three"], (0, 0)),
        (("--min_score=0.5",), ["one", "three"], (1, 0)),  # three's 0.5 is kept: >=
        (("--top_k=2",), ["one", "three"], (0, 1)),
        (("--top_k=1", "--min_score=0.05"), ["one"], (0, 2)),
        (("--min_score=0.6", "--top_k=5"), ["one"], (2, 0)),
        (("--top_k=0",), ["one", "two", "three"], (0, 0)),
    ],
)
def test_filters_apply_the_same_to_every_format(tmp_path, table_dir, caplog, extra, kept, dropped):
    pred, _ = table_dir
    caplog.set_level(logging.INFO, logger="pipelines.export")
    outs = {to: str(tmp_path / to) for to in ("coco", "coco_results", "yolo", "voc")}
    for to, out in outs.items():
        assert _export(pred, out, to, *extra) == 0
    all_ids = {"one": 1, "two": 2, "three": 3}  # the positions among the non-error rows
    coco = json.load(open(outs["coco"]))
    assert [os.path.basename(im["file_name"]).split(".")[0] for im in coco["images"]] == kept
    assert [im["id"] for im in coco["images"]] == [all_ids[k] for k in kept]
    assert [a["image_id"] for a in coco["annotations"]] == [all_ids[k] for k in kept]
    assert [r["image_id"] for r in json.load(open(outs["coco_results"]))] == [all_ids[k] for k in kept]
    stems = sorted(
        os.path.basename(f).split(".")[0] for f in _files(outs["yolo"], ".txt") if f != "classes.txt"
    )
    assert stems == sorted(kept)
    assert sorted(os.path.basename(f)[:-4] for f in _files(outs["voc"], ".xml")) == sorted(kept)
    min_logs = (
        caplog.text.count(f"--min_score=0.5 dropped {dropped[0]} boxes") if "--min_score=0.5" in extra else 4
    )
    assert min_logs == 4  # one line per format
    for arg in extra:
        key, value = arg[2:].split("=")
        count = dropped[0] if key == "min_score" else dropped[1]
        if key == "top_k" and value == "0":
            assert "--top_k" not in caplog.text
            continue
        assert caplog.text.count(f"--{key}={value} dropped {count} boxes") == 4  # one line per format


def test_top_k_breaks_ties_by_table_order_and_drops_missing_scores_first(tmp_path):
    heat = np.full((7, 7), 255, np.uint8)
    scores = [0.5, 0.9, None, 0.5, 0.5]
    items = [(f"/img/{k}.jpg", 10, 10, heat, (1.0, 1.0, 5.0, 5.0), s) for k, s in enumerate(scores)]
    items.insert(1, ("/img/bad.jpg", None, None, None, None, None))
    out = str(tmp_path / "pred")
    data.write_parts(out, data.prediction_rows(items), rows_per_file=2)
    sel = select_rows(out, top_k=3)
    assert set(sel.keep) == {0, 2, 4} and sel.errors == 1 and sel.dropped_top_k == 2  # rows 0.5, 0.9, 0.5
    sel = select_rows(out, top_k=5)
    assert set(sel.keep) == {0, 2, 3, 4, 5} and sel.dropped_top_k == 0  # the unscored row is last, still kept
    sel = select_rows(out, min_score=-1.0)
    assert (
        set(sel.keep) == {0, 2, 4, 5} and sel.dropped_min_score == 1
    )  # a row without a score fails any bound
    sel = select_rows(out)
    assert sel.keep is None and sel.errors == 1


def test_voc_export_is_valid_pascal_voc(tmp_path, table_dir):
    from torchvision.datasets import VOCDetection

    pred, good = table_dir
    out = str(tmp_path / "voc")
    assert _export(pred, out, "voc") == 0
    files = _files(out, ".xml")
    assert files == ["a/one.xml", "a/two.xml", "b/three.xml"]  # no file for the error row
    for rel, item in zip(files, good, strict=True):
        path, w_img, h_img, _, (x0, y0, x1, y1), _ = item
        root = ET.parse(os.path.join(out, rel)).getroot()
        # The VOC layout: the elements every VOC reader looks up, each once.
        assert root.tag == "annotation"
        for tag in ("folder", "filename", "size", "segmented", "object"):
            assert len(root.findall(tag)) == 1, tag
        assert [c.tag for c in root.find("size")] == ["width", "height", "depth"]
        obj = root.find("object")
        assert [c.tag for c in obj] == ["name", "pose", "truncated", "difficult", "bndbox"]
        assert [c.tag for c in obj.find("bndbox")] == ["xmin", "ymin", "xmax", "ymax"]
        assert root.findtext("filename") == os.path.basename(path)
        assert root.findtext("folder") == os.path.dirname(rel)
        assert root.findtext("path") == path
        # torchvision's VOC reader (the parser behind VOCDetection) reads it back.
        parsed = VOCDetection.parse_voc_xml(root)["annotation"]
        assert (int(parsed["size"]["width"]), int(parsed["size"]["height"])) == (w_img, h_img)
        assert parsed["object"][0]["name"] == "raccoon" and parsed["object"][0]["difficult"] == "0"
        box = {k: int(v) for k, v in parsed["object"][0]["bndbox"].items()}
        # 1-based, inclusive, whole pixels (halves up), inside 1..W × 1..H.
        expect = [int(np.floor(v + 0.5)) + 1 for v in (x0, y0, x1, y1)]
        assert [box["xmin"], box["ymin"], box["xmax"], box["ymax"]] == expect
        assert 1 <= box["xmin"] <= box["xmax"] <= w_img and 1 <= box["ymin"] <= box["ymax"] <= h_img
    two = ET.parse(os.path.join(out, "a/two.xml")).getroot().find("object/bndbox")
    assert [two.findtext(t) for t in ("xmin", "ymin", "xmax", "ymax")] == ["1", "1", "64", "48"]


@pytest.fixture
def multi_box_dir(tmp_path):
    """A boxes=all table: one.jpg has two boxes, two.png an empty list, three.jpeg one box; an error row."""
    import pyarrow as pa

    from pipelines import schema

    heat = np.zeros((7, 7), np.uint8)
    heat[2:5, 2:5] = 255
    items = [
        (f"{ROOT}/a/one.jpg", 200, 100, heat, (10.0, 20.0, 109.0, 59.0), 0.7),
        (f"{ROOT}/a/two.png", 64, 48, heat, (0.0, 0.0, 0.0, 0.0), 0.05),
        (f"{ROOT}/b/broken.jpg", None, None, None, None, None),
        (f"{ROOT}/b/three.jpeg", 300, 400, heat, (150.5, 100.25, 299.0, 399.0), 0.5),
    ]
    every = [
        schema.box_entries([[10, 20, 109, 59], [150, 10, 199, 99]], [0.7, 0.3]),
        [],
        None,
        schema.box_entries([[150.5, 100.25, 299, 399]], [0.5]),
    ]
    table = data.prediction_rows(items, model="m1")
    field = schema.PREDICTIONS_SCHEMA.field(schema.BOXES)
    table = table.set_column(table.schema.get_field_index(schema.BOXES), field, pa.array(every, field.type))
    out = str(tmp_path / "pred-multi")
    data.write_parts(out, table, rows_per_file=2)
    storage.write_text_atomic(storage.join(out, MANIFEST), json.dumps({"images": ROOT}))
    return out


def test_every_box_of_a_boxes_all_table_reaches_every_format(tmp_path, multi_box_dir):
    pred = multi_box_dir
    outs = {to: str(tmp_path / to) for to in ("coco", "coco_results", "yolo", "voc")}
    for to, out in outs.items():
        assert _export(pred, out, to) == 0
    coco = json.load(open(outs["coco"]))
    # two.png (no box above τ) is an image without annotation; ids stay the non-error positions
    assert [im["id"] for im in coco["images"]] == [1, 2, 3]
    anns = [(a["image_id"], a["bbox"], a["score"]) for a in coco["annotations"]]
    assert anns == [
        (1, [10.0, 20.0, 100.0, 40.0], 0.7),
        (1, [150.0, 10.0, 50.0, 90.0], pytest.approx(0.3)),
        (3, [150.5, 100.25, 149.5, 299.75], 0.5),
    ]
    results = json.load(open(outs["coco_results"]))
    assert [(r["image_id"], r["bbox"]) for r in results] == [(a[0], a[1]) for a in anns]
    _, stats = _evaluate(outs["coco"], outs["coco_results"])
    assert stats[0] == pytest.approx(1.0)  # the detections are the dataset's own boxes
    lines = open(os.path.join(outs["yolo"], "a/one.txt")).read().split("\n")
    assert [ln.split()[:2] for ln in lines if ln] == [["0", "0.300000"], ["0", "0.875000"]]
    assert open(os.path.join(outs["yolo"], "a/two.txt")).read().strip() == ""  # background image
    root = ET.parse(os.path.join(outs["voc"], "a/one.xml")).getroot()
    assert [o.findtext("bndbox/xmin") for o in root.findall("object")] == ["11", "151"]
    assert ET.parse(os.path.join(outs["voc"], "a/two.xml")).getroot().findall("object") == []


def test_filters_act_on_the_boxes_of_a_boxes_all_table(tmp_path, multi_box_dir, caplog):
    pred = multi_box_dir
    caplog.set_level(logging.INFO, logger="pipelines.export")
    sel = select_rows(pred, min_score=0.4)
    assert sel.keep == {0: [0], 3: [0]} and sel.dropped_min_score == 1  # one.jpg keeps its 0.7 box
    sel = select_rows(pred, top_k=2)
    assert sel.keep == {0: [0], 3: [0]} and sel.dropped_top_k == 1  # 0.7 and 0.5 of 0.7, 0.3, 0.5
    sel = select_rows(pred, top_k=1, min_score=0.2)
    assert sel.keep == {0: [0]} and (sel.dropped_min_score, sel.dropped_top_k) == (0, 2)
    out = str(tmp_path / "coco-top2.json")
    assert _export(pred, out, "coco", "--top_k=2") == 0
    coco = json.load(open(out))
    assert [im["id"] for im in coco["images"]] == [1, 3]  # two.png has no box left to keep
    assert [a["score"] for a in coco["annotations"]] == [0.7, 0.5]
    assert "--top_k=2 dropped 1 boxes" in caplog.text
    yolo = str(tmp_path / "yolo-min")
    assert _export(pred, yolo, "yolo", "--min_score=0.6") == 0
    assert sorted(_files(yolo, ".txt")) == ["a/one.txt", "classes.txt"]
    assert len(open(os.path.join(yolo, "a/one.txt")).read().splitlines()) == 1
