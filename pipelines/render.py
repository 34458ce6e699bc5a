"""Pictures of a predictions table, for people: the evaluation sheet and one overlay PNG per image.

Both draw the same thing on an image: the stored heatmap (``heatmap`` column, dequantized and upsampled
like evaluation does: ``coloc_core.boxes.scoremap_from_attention``) as a JET colour overlay, the
predicted box(es) in green (every box of a ``boxes=all`` table, each with its score) and, when ground
truth is given, the GT boxes in red.

- :func:`picture_sheet`: a PNG grid for ``coloc evaluate`` (``sheet.png``): a title line (the
  predictions folder, τ, the number of images), a legend (the box colours and the heatmap colour scale),
  then one group of tiles per list of paths (e.g. best and worst by IoU), ``columns`` tiles per line,
  each captioned with the shortened file name, the IoU (with ground truth) and the score.
- :func:`run_render` (``coloc render``): one PNG per selected image (a random sample, or the paths
  listed in a text file), at the image's own size (or scaled down to ``max_side``), written under
  ``out`` at the image's path relative to the labelled images root (the manifest's ``images``), with
  ``.png``. Error rows are skipped and counted. No Ray: a plain loop over the part files.
"""

from __future__ import annotations

import io
import logging
import math
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from coloc_core.boxes import scoremap_from_attention
from coloc_core.heatmap import dequantize_heatmap
from pipelines import console, schema, storage
from pipelines.config import RenderJobConfig
from pipelines.predictions import (
    PredictionsFolder,
    decode_heatmap_row,
    iter_predictions,
    require_part_files,
)

log = logging.getLogger(__name__)

PREDICTED = (20, 220, 20)  # predicted box: green
GROUND_TRUTH = (230, 20, 20)  # ground-truth box: red
HEAT_ALPHA = 0.45  # weight of the heatmap colours over the image
TEXT = (0, 0, 0)
TITLE_H = 22  # sheet: title line height
LEGEND_H = 20  # sheet: legend line height
GROUP_H = 18  # sheet: group label line height
CAPTION_H = 28  # sheet: two caption lines under each tile
GAP = 4  # sheet: space between tiles
MARGIN = 6  # sheet: left/right margin
SWATCH = 14  # legend: colour sample side
GRADIENT_W = 100  # legend: heatmap colour scale width

Box = tuple[float, float, float, float]


# ----------------------------------------------------------------------------------------- pieces


def heat_colours(scoremap: np.ndarray) -> np.ndarray:
    """A score map in [0, 1] (h, w) → its JET colours, (h, w, 3) uint8 RGB (blue = low, red = high)."""
    import cv2  # noqa: PLC0415

    values = (np.clip(scoremap, 0.0, 1.0) * 255).astype(np.uint8)
    return np.ascontiguousarray(cv2.applyColorMap(values, cv2.COLORMAP_JET)[..., ::-1])


def row_boxes(row: Mapping[str, Any]) -> list[tuple[Box, float | None]]:
    """A row's predicted boxes in original pixels with their scores: ``boxes`` when set, else the box."""

    def box(values: Mapping[str, Any]) -> Box:
        x0, y0, x1, y1 = (float(values[c]) for c in schema.BOX_COLUMNS)
        return x0, y0, x1, y1

    entries = row.get(schema.BOXES)
    if entries is not None:
        return [(box(e), e[schema.SCORE_FIELD]) for e in entries]
    if row.get(schema.X0) is None:
        return []
    return [(box(row), row.get(schema.SCORE))]


def short_name(path: str, limit: int = 26) -> str:
    """The file name of ``path``, shortened to ``limit`` characters (``...`` + its end) when longer."""
    name = posixpath.basename(storage.strip_scheme(path).rstrip("/"))
    return name if len(name) <= limit else "..." + name[-(limit - 3) :]


def open_image(path: str) -> Any:
    """The image at ``path`` (local or ``s3://``) as an RGB PIL image, EXIF orientation applied."""
    from PIL import Image, ImageOps  # noqa: PLC0415

    opened = Image.open(io.BytesIO(storage.read_bytes(path)))
    return ImageOps.exif_transpose(opened).convert("RGB")


def overlay(image: Any, row: Mapping[str, Any]) -> Any:
    """``image`` (RGB PIL, any size) with the row's heatmap blended over it (unchanged without one).

    The heatmap covers the part of the image the row's ``width`` × ``height`` describe: all of it, or,
    for a folder labelled with rows cut off the images' bottom (``crop_bottom``), the part above them.
    """
    from PIL import Image  # noqa: PLC0415

    heat = decode_heatmap_row(dict(row))
    if heat is None:
        return image
    width, height = image.size
    covered = height
    if row.get(schema.WIDTH) and row.get(schema.HEIGHT):
        above = round(float(row[schema.HEIGHT]) * width / float(row[schema.WIDTH]))
        covered = height if above >= height - 1 else max(1, above)  # a pixel of rounding: all of it
    colours = heat_colours(scoremap_from_attention(dequantize_heatmap(heat), (covered, width)))
    pixels = np.asarray(image, dtype=np.float32).copy()
    pixels[:covered] = (1 - HEAT_ALPHA) * pixels[:covered] + HEAT_ALPHA * colours
    return Image.fromarray(pixels.astype(np.uint8))


def _font(size: int) -> Any:
    from PIL import ImageFont  # noqa: PLC0415

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1: the bitmap font
        return ImageFont.load_default()


def draw_boxes(
    image: Any,
    row: Mapping[str, Any],
    gt: Sequence[Box] = (),
    scale: float = 1.0,
    width: int = 2,
    labels: bool = False,
    font_size: int = 11,
) -> None:
    """Draw GT boxes (red) and the row's predicted boxes (green) on ``image`` in place.

    Args:
        image: RGB PIL image.
        row: the prediction row (boxes in original pixels).
        gt: GT boxes in original pixels.
        scale: image pixels per original pixel.
        width: line width.
        labels: write each predicted box's score at its top-left corner.
        font_size: size of those labels.
    """
    from PIL import ImageDraw  # noqa: PLC0415

    draw = ImageDraw.Draw(image)
    for box in gt:
        draw.rectangle([v * scale for v in box], outline=GROUND_TRUTH, width=width)
    font = _font(font_size) if labels else None
    for box, score in row_boxes(row):
        x0, y0, x1, y1 = (v * scale for v in box)
        draw.rectangle([x0, y0, x1, y1], outline=PREDICTED, width=width)
        if labels and score is not None:
            text = f"{score:.2f}"
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            ty = y0 - (bottom - top) - 4 if y0 - (bottom - top) - 4 >= 0 else y0 + width
            draw.rectangle([x0, ty, x0 + right - left + 4, ty + bottom - top + 4], fill=PREDICTED)
            draw.text((x0 + 2 - left, ty + 2 - top), text, fill=TEXT, font=font)


def tile(row: Mapping[str, Any], gt: Sequence[Box] = (), side: int = 160) -> Any:
    """A ``side`` × ``side`` tile: the image scaled to fit (top-left), heatmap overlay, boxes.

    An image that cannot be read gives a grey tile saying why.
    """
    from PIL import Image, ImageDraw  # noqa: PLC0415

    try:
        image = open_image(row[schema.PATH])
    except Exception as err:  # noqa: BLE001 - a tile that cannot be drawn says why
        grey = Image.new("RGB", (side, side), (60, 60, 60))
        ImageDraw.Draw(grey).text((4, 4), f"cannot open:\n{type(err).__name__}", fill=(255, 255, 255))
        return grey
    width, height = image.size
    scale = side / max(width, height)
    thumb = image.resize(
        (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR
    )
    out = Image.new("RGB", (side, side), (255, 255, 255))
    out.paste(overlay(thumb, row), (0, 0))
    draw_boxes(out, row, gt, scale=scale)
    return out


def legend(width: int) -> Any:
    """The legend line, ``width`` × :data:`LEGEND_H`.

    Green = predicted box, red = ground truth, and the heatmap colour scale (JET, low → high).
    """
    from PIL import Image, ImageDraw  # noqa: PLC0415

    strip = Image.new("RGB", (width, LEGEND_H), "white")
    draw = ImageDraw.Draw(strip)
    top = (LEGEND_H - SWATCH) // 2
    x = MARGIN
    for colour, text in ((PREDICTED, "predicted box"), (GROUND_TRUTH, "ground truth")):
        draw.rectangle([x, top, x + SWATCH - 1, top + SWATCH - 1], fill=colour)
        x += SWATCH + 4
        draw.text((x, top), text, fill=TEXT)
        x += int(draw.textlength(text)) + 14
    draw.text((x, top), "heatmap: low", fill=TEXT)
    x += int(draw.textlength("heatmap: low")) + 4
    ramp = heat_colours(np.tile(np.linspace(0.0, 1.0, GRADIENT_W), (SWATCH, 1)))
    strip.paste(Image.fromarray(ramp), (x, top))
    draw.text((x + GRADIENT_W + 4, top), "high", fill=TEXT)
    return strip


def sheet_title(predictions: str, tau: float | None, num_images: int, by: str = "") -> str:
    """The sheet's title line: what was evaluated."""
    text = f"{predictions} · {num_images} images"
    if tau is not None:
        text += f" · tau={tau:.2f}"
    return text + (f" · ranked by {by}" if by else "")


def caption(path: str, iou: float | None, score: float | None) -> tuple[str, str]:
    """The two caption lines of a tile: the shortened file name; IoU (when known) and score."""
    parts = []
    if iou is not None and not math.isnan(iou):
        parts.append(f"IoU {iou:.2f}")
    parts.append(f"score {score:.2f}" if score is not None else "error")
    return short_name(path), " · ".join(parts)


def _rows_by_path(uris: Sequence[str], wanted: set[str]) -> dict[str, dict[str, Any]]:
    import pyarrow.parquet as pq  # noqa: PLC0415

    found: dict[str, dict[str, Any]] = {}
    for uri in uris:
        table = pq.read_table(io.BytesIO(storage.read_bytes(uri)))
        for row in table.to_pylist():
            if row[schema.PATH] in wanted:
                found[row[schema.PATH]] = row
        if len(found) == len(wanted):
            break
    return found


def sheet_image(
    rows: Mapping[str, Mapping[str, Any]],
    groups: Sequence[Sequence[str]],
    titles: Sequence[str],
    title: str = "",
    gt: Mapping[str, Sequence[Box]] | None = None,
    ious: Mapping[str, float] | None = None,
    side: int = 160,
    columns: int = 8,
) -> Any:
    """The sheet as a PIL image (see :func:`picture_sheet`); ``rows`` maps each path to its row."""
    from PIL import Image, ImageDraw  # noqa: PLC0415

    columns = max(1, int(columns))
    width = max(2 * MARGIN + columns * (side + GAP), 560)
    lines = [max(1, math.ceil(len(paths) / columns)) for paths in groups]
    height = TITLE_H + LEGEND_H + sum(GROUP_H + n * (side + CAPTION_H + GAP) for n in lines) + MARGIN
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((MARGIN, 4), title, fill=TEXT, font=_font(13))
    sheet.paste(legend(width), (0, TITLE_H))
    y = TITLE_H + LEGEND_H
    for g, paths in enumerate(groups):
        draw.text((MARGIN, y + 3), titles[g] if g < len(titles) else "", fill=TEXT, font=_font(12))
        y += GROUP_H
        for i, path in enumerate(paths):
            row = rows.get(path)
            x = MARGIN + (i % columns) * (side + GAP)
            ty = y + (i // columns) * (side + CAPTION_H + GAP)
            if row is None:
                continue
            sheet.paste(tile(row, (gt or {}).get(path, ()), side), (x, ty))
            name, numbers = caption(path, (ious or {}).get(path), row.get(schema.SCORE))
            draw.text((x, ty + side + 1), name, fill=TEXT)
            draw.text((x, ty + side + 14), numbers, fill=TEXT)
        y += lines[g] * (side + CAPTION_H + GAP)
    return sheet


def picture_sheet(
    uris: Sequence[str],
    groups: Sequence[Sequence[str]],
    titles: Sequence[str] = ("best", "worst"),
    title: str = "",
    gt: Mapping[str, Sequence[Box]] | None = None,
    ious: Mapping[str, float] | None = None,
    side: int = 160,
    columns: int = 8,
) -> bytes:
    """The evaluation sheet as PNG bytes.

    Args:
        uris: the part files holding the rows.
        groups: lists of image paths (as in the table), one group of tiles each (e.g. best, worst).
        titles: the label line of each group.
        title: the title line (:func:`sheet_title`).
        gt: GT boxes (original pixels) per path; drawn red.
        ious: IoU per path, written under its tile.
        side: tile side in pixels.
        columns: tiles per line; a longer group wraps onto more lines.
    """
    rows = _rows_by_path(uris, {p for paths in groups for p in paths})
    image = sheet_image(rows, groups, titles, title, gt, ious, side, columns)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def render_row(row: Mapping[str, Any], gt: Sequence[Box] = (), max_side: int = 1024) -> Any:
    """One image for review: heatmap overlay, GT boxes (red), predicted boxes (green) with scores.

    The image keeps its size, or is scaled down so its longer side is ``max_side`` (0 = never).

    Raises:
        Whatever reading or decoding the image raises.
    """
    from PIL import Image  # noqa: PLC0415

    image = open_image(row[schema.PATH])
    width, height = image.size
    scale = 1.0
    if max_side and max(width, height) > max_side:
        scale = max_side / max(width, height)
        image = image.resize(
            (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR
        )
    out = overlay(image, row)
    longer = max(out.size)
    draw_boxes(
        out,
        row,
        gt,
        scale=scale,
        width=max(2, round(longer / 300)),
        labels=True,
        font_size=max(11, round(longer / 40)),
    )
    return out


# ----------------------------------------------------------------------------------------- render


@dataclass
class RenderSummary:
    """What :func:`run_render` did.

    Attributes:
        out: the output folder.
        rendered: PNG files written.
        error_rows: selected rows that are error rows (skipped); with sampling, every error row.
        not_found: listed paths that are not in the table.
        unreadable: selected images that could not be read or decoded (skipped).
        files: the PNG files written.
    """

    out: str
    rendered: int = 0
    error_rows: int = 0
    not_found: int = 0
    unreadable: int = 0
    files: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


def read_path_list(uri: str) -> list[str]:
    """Image paths listed in a text file (local or ``s3://``): one per line; blank and ``#`` lines skipped."""
    lines = (line.strip() for line in storage.read_text(uri).splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def output_name(path: str, root: str) -> str:
    """The PNG's name under the output folder, extension replaced by ``.png``.

    The image's path relative to ``root``; its base name when it is not below ``root``, or without one.
    """
    name = ""
    if root:
        try:
            name = storage.relative_path(path, root)
        except ValueError:
            name = ""
    name = name or posixpath.basename(storage.strip_scheme(path))
    return posixpath.splitext(name)[0] + ".png"


def _select(
    predictions: str, sample: int, seed: int, wanted: list[str] | None, key: Any
) -> tuple[set[str], int, int]:
    """(paths to draw, error rows among the candidates, listed paths not found), from path/error only."""
    paths: list[str] = []
    errors: list[str] = []
    for table in iter_predictions(predictions, columns=[schema.PATH, schema.ERROR]):
        for path, error in zip(
            table.column(schema.PATH).to_pylist(), table.column(schema.ERROR).to_pylist(), strict=True
        ):
            (paths if error is None else errors).append(path)
    if wanted is not None:
        listed = {key(p) for p in wanted}
        chosen = {p for p in paths if key(p) in listed}
        erred = {key(p) for p in errors if key(p) in listed}
        found = {key(p) for p in chosen} | erred
        return chosen, len(erred), len(listed - found)
    if sample and sample < len(paths):
        rng = np.random.default_rng(seed)
        picked = rng.choice(len(paths), size=sample, replace=False)
        return {paths[i] for i in picked}, len(errors), 0
    return set(paths), len(errors), 0


def run_render(cfg: RenderJobConfig) -> RenderSummary:
    """Write one overlay PNG per selected image of ``cfg.predictions`` under ``cfg.out`` (module docstring).

    Args:
        cfg: the render job (:class:`pipelines.config.RenderJobConfig`): ``predictions`` folder and
            ``out`` folder (local or ``s3://``); ``sample`` draws this many images picked at random
            among the rows that are not errors (0 = all), with ``seed``; ``paths`` a text file of
            image paths (:func:`read_path_list`) replaces ``sample`` (paths are matched with scheme
            and ``./`` ignored); ``gt`` a data set root with boxes: also draw its GT boxes (red;
            ``""`` = none), read with ``format`` (``coloc_core.datasets``) at ``split``; ``max_side``
            scales larger images down to this longer side (0 = original size).

    Raises:
        FileNotFoundError: no part files under ``predictions``.
    """
    from pipelines.evaluate import path_key, read_ground_truth  # noqa: PLC0415 - evaluate imports render

    predictions, out, sample, seed, paths_file = cfg.predictions, cfg.out, cfg.sample, cfg.seed, cfg.paths
    gt_root, gt_format, split, max_side = cfg.gt, cfg.format, cfg.split, cfg.max_side
    require_part_files(predictions)
    wanted = read_path_list(paths_file) if paths_file else None
    chosen, errors, not_found = _select(predictions, sample, seed, wanted, path_key)
    gt = read_ground_truth(gt_root, gt_format, split).boxes if gt_root else None
    folder = PredictionsFolder(predictions)
    root = str(folder.read_manifest().get("images") or "") if folder.has_manifest() else ""
    summary = RenderSummary(out=out, error_rows=errors, not_found=not_found, files=[])
    if errors:
        console.note(log, "render: %d error rows skipped", errors)
    if not_found:
        log.warning("render: %d listed paths are not in %s", not_found, predictions)
    storage.makedirs(out)
    used: set[str] = set()
    with console.progress("render", total=len(chosen)) as bar:
        for table in iter_predictions(predictions):
            for row in table.to_pylist():
                path = row[schema.PATH]
                if path not in chosen or row[schema.ERROR] is not None:
                    continue
                boxes = gt.get(path_key(path), []) if gt is not None else []
                try:
                    image = render_row(row, boxes, max_side)
                except Exception as err:  # noqa: BLE001 - one unreadable image does not stop the rest
                    log.warning("render: cannot draw %s: %s: %s", path, type(err).__name__, err)
                    summary.unreadable += 1
                    bar.update()
                    continue
                name = output_name(path, root)
                stem, n = name[: -len(".png")], 1
                while name in used:  # same base name from different folders
                    n += 1
                    name = f"{stem}-{n}.png"
                used.add(name)
                buf = io.BytesIO()
                image.save(buf, format="PNG")
                target = storage.join(out, name)
                storage.write_bytes_atomic(target, buf.getvalue())
                summary.files.append(target)  # type: ignore[union-attr]
                summary.rendered += 1
                bar.update()
    console.note(
        log,
        "render: %d images drawn to %s (%d error rows, %d unreadable, %d not found)",
        summary.rendered,
        out,
        summary.error_rows,
        summary.unreadable,
        summary.not_found,
    )
    return summary
