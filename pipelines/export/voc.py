"""Pascal VOC: one XML annotation file per image (``<out>/<relative path>.xml``).

``xmin ymin xmax ymax``: whole pixels, 1-based and inclusive (the VOC devkit's convention):
``xmin = round(x0) + 1``, ``xmax = round(x1) + 1`` (halves up), clipped to ``1..W`` (likewise y).
"""

from __future__ import annotations

import logging
import math
import posixpath
from typing import Any
from xml.etree import ElementTree as ET

from pipelines import schema, storage
from pipelines.export.common import (
    ExportSummary,
    export_per_image,
    export_summary,
    images_root_of,
    label_file_name,
    log_filters,
    pixel_box,
    relative_path_under,
    select_rows,
)

log = logging.getLogger("pipelines.export")  # every part logs as the export stage


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
    rel = relative_path_under(path, root) or posixpath.basename(storage.strip_scheme(path))
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
    images, boxes = export_per_image(
        predictions,
        out,
        selection,
        lambda row: label_file_name(row[schema.PATH], root, ".xml"),
        lambda row, kept: voc_xml(row, category, root, kept),
    )
    log_filters(selection, min_score, top_k)
    log.info(
        "export: VOC %s: %d XML files, %d boxes, %d error rows skipped", out, images, boxes, selection.errors
    )
    return export_summary(out, images, boxes, selection)
