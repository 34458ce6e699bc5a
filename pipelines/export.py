"""Predictions table → COCO (dataset, results) JSON, an Ultralytics YOLO dataset, VOC XML, Label Studio.

Box convention: the table's boxes are pixel indices, inclusive on both ends (the wsolevaluation
convention of SPEC §6, scaled to the original image). Exported boxes cover those pixels:

- COCO ``bbox = [x0, y0, w, h]`` with ``w = x1 - x0 + 1`` and ``h = y1 - y0 + 1`` (``area = w·h``),
  clipped to the image; the same in the dataset file and the results file.
- YOLO ``0 cx cy w h`` with ``cx = (x0 + w/2) / W``, ``cy = (y0 + h/2) / H``, ``w/W``, ``h/H`` (same w, h).
- VOC ``xmin ymin xmax ymax``: whole pixels, 1-based and inclusive (the VOC devkit's convention):
  ``xmin = round(x0) + 1``, ``xmax = round(x1) + 1`` (halves up), clipped to ``1..W`` (likewise y).
- Label Studio ``value`` ``{"x", "y", "width", "height"}``: the COCO ``[x0, y0, w, h]`` in percent of
  the image's width (``x``, ``width``) and height (``y``, ``height``), the top-left corner and the size,
  as Label Studio's ``rectanglelabels`` expect (``original_width``/``original_height`` carry W and H).

**YOLO dataset layout.** Ultralytics finds an image's label file by its path alone: the last
``/images/`` component of the image path becomes ``/labels/`` and the extension ``.txt``. An image
under ``/data/photos/a/x.jpg`` therefore has no place for its labels outside the image folder, so the
export builds the pair itself, without copying an image::

    <out>/data.yaml          path: <out>, train: train.txt, val: val.txt (or train.txt), names: {0: category}
    <out>/train.txt          ./images/<relative path>, one line per image of the train split
    <out>/val.txt            the same for the val split (only with val_fraction > 0)
    <out>/images/<relative path>   a symbolic link to the original image (local images and folder)
    <out>/labels/<relative path>.txt   its boxes, where Ultralytics' rule looks for them
    <out>/classes.txt        the category (class 0), for other YOLO readers

``<relative path>`` is the image's path below ``images_root`` (when it has an ``images`` folder of
its own, the label file goes where the rule then looks: below that last ``images``, ``labels``
replacing it). Ultralytics resolves the ``./`` of a
list line against the list file's folder, so ``yolo train data=<out>/data.yaml`` reads the linked
images and their labels. Images on S3 (or an ``s3://`` output folder) get no link: copy or sync the
images to ``<out>/images/`` (the listed paths) before training; ``data.yaml``'s ``path`` is the
output folder as given, so after syncing an ``s3://`` folder down set it to the local folder. The
split is deterministic: an image is in ``val`` when the SHA-256 of its relative path, read as a
number in ``[0, 1)``, is below ``val_fraction`` (default 0: every image in ``train``, and ``val:``
names ``train.txt``, as Ultralytics requires a ``val`` entry).

**Label Studio** pre-annotations: one JSON file, a list of tasks ``{"data": {"image": ...},
"predictions": [{"model_version", "score", "result": [...]}]}``, one ``rectanglelabels`` region per box
(``from_name`` ``label``, ``to_name`` ``image``, with its own ``score``); the task's ``score`` is the
image's. ``data.image`` is the image's path, or with ``images_url`` that prefix followed by the path
relative to ``images_root`` (e.g. ``/data/local-files/?d=photos/`` for Label Studio's local files, or an
``https://`` / ``s3://`` prefix of the same folder).

**Several boxes per image**: a table labelled with ``boxes=all`` holds every box of an image in its
``boxes`` column; every format then writes all of them (one COCO annotation or detection, one YOLO
line, one VOC ``<object>``, one Label Studio region per box), each with its own score. Otherwise
(``boxes`` null) the single box.

Error rows are skipped entirely (no image entry, no label file, no task); they are counted in the
returned summary. ``file_name`` (COCO) and the label file names (YOLO, VOC) are paths relative to
``images_root`` (by default the ``images`` root recorded in the table's manifest), so they line up
with the image folder; a path outside that root keeps its full form (COCO, Label Studio) or its base
name (YOLO, VOC).

COCO image ids are the row's 1-based position among the table's non-error rows (table order), in every
export of the same table whatever its filters, so a results file loads
(``COCO(dataset_file).loadRes(results_file)``) against the dataset file of the same table, unfiltered or
filtered no more strictly than the results.

Filters (every format, the same way) act on boxes, which in a one-box table are the rows:
``min_score`` keeps the boxes whose score is at least it (a box without a score is dropped); then
``top_k`` keeps the ``k`` highest-scored of those over the whole table (ties: table order, then the
box's order in its row). An image none of whose boxes is kept is left out like an error row: no image
entry, annotation, detection, label file or task. The counts each filter dropped (boxes) are logged and
returned.

Every writer streams the table one part file at a time (a filter adds one pass over the ``score`` and
``error`` columns; ``top_k`` holds ``k`` row positions); the JSON files and the YOLO list files are
each written in one atomic write.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import math
import os
import posixpath
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import Any
from xml.etree import ElementTree as ET

from pipelines import schema, storage
from pipelines.config import ExportJobConfig
from pipelines.predictions import PredictionsFolder, iter_predictions

log = logging.getLogger(__name__)

FORMATS = ("coco", "coco_results", "yolo", "voc", "label_studio")
_COLUMNS = [
    schema.PATH,
    schema.WIDTH,
    schema.HEIGHT,
    *schema.BOX_COLUMNS,
    schema.SCORE,
    schema.MODEL,
    schema.ERROR,
    schema.BOXES,
]
_S3_WRITE_THREADS = 16


@dataclass
class ExportSummary:
    """What an export wrote.

    Attributes:
        out: the file (COCO, Label Studio) or folder (YOLO, VOC) written.
        images: images exported.
        boxes: boxes exported.
        skipped_errors: error rows skipped.
        dropped_min_score: boxes (= rows of a one-box table) dropped by ``min_score``.
        dropped_top_k: boxes dropped by ``top_k`` (after ``min_score``).
    """

    out: str
    images: int
    boxes: int
    skipped_errors: int
    dropped_min_score: int = 0
    dropped_top_k: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


@dataclass
class Selection:
    """Which rows of a table an export writes.

    Attributes:
        keep: position (0-based, table order, all rows) of each row to write → the indices of its boxes
            to write (into :func:`row_boxes`); None = every box of every non-error row.
        errors: error rows in the table.
        dropped_min_score: boxes of non-error rows whose score is below ``min_score`` (or missing).
        dropped_top_k: boxes that passed ``min_score`` but are not among the ``top_k`` best.
    """

    keep: dict[int, list[int]] | None
    errors: int
    dropped_min_score: int = 0
    dropped_top_k: int = 0


def _manifest(predictions: str) -> dict[str, Any]:
    folder = PredictionsFolder(predictions)
    return folder.read_manifest() if folder.has_manifest() else {}


def images_root_of(predictions: str) -> str:
    """The ``images`` root recorded in a predictions folder's manifest (``""`` when there is none)."""
    return str(_manifest(predictions).get("images") or "")


def _relative(path: str, root: str) -> str | None:
    if not root:
        return None
    try:
        return storage.relative_path(path, root)
    except ValueError:
        return None


def row_boxes(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A non-error row's boxes, each ``{"x0", "y0", "x1", "y1", "score"}``.

    The ``boxes`` column when the table holds every box (best first), else the single box (none when
    the row has no box).
    """
    if row.get(schema.BOXES) is not None:
        return list(row[schema.BOXES])
    if row[schema.X0] is None:
        return []
    box = {name: row[name] for name in schema.BOX_COLUMNS}
    box[schema.SCORE_FIELD] = row[schema.SCORE]
    return [box]


def pixel_box(row: dict[str, Any], box: dict[str, Any] | None = None) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` of an inclusive pixel box, clipped to the row's image.

    ``box``: one of :func:`row_boxes`; None = the row's single box.
    """
    box = row if box is None else box
    width, height = float(row[schema.WIDTH]), float(row[schema.HEIGHT])
    x0 = min(max(float(box[schema.X0]), 0.0), width - 1)
    y0 = min(max(float(box[schema.Y0]), 0.0), height - 1)
    x1 = min(max(float(box[schema.X1]), x0), width - 1)
    y1 = min(max(float(box[schema.Y1]), y0), height - 1)
    return x0, y0, x1 - x0 + 1.0, y1 - y0 + 1.0


def _score(value: Any) -> float | None:
    if value is None:
        return None
    score = float(value)
    return None if math.isnan(score) else score


def select_rows(predictions: str, min_score: float | None = None, top_k: int = 0) -> Selection:
    """The rows and boxes an export with these filters writes (one pass over the score columns).

    Args:
        predictions: predictions folder.
        min_score: keep boxes with ``score >= min_score``; None = no score filter.
        top_k: then keep the ``top_k`` highest-scored boxes (ties: the earlier row, then the earlier
            box of the row); 0 = all.
    """
    if top_k < 0:
        raise ValueError(f"top_k={top_k} must be >= 0")
    if min_score is not None and not math.isfinite(min_score):
        raise ValueError(f"min_score={min_score} is not a finite number")
    errors, position = 0, 0
    if min_score is None and not top_k:
        for table in iter_predictions(predictions, columns=[schema.ERROR]):
            errors += table.num_rows - table.column(schema.ERROR).null_count
        return Selection(keep=None, errors=errors)
    dropped_min, dropped_top = 0, 0
    kept: dict[int, list[int]] = {}  # without top_k: every box that passed min_score
    # with top_k: (score, -position, -box index, position, box index) of the k best boxes so far
    heap: list[tuple[float, int, int, int, int]] = []
    columns = [*schema.BOX_COLUMNS, schema.SCORE, schema.ERROR, schema.BOXES]
    for table in iter_predictions(predictions, columns=columns):
        for row in table.to_pylist():
            pos, position = position, position + 1
            if row[schema.ERROR] is not None:
                errors += 1
                continue
            for index, box in enumerate(row_boxes(row)):
                score = _score(box[schema.SCORE_FIELD])
                if min_score is not None and (score is None or score < min_score):
                    dropped_min += 1
                    continue
                if not top_k:
                    kept.setdefault(pos, []).append(index)
                    continue
                key = (-math.inf if score is None else score, -pos, -index, pos, index)
                if len(heap) < top_k:
                    heapq.heappush(heap, key)
                    continue
                dropped_top += 1  # this box or the worst of the k kept so far
                if key > heap[0]:
                    heapq.heapreplace(heap, key)
    if top_k:
        for *_, pos, index in heap:
            kept.setdefault(pos, []).append(index)
        for indices in kept.values():
            indices.sort()
    return Selection(keep=kept, errors=errors, dropped_min_score=dropped_min, dropped_top_k=dropped_top)


def _kept_rows(
    predictions: str, selection: Selection
) -> Iterator[tuple[int, dict[str, Any], list[dict[str, Any]]]]:
    """``(image id, row, its boxes to write)`` of the selected rows.

    The id is the row's 1-based position among non-error rows.
    """
    position, image_id = 0, 0
    for table in iter_predictions(predictions, columns=_COLUMNS):
        for row in table.to_pylist():
            pos, position = position, position + 1
            if row[schema.ERROR] is not None:
                continue
            image_id += 1
            if selection.keep is None:
                yield image_id, row, row_boxes(row)
            elif pos in selection.keep:
                boxes = row_boxes(row)
                yield image_id, row, [boxes[i] for i in selection.keep[pos]]


def _log_filters(selection: Selection, min_score: float | None, top_k: int) -> None:
    if min_score is not None:
        log.info("export: --min_score=%g dropped %d boxes", min_score, selection.dropped_min_score)
    if top_k:
        log.info("export: --top_k=%d dropped %d boxes", top_k, selection.dropped_top_k)


def _summary(out: str, images: int, boxes: int, selection: Selection) -> ExportSummary:
    return ExportSummary(
        out=out,
        images=images,
        boxes=boxes,
        skipped_errors=selection.errors,
        dropped_min_score=selection.dropped_min_score,
        dropped_top_k=selection.dropped_top_k,
    )


def _coco_bbox(row: dict[str, Any], box: dict[str, Any] | None = None) -> tuple[list[float], float]:
    x, y, w, h = pixel_box(row, box)
    return [round(x, 2), round(y, 2), round(w, 2), round(h, 2)], round(w * h, 2)


def export_coco(
    predictions: str,
    out: str,
    category: str,
    images_root: str | None = None,
    min_score: float | None = None,
    top_k: int = 0,
) -> ExportSummary:
    """Write the predictions as one COCO detection *dataset* JSON file (local or ``s3://``).

    ``images``: ``id`` (the row's 1-based position among non-error rows), ``file_name``, ``width``,
    ``height``; ``annotations``: one per box (one per image, or each box of a ``boxes=all`` table),
    ``bbox`` ``[x, y, w, h]``, ``area``, ``score``, ``category_id`` 1, ``iscrowd`` 0; ``categories``:
    ``[{"id": 1, "name": category}]``.

    Args:
        predictions: predictions folder.
        out: the JSON file to write.
        category: the collection's name (the one category).
        images_root: root that ``file_name`` is relative to; None = the manifest's ``images``.
        min_score: keep rows with ``score >= min_score``; None = all.
        top_k: keep the ``top_k`` highest-scored rows; 0 = all.
    """
    if not category:
        raise ValueError("category (the collection's name) is required")
    root = images_root_of(predictions) if images_root is None else images_root
    selection = select_rows(predictions, min_score, top_k)
    images, boxes = 0, 0
    models: set[str] = set()
    with storage.atomic_write(out, "w") as fh:
        fh.write('{"info": ')
        info = {"description": f"coloc pseudo-labels of {category}", "predictions": predictions}
        fh.write(json.dumps(info))
        fh.write(', "licenses": [], "categories": ')
        fh.write(json.dumps([{"id": 1, "name": category, "supercategory": category}]))
        # Two streamed passes (images, then annotations) keep memory bounded by one part file.
        fh.write(', "images": [')
        for image_id, row, _ in _kept_rows(predictions, selection):
            images += 1
            name = _relative(row[schema.PATH], root) or row[schema.PATH]
            entry = {
                "id": image_id,
                "file_name": name,
                "width": row[schema.WIDTH],
                "height": row[schema.HEIGHT],
            }
            fh.write(("" if images == 1 else ", ") + json.dumps(entry))
        fh.write('], "annotations": [')
        for image_id, row, kept in _kept_rows(predictions, selection):
            models.add(row[schema.MODEL])
            for box in kept:
                bbox, area = _coco_bbox(row, box)
                boxes += 1
                ann = {
                    "id": boxes,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": bbox,
                    "area": area,
                    "score": round(float(box[schema.SCORE_FIELD]), 6),
                    "iscrowd": 0,
                }
                fh.write(("" if boxes == 1 else ", ") + json.dumps(ann))
        fh.write("]}\n")
    if len(models) > 1:
        log.warning("export: the table mixes models %s", sorted(models))
    _log_filters(selection, min_score, top_k)
    log.info(
        "export: COCO %s: %d images, %d boxes, %d error rows skipped", out, images, boxes, selection.errors
    )
    return _summary(out, images, boxes, selection)


def export_coco_results(
    predictions: str,
    out: str,
    category: str = "",
    images_root: str | None = None,
    min_score: float | None = None,
    top_k: int = 0,
) -> ExportSummary:
    """Write the predictions as a COCO *results* JSON file: a list of detections (local or ``s3://``).

    Each detection (one per box) is ``{"image_id", "category_id": 1, "bbox": [x, y, w, h], "score"}``,
    the image id and box being those of :func:`export_coco` for the same table, so
    ``COCO(dataset_file).loadRes(results_file)`` and ``COCOeval`` run on the pair (or on a ground-truth
    file whose image ids and category id follow the same numbering).

    Args:
        predictions: predictions folder.
        out: the JSON file to write.
        category: unused (the detections carry category id 1, the dataset file's one category).
        images_root: unused (the results carry image ids, not file names).
        min_score: keep rows with ``score >= min_score``; None = all.
        top_k: keep the ``top_k`` highest-scored rows; 0 = all.
    """
    del category, images_root
    selection = select_rows(predictions, min_score, top_k)
    images, boxes = 0, 0
    models: set[str] = set()
    with storage.atomic_write(out, "w") as fh:
        fh.write("[")
        for image_id, row, kept in _kept_rows(predictions, selection):
            models.add(row[schema.MODEL])
            images += 1
            for box in kept:
                bbox, _ = _coco_bbox(row, box)
                boxes += 1
                det = {
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": bbox,
                    "score": round(float(box[schema.SCORE_FIELD]), 6),
                }
                fh.write(("" if boxes == 1 else ", ") + json.dumps(det))
        fh.write("]\n")
    if len(models) > 1:
        log.warning("export: the table mixes models %s", sorted(models))
    if not boxes:
        log.warning("export: no detection left to write (pycocotools' loadRes refuses an empty list)")
    _log_filters(selection, min_score, top_k)
    log.info("export: COCO results %s: %d detections, %d error rows skipped", out, boxes, selection.errors)
    return _summary(out, images, boxes, selection)


def yolo_line(row: dict[str, Any], box: dict[str, Any] | None = None) -> str:
    """``0 cx cy w h`` (normalised, 6 decimals) of a box (default the row's single box)."""
    x, y, w, h = pixel_box(row, box)
    width, height = float(row[schema.WIDTH]), float(row[schema.HEIGHT])
    return f"0 {(x + w / 2) / width:.6f} {(y + h / 2) / height:.6f} {w / width:.6f} {h / height:.6f}"


def _pixel(value: float) -> int:
    """The nearest whole pixel (halves round up, not to even)."""
    return math.floor(value + 0.5)


def voc_xml(
    row: dict[str, Any], category: str, root: str = "", boxes: list[dict[str, Any]] | None = None
) -> str:
    """One image's Pascal VOC annotation as XML text.

    ``<annotation>`` with one ``<object>`` per box of ``boxes`` (None = the row's single box).
    """
    path = row[schema.PATH]
    width, height = int(row[schema.WIDTH]), int(row[schema.HEIGHT])
    rel = _relative(path, root) or posixpath.basename(storage.strip_scheme(path))
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = posixpath.dirname(rel)
    ET.SubElement(ann, "filename").text = posixpath.basename(rel)
    ET.SubElement(ann, "path").text = path
    source = ET.SubElement(ann, "source")
    ET.SubElement(source, "database").text = "coloc pseudo-labels"
    size = ET.SubElement(ann, "size")
    ET.SubElement(size, "width").text = str(width)
    ET.SubElement(size, "height").text = str(height)
    ET.SubElement(size, "depth").text = "3"  # the labeler decodes every image to RGB
    ET.SubElement(ann, "segmented").text = "0"
    for box in [None] if boxes is None else boxes:
        x, y, w, h = pixel_box(row, box)
        xmin = min(max(_pixel(x) + 1, 1), width)
        ymin = min(max(_pixel(y) + 1, 1), height)
        xmax = min(max(_pixel(x + w - 1) + 1, xmin), width)
        ymax = min(max(_pixel(y + h - 1) + 1, ymin), height)
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = category
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)):
            ET.SubElement(bndbox, tag).text = str(value)
    ET.indent(ann)
    return ET.tostring(ann, encoding="unicode")


def _image_name(path: str, root: str) -> str:
    """The image's path relative to ``root``, or its base name when it is not below ``root``."""
    return _relative(path, root) or posixpath.basename(storage.strip_scheme(path))


def _label_name(path: str, root: str, ext: str = ".txt") -> str:
    return posixpath.splitext(_image_name(path, root))[0] + ext


def ultralytics_label_path(image_path: str) -> str:
    """Where Ultralytics looks for an image's label file (its ``img2label_paths`` rule, ``/`` paths).

    The last ``/images/`` component becomes ``/labels/`` and everything after the last ``.`` becomes
    ``txt``: ``/d/images/a/x.jpg`` → ``/d/labels/a/x.txt``.

    Raises:
        ValueError: the path has no ``/images/`` component (Ultralytics would find no label file).
    """
    head, sep, tail = image_path.rpartition("/images/")
    if not sep:
        raise ValueError(f"{image_path} has no /images/ component")
    return f"{head}/labels/{tail}".rsplit(".", 1)[0] + ".txt"


def yolo_split(name: str, val_fraction: float) -> str:
    """``"val"`` or ``"train"`` for an image of the YOLO dataset, by a hash of its relative path.

    ``val`` when the first 8 bytes of the SHA-256 of ``name`` (UTF-8), read as a fraction of 2**64, are
    below ``val_fraction``: deterministic, independent of the table's order and of the other images.
    """
    if val_fraction <= 0:
        return "train"
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def _export_per_image(
    predictions: str,
    out: str,
    selection: Selection,
    name_of: Callable[[dict[str, Any]], str],
    render: Callable[[dict[str, Any], list[dict[str, Any]]], str],
    visit: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[int, int]:
    """Write ``render(row, boxes)`` to ``<out>/<name_of(row)>`` for every selected row.

    ``visit(row)`` (if given) is called once per written row, in table order.

    Returns:
        ``(files, boxes)`` written.
    """
    storage.makedirs(out)
    images, boxes = 0, 0
    names: set[str] = set()

    def write(item: tuple[str, str]) -> None:
        storage.write_text_atomic(storage.join(out, item[0]), item[1] + "\n")

    threads = _S3_WRITE_THREADS if storage.is_s3(out) else 1
    with ThreadPoolExecutor(max_workers=threads) as pool:
        batch: list[tuple[str, str]] = []
        for _, row, kept in _kept_rows(predictions, selection):
            name = name_of(row)
            if name in names:
                raise ValueError(f"two images map to the label file {name}; pass images_root")
            names.add(name)
            boxes += len(kept)
            batch.append((name, render(row, kept)))
            if visit is not None:
                visit(row)
            if len(batch) >= 1000:
                list(pool.map(write, batch))
                images, batch = images + len(batch), []
        list(pool.map(write, batch))
        images += len(batch)
    return images, boxes


def _is_local(uri: str) -> bool:
    return storage.scheme_of(uri) == "file"


def _link(target: str, link: str) -> None:
    """Make ``link`` a symbolic link to ``target`` (replacing what is there, atomically)."""
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.islink(link) and os.readlink(link) == target:
        return
    staged = f"{link}.coloc-tmp-{os.getpid()}"
    if os.path.lexists(staged):
        os.remove(staged)
    os.symlink(target, staged)
    os.replace(staged, link)


def _yaml_str(text: str) -> str:
    """A YAML double-quoted scalar (a JSON string is one)."""
    return json.dumps(text, ensure_ascii=False)


def yolo_data_yaml(path: str, category: str, val_list: str) -> str:
    """The Ultralytics ``data.yaml`` text of an exported dataset rooted at ``path``."""
    return (
        f"# Ultralytics YOLO dataset of coloc pseudo-labels: yolo train data=<this file>\n"
        f"path: {_yaml_str(path)}\n"
        f"train: train.txt\n"
        f"val: {val_list}\n"
        f"names:\n"
        f"  0: {_yaml_str(category)}\n"
    )


def export_yolo(
    predictions: str,
    out: str,
    category: str,
    images_root: str | None = None,
    min_score: float | None = None,
    top_k: int = 0,
    val_fraction: float = 0.0,
) -> ExportSummary:
    """Write an Ultralytics YOLO dataset: labels, image links, ``train.txt``/``val.txt``, ``data.yaml``.

    The layout (module docstring): ``<out>/labels/<relative path>.txt`` (one line per box; an empty file
    for an image without a box), ``<out>/images/<relative path>`` (a link to the original image, local
    images only), the list files of ``./images/<relative path>`` lines, ``data.yaml`` and
    ``classes.txt``. An image whose row is an error or filtered out gets no label file, link or line.

    Args:
        predictions: predictions folder.
        out: output folder (local or ``s3://``).
        category: the collection's name (class 0).
        images_root: root the image and label paths are relative to; None = the manifest's ``images``.
        min_score: keep boxes with ``score >= min_score``; None = all.
        top_k: keep the ``top_k`` highest-scored boxes; 0 = all.
        val_fraction: about this fraction of the images goes to ``val.txt`` (split by a hash of the
            relative path, :func:`yolo_split`); 0 = every image in ``train.txt``, no ``val.txt``.
    """
    if not category:
        raise ValueError("category (the collection's name) is required")
    if not (0.0 <= val_fraction < 1.0):
        raise ValueError(f"val_fraction={val_fraction} must be in [0, 1)")
    root = images_root_of(predictions) if images_root is None else images_root
    selection = select_rows(predictions, min_score, top_k)
    local_out = _is_local(out)
    base = os.path.abspath(storage.strip_scheme(out)) if local_out else out
    counts = {"train": 0, "val": 0}
    links = 0
    with ExitStack() as stack:
        lists = {"train": stack.enter_context(storage.atomic_write(storage.join(out, "train.txt"), "w"))}
        if val_fraction > 0:
            lists["val"] = stack.enter_context(storage.atomic_write(storage.join(out, "val.txt"), "w"))

        def visit(row: dict[str, Any]) -> None:
            nonlocal links
            name = _image_name(row[schema.PATH], root)
            split = yolo_split(name, val_fraction)
            lists[split].write(f"./images/{name}\n")
            counts[split] += 1
            if local_out and _is_local(row[schema.PATH]):
                target = os.path.abspath(storage.strip_scheme(row[schema.PATH]))
                _link(target, os.path.join(base, "images", *name.split("/")))
                links += 1

        images, boxes = _export_per_image(
            predictions,
            out,
            selection,
            lambda row: ultralytics_label_path("/images/" + _image_name(row[schema.PATH], root))[1:],
            lambda row, kept: "\n".join(yolo_line(row, b) for b in kept),
            visit,
        )
    val_list = "val.txt"
    if val_fraction > 0 and not counts["val"]:
        log.warning(
            "export: val_fraction=%g put no image in val.txt; data.yaml validates on train", val_fraction
        )
        val_list = "train.txt"
    elif not val_fraction:
        val_list = "train.txt"
    storage.write_text_atomic(storage.join(out, "data.yaml"), yolo_data_yaml(base, category, val_list))
    storage.write_text_atomic(storage.join(out, "classes.txt"), category + "\n")
    if images > links:
        log.warning(
            "export: %d of %d images are not local files and have no link under %s: copy them there "
            "(the paths in train.txt/val.txt) before training",
            images - links,
            images,
            storage.join(out, "images"),
        )
    _log_filters(selection, min_score, top_k)
    log.info(
        "export: YOLO dataset %s: %d label files (train %d, val %d), %d boxes, %d error rows skipped",
        out,
        images,
        counts["train"],
        counts["val"],
        boxes,
        selection.errors,
    )
    return _summary(out, images, boxes, selection)


def export_voc(
    predictions: str,
    out: str,
    category: str,
    images_root: str | None = None,
    min_score: float | None = None,
    top_k: int = 0,
) -> ExportSummary:
    """Write one Pascal VOC XML file per image (``<out>/<relative path>.xml``).

    Args:
        predictions: predictions folder.
        out: output folder (local or ``s3://``).
        category: the collection's name (each object's ``name``).
        images_root: root the XML paths (and ``folder``/``filename``) are relative to; None = the
            manifest's ``images``.
        min_score: keep boxes with ``score >= min_score``; None = all.
        top_k: keep the ``top_k`` highest-scored boxes; 0 = all.
    """
    if not category:
        raise ValueError("category (the collection's name) is required")
    root = images_root_of(predictions) if images_root is None else images_root
    selection = select_rows(predictions, min_score, top_k)
    images, boxes = _export_per_image(
        predictions,
        out,
        selection,
        lambda row: _label_name(row[schema.PATH], root, ".xml"),
        lambda row, kept: voc_xml(row, category, root, kept),
    )
    _log_filters(selection, min_score, top_k)
    log.info(
        "export: VOC %s: %d XML files, %d boxes, %d error rows skipped", out, images, boxes, selection.errors
    )
    return _summary(out, images, boxes, selection)


def image_url(path: str, root: str, images_url: str) -> str:
    """``images_url`` followed by ``path`` relative to ``root``; ``path`` itself without a prefix.

    The prefix is used as given when it ends with ``/`` or ``=`` (``/data/local-files/?d=``), else a
    ``/`` joins the two. A path outside ``root`` is returned unchanged.
    """
    rel = _relative(path, root) if images_url else None
    if rel is None:
        return path
    return images_url + rel if images_url.endswith(("/", "=")) else f"{images_url}/{rel}"


def label_studio_task(
    row: dict[str, Any], boxes: list[dict[str, Any]], category: str, image: str, model_version: str
) -> dict[str, Any]:
    """One Label Studio task with one prediction: a ``rectanglelabels`` region per box of ``boxes``.

    ``value`` holds the box's top-left corner and size in percent of the image (the COCO box of the
    row divided by the image's width or height, times 100), ``rotation`` 0; each region and the
    prediction carry their scores when the table has them.
    """
    width, height = int(row[schema.WIDTH]), int(row[schema.HEIGHT])
    result = []
    for box in boxes:
        x, y, w, h = pixel_box(row, box)
        region: dict[str, Any] = {
            "type": "rectanglelabels",
            "from_name": "label",
            "to_name": "image",
            "original_width": width,
            "original_height": height,
            "image_rotation": 0,
            "value": {
                "x": round(100.0 * x / width, 6),
                "y": round(100.0 * y / height, 6),
                "width": round(100.0 * w / width, 6),
                "height": round(100.0 * h / height, 6),
                "rotation": 0,
                "rectanglelabels": [category],
            },
        }
        score = _score(box[schema.SCORE_FIELD])
        if score is not None:
            region["score"] = round(score, 6)
        result.append(region)
    prediction: dict[str, Any] = {"model_version": model_version}
    score = _score(row[schema.SCORE])
    if score is not None:
        prediction["score"] = round(score, 6)
    prediction["result"] = result
    return {"data": {"image": image}, "predictions": [prediction]}


def export_label_studio(
    predictions: str,
    out: str,
    category: str,
    images_root: str | None = None,
    min_score: float | None = None,
    top_k: int = 0,
    images_url: str = "",
) -> ExportSummary:
    """Write Label Studio pre-annotations: one JSON file, a list of tasks with predictions (local or S3).

    One task per exported image (:func:`label_studio_task`), its ``model_version`` the row's model id
    (the manifest's when the row has none). Import it into a project whose labeling config has
    ``<Image name="image" value="$image"/>`` and ``<RectangleLabels name="label" toName="image">``
    with a ``<Label value="{category}"/>``.

    Args:
        predictions: predictions folder.
        out: the JSON file to write.
        category: the collection's name (each region's label).
        images_root: root the image paths are relative to with ``images_url``; None = the manifest's.
        min_score: keep boxes with ``score >= min_score``; None = all.
        top_k: keep the ``top_k`` highest-scored boxes; 0 = all.
        images_url: prefix that replaces ``images_root`` in ``data.image`` (:func:`image_url`);
            ``""`` = the image paths as the table holds them.
    """
    if not category:
        raise ValueError("category (the collection's name) is required")
    manifest = _manifest(predictions)
    root = str(manifest.get("images") or "") if images_root is None else images_root
    if images_url and not root:
        raise ValueError("images_url needs images_root (the table's manifest records none)")
    default_model = str(manifest.get("model_id") or "")
    selection = select_rows(predictions, min_score, top_k)
    images, boxes = 0, 0
    with storage.atomic_write(out, "w") as fh:
        fh.write("[")
        for _, row, kept in _kept_rows(predictions, selection):
            image = image_url(row[schema.PATH], root, images_url)
            task = label_studio_task(row, kept, category, image, row[schema.MODEL] or default_model)
            fh.write(("\n" if images == 0 else ",\n") + json.dumps(task))
            images += 1
            boxes += len(kept)
        fh.write("\n]\n")
    _log_filters(selection, min_score, top_k)
    log.info(
        "export: Label Studio %s: %d tasks, %d regions, %d error rows skipped",
        out,
        images,
        boxes,
        selection.errors,
    )
    return _summary(out, images, boxes, selection)


_WRITERS: dict[str, Callable[..., ExportSummary]] = {
    "coco": export_coco,
    "coco_results": export_coco_results,
    "yolo": export_yolo,
    "voc": export_voc,
    "label_studio": export_label_studio,
}


def run_export(cfg: ExportJobConfig) -> ExportSummary:
    """Export in ``cfg.to``, keeping the boxes that pass ``min_score`` and ``top_k``.

    ``coco`` (a dataset JSON file), ``coco_results`` (a results JSON file), ``yolo`` (an Ultralytics
    dataset folder), ``voc`` (a folder) or ``label_studio`` (a JSON file of tasks).

    Args:
        cfg: the export job (:class:`pipelines.config.ExportJobConfig`): ``predictions`` folder;
            ``out`` the file or folder to write (local or ``s3://``); ``category`` the collection's
            name (the one class; unused by ``coco_results``); ``to`` one of :data:`FORMATS`;
            ``images_root`` the root the exported image paths are relative to (``""`` = the
            manifest's ``images``); ``min_score`` keeps boxes with ``score >= min_score`` (None =
            all); ``top_k`` keeps the ``top_k`` highest-scored boxes (0 = all); ``val_fraction``
            (``yolo`` only) the fraction of images in ``val.txt`` (0 = none); ``images_url``
            (``label_studio`` only) the URL prefix replacing ``images_root`` in ``data.image``.
    """
    predictions, out, category, fmt = cfg.predictions, cfg.out, cfg.category, cfg.to
    images_root = cfg.images_root or None
    min_score, top_k, val_fraction, images_url = cfg.min_score, cfg.top_k, cfg.val_fraction, cfg.images_url
    if fmt not in _WRITERS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if val_fraction and fmt != "yolo":
        raise ValueError(f"val_fraction applies to the yolo format, not {fmt}")
    if images_url and fmt != "label_studio":
        raise ValueError(f"images_url applies to the label_studio format, not {fmt}")
    options: dict[str, Any] = {}
    if fmt == "yolo":
        options["val_fraction"] = val_fraction
    if fmt == "label_studio":
        options["images_url"] = images_url
    return _WRITERS[fmt](predictions, out, category, images_root, min_score, top_k, **options)
