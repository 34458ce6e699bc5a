"""bench/banner_set.py: a boxed set with a copyright banner under every photo, boxes unchanged in place."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

_PATH = Path(__file__).resolve().parents[2] / "bench" / "banner_set.py"


@pytest.fixture(scope="module")
def banner_set():
    spec = importlib.util.spec_from_file_location("banner_set", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["banner_set"] = module
    spec.loader.exec_module(module)
    return module


def _boxed_set(root: Path) -> None:
    """Two grey photos with a red box (one with two boxes) and a file that is not an image."""
    (root / "images").mkdir(parents=True)
    rows = []
    for name, (w, h), boxes in [
        ("a.png", (200, 100), [(20, 10, 79, 59)]),
        ("b.png", (100, 150), [(0, 0, 49, 49), (60, 90, 99, 149)]),
    ]:
        pixels = np.full((h, w, 3), 128, np.uint8)
        for x0, y0, x1, y1 in boxes:
            pixels[y0 : y1 + 1, x0 : x1 + 1] = (255, 0, 0)
        Image.fromarray(pixels).save(root / "images" / name)
        rows += [[f"images/{name}", w, h, *box] for box in boxes]
    (root / "images" / "bad.png").write_bytes(b"not an image")
    rows.append(["images/bad.png", 50, 50, 0, 0, 9, 9])
    with open(root / "boxes.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "width", "height", "x0", "y0", "x1", "y1"], *rows])


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "boxes.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(("style", "strip"), [("dark", 0), ("light", 255)])
def test_every_photo_is_scaled_and_gets_its_banner(
    tmp_path: Path, banner_set, style: str, strip: int
) -> None:
    _boxed_set(tmp_path / "src")
    out = tmp_path / style
    summary = banner_set.derive_banner_set(
        str(tmp_path / "src"), "boxes_csv", str(out), width=400, style=style
    )
    assert (summary.images, summary.boxes, summary.unreadable) == (2, 3, 1)
    rows = _rows(out)
    assert [(r["width"], r["height"]) for r in rows] == [("400", "220"), ("400", "620"), ("400", "620")]
    assert [float(rows[0][k]) for k in ("x0", "y0", "x1", "y1")] == [40.0, 20.0, 158.0, 118.0]  # ×2
    pixels = np.asarray(Image.open(out / rows[0]["path"]).convert("RGB")).astype(int)
    assert np.abs(pixels[-20:, -40:] - strip).max() < 40  # the banner's plain end
    assert np.abs(pixels[-20:, :160] - strip).max() > 100  # its text
    red = pixels[30:110, 50:150]  # inside the box, above the banner: the photo
    assert red[..., 0].min() > 200 and red[..., 1].max() < 60


def test_no_banner_is_the_control(tmp_path: Path, banner_set) -> None:
    _boxed_set(tmp_path / "src")
    banner_set.derive_banner_set(
        str(tmp_path / "src"), "boxes_csv", str(tmp_path / "out"), width=400, banner=0
    )
    assert [r["height"] for r in _rows(tmp_path / "out")] == ["200", "600", "600"]
    assert (
        banner_set.main(["--data", str(tmp_path / "src"), "--out", str(tmp_path / "x"), "--width", "0"]) == 2
    )
