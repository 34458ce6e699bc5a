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

The package (``from pipelines.export import X``; :func:`run_export` is the ``coloc export`` job):

- :mod:`pipelines.export.common`: row selection (the filters), image paths, the per-image writer,
  :class:`ExportSummary`;
- :mod:`pipelines.export.coco`: :func:`export_coco` (dataset) and :func:`export_coco_results`;
- :mod:`pipelines.export.yolo`: :func:`export_yolo` (the dataset layout is in its docstring);
- :mod:`pipelines.export.voc`: :func:`export_voc`;
- :mod:`pipelines.export.labelstudio`: :func:`export_label_studio`.

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
box's order in its row); ``top_fraction`` F sets ``k`` to ⌈F × the boxes that passed ``min_score``⌉
(one more pass over the score columns), a share that carries over between collections whose scores
have different scales. An image none of whose boxes is kept is left out like an error row: no image
entry, annotation, detection, label file or task. The counts each filter dropped (boxes) are logged and
returned.

Every writer streams the table one part file at a time (a filter adds one pass over the ``score`` and
``error`` columns; ``top_k`` holds ``k`` row positions); the JSON files and the YOLO list files are
each written in one atomic write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pipelines.config import ExportJobConfig
from pipelines.export.coco import export_coco, export_coco_results
from pipelines.export.common import (
    ExportSummary,
    Selection,
    images_root_of,
    pixel_box,
    row_boxes,
    select_rows,
    top_k_of_fraction,
)
from pipelines.export.labelstudio import export_label_studio, image_url, label_studio_task
from pipelines.export.voc import export_voc, voc_xml
from pipelines.export.yolo import (
    export_yolo,
    ultralytics_label_path,
    yolo_data_yaml,
    yolo_line,
    yolo_split,
)

__all__ = [
    "FORMATS",
    "ExportSummary",
    "Selection",
    "export_coco",
    "export_coco_results",
    "export_label_studio",
    "export_voc",
    "export_yolo",
    "image_url",
    "images_root_of",
    "label_studio_task",
    "pixel_box",
    "row_boxes",
    "run_export",
    "select_rows",
    "top_k_of_fraction",
    "ultralytics_label_path",
    "voc_xml",
    "yolo_data_yaml",
    "yolo_line",
    "yolo_split",
]


log = logging.getLogger("pipelines.export")

FORMATS = ("coco", "coco_results", "yolo", "voc", "label_studio")


_WRITERS: dict[str, Callable[..., ExportSummary]] = {
    "coco": export_coco,
    "coco_results": export_coco_results,
    "yolo": export_yolo,
    "voc": export_voc,
    "label_studio": export_label_studio,
}


def run_export(cfg: ExportJobConfig) -> ExportSummary:
    """Export in ``cfg.to``, keeping the boxes that pass ``min_score`` and ``top_k`` (or ``top_fraction``).

    ``coco`` (a dataset JSON file), ``coco_results`` (a results JSON file), ``yolo`` (an Ultralytics
    dataset folder), ``voc`` (a folder) or ``label_studio`` (a JSON file of tasks).

    Args:
        cfg: the export job (:class:`pipelines.config.ExportJobConfig`): ``predictions`` folder;
            ``out`` the file or folder to write (local or ``s3://``); ``category`` the collection's
            name (the one class; unused by ``coco_results``); ``to`` one of :data:`FORMATS`;
            ``images_root`` the root the exported image paths are relative to (``""`` = the
            manifest's ``images``); ``min_score`` keeps boxes with ``score >= min_score`` (None =
            all); ``top_k`` keeps the ``top_k`` highest-scored boxes (0 = all); ``top_fraction``
            instead keeps that share of the boxes that passed ``min_score``
            (:func:`~pipelines.export.common.top_k_of_fraction`; 0 = off); ``val_fraction``
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
    if cfg.top_fraction:
        if top_k:
            raise ValueError("top_k and top_fraction each pick the best boxes: give one of them")
        # k >= 1 whenever a box passed min_score; k = 0 only when none did, so nothing is kept either way
        top_k = top_k_of_fraction(predictions, cfg.top_fraction, min_score)
        log.info(
            "export: --top_fraction=%g keeps the best %d boxes, as --top_k=%d", cfg.top_fraction, top_k, top_k
        )
    options: dict[str, Any] = {}
    if fmt == "yolo":
        options["val_fraction"] = val_fraction
    if fmt == "label_studio":
        options["images_url"] = images_url
    return _WRITERS[fmt](predictions, out, category, images_root, min_score, top_k, **options)
