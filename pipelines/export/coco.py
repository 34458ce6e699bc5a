"""COCO: a detection *dataset* JSON file and a *results* JSON file of the same table.

:func:`export_coco` writes the dataset, :func:`export_coco_results` the detections; their image ids
and boxes agree, so ``COCO(dataset_file).loadRes(results_file)`` loads the pair.

``bbox = [x0, y0, w, h]`` with ``w = x1 - x0 + 1`` and ``h = y1 - y0 + 1`` (``area = w·h``), clipped to
the image, rounded to 2 decimals; the image id is the row's 1-based position among the table's
non-error rows (package docstring).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pipelines import schema, storage
from pipelines.export.common import (
    ExportSummary,
    export_summary,
    images_root_of,
    kept_rows,
    log_filters,
    pixel_box,
    relative_path_under,
    select_rows,
)

log = logging.getLogger("pipelines.export")  # every part logs as the export stage


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
        for image_id, row, _ in kept_rows(predictions, selection):
            images += 1
            name = relative_path_under(row[schema.PATH], root) or row[schema.PATH]
            entry = {
                "id": image_id,
                "file_name": name,
                "width": row[schema.WIDTH],
                "height": row[schema.HEIGHT],
            }
            fh.write(("" if images == 1 else ", ") + json.dumps(entry))
        fh.write('], "annotations": [')
        for image_id, row, kept in kept_rows(predictions, selection):
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
    log_filters(selection, min_score, top_k)
    log.info(
        "export: COCO %s: %d images, %d boxes, %d error rows skipped", out, images, boxes, selection.errors
    )
    return export_summary(out, images, boxes, selection)


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
        for image_id, row, kept in kept_rows(predictions, selection):
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
    log_filters(selection, min_score, top_k)
    log.info("export: COCO results %s: %d detections, %d error rows skipped", out, boxes, selection.errors)
    return export_summary(out, images, boxes, selection)
