"""Predictions table → COCO dataset JSON, COCO results JSON, YOLO label files, Pascal VOC XML.

Box convention: the table's boxes are pixel indices, inclusive on both ends (the wsolevaluation
convention of SPEC §6, scaled to the original image). Exported boxes cover those pixels:

- COCO ``bbox = [x0, y0, w, h]`` with ``w = x1 - x0 + 1`` and ``h = y1 - y0 + 1`` (``area = w·h``),
  clipped to the image; the same in the dataset file and the results file.
- YOLO ``0 cx cy w h`` with ``cx = (x0 + w/2) / W``, ``cy = (y0 + h/2) / H``, ``w/W``, ``h/H`` (same w, h).
- VOC ``xmin ymin xmax ymax``: whole pixels, 1-based and inclusive (the VOC devkit's convention):
  ``xmin = round(x0) + 1``, ``xmax = round(x1) + 1`` (halves up), clipped to ``1..W`` (likewise y).

**Several boxes per image**: a table labelled with ``boxes=all`` holds every box of an image in its
``boxes`` column; every format then writes all of them (one COCO annotation or detection, one YOLO
line, one VOC ``<object>`` per box), each with its own score. Otherwise (``boxes`` null) the single box.

Error rows are skipped entirely (no image entry, no label file); they are counted in the returned
summary. ``file_name`` (COCO) and the label file names (YOLO, VOC) are paths relative to
``images_root`` (by default the ``images`` root recorded in the table's manifest), so they line up
with the image folder; a path outside that root keeps its full form (COCO) or its base name (YOLO, VOC).

COCO image ids are the row's 1-based position among the table's non-error rows (table order), in every
export of the same table whatever its filters, so a results file loads
(``COCO(dataset_file).loadRes(results_file)``) against the dataset file of the same table, unfiltered or
filtered no more strictly than the results.

Filters (every format, the same way) act on boxes, which in a one-box table are the rows:
``min_score`` keeps the boxes whose score is at least it (a box without a score is dropped); then
``top_k`` keeps the ``k`` highest-scored of those over the whole table (ties: table order, then the
box's order in its row). An image none of whose boxes is kept is left out like an error row: no image
entry, annotation, detection or label file. The counts each filter dropped (boxes) are logged and
returned.

Every writer streams the table one part file at a time (a filter adds one pass over the ``score`` and
``error`` columns; ``top_k`` holds ``k`` row positions); the COCO files are written in one atomic write.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import posixpath
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any
from xml.etree import ElementTree as ET

from pipelines import schema, storage
from pipelines.label import MANIFEST, iter_predictions

log = logging.getLogger(__name__)

FORMATS = ("coco", "coco_results", "yolo", "voc")
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
        out: the file (COCO) or folder (YOLO, VOC) written.
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


def images_root_of(predictions: str) -> str:
    """The ``images`` root recorded in a predictions folder's manifest (``""`` when there is none)."""
    uri = storage.join(predictions, MANIFEST)
    if not storage.exists(uri):
        return ""
    return str(json.loads(storage.read_text(uri)).get("images", ""))


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


def _label_name(path: str, root: str, ext: str = ".txt") -> str:
    rel = _relative(path, root) or posixpath.basename(storage.strip_scheme(path))
    return posixpath.splitext(rel)[0] + ext


def _export_per_image(
    predictions: str,
    out: str,
    root: str,
    selection: Selection,
    ext: str,
    render: Callable[[dict[str, Any], list[dict[str, Any]]], str],
) -> tuple[int, int]:
    """Write ``render(row, boxes)`` to ``<out>/<relative path><ext>`` for every selected row.

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
            name = _label_name(row[schema.PATH], root, ext)
            if name in names:
                raise ValueError(f"two images map to the label file {name}; pass images_root")
            names.add(name)
            boxes += len(kept)
            batch.append((name, render(row, kept)))
            if len(batch) >= 1000:
                list(pool.map(write, batch))
                images, batch = images + len(batch), []
        list(pool.map(write, batch))
        images += len(batch)
    return images, boxes


def export_yolo(
    predictions: str,
    out: str,
    category: str,
    images_root: str | None = None,
    min_score: float | None = None,
    top_k: int = 0,
) -> ExportSummary:
    """Write one YOLO label file per image (``<out>/<relative path>.txt``) and ``<out>/classes.txt``.

    One line per box. An image whose row is an error or filtered out gets no label file.

    Args:
        predictions: predictions folder.
        out: output folder (local or ``s3://``).
        category: the collection's name (class 0).
        images_root: root the label paths are relative to; None = the manifest's ``images``.
        min_score: keep rows with ``score >= min_score``; None = all.
        top_k: keep the ``top_k`` highest-scored rows; 0 = all.
    """
    if not category:
        raise ValueError("category (the collection's name) is required")
    root = images_root_of(predictions) if images_root is None else images_root
    selection = select_rows(predictions, min_score, top_k)
    images, boxes = _export_per_image(
        predictions,
        out,
        root,
        selection,
        ".txt",
        lambda row, kept: "\n".join(yolo_line(row, b) for b in kept),
    )
    storage.write_text_atomic(storage.join(out, "classes.txt"), category + "\n")
    _log_filters(selection, min_score, top_k)
    log.info(
        "export: YOLO %s: %d label files, %d boxes, %d error rows skipped",
        out,
        images,
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
        min_score: keep rows with ``score >= min_score``; None = all.
        top_k: keep the ``top_k`` highest-scored rows; 0 = all.
    """
    if not category:
        raise ValueError("category (the collection's name) is required")
    root = images_root_of(predictions) if images_root is None else images_root
    selection = select_rows(predictions, min_score, top_k)
    images, boxes = _export_per_image(
        predictions, out, root, selection, ".xml", lambda row, kept: voc_xml(row, category, root, kept)
    )
    _log_filters(selection, min_score, top_k)
    log.info(
        "export: VOC %s: %d XML files, %d boxes, %d error rows skipped", out, images, boxes, selection.errors
    )
    return _summary(out, images, boxes, selection)


_WRITERS = {"coco": export_coco, "coco_results": export_coco_results, "yolo": export_yolo, "voc": export_voc}


def run_export(
    predictions: str,
    out: str,
    category: str,
    fmt: str = "coco",
    images_root: str | None = None,
    min_score: float | None = None,
    top_k: int = 0,
) -> ExportSummary:
    """Export in ``fmt``, keeping the rows that pass ``min_score`` and ``top_k``.

    ``coco`` (a dataset JSON file), ``coco_results`` (a results JSON file), ``yolo`` or ``voc`` (a folder).
    """
    if fmt not in _WRITERS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return _WRITERS[fmt](predictions, out, category, images_root, min_score, top_k)
