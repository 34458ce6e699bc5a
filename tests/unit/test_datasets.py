from __future__ import annotations

import io
import os
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest
import scipy.io

from coloc_core.datasets import (
    FileSystemLike,
    ImageRecord,
    LocalFS,
    read_aircraft,
    read_boxes_csv,
    read_cars,
    read_cub,
    read_dataset,
    read_dogs,
    read_image_folder,
)
from coloc_core.errors import InvalidInputError, MissingInputError


def _write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


class MemoryFS:
    """An in-memory, s3fs-like filesystem: ``find`` returns paths without the ``s3://`` scheme."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files  # keys: "bucket/prefix/name"
        self.opened: list[str] = []

    def open(self, path: str, mode: str = "rb") -> IO[Any]:
        key = path.removeprefix("s3://")
        self.opened.append(key)
        if key not in self.files:
            raise FileNotFoundError(path)
        data = self.files[key]
        return io.BytesIO(data) if "b" in mode else io.StringIO(data.decode())

    def find(self, path: str) -> list[str]:
        prefix = path.removeprefix("s3://").rstrip("/") + "/"
        return sorted(k for k in self.files if k.startswith(prefix))


def _local_tree_to_memory(root: Path, bucket_prefix: str) -> dict[str, bytes]:
    return {
        f"{bucket_prefix}/{p.relative_to(root).as_posix()}": p.read_bytes()
        for p in root.rglob("*")
        if p.is_file()
    }


def test_fs_protocol_is_satisfied_by_local_and_memory_fs():
    assert isinstance(LocalFS(), FileSystemLike)
    assert isinstance(MemoryFS({}), FileSystemLike)


# ----------------------------------------------------------------------------------------------- CUB


def _make_cub(root: Path, sep: str = " ", boxes: bool = True) -> None:
    _write(root / "images.txt", f"1{sep}001.A/a_1.jpg\n2{sep}001.A/a_2.jpg\n3{sep}002.B/b_3.jpg\n")
    _write(root / "train_test_split.txt", f"1{sep}1\n2{sep}0\n3{sep}1\n")
    _write(root / "image_class_labels.txt", f"1{sep}1\n2{sep}1\n3{sep}2\n")
    if boxes:
        rows = ["1 60.0 27.0 325.0 304.0", "2 139.0 30.0 153.0 264.0", "3 14.5 112.0 388.0 186.0"]
        _write(root / "bounding_boxes.txt", "\n".join(r.replace(" ", sep) for r in rows) + "\n")


@pytest.mark.parametrize("sep", [" ", ", ", ","])
def test_read_cub_splits_and_boxes(tmp_path, sep):
    _make_cub(tmp_path, sep)
    train = read_cub(str(tmp_path), "train")
    assert [r.path for r in train] == [f"{tmp_path}/images/001.A/a_1.jpg", f"{tmp_path}/images/002.B/b_3.jpg"]
    assert [r.split for r in train] == ["train", "train"]
    assert train[0].boxes == ((60.0, 27.0, 385.0, 331.0),)  # (x, y, x + w, y + h)
    assert train[1].boxes == ((14.5, 112.0, 402.5, 298.0),)
    assert train[0].width is None and train[0].height is None
    test = read_cub(str(tmp_path), "test")
    assert [(r.path.split("/")[-1], r.split) for r in test] == [("a_2.jpg", "test")]
    assert len(read_cub(str(tmp_path), "all")) == 3


def test_read_cub_without_boxes_file(tmp_path):
    _make_cub(tmp_path, ", ", boxes=False)
    records = read_cub(str(tmp_path), "all")
    assert [r.boxes for r in records] == [(), (), ()]
    with pytest.raises(MissingInputError, match="bounding_boxes.txt"):
        read_cub(str(tmp_path), "all", require_boxes=True)


def test_read_cub_errors(tmp_path):
    with pytest.raises(MissingInputError, match=r"images\.txt"):
        read_cub(str(tmp_path), "train")
    _make_cub(tmp_path)
    with pytest.raises(InvalidInputError, match="split 'val'"):
        read_cub(str(tmp_path), "val")
    _write(tmp_path / "train_test_split.txt", "1 1\n2 0\n")
    with pytest.raises(InvalidInputError, match="image id 3"):
        read_cub(str(tmp_path), "all")


# ---------------------------------------------------------------------------------------------- Cars


def _cars_annotations(rows: list[tuple[int, int, int, int, str]], with_class: bool) -> np.ndarray:
    """A 1xN struct array as in the devkit (uint8/uint16 scalars as 1x1 matrices, fname a string)."""
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"] + (["class"] if with_class else []) + ["fname"]
    annos = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, (x1, y1, x2, y2, fname) in enumerate(rows):
        annos[0, i]["bbox_x1"] = np.array([[x1]], dtype=np.uint16)
        annos[0, i]["bbox_y1"] = np.array([[y1]], dtype=np.uint16)
        annos[0, i]["bbox_x2"] = np.array([[x2]], dtype=np.uint16)
        annos[0, i]["bbox_y2"] = np.array([[y2]], dtype=np.uint16)
        if with_class:
            annos[0, i]["class"] = np.array([[7]], dtype=np.uint8)
        annos[0, i]["fname"] = fname
    return annos


def _make_cars(root: Path, test_file: str = "devkit/cars_test_annos_withlabels.mat") -> None:
    (root / "devkit").mkdir(parents=True, exist_ok=True)
    train = _cars_annotations(
        [(39, 116, 569, 375, "00001.jpg"), (1, 1, 100, 50, "00002.jpg")], with_class=True
    )
    scipy.io.savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": train})
    test = _cars_annotations(
        [(30, 52, 246, 147, "00001.jpg")], with_class=test_file.endswith("withlabels.mat")
    )
    scipy.io.savemat(root / test_file, {"annotations": test})


def test_read_cars_converts_one_based_boxes(tmp_path):
    _make_cars(tmp_path)
    train = read_cars(str(tmp_path), "train")
    assert [r.path for r in train] == [f"{tmp_path}/cars_train/00001.jpg", f"{tmp_path}/cars_train/00002.jpg"]
    assert train[0].boxes == ((38.0, 115.0, 568.0, 374.0),)
    assert train[1].boxes == ((0.0, 0.0, 99.0, 49.0),)
    test = read_cars(str(tmp_path), "test")
    assert [(r.path, r.split, r.boxes) for r in test] == [
        (f"{tmp_path}/cars_test/00001.jpg", "test", ((29.0, 51.0, 245.0, 146.0),))
    ]
    assert [r.split for r in read_cars(str(tmp_path), "all")] == ["train", "train", "test"]


@pytest.mark.parametrize("test_file", ["cars_test_annos_withlabels.mat", "devkit/cars_test_annos.mat"])
def test_read_cars_test_annotation_fallbacks(tmp_path, test_file):
    _make_cars(tmp_path, test_file)
    assert read_cars(str(tmp_path), "test")[0].boxes == ((29.0, 51.0, 245.0, 146.0),)


def test_read_cars_missing_files(tmp_path):
    with pytest.raises(MissingInputError, match="cars_train_annos.mat"):
        read_cars(str(tmp_path), "train")
    with pytest.raises(MissingInputError, match="cars_test_annos_withlabels.mat.*cars_test_annos.mat"):
        read_cars(str(tmp_path), "test")
    (tmp_path / "devkit").mkdir()
    scipy.io.savemat(tmp_path / "devkit" / "cars_train_annos.mat", {"something_else": np.zeros(3)})
    with pytest.raises(InvalidInputError, match="no variable 'annotations'"):
        read_cars(str(tmp_path), "train")


# ------------------------------------------------------------------------------------------ Aircraft


def _make_aircraft(root: Path) -> None:
    data = root / "data"
    _write(data / "images_train.txt", "1025794\n1340192\n")
    _write(data / "images_val.txt", "0056978\n")
    _write(data / "images_test.txt", "1514522\n")
    _write(data / "images_trainval.txt", "1025794\n1340192\n0056978\n")
    _write(
        data / "images_box.txt",
        "1025794 1 144 998 431\n1340192 20 80 900 500\n0056978 5 6 7 8\n1514522 83 155 1077 502\n",
    )


def test_read_aircraft_splits_and_boxes(tmp_path):
    _make_aircraft(tmp_path)
    train = read_aircraft(str(tmp_path), "train")
    assert [r.path for r in train] == [
        f"{tmp_path}/data/images/1025794.jpg",
        f"{tmp_path}/data/images/1340192.jpg",
    ]
    assert train[0].boxes == ((0.0, 143.0, 997.0, 430.0),)  # 1-based -> 0-based
    assert [r.split for r in read_aircraft(str(tmp_path), "trainval")] == ["train", "train", "val"]
    assert [r.path[-11:] for r in read_aircraft(str(tmp_path), "val")] == ["0056978.jpg"]
    assert read_aircraft(str(tmp_path), "test")[0].boxes == ((82.0, 154.0, 1076.0, 501.0),)
    assert len(read_aircraft(str(tmp_path), "all")) == 4


def test_read_aircraft_errors(tmp_path):
    _make_aircraft(tmp_path)
    (tmp_path / "data" / "images_val.txt").unlink()
    with pytest.raises(MissingInputError, match=r"data/images_val\.txt"):
        read_aircraft(str(tmp_path), "val")
    _write(tmp_path / "data" / "images_test.txt", "9999999\n")
    with pytest.raises(InvalidInputError, match="no box for image 9999999"):
        read_aircraft(str(tmp_path), "test")
    (tmp_path / "data" / "images_box.txt").unlink()
    with pytest.raises(MissingInputError, match=r"images_box\.txt"):
        read_aircraft(str(tmp_path), "train")


# ---------------------------------------------------------------------------------------------- Dogs

_VOC_TWO_DOGS = """<annotation>
  <folder>02085620</folder><filename>n02085620_10074</filename>
  <source><database>ImageNet database</database></source>
  <size><width>333</width><height>500</height><depth>3</depth></size>
  <segment>0</segment>
  <object><name>Chihuahua</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>
    <bndbox><xmin>25</xmin><ymin>10</ymin><xmax>276</xmax><ymax>498</ymax></bndbox></object>
  <object><name>Chihuahua</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>
    <bndbox><xmin>140</xmin><ymin>200</ymin><xmax>320</xmax><ymax>480</ymax></bndbox></object>
</annotation>
"""
_VOC_ONE_DOG = """<annotation><size><width>500</width><height>375</height><depth>3</depth></size>
  <object><name>Maltese_dog</name><bndbox><xmin>0</xmin><ymin>3</ymin><xmax>499</xmax><ymax>374</ymax></bndbox>
  </object></annotation>
"""


def _cell(strings: list[str]) -> np.ndarray:
    cell = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        cell[i, 0] = s
    return cell


def _make_dogs(root: Path) -> None:
    train_files = ["n02085620-Chihuahua/n02085620_10074.jpg", "n02085936-Maltese_dog/n02085936_1.jpg"]
    test_files = ["n02085620-Chihuahua/n02085620_7.jpg"]
    for name, files in (("train", train_files), ("test", test_files)):
        annos = [f.removesuffix(".jpg") for f in files]
        labels = np.ones((len(files), 1), dtype=np.uint8)
        scipy.io.savemat(
            root / f"{name}_list.mat",
            {"file_list": _cell(files), "annotation_list": _cell(annos), "labels": labels},
        )
    _write(root / "Annotation/n02085620-Chihuahua/n02085620_10074", _VOC_TWO_DOGS)
    _write(root / "Annotation/n02085936-Maltese_dog/n02085936_1", _VOC_ONE_DOG)
    _write(root / "Annotation/n02085620-Chihuahua/n02085620_7.xml", _VOC_ONE_DOG)  # ".xml" variant


def test_read_dogs_keeps_all_boxes_and_sizes(tmp_path):
    _make_dogs(tmp_path)
    train = read_dogs(str(tmp_path), "train")
    assert [r.path for r in train] == [
        f"{tmp_path}/Images/n02085620-Chihuahua/n02085620_10074.jpg",
        f"{tmp_path}/Images/n02085936-Maltese_dog/n02085936_1.jpg",
    ]
    first = train[0]
    assert (first.split, first.width, first.height) == ("train", 333, 500)
    assert first.boxes == ((25.0, 10.0, 276.0, 498.0), (140.0, 200.0, 320.0, 480.0))
    assert train[1].boxes == ((0.0, 3.0, 499.0, 374.0),)
    test = read_dogs(str(tmp_path), "test")
    assert [(r.split, r.width, r.height) for r in test] == [("test", 500, 375)]
    assert len(read_dogs(str(tmp_path), "all")) == 3


def test_read_dogs_errors(tmp_path):
    with pytest.raises(MissingInputError, match=r"train_list\.mat"):
        read_dogs(str(tmp_path), "train")
    _make_dogs(tmp_path)
    (tmp_path / "Annotation/n02085936-Maltese_dog/n02085936_1").unlink()
    with pytest.raises(MissingInputError, match="n02085936_1"):
        read_dogs(str(tmp_path), "train")
    _write(tmp_path / "Annotation/n02085936-Maltese_dog/n02085936_1", "<annotation><size>")
    with pytest.raises(InvalidInputError, match="not a valid XML"):
        read_dogs(str(tmp_path), "train")


def test_read_dogs_through_a_remote_like_fs(tmp_path):
    _make_dogs(tmp_path)
    fs = MemoryFS(_local_tree_to_memory(tmp_path, "bucket/dogs"))
    records = read_dogs("s3://bucket/dogs", "all", fs=fs)
    assert [r.path for r in records][:1] == [
        "s3://bucket/dogs/Images/n02085620-Chihuahua/n02085620_10074.jpg"
    ]
    assert [len(r.boxes) for r in records] == [2, 1, 1]


# -------------------------------------------------------------------------------------- image folder


def test_read_image_folder_recursion_and_extension_filter(tmp_path):
    for rel in ["b.JPG", "a/x.png", "a/deeper/y.JpEg", "a/z.webp", "c.tif", "d.TIFF", "e.bmp"]:
        _write(tmp_path / rel, b"not decoded by the reader")
    for rel in ["notes.txt", "a/labels.csv", ".hidden/h.jpg", "a/.f.jpg", "jpg"]:
        _write(tmp_path / rel, b"skip me")
    records = read_image_folder(str(tmp_path))
    rels = [r.path.removeprefix(f"{tmp_path}/") for r in records]
    assert rels == sorted(["b.JPG", "a/x.png", "a/deeper/y.JpEg", "a/z.webp", "c.tif", "d.TIFF", "e.bmp"])
    assert all(r.split == "all" and r.boxes == () and r.width is None for r in records)


def test_read_image_folder_roots_keep_their_form(tmp_path):
    _write(tmp_path / "imgs/sub/p.png", b"x")
    assert [r.path for r in read_image_folder(f"file://{tmp_path}/imgs/")] == [
        f"file://{tmp_path}/imgs/sub/p.png"
    ]
    fs = MemoryFS({"bucket/imgs/sub/p.png": b"x", "bucket/imgs2/q.png": b"x"})
    assert [r.path for r in read_image_folder("s3://bucket/imgs", fs=fs)] == ["s3://bucket/imgs/sub/p.png"]


def test_read_image_folder_relative_root(tmp_path, monkeypatch):
    _write(tmp_path / "imgs/p.png", b"x")
    monkeypatch.chdir(tmp_path)
    assert [r.path for r in read_image_folder("imgs")] == ["imgs/p.png"]


def test_read_image_folder_empty_or_missing(tmp_path):
    _write(tmp_path / "readme.txt", "no images")
    with pytest.raises(MissingInputError, match="no image files"):
        read_image_folder(str(tmp_path))
    with pytest.raises(MissingInputError, match="no image files"):
        read_image_folder(str(tmp_path / "missing"))


# ----------------------------------------------------------------------------------------- boxes.csv

_CSV = """path,width,height,x0,y0,x1,y1
images/00001.jpg,450,319,233.0,89.0,386.0,262.0
images/b.jpg,640,480,10,20,30,40
images/00001.jpg,450,319,134.0,105.0,341.0,253.0
images/empty.jpg,100,80,,,,
images/nosize.jpg,,,1,2,3,4
"""


def test_read_boxes_csv_groups_boxes_per_image(tmp_path):
    _write(tmp_path / "boxes.csv", _CSV)
    records = read_boxes_csv(str(tmp_path))
    assert [r.path.removeprefix(f"{tmp_path}/") for r in records] == [
        "images/00001.jpg",
        "images/b.jpg",
        "images/empty.jpg",
        "images/nosize.jpg",
    ]
    assert records[0] == ImageRecord(
        path=f"{tmp_path}/images/00001.jpg",
        split="all",
        width=450,
        height=319,
        boxes=((233.0, 89.0, 386.0, 262.0), (134.0, 105.0, 341.0, 253.0)),
    )
    assert records[1].boxes == ((10.0, 20.0, 30.0, 40.0),)
    assert (records[2].width, records[2].height, records[2].boxes) == (100, 80, ())
    assert (records[3].width, records[3].height, records[3].boxes) == (None, None, ((1.0, 2.0, 3.0, 4.0),))


def test_read_boxes_csv_other_name_and_extra_columns(tmp_path):
    _write(tmp_path / "gt.csv", "label,path,width,height,x0,y0,x1,y1\ncat,a.png,10,10,0,0,9,9\n")
    (record,) = read_boxes_csv(str(tmp_path), csv="gt.csv")
    assert record.path == f"{tmp_path}/a.png" and record.boxes == ((0.0, 0.0, 9.0, 9.0),)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("path,width,height,x0,y0,x1\na.jpg,1,1,0,0,0\n", r"missing columns \['y1'\]"),
        ("path,width,height,x0,y0,x1,y1\na.jpg,10,10,0,0,5,\n", "partial box"),
        ("path,width,height,x0,y0,x1,y1\na.jpg,10,10,0,0,5,x\n", r"boxes.csv:2: non-numeric"),
        ("path,width,height,x0,y0,x1,y1\na.jpg,10,10,0,0,5,5\na.jpg,11,10,0,0,5,5\n", "differs"),
        ("path,width,height,x0,y0,x1,y1\na.jpg,10,10,6,0,5,5\n", "x1 < x0"),
    ],
)
def test_read_boxes_csv_errors(tmp_path, body, match):
    _write(tmp_path / "boxes.csv", body)
    with pytest.raises(InvalidInputError, match=match):
        read_boxes_csv(str(tmp_path))


def test_read_boxes_csv_missing_file(tmp_path):
    with pytest.raises(MissingInputError, match=r"boxes\.csv"):
        read_boxes_csv(str(tmp_path))


# ------------------------------------------------------------------------------------------ dispatch


def test_read_dataset_dispatch(tmp_path):
    _make_cub(tmp_path / "cub")
    _make_aircraft(tmp_path / "air")
    _write(tmp_path / "csv/boxes.csv", _CSV)
    _write(tmp_path / "folder/a.jpg", b"x")
    assert read_dataset("cub", str(tmp_path / "cub"), "test") == read_cub(str(tmp_path / "cub"), "test")
    assert len(read_dataset("aircraft", str(tmp_path / "air"), "trainval")) == 3
    # Collections without splits give every image for any split name.
    for split in ("train", "test", "all"):
        assert len(read_dataset("boxes_csv", str(tmp_path / "csv"), split)) == 4
        assert [r.split for r in read_dataset("folder", str(tmp_path / "folder"), split)] == ["all"]
    with pytest.raises(InvalidInputError, match="unknown dataset kind 'coco'"):
        read_dataset("coco", str(tmp_path))
    with pytest.raises(InvalidInputError, match="split 'bogus'"):
        read_dataset("folder", str(tmp_path / "folder"), "bogus")


def test_readers_through_memory_fs_keep_s3_paths(tmp_path):
    _make_cub(tmp_path)
    _make_cars(tmp_path)
    fs = MemoryFS(_local_tree_to_memory(tmp_path, "bucket/set"))
    cub = read_dataset("cub", "s3://bucket/set/", "train", fs=fs)
    assert cub[0].path == "s3://bucket/set/images/001.A/a_1.jpg"
    cars = read_dataset("cars", "s3://bucket/set", "test", fs=fs)
    assert cars[0].path == "s3://bucket/set/cars_test/00001.jpg"
    assert "bucket/set/devkit/cars_test_annos_withlabels.mat" in fs.opened


def test_image_record_validation():
    with pytest.raises(InvalidInputError, match="split"):
        ImageRecord(path="a.jpg", split="trainval")
    with pytest.raises(InvalidInputError, match="width=0"):
        ImageRecord(path="a.jpg", split="all", width=0, height=5)
    with pytest.raises(InvalidInputError, match="y1 < y0"):
        ImageRecord(path="a.jpg", split="all", boxes=((0.0, 5.0, 1.0, 4.0),))
    with pytest.raises(InvalidInputError, match="finite"):
        ImageRecord(path="a.jpg", split="all", boxes=((0.0, float("nan"), 1.0, 4.0),))


def test_local_fs_find_missing_is_empty(tmp_path):
    assert LocalFS().find(str(tmp_path / "nope")) == []
    _write(tmp_path / "x/y.txt", "1")
    assert LocalFS().find(str(tmp_path)) == [f"{tmp_path}/x/y.txt"]
    with LocalFS().open(f"file://{tmp_path}/x/y.txt", "r") as f:
        assert f.read() == "1"
    assert os.path.exists(tmp_path / "x/y.txt")
