"""Pictures of a predictions table (no Ray): tiles, the sheet's title/legend/layout, and ``coloc render``."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs import render as render_job
from pipelines import render, schema
from pipelines.config import EvaluateJobConfig, RenderJobConfig
from pipelines.predictions import PredictionsFolder
from tests.ray import labeling_data as data

SIZES = [(120, 80), (64, 96), (200, 150), (90, 90), (150, 60)]  # (width, height)


def _image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.fixture
def folder(tmp_path: Path) -> tuple[str, str, list[str]]:
    """Images in ``images/<sub>/`` (one a JPEG, one a PNG per sub folder), a predictions folder with one
    error row and a manifest naming the images root."""
    root = tmp_path / "images"
    paths = []
    for i, (w, h) in enumerate(SIZES):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        file = sub / f"img{i}.{'jpg' if i % 2 else 'png'}"
        _image(w, h, i).save(file)
        paths.append(str(file))
    items: list[data.PredictionItem] = []
    for i, (path, (w, h)) in enumerate(zip(paths, SIZES, strict=True)):
        box = (w * 0.2, h * 0.2, w * 0.7, h * 0.8)
        items.append((path, w, h, data.box_mask_224(box, (w, h)), box, 0.9 - 0.1 * i))
    error = str(root / "broken.jpg")
    items.append((error, None, None, None, None, None))
    pred = str(tmp_path / "pred")
    data.write_parts(pred, data.prediction_rows(items), rows_per_file=2)
    PredictionsFolder(pred).write_manifest({"images": str(root)})
    return pred, str(root), paths


def _row(path: str, w: int, h: int, box=(10.0, 10.0, 50.0, 40.0), score=0.75) -> dict:
    table = data.prediction_rows([(path, w, h, data.box_mask_224(box, (w, h)), box, score)])
    return table.to_pylist()[0]


def _has(image: Image.Image, colour: tuple[int, int, int]) -> bool:
    return bool((np.asarray(image.convert("RGB")) == colour).all(axis=-1).any())


def test_tile_size_overlay_and_boxes(tmp_path):
    path = tmp_path / "x.png"
    _image(100, 50, 0).save(path)
    tile = render.tile(_row(str(path), 100, 50), gt=[(0.0, 0.0, 99.0, 49.0)], side=120)
    assert tile.size == (120, 120)
    assert _has(tile, render.PREDICTED) and _has(tile, render.GROUND_TRUTH)
    # the image fills the top half (aspect kept), the rest is white
    pixels = np.asarray(tile)
    assert (pixels[70:, :] == 255).all()
    broken = render.tile({**_row(str(path), 100, 50), schema.PATH: str(tmp_path / "missing.png")}, side=64)
    assert broken.size == (64, 64)


def test_the_overlay_covers_the_part_above_a_cut(tmp_path):
    # A row labelled with crop_bottom=20: the table's height (60) is the part above the cut of the
    # 80-row file, and only that part is coloured.
    grey = Image.new("RGB", (100, 80), (128, 128, 128))
    whole = np.asarray(render.overlay(grey, _row("x.png", 100, 80)))
    assert (whole[-1] != 128).any()
    cut = np.asarray(render.overlay(grey, _row("x.png", 100, 60)))
    assert (cut[:60] != 128).any(axis=-1).all() and (cut[60:] == 128).all()
    half = np.asarray(render.overlay(grey.resize((50, 40)), _row("x.png", 100, 60)))  # a thumbnail
    assert (half[30:] == 128).all() and (half[:30] != 128).any(axis=-1).all()


def test_legend_shows_the_colours():
    strip = render.legend(600)
    assert strip.size == (600, render.LEGEND_H)
    pixels = np.asarray(strip)
    mid = render.LEGEND_H // 2
    x = render.MARGIN + render.SWATCH // 2
    assert tuple(pixels[mid, x]) == render.PREDICTED
    assert _has(strip, render.GROUND_TRUTH)
    low, high = render.heat_colours(np.array([[0.0, 1.0]]))[0]
    assert _has(strip, tuple(int(v) for v in low)) and _has(strip, tuple(int(v) for v in high))
    assert low[2] > low[0] and high[0] > high[2]  # JET: blue low, red high


def test_caption_and_short_name():
    assert render.short_name("s3://b/photos/x.jpg") == "x.jpg"
    long = render.short_name("/p/" + "n" * 40 + ".jpg", limit=20)
    assert len(long) == 20 and long.startswith("...") and long.endswith(".jpg")
    assert render.caption("/p/x.jpg", 0.8123, 0.5) == ("x.jpg", "IoU 0.81 · score 0.50")
    assert render.caption("/p/x.jpg", None, 0.5) == ("x.jpg", "score 0.50")
    assert render.caption("/p/x.jpg", float("nan"), None)[1] == "error"
    assert "tau=0.25" in render.sheet_title("/labels", 0.25, 10, "IoU")


@pytest.mark.parametrize(("count", "columns", "lines"), [(8, 8, 1), (20, 8, 3), (3, 8, 1), (5, 2, 3)])
def test_sheet_layout(tmp_path, count, columns, lines):
    path = tmp_path / "x.png"
    _image(60, 40, 1).save(path)
    paths = [f"{path}" for _ in range(count)]
    rows = {str(path): _row(str(path), 60, 40)}
    side = 50
    sheet = render.sheet_image(
        rows, [paths, paths[:1]], ("best", "worst"), "title", side=side, columns=columns
    )
    width = max(2 * render.MARGIN + columns * (side + render.GAP), 560)
    block = side + render.CAPTION_H + render.GAP
    height = render.TITLE_H + render.LEGEND_H + 2 * render.GROUP_H + (lines + 1) * block + render.MARGIN
    assert sheet.size == (width, height)
    band = sheet.crop((0, render.TITLE_H, width, render.TITLE_H + render.LEGEND_H))
    assert _has(band, render.PREDICTED) and _has(band, render.GROUND_TRUTH)
    title = np.asarray(sheet.crop((0, 0, width, render.TITLE_H)))
    assert (title < 128).any()  # the title is written


def test_picture_sheet_png_from_part_files(folder):
    pred, _, paths = folder
    from pipelines.predictions import part_files

    png = render.picture_sheet(
        part_files(pred),
        (paths[:3], paths[3:]),
        title="t",
        gt={p: [(1.0, 1.0, 30.0, 30.0)] for p in paths},
        ious={p: 0.5 for p in paths},
        side=64,
        columns=2,
    )
    sheet = Image.open(io.BytesIO(png))
    assert sheet.format == "PNG" and sheet.size[1] > 3 * 64


def test_render_job_one_png_per_image(folder, tmp_path, capsys):
    pred, _, paths = folder
    out = tmp_path / "review"
    assert render_job.main(["--predictions", pred, "--out", str(out), "--sample", "0"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(printed[printed.index("{") :])
    assert report["rendered"] == len(SIZES) and report["error_rows"] == 1 and report["files"] == len(SIZES)
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    expected = sorted(
        f"{'a' if i % 2 else 'b'}/img{i}.png" for i in range(len(SIZES))
    )  # mirrors images/<sub>/imgN.<ext>
    assert written == expected
    for i, (w, h) in enumerate(SIZES):
        image = Image.open(out / ("a" if i % 2 else "b") / f"img{i}.png")
        assert image.size == (w, h)
        assert _has(image, render.PREDICTED)


def test_render_summary_counts_and_sample(folder, tmp_path):
    pred, _, _ = folder
    summary = render.run_render(RenderJobConfig(pred, str(tmp_path / "s"), sample=2, seed=3, max_side=50))
    assert summary.rendered == 2 and summary.error_rows == 1 and summary.unreadable == 0
    for file in summary.files or []:
        assert max(Image.open(file).size) == 50  # scaled down to max_side
    again = render.run_render(RenderJobConfig(pred, str(tmp_path / "s2"), sample=2, seed=3, max_side=50))
    assert [os.path.basename(f) for f in again.files or []] == [
        os.path.basename(f) for f in summary.files or []
    ]


def test_render_paths_file_and_gt(folder, tmp_path):
    pred, root, paths = folder
    listed = tmp_path / "list.txt"
    listed.write_text(
        f"# review these\n{paths[1]}\n\n"
        f"file://{paths[2].replace('/images/', '/images/./')}\n{root}/broken.jpg\n/nope.jpg\n"
    )
    out = tmp_path / "listed"
    summary = render.run_render(RenderJobConfig(pred, str(out), paths=str(listed)))
    assert summary.rendered == 2 and summary.error_rows == 1 and summary.not_found == 1
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["a/img1.png", "b/img2.png"]
    # with ground truth: the GT box (red) is drawn too
    w, h = SIZES[1]
    data.write_boxes_csv(root, [("a/img1.jpg", w, h, (1.0, 1.0, w - 2.0, h - 2.0))])
    with_gt = tmp_path / "gt"
    summary = render.run_render(RenderJobConfig(pred, str(with_gt), paths=str(listed), gt=root, split="all"))
    image = Image.open(with_gt / "a" / "img1.png")
    assert image.size == (w, h) and _has(image, render.GROUND_TRUTH) and _has(image, render.PREDICTED)
    assert not _has(Image.open(out / "a" / "img1.png"), render.GROUND_TRUTH)


def test_render_job_bad_options(tmp_path, folder):
    pred, _, _ = folder
    assert render_job.main(["--predictions", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert render_job.main(["--predictions", pred]) == 2
    assert render_job.main(["--predictions", pred, "--out", str(tmp_path / "o"), "--sample=-1"]) == 2
    assert (
        render_job.main(["--predictions", pred, "--out", str(tmp_path / "o"), "--paths", "/no/such.txt"]) == 2
    )


def test_evaluate_sheet_wraps_more_than_16_tiles(folder, tmp_path):
    from pipelines.evaluate import run_evaluation

    pred, _, _ = folder
    result = run_evaluation(
        EvaluateJobConfig(pred, out=str(tmp_path / "eval"), sheet_images=5, sheet_columns=2)
    )
    sheet = Image.open(tmp_path / "eval" / "sheet.png")
    block = 160 + render.CAPTION_H + render.GAP
    # 5 best + 5 worst, 2 per line: 3 lines per group; ranked by score (no GT)
    assert sheet.size == (
        560,
        render.TITLE_H + render.LEGEND_H + 2 * (render.GROUP_H + 3 * block) + render.MARGIN,
    )
    assert str(tmp_path / "eval" / "sheet.png") in result.files


def test_several_boxes_each_with_its_score(tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGB", (200, 100), (255, 255, 255)).save(path)
    row = _row(str(path), 200, 100)
    row[schema.BOXES] = [
        {"x0": 10.0, "y0": 10.0, "x1": 60.0, "y1": 60.0, "score": 0.9},
        {"x0": 120.0, "y0": 30.0, "x1": 190.0, "y1": 90.0, "score": 0.4},
    ]
    assert [score for _, score in render.row_boxes(row)] == [0.9, 0.4]
    row[schema.HEATMAP] = None  # no overlay: the boxes alone on white
    image = np.asarray(render.render_row(row))
    assert image.shape == (100, 200, 3)
    green = (image == render.PREDICTED).all(axis=-1)
    assert green[:, :100].any() and green[:, 110:].any()  # both boxes are drawn
