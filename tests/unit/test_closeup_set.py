"""bench/closeup_set.py: the close-up copy of a boxed set keeps every object whole and its box exact."""

from __future__ import annotations

import csv
import importlib.util
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

_PATH = Path(__file__).resolve().parents[2] / "bench" / "closeup_set.py"


@pytest.fixture(scope="module")
def closeup():
    spec = importlib.util.spec_from_file_location("closeup_set", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["closeup_set"] = module
    spec.loader.exec_module(module)
    return module


def _boxed_set(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """Five images with a saturated red box on grey noise, one with two boxes, one that is not an image."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    rows, boxes = [], {}
    for i, (w, h, box) in enumerate(
        [
            (320, 240, (40, 30, 119, 109)),
            (200, 300, (10, 150, 89, 289)),
            (256, 256, (0, 0, 199, 199)),
            (400, 200, (300, 20, 379, 179)),
            (180, 160, (60, 40, 119, 99)),
        ]
    ):
        pixels = rng.integers(60, 120, size=(h, w, 3), dtype=np.uint8)
        x0, y0, x1, y1 = box
        pixels[y0 : y1 + 1, x0 : x1 + 1] = (255, 0, 0)
        name = f"images/{i}.png"
        Image.fromarray(pixels).save(root / name)
        rows.append([name, w, h, *box])
        boxes[f"{i}"] = box
    Image.fromarray(rng.integers(0, 255, size=(100, 100, 3), dtype=np.uint8)).save(root / "images/two.png")
    rows += [["images/two.png", 100, 100, 0, 0, 9, 9], ["images/two.png", 100, 100, 50, 50, 59, 59]]
    (root / "images/bad.png").write_bytes(b"not an image")
    rows.append(["images/bad.png", 50, 50, 0, 0, 9, 9])
    with open(root / "boxes.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "width", "height", "x0", "y0", "x1", "y1"], *rows])
    return boxes


def test_each_crop_holds_its_whole_box_at_the_asked_share(tmp_path: Path, closeup) -> None:
    _boxed_set(tmp_path / "src")
    summary = closeup.derive_closeup(str(tmp_path / "src"), "boxes_csv", str(tmp_path / "out"), seed=3)
    assert (summary.images, summary.several_boxes, summary.unreadable) == (5, 1, 1)
    rows = list(csv.DictReader(open(tmp_path / "out" / "boxes.csv")))
    assert len(rows) == 5
    for row in rows:
        image = np.asarray(Image.open(tmp_path / "out" / row["path"]).convert("RGB")).astype(int)
        h, w = image.shape[:2]
        assert (int(row["width"]), int(row["height"])) == (w, h)
        x0, y0, x1, y1 = (int(row[k]) for k in ("x0", "y0", "x1", "y1"))
        assert 0 <= x0 <= x1 < w and 0 <= y0 <= y1 < h
        red = (image[..., 0] > 200) & (image[..., 1] < 60) & (image[..., 2] < 60)
        ys, xs = np.nonzero(red)
        # the red square is exactly the box (JPEG blurs its edge by at most a pixel)
        assert abs(xs.min() - x0) <= 1 and abs(xs.max() - x1) <= 1
        assert abs(ys.min() - y0) <= 1 and abs(ys.max() - y1) <= 1
        share = (x1 - x0 + 1) * (y1 - y0 + 1) / (w * h)
        assert share >= 0.55 - 0.02
    # an image large enough around its box gets a share inside the range
    assert any(0.55 - 0.02 <= s <= 0.9 + 0.02 for s in summary.shares)


def test_the_same_seed_gives_the_same_set(tmp_path: Path, closeup) -> None:
    _boxed_set(tmp_path / "src")
    a = closeup.derive_closeup(str(tmp_path / "src"), "boxes_csv", str(tmp_path / "a"), seed=1)
    b = closeup.derive_closeup(str(tmp_path / "src"), "boxes_csv", str(tmp_path / "b"), seed=1)
    c = closeup.derive_closeup(str(tmp_path / "src"), "boxes_csv", str(tmp_path / "c"), seed=2)
    assert a.shares == b.shares
    assert (tmp_path / "a/boxes.csv").read_text() == (tmp_path / "b/boxes.csv").read_text()
    assert a.shares != c.shares


@pytest.mark.parametrize("share", [0.3, 0.6, 0.95, 1.0])
def test_crop_window_contains_the_box_and_stays_inside_the_image(closeup, share: float) -> None:
    rng = random.Random(0)
    for _ in range(200):
        w, h = rng.randint(20, 500), rng.randint(20, 500)
        x0, y0 = rng.uniform(0, w - 2), rng.uniform(0, h - 2)
        x1, y1 = rng.uniform(x0, w - 1), rng.uniform(y0, h - 1)
        cx0, cy0, cx1, cy1 = closeup.crop_window((x0, y0, x1, y1), (w, h), share, rng)
        assert 0 <= cx0 <= x0 and 0 <= cy0 <= y0
        assert x1 < cx1 <= w and y1 < cy1 <= h


def test_bad_shares_and_a_set_without_one_box_images_are_errors(tmp_path: Path, closeup) -> None:
    _boxed_set(tmp_path / "src")
    with pytest.raises(ValueError, match="min_share"):
        closeup.derive_closeup(
            str(tmp_path / "src"), "boxes_csv", str(tmp_path / "o"), min_share=0.9, max_share=0.5
        )
    with pytest.raises(ValueError, match="share must be"):
        closeup.crop_window((0, 0, 9, 9), (20, 20), 0.0, random.Random(0))
    (tmp_path / "src" / "boxes.csv").write_text("path,width,height,x0,y0,x1,y1\n")
    assert closeup.main(["--data", str(tmp_path / "src"), "--out", str(tmp_path / "o2")]) == 2
