"""Export of a predictions table to COCO (dataset, results), YOLO, VOC, Label Studio (the job entry point).

Local tables, no Ray; the exports to S3 (loopback server) are in tests/ray/test_export.py.
"""

from __future__ import annotations

import json
import logging
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import yaml

from jobs.export import main as export_main
from pipelines import storage
from pipelines.export import select_rows, top_k_of_fraction, ultralytics_label_path, yolo_split
from pipelines.predictions import MANIFEST
from tests.ray import labeling_data as data

pytestmark = [pytest.mark.timeout(120)]

ROOT = "s3://bucket/photos"


@pytest.fixture
def table_dir(tmp_path):
    return write_table(tmp_path)


def write_table(tmp_path):
    """A predictions table of three images and an error row, under ``tmp_path/pred``; (folder, items)."""
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
    files = _files(os.path.join(out, "labels"), ".txt")
    assert files == ["a/one.txt", "a/two.txt", "b/three.txt"]  # no file for the error row
    for rel, item in zip(files, good, strict=True):
        _, w_img, h_img, _, (x0, y0, x1, y1), _ = item
        fields = open(os.path.join(out, "labels", rel)).read().split()
        assert fields[0] == "0" and len(fields) == 5
        cx, cy, w, h = (float(v) for v in fields[1:])
        bw, bh = x1 - x0 + 1, y1 - y0 + 1
        assert (cx, cy, w, h) == pytest.approx(
            ((x0 + bw / 2) / w_img, (y0 + bh / 2) / h_img, bw / w_img, bh / h_img), abs=1e-5
        )
        assert 0 < w <= 1 and 0 < h <= 1
    assert open(os.path.join(out, "labels/a/two.txt")).read().split()[1:] == [
        "0.500000",
        "0.500000",
        "1.000000",
        "1.000000",
    ]


def test_a_folder_labelled_above_a_cut_exports_the_image_files_sizes(tmp_path, table_dir):
    # Labelled with crop_bottom=20 (FGVC-Aircraft's banner): the rows hold the height above the cut,
    # the boxes the image's own coordinates; every format writes the file's height.
    pred, good = table_dir
    storage.write_text_atomic(storage.join(pred, MANIFEST), json.dumps({"images": ROOT, "crop_bottom": 20}))
    out = str(tmp_path / "coco.json")
    assert export_main([f"--predictions={pred}", f"--out={out}", "--category=plane", "--to=coco"]) == 0
    coco = json.load(open(out))
    assert [(im["width"], im["height"]) for im in coco["images"]] == [(200, 120), (64, 68), (300, 420)]
    assert coco["annotations"][0]["bbox"] == [10.0, 20.0, 100.0, 40.0]  # unchanged
    yolo = str(tmp_path / "yolo")
    assert export_main([f"--predictions={pred}", f"--out={yolo}", "--category=plane", "--to=yolo"]) == 0
    fields = [float(v) for v in open(os.path.join(yolo, "labels", "a/one.txt")).read().split()[1:]]
    assert fields == pytest.approx([60.0 / 200, 40.0 / 120, 100.0 / 200, 40.0 / 120], abs=1e-5)


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
    outs = {to: str(tmp_path / to) for to in ("coco", "coco_results", "yolo", "voc", "label_studio")}
    for to, out in outs.items():
        assert _export(pred, out, to, *extra) == 0
    all_ids = {"one": 1, "two": 2, "three": 3}  # the positions among the non-error rows
    coco = json.load(open(outs["coco"]))
    assert [os.path.basename(im["file_name"]).split(".")[0] for im in coco["images"]] == kept
    assert [im["id"] for im in coco["images"]] == [all_ids[k] for k in kept]
    assert [a["image_id"] for a in coco["annotations"]] == [all_ids[k] for k in kept]
    assert [r["image_id"] for r in json.load(open(outs["coco_results"]))] == [all_ids[k] for k in kept]
    stems = sorted(
        os.path.basename(f).split(".")[0] for f in _files(os.path.join(outs["yolo"], "labels"), ".txt")
    )
    assert stems == sorted(kept)
    listed = open(os.path.join(outs["yolo"], "train.txt")).read().split()
    assert sorted(os.path.basename(f).split(".")[0] for f in listed) == sorted(kept)
    assert sorted(os.path.basename(f)[:-4] for f in _files(outs["voc"], ".xml")) == sorted(kept)
    tasks = json.load(open(outs["label_studio"]))
    assert [os.path.basename(t["data"]["image"]).split(".")[0] for t in tasks] == kept
    min_logs = (
        caplog.text.count(f"--min_score=0.5 dropped {dropped[0]} boxes") if "--min_score=0.5" in extra else 5
    )
    assert min_logs == 5  # one line per format
    for arg in extra:
        key, value = arg[2:].split("=")
        count = dropped[0] if key == "min_score" else dropped[1]
        if key == "top_k" and value == "0":
            assert "--top_k" not in caplog.text
            continue
        assert caplog.text.count(f"--{key}={value} dropped {count} boxes") == 5  # one line per format


@pytest.fixture
def scored_table(tmp_path):
    """Five one-box rows scored 0.5, 0.9, none, 0.5, 0.5 and an error row second: the folder."""
    heat = np.full((7, 7), 255, np.uint8)
    scores = [0.5, 0.9, None, 0.5, 0.5]
    items = [(f"/img/{k}.jpg", 10, 10, heat, (1.0, 1.0, 5.0, 5.0), s) for k, s in enumerate(scores)]
    items.insert(1, ("/img/bad.jpg", None, None, None, None, None))
    out = str(tmp_path / "pred")
    data.write_parts(out, data.prediction_rows(items), rows_per_file=2)
    return out


def test_top_k_breaks_ties_by_table_order_and_drops_missing_scores_first(scored_table):
    out = scored_table
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


def test_top_fraction_keeps_a_share_of_the_boxes_that_pass_min_score(scored_table):
    out = scored_table
    assert top_k_of_fraction(out, 0.5) == 3  # ⌈0.5 × 5⌉: the error row is no box, the unscored one is
    assert top_k_of_fraction(out, 1.0) == 5
    assert top_k_of_fraction(out, 0.01) == 1  # never 0 while a box passes
    assert top_k_of_fraction(out, 0.5, min_score=0.5) == 2  # 4 pass (the unscored box fails any bound)
    assert top_k_of_fraction(out, 0.5, min_score=2.0) == 0
    assert top_k_of_fraction(out, 0.4) == 2  # ⌈2.0⌉, not 3 from a rounding error
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="must be in"):
            top_k_of_fraction(out, bad)


def test_top_fraction_export_keeps_the_best_share_in_every_format(tmp_path, table_dir, caplog):
    pred, _ = table_dir  # three images scored 0.7, 0.1, 0.5 and an error row
    caplog.set_level(logging.INFO, logger="pipelines.export")
    out = str(tmp_path / "coco.json")
    assert _export(pred, out, "coco", "--top_fraction=0.5") == 0  # ⌈1.5⌉ = 2 boxes
    assert [im["file_name"] for im in json.load(open(out))["images"]] == ["a/one.jpg", "b/three.jpeg"]
    assert "--top_fraction=0.5 keeps the best 2 boxes" in caplog.text
    assert "--top_k=2 dropped 1 boxes" in caplog.text
    voc = str(tmp_path / "voc")
    assert _export(pred, voc, "voc", "--top_fraction=0.5", "--min_score=0.6") == 0  # ⌈0.5 × 1⌉ = 1
    assert _files(voc, ".xml") == ["a/one.xml"]
    none = str(tmp_path / "none.json")
    assert _export(pred, none, "coco", "--top_fraction=0.5", "--min_score=5") == 0  # no box passes
    assert json.load(open(none))["images"] == []
    assert _export(pred, str(tmp_path / "x.json"), "coco", "--top_fraction=0.5", "--top_k=1") == 2


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
    outs = {to: str(tmp_path / to) for to in ("coco", "coco_results", "yolo", "voc", "label_studio")}
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
    lines = open(os.path.join(outs["yolo"], "labels/a/one.txt")).read().split("\n")
    assert [ln.split()[:2] for ln in lines if ln] == [["0", "0.300000"], ["0", "0.875000"]]
    assert open(os.path.join(outs["yolo"], "labels/a/two.txt")).read().strip() == ""  # background image
    root = ET.parse(os.path.join(outs["voc"], "a/one.xml")).getroot()
    assert [o.findtext("bndbox/xmin") for o in root.findall("object")] == ["11", "151"]
    assert ET.parse(os.path.join(outs["voc"], "a/two.xml")).getroot().findall("object") == []
    tasks = json.load(open(outs["label_studio"]))
    regions = [(i + 1, r) for i, t in enumerate(tasks) for r in t["predictions"][0]["result"]]
    assert [i for i, _ in regions] == [a[0] for a in anns]  # one region per COCO annotation
    for (_, region), (_, bbox, score) in zip(regions, anns, strict=True):
        w_img, h_img = region["original_width"], region["original_height"]
        v = region["value"]
        got = [
            v["x"] * w_img / 100,
            v["y"] * h_img / 100,
            v["width"] * w_img / 100,
            v["height"] * h_img / 100,
        ]
        assert got == pytest.approx(bbox, abs=0.01) and region["score"] == score
    assert tasks[1]["predictions"][0]["result"] == []  # two.png: an image without a region


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
    assert sorted(_files(yolo, ".txt")) == ["classes.txt", "labels/a/one.txt", "train.txt"]
    assert len(open(os.path.join(yolo, "labels/a/one.txt")).read().splitlines()) == 1
    ls_file = str(tmp_path / "ls-min.json")
    assert _export(pred, ls_file, "label_studio", "--min_score=0.6") == 0
    tasks = json.load(open(ls_file))
    assert [len(t["predictions"][0]["result"]) for t in tasks] == [1]
    assert tasks[0]["predictions"][0]["score"] == pytest.approx(0.7)


def _ultralytics_label_file(image_path):
    """Ultralytics' own rule (``img2label_paths``), written out here: last /images/ → /labels/, → .txt."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return sb.join(image_path.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt"


def _ultralytics_list(list_file):
    """The image paths Ultralytics reads from a list file (``./`` lines are relative to its folder)."""
    parent = os.path.dirname(list_file) + os.sep
    lines = open(list_file).read().strip().splitlines()
    return [x.replace("./", parent) if x.startswith("./") else x for x in lines]


@pytest.fixture
def local_table(tmp_path):
    """A table of real local images under ``<tmp>/photos`` (one in a folder named ``images``)."""
    heat = np.zeros((7, 7), np.uint8)
    heat[2:5, 2:5] = 255
    photos = tmp_path / "photos"
    rels = ["a/one.jpg", "a/two.png", "b/broken.jpg", "b/three.jpeg", "c/images/four.jpg"]
    rels += [f"d/many_{k:02d}.jpg" for k in range(20)]
    items = []
    for rel in rels:
        (photos / rel).parent.mkdir(parents=True, exist_ok=True)
        (photos / rel).write_bytes(rel.encode())  # the content tells which image a link reaches
        if "broken" in rel:
            items.append((str(photos / rel), None, None, None, None, None))
        else:
            items.append((str(photos / rel), 120, 80, heat, (10.0, 20.0, 59.0, 39.0), 0.6))
    out = str(tmp_path / "pred-local")
    data.write_parts(out, data.prediction_rows(items, model="m-local"), rows_per_file=4)
    storage.write_text_atomic(storage.join(out, MANIFEST), json.dumps({"images": str(photos)}))
    return out, str(photos), [r for r in rels if "broken" not in r]


def test_yolo_export_is_an_ultralytics_dataset(tmp_path, local_table):
    pred, photos, rels = local_table
    out = str(tmp_path / "yolo")
    assert _export(pred, out, "yolo", "--val_fraction=0.3") == 0
    cfg = yaml.safe_load(open(os.path.join(out, "data.yaml")))
    assert cfg == {"path": out, "train": "train.txt", "val": "val.txt", "names": {0: "raccoon"}}
    assert open(os.path.join(out, "classes.txt")).read() == "raccoon\n"
    split = {name: _ultralytics_list(os.path.join(cfg["path"], cfg[name])) for name in ("train", "val")}
    # Complete and disjoint: every exported image once, in the split its relative path hashes to.
    listed = split["train"] + split["val"]
    assert sorted(listed) == sorted(os.path.join(out, "images", r) for r in rels)
    for name, paths in split.items():
        assert sorted(os.path.relpath(p, os.path.join(out, "images")) for p in paths) == sorted(
            r for r in rels if yolo_split(r, 0.3) == name
        )
    assert split["train"] and split["val"]  # 24 images at 0.3: both sides hold some
    for path in listed:
        rel = os.path.relpath(path, os.path.join(out, "images"))
        # The listed path reaches the original image (a link, no copy) ...
        assert os.path.islink(path) and os.path.samefile(path, os.path.join(photos, rel))
        assert open(path, "rb").read() == rel.encode()
        # ... and the label file is where Ultralytics' rule looks for it.
        label = _ultralytics_label_file(path)
        assert os.path.isfile(label), label
        assert label == out + ultralytics_label_path("/images/" + rel)
        assert open(label).read().split()[0] == "0"
    assert os.path.isfile(os.path.join(out, "labels", "a", "one.txt"))
    # A relative path with its own images/ folder: the rule replaces that last one.
    assert os.path.isfile(os.path.join(out, "images", "c", "labels", "four.txt"))
    # Deterministic: a rerun into the same folder writes the same split and keeps the links.
    before = {n: open(os.path.join(out, f"{n}.txt")).read() for n in ("train", "val")}
    assert _export(pred, out, "yolo", "--val_fraction=0.3") == 0
    assert {n: open(os.path.join(out, f"{n}.txt")).read() for n in ("train", "val")} == before
    # No split by default: everything in train.txt, which data.yaml also names for val.
    flat = str(tmp_path / "yolo-flat")
    assert _export(pred, flat, "yolo") == 0
    cfg = yaml.safe_load(open(os.path.join(flat, "data.yaml")))
    assert (cfg["train"], cfg["val"]) == ("train.txt", "train.txt")
    assert not os.path.exists(os.path.join(flat, "val.txt"))
    assert len(_ultralytics_list(os.path.join(flat, "train.txt"))) == len(rels)


def test_yolo_and_label_studio_options_are_checked(tmp_path, table_dir):
    pred, _ = table_dir
    out = str(tmp_path / "x")
    for bad in ("--val_fraction=1", "--val_fraction=-0.1"):
        assert _export(pred, out, "yolo", bad) == 2
    assert _export(pred, out, "coco", "--val_fraction=0.2") == 2  # a yolo option
    assert _export(pred, out, "yolo", "--images_url=http://h/") == 2  # a label_studio option
    assert not os.path.exists(out)


def test_yolo_export_of_s3_images_lists_them_without_links(tmp_path, table_dir, caplog):
    pred, _ = table_dir
    out = str(tmp_path / "yolo")
    caplog.set_level(logging.WARNING, logger="pipelines.export")
    assert _export(pred, out, "yolo") == 0
    assert open(os.path.join(out, "train.txt")).read().split() == [
        "./images/a/one.jpg",
        "./images/a/two.png",
        "./images/b/three.jpeg",
    ]
    assert not os.path.exists(os.path.join(out, "images"))
    assert "3 of 3 images are not local files" in caplog.text


LS_REGION_KEYS = {
    "type",
    "from_name",
    "to_name",
    "original_width",
    "original_height",
    "image_rotation",
    "value",
    "score",
}


def test_label_studio_export_is_valid_pre_annotation(tmp_path, table_dir):
    pred, good = table_dir
    ls_file, coco_file = str(tmp_path / "tasks.json"), str(tmp_path / "coco.json")
    assert _export(pred, ls_file, "label_studio") == 0
    assert _export(pred, coco_file, "coco") == 0
    tasks = json.load(open(ls_file))
    coco = json.load(open(coco_file))
    assert isinstance(tasks, list) and len(tasks) == len(good) == len(coco["images"])  # no error row
    for task, item, im, ann in zip(tasks, good, coco["images"], coco["annotations"], strict=True):
        path, w_img, h_img, _, _, score = item
        assert set(task) == {"data", "predictions"} and task["data"] == {"image": path}
        assert len(task["predictions"]) == 1
        prediction = task["predictions"][0]
        assert set(prediction) == {"model_version", "score", "result"}
        assert prediction["model_version"] == "m1" and prediction["score"] == pytest.approx(score)
        (region,) = prediction["result"]
        assert set(region) == LS_REGION_KEYS
        assert (region["type"], region["from_name"], region["to_name"]) == (
            "rectanglelabels",
            "label",
            "image",
        )
        assert (
            (region["original_width"], region["original_height"])
            == (w_img, h_img)
            == (im["width"], im["height"])
        )
        assert region["image_rotation"] == 0 and region["score"] == pytest.approx(score)
        value = region["value"]
        assert set(value) == {"x", "y", "width", "height", "rotation", "rectanglelabels"}
        assert value["rotation"] == 0 and value["rectanglelabels"] == ["raccoon"]
        for key in ("x", "y", "width", "height"):
            assert 0.0 <= value[key] <= 100.0, (key, value)
        assert value["x"] + value["width"] <= 100.0 + 1e-6 and value["y"] + value["height"] <= 100.0 + 1e-6
        # The same box as the COCO export of the row (inclusive far corner: w = x1 - x0 + 1).
        pixels = [value["x"] * w_img, value["y"] * h_img, value["width"] * w_img, value["height"] * h_img]
        assert [v / 100 for v in pixels] == pytest.approx(ann["bbox"], abs=0.01)
    assert tasks[1]["predictions"][0]["result"][0]["value"] == {
        "x": 0.0,
        "y": 0.0,
        "width": 100.0,
        "height": 100.0,
        "rotation": 0,
        "rectanglelabels": ["raccoon"],
    }  # two.png's box covers the image


@pytest.mark.parametrize(
    ("prefix", "expect"),
    [
        ("/data/local-files/?d=photos/", "/data/local-files/?d=photos/a/one.jpg"),
        ("https://images.example.com/raccoons", "https://images.example.com/raccoons/a/one.jpg"),
        ("s3://other/copy/", "s3://other/copy/a/one.jpg"),
    ],
)
def test_label_studio_images_url_replaces_the_images_root(tmp_path, table_dir, prefix, expect):
    pred, _ = table_dir
    out = str(tmp_path / "tasks.json")
    assert _export(pred, out, "label_studio", f"--images_url={prefix}") == 0
    tasks = json.load(open(out))
    assert tasks[0]["data"]["image"] == expect
    assert [t["data"]["image"][len(prefix) :].lstrip("/") for t in tasks] == [
        "a/one.jpg",
        "a/two.png",
        "b/three.jpeg",
    ]


def test_run_export_takes_the_jobs_config(tmp_path, table_dir):
    from pipelines.config import ExportJobConfig
    from pipelines.export import run_export

    pred, _ = table_dir
    coco = str(tmp_path / "kept.json")
    summary = run_export(ExportJobConfig(predictions=pred, out=coco, category="raccoon", min_score=0.5))
    assert (summary.images, summary.boxes, summary.skipped_errors, summary.dropped_min_score) == (2, 2, 1, 1)
    assert [im["file_name"] for im in json.load(open(coco))["images"]] == ["a/one.jpg", "b/three.jpeg"]
    # images_root "" is the manifest's root; another root gives file names relative to it.
    cfg = ExportJobConfig(predictions=pred, out=coco, category="raccoon", images_root="s3://bucket")
    assert run_export(cfg).images == 3
    assert json.load(open(coco))["images"][0]["file_name"] == "photos/a/one.jpg"
    with pytest.raises(ValueError, match="val_fraction applies to the yolo format"):
        run_export(ExportJobConfig(predictions=pred, out=coco, category="raccoon", val_fraction=0.5))
