"""Predictions table → COCO JSON and YOLO label files.

Box convention: the table's boxes are pixel indices, inclusive on both ends (the wsolevaluation
convention of SPEC §6, scaled to the original image). Exported boxes cover those pixels:

- COCO ``bbox = [x0, y0, w, h]`` with ``w = x1 - x0 + 1`` and ``h = y1 - y0 + 1`` (``area = w·h``),
  clipped to the image.
- YOLO ``0 cx cy w h`` with ``cx = (x0 + w/2) / W``, ``cy = (y0 + h/2) / H``, ``w/W``, ``h/H`` (same w, h).

Error rows are skipped entirely (no image entry, no label file); they are counted in the returned
summary. ``file_name`` (COCO) and the label file names (YOLO) are paths relative to ``images_root``
(by default the ``images`` root recorded in the table's manifest), so they line up with the image
folder; a path outside that root keeps its full form (COCO) or its base name (YOLO).

Both writers stream the table one part file at a time; the COCO JSON is written in one atomic write.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from pipelines import schema, storage
from pipelines.label import MANIFEST, iter_predictions

log = logging.getLogger(__name__)

_COLUMNS = [
    schema.PATH,
    schema.WIDTH,
    schema.HEIGHT,
    *schema.BOX_COLUMNS,
    schema.SCORE,
    schema.MODEL,
    schema.ERROR,
]
_S3_WRITE_THREADS = 16


@dataclass
class ExportSummary:
    """What an export wrote.

    Attributes:
        out: the file (COCO) or folder (YOLO) written.
        images: images exported.
        boxes: boxes exported.
        skipped_errors: error rows skipped.
    """

    out: str
    images: int
    boxes: int
    skipped_errors: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


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


def pixel_box(row: dict[str, Any]) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` of a row's inclusive pixel box, clipped to the image."""
    width, height = float(row[schema.WIDTH]), float(row[schema.HEIGHT])
    x0 = min(max(float(row[schema.X0]), 0.0), width - 1)
    y0 = min(max(float(row[schema.Y0]), 0.0), height - 1)
    x1 = min(max(float(row[schema.X1]), x0), width - 1)
    y1 = min(max(float(row[schema.Y1]), y0), height - 1)
    return x0, y0, x1 - x0 + 1.0, y1 - y0 + 1.0


def _rows(predictions: str) -> Iterator[dict[str, Any]]:
    for table in iter_predictions(predictions, columns=_COLUMNS):
        yield from table.to_pylist()


def export_coco(predictions: str, out: str, category: str, images_root: str | None = None) -> ExportSummary:
    """Write the predictions as one COCO detection JSON file (local or ``s3://``).

    ``images``: ``id`` (1-based, table order), ``file_name``, ``width``, ``height``; ``annotations``:
    one per image, ``bbox`` ``[x, y, w, h]``, ``area``, ``score``, ``category_id`` 1, ``iscrowd`` 0;
    ``categories``: ``[{"id": 1, "name": category}]``.

    Args:
        predictions: predictions folder.
        out: the JSON file to write.
        category: the collection's name (the one category).
        images_root: root that ``file_name`` is relative to; None = the manifest's ``images``.
    """
    if not category:
        raise ValueError("category (the collection's name) is required")
    root = images_root_of(predictions) if images_root is None else images_root
    images, boxes, skipped = 0, 0, 0
    models: set[str] = set()
    with storage.atomic_write(out, "w") as fh:
        fh.write('{"info": ')
        info = {"description": f"coloc pseudo-labels of {category}", "predictions": predictions}
        fh.write(json.dumps(info))
        fh.write(', "licenses": [], "categories": ')
        fh.write(json.dumps([{"id": 1, "name": category, "supercategory": category}]))
        # Two streamed passes (images, then annotations) keep memory bounded by one part file.
        fh.write(', "images": [')
        for row in _rows(predictions):
            if row[schema.ERROR] is not None:
                skipped += 1
                continue
            images += 1
            name = _relative(row[schema.PATH], root) or row[schema.PATH]
            entry = {
                "id": images,
                "file_name": name,
                "width": row[schema.WIDTH],
                "height": row[schema.HEIGHT],
            }
            fh.write(("" if images == 1 else ", ") + json.dumps(entry))
        fh.write('], "annotations": [')
        image_id = 0
        for row in _rows(predictions):
            if row[schema.ERROR] is not None:
                continue
            image_id += 1
            x, y, w, h = pixel_box(row)
            boxes += 1
            models.add(row[schema.MODEL])
            ann = {
                "id": boxes,
                "image_id": image_id,
                "category_id": 1,
                "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                "area": round(w * h, 2),
                "score": round(float(row[schema.SCORE]), 6),
                "iscrowd": 0,
            }
            fh.write(("" if boxes == 1 else ", ") + json.dumps(ann))
        fh.write("]}\n")
    if len(models) > 1:
        log.warning("export: the table mixes models %s", sorted(models))
    log.info("export: COCO %s: %d images, %d boxes, %d error rows skipped", out, images, boxes, skipped)
    return ExportSummary(out=out, images=images, boxes=boxes, skipped_errors=skipped)


def yolo_line(row: dict[str, Any]) -> str:
    """``0 cx cy w h`` (normalised, 6 decimals) of a row's box."""
    x, y, w, h = pixel_box(row)
    width, height = float(row[schema.WIDTH]), float(row[schema.HEIGHT])
    return f"0 {(x + w / 2) / width:.6f} {(y + h / 2) / height:.6f} {w / width:.6f} {h / height:.6f}"


def _label_name(path: str, root: str) -> str:
    rel = _relative(path, root) or posixpath.basename(storage.strip_scheme(path))
    return posixpath.splitext(rel)[0] + ".txt"


def export_yolo(predictions: str, out: str, category: str, images_root: str | None = None) -> ExportSummary:
    """Write one YOLO label file per image (``<out>/<relative path>.txt``) and ``<out>/classes.txt``.

    Args:
        predictions: predictions folder.
        out: output folder (local or ``s3://``).
        category: the collection's name (class 0).
        images_root: root the label paths are relative to; None = the manifest's ``images``.
    """
    if not category:
        raise ValueError("category (the collection's name) is required")
    root = images_root_of(predictions) if images_root is None else images_root
    storage.makedirs(out)
    images, skipped = 0, 0
    names: set[str] = set()

    def write(item: tuple[str, str]) -> None:
        storage.write_text_atomic(storage.join(out, item[0]), item[1] + "\n")

    threads = _S3_WRITE_THREADS if storage.is_s3(out) else 1
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for table in iter_predictions(predictions, columns=_COLUMNS):
            batch = []
            for row in table.to_pylist():
                if row[schema.ERROR] is not None:
                    skipped += 1
                    continue
                name = _label_name(row[schema.PATH], root)
                if name in names:
                    raise ValueError(f"two images map to the label file {name}; pass images_root")
                names.add(name)
                batch.append((name, yolo_line(row)))
            list(pool.map(write, batch))
            images += len(batch)
    storage.write_text_atomic(storage.join(out, "classes.txt"), category + "\n")
    log.info("export: YOLO %s: %d label files, %d error rows skipped", out, images, skipped)
    return ExportSummary(out=out, images=images, boxes=images, skipped_errors=skipped)


def run_export(
    predictions: str, out: str, category: str, fmt: str = "coco", images_root: str | None = None
) -> ExportSummary:
    """Export in ``fmt`` (``coco``: ``out`` is a JSON file; ``yolo``: ``out`` is a folder)."""
    if fmt == "coco":
        return export_coco(predictions, out, category, images_root)
    if fmt == "yolo":
        return export_yolo(predictions, out, category, images_root)
    raise ValueError(f"unknown export format {fmt!r}; expected coco or yolo")
