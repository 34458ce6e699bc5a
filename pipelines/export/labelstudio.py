"""Label Studio pre-annotations: one JSON file of tasks with predictions.

A box is a region ``value`` ``{"x", "y", "width", "height"}``: the COCO ``[x0, y0, w, h]`` in percent
of the image's width (``x``, ``width``) and height (``y``, ``height``), the top-left corner and the
size, as Label Studio's ``rectanglelabels`` expect (``original_width``/``original_height`` carry W and
H).

The file is a list of tasks ``{"data": {"image": ...},
"predictions": [{"model_version", "score", "result": [...]}]}``, one ``rectanglelabels`` region per box
(``from_name`` ``label``, ``to_name`` ``image``, with its own ``score``); the task's ``score`` is the
image's. ``data.image`` is the image's path, or with ``images_url`` that prefix followed by the path
relative to ``images_root`` (e.g. ``/data/local-files/?d=photos/`` for Label Studio's local files, or an
``https://`` / ``s3://`` prefix of the same folder).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from coloc_core.errors import InvalidInputError
from pipelines import schema, storage
from pipelines.export.common import (
    ExportSummary,
    export_summary,
    kept_rows,
    log_filters,
    optional_score,
    pixel_box,
    predictions_manifest,
    relative_path_under,
    select_rows,
)

log = logging.getLogger("pipelines.export")  # every part logs as the export stage


def image_url(path: str, root: str, images_url: str) -> str:
    """``images_url`` followed by ``path`` relative to ``root``; ``path`` itself without a prefix.

    The prefix is used as given when it ends with ``/`` or ``=`` (``/data/local-files/?d=``), else a
    ``/`` joins the two. A path outside ``root`` is returned unchanged.
    """
    rel = relative_path_under(path, root) if images_url else None
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
        score = optional_score(box[schema.SCORE_FIELD])
        if score is not None:
            region["score"] = round(score, 6)
        result.append(region)
    prediction: dict[str, Any] = {"model_version": model_version}
    score = optional_score(row[schema.SCORE])
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
    manifest = predictions_manifest(predictions)
    root = str(manifest.get("images") or "") if images_root is None else images_root
    if images_url and not root:
        raise InvalidInputError("--images_url needs --images_root (the table's manifest records none)")
    default_model = str(manifest.get("model_id") or "")
    selection = select_rows(predictions, min_score, top_k)
    images, boxes = 0, 0
    with storage.atomic_write(out, "w") as fh:
        fh.write("[")
        for _, row, kept in kept_rows(predictions, selection):
            image = image_url(row[schema.PATH], root, images_url)
            task = label_studio_task(row, kept, category, image, row[schema.MODEL] or default_model)
            fh.write(("\n" if images == 0 else ",\n") + json.dumps(task))
            images += 1
            boxes += len(kept)
        fh.write("\n]\n")
    log_filters(selection, min_score, top_k)
    log.info(
        "export: Label Studio %s: %d tasks, %d regions, %d error rows skipped",
        out,
        images,
        boxes,
        selection.errors,
    )
    return export_summary(out, images, boxes, selection)
