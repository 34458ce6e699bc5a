"""What every export format shares: the rows and boxes to write, image paths, the summary.

- :func:`select_rows`: the ``min_score`` / ``top_k`` filters (one pass over the score columns) →
  :class:`Selection` (:func:`top_k_of_fraction` turns ``top_fraction`` into a ``top_k``);
  :func:`kept_rows` streams the selected rows with their COCO image ids.
- :func:`row_boxes` / :func:`pixel_box`: a row's boxes and their clipped ``(x, y, w, h)`` in pixels.
- :func:`images_root_of`, :func:`relative_path_under`, :func:`image_file_name`, :func:`label_file_name`: paths
  relative to ``images_root`` (the manifest's ``images`` by default).
- :func:`export_per_image`: one file per selected image (YOLO labels, VOC XML), threaded on S3.
- :class:`ExportSummary`: what an export wrote, and :func:`log_filters`.
"""

from __future__ import annotations

import heapq
import logging
import math
import posixpath
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from coloc_core.errors import InvalidInputError
from pipelines import schema, storage
from pipelines.predictions import PredictionsFolder, iter_predictions

log = logging.getLogger("pipelines.export")  # every part logs as the export stage


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
_SCORE_COLUMNS = [*schema.BOX_COLUMNS, schema.SCORE, schema.ERROR, schema.BOXES]  # what the filters read
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


def predictions_manifest(predictions: str) -> dict[str, Any]:
    """The predictions folder's ``_manifest.json`` (``{}`` for a folder without one)."""
    folder = PredictionsFolder(predictions)
    return folder.read_manifest() if folder.has_manifest() else {}


def images_root_of(predictions: str) -> str:
    """The ``images`` root recorded in a predictions folder's manifest (``""`` when there is none)."""
    return str(predictions_manifest(predictions).get("images") or "")


def relative_path_under(path: str, root: str) -> str | None:
    """``path`` relative to ``root``; None when ``root`` is empty or ``path`` is not below it."""
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


def optional_score(value: Any) -> float | None:
    """A stored score as a float; None for a missing or NaN one."""
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
    for table in iter_predictions(predictions, columns=_SCORE_COLUMNS):
        for row in table.to_pylist():
            pos, position = position, position + 1
            if row[schema.ERROR] is not None:
                errors += 1
                continue
            for index, box in enumerate(row_boxes(row)):
                score = optional_score(box[schema.SCORE_FIELD])
                if not passes_min_score(score, min_score):
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


def passes_min_score(score: float | None, min_score: float | None) -> bool:
    """Whether a box with this score passes ``min_score`` (None = no filter; no score fails any bound)."""
    return min_score is None or (score is not None and score >= min_score)


def count_of_fraction(fraction: float, count: int) -> int:
    """How many of ``count`` items a share keeps: ⌈fraction × count⌉ (``--top_fraction``'s rule).

    Raises:
        ValueError: ``fraction`` outside (0, 1].
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction}: a share must be in (0, 1]")
    return math.ceil(fraction * count - 1e-9)


def top_k_of_fraction(predictions: str, fraction: float, min_score: float | None = None) -> int:
    """The ``top_k`` that keeps ``fraction`` of the boxes passing ``min_score``: ⌈fraction × count⌉.

    One pass over the score columns (the boxes of non-error rows; a box without a score fails any
    ``min_score``, as in :func:`select_rows`). 0 when no box passes.

    Raises:
        ValueError: ``fraction`` outside (0, 1], or a ``min_score`` that is not finite.
    """
    count_of_fraction(fraction, 0)  # checks the share before the pass
    if min_score is not None and not math.isfinite(min_score):
        raise ValueError(f"min_score={min_score} is not a finite number")
    count = 0
    for table in iter_predictions(predictions, columns=_SCORE_COLUMNS):
        for row in table.to_pylist():
            if row[schema.ERROR] is not None:
                continue
            count += sum(
                passes_min_score(optional_score(b[schema.SCORE_FIELD]), min_score) for b in row_boxes(row)
            )
    return count_of_fraction(fraction, count)


def kept_rows(
    predictions: str, selection: Selection
) -> Iterator[tuple[int, dict[str, Any], list[dict[str, Any]]]]:
    """``(image id, row, its boxes to write)`` of the selected rows.

    The id is the row's 1-based position among non-error rows. The row's ``height`` is the image
    file's: a folder labelled with rows cut off the images' bottom (the manifest's ``crop_bottom``)
    stores the height above the cut, and the cut is added back (the boxes lie above it).
    """
    crop_bottom = int(predictions_manifest(predictions).get("crop_bottom") or 0)
    position, image_id = 0, 0
    for table in iter_predictions(predictions, columns=_COLUMNS):
        for row in table.to_pylist():
            pos, position = position, position + 1
            if row[schema.ERROR] is not None:
                continue
            image_id += 1
            row[schema.HEIGHT] += crop_bottom
            if selection.keep is None:
                yield image_id, row, row_boxes(row)
            elif pos in selection.keep:
                boxes = row_boxes(row)
                yield image_id, row, [boxes[i] for i in selection.keep[pos]]


def log_filters(selection: Selection, min_score: float | None, top_k: int) -> None:
    """Log how many boxes ``--min_score`` and ``--top_k`` dropped (each only when given)."""
    if min_score is not None:
        log.info("export: --min_score=%g dropped %d boxes", min_score, selection.dropped_min_score)
    if top_k:
        log.info("export: --top_k=%d dropped %d boxes", top_k, selection.dropped_top_k)


def export_summary(out: str, images: int, boxes: int, selection: Selection) -> ExportSummary:
    """What an export wrote: its counts and the selection's dropped and skipped rows."""
    return ExportSummary(
        out=out,
        images=images,
        boxes=boxes,
        skipped_errors=selection.errors,
        dropped_min_score=selection.dropped_min_score,
        dropped_top_k=selection.dropped_top_k,
    )


def image_file_name(path: str, root: str) -> str:
    """The image's path relative to ``root``, or its base name when it is not below ``root``."""
    return relative_path_under(path, root) or posixpath.basename(storage.strip_scheme(path))


def label_file_name(path: str, root: str, ext: str = ".txt") -> str:
    """The per-image file of an image (:func:`image_file_name` with its extension replaced by ``ext``)."""
    return posixpath.splitext(image_file_name(path, root))[0] + ext


def export_per_image(
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
        for _, row, kept in kept_rows(predictions, selection):
            name = name_of(row)
            if name in names:
                raise InvalidInputError(f"two images map to the label file {name}; pass --images_root")
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
