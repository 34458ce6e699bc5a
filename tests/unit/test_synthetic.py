from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from coloc_core.datasets import read_cub
from coloc_core.synthetic import generate_cub_layout, make_synthetic_image, render_synthetic_sample


@pytest.mark.parametrize(("width", "height"), [(160, 320), (320, 160), (211, 211), (48, 40)])
def test_box_is_the_tight_box_of_the_object(width, height):
    for seed in range(5):
        sample = render_synthetic_sample(np.random.default_rng(seed), width, height)
        assert sample.image.size == (width, height) and sample.image.mode == "RGB"
        assert sample.mask.shape == (height, width) and sample.mask.dtype == bool
        x0, y0, x1, y1 = (int(v) for v in sample.box)
        assert sample.box == (float(x0), float(y0), float(x1), float(y1))
        # Inside the image, with a margin.
        assert 0 < x0 < x1 < width - 1 and 0 < y0 < y1 < height - 1
        # Every object pixel lies inside the box, and the object touches all four edges.
        ys, xs = np.nonzero(sample.mask)
        assert xs.min() == x0 and xs.max() == x1 and ys.min() == y0 and ys.max() == y1
        inside = np.zeros_like(sample.mask)
        inside[y0 : y1 + 1, x0 : x1 + 1] = True
        assert not (sample.mask & ~inside).any()


def test_object_size_follows_area_range():
    fractions = []
    for seed in range(20):
        sample = render_synthetic_sample(np.random.default_rng(seed), 240, 200, area_range=(0.15, 0.6))
        x0, y0, x1, y1 = sample.box
        fractions.append((x1 - x0 + 1) * (y1 - y0 + 1) / (240 * 200))
    # Rasterisation adds about a pixel per side; the object never exceeds the drawn area by much.
    assert 0.12 < min(fractions) and max(fractions) < 0.65
    assert max(fractions) - min(fractions) > 0.15  # sizes really vary


def test_render_is_deterministic_given_the_rng():
    a = render_synthetic_sample(np.random.default_rng(7), 200, 180)
    b = render_synthetic_sample(np.random.default_rng(7), 200, 180)
    c = render_synthetic_sample(np.random.default_rng(8), 200, 180)
    assert a.box == b.box and np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))
    image, box = make_synthetic_image(np.random.default_rng(7), 200, 180)
    assert box == a.box and np.array_equal(np.asarray(image), np.asarray(a.image))


def test_render_rejects_tiny_images():
    with pytest.raises(ValueError, match="too small"):
        render_synthetic_sample(np.random.default_rng(0), 8, 100)


def _all_files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_generate_cub_layout_is_deterministic_and_readable(tmp_path):
    kw = {"num_images": 6, "size_range": (64, 96)}
    records = generate_cub_layout(str(tmp_path / "a"), seed=3, **kw)
    generate_cub_layout(str(tmp_path / "b"), seed=3, **kw)
    generate_cub_layout(str(tmp_path / "c"), seed=4, **kw)
    files_a, files_b = _all_files(tmp_path / "a"), _all_files(tmp_path / "b")
    assert files_a == files_b
    assert files_a["bounding_boxes.txt"] != _all_files(tmp_path / "c")["bounding_boxes.txt"]
    for name in (
        "images.txt",
        "train_test_split.txt",
        "bounding_boxes.txt",
        "image_class_labels.txt",
        "classes.txt",
    ):
        assert name in files_a
    assert sum(name.startswith("images/") and name.endswith(".jpg") for name in files_a) == 6

    # Half train, half test; read_cub gives back the same paths, splits and boxes.
    assert [r.split for r in records].count("train") == 3
    read_back = read_cub(str(tmp_path / "a"), "all")
    assert [(r.path, r.split, r.boxes) for r in read_back] == [(r.path, r.split, r.boxes) for r in records]
    assert [r.path for r in read_cub(str(tmp_path / "a"), "train")] == [
        r.path for r in records if r.split == "train"
    ]
    for r in records:
        with Image.open(r.path) as im:
            assert im.format == "JPEG" and im.size == (r.width, r.height)
        assert 64 <= r.width <= 96 and 64 <= r.height <= 96
        ((x0, y0, x1, y1),) = r.boxes
        assert 0 <= x0 < x1 < r.width and 0 <= y0 < y1 < r.height


def test_image_i_depends_only_on_seed_and_index(tmp_path):
    few = generate_cub_layout(str(tmp_path / "few"), num_images=2, seed=1, size_range=(48, 64))
    more = generate_cub_layout(str(tmp_path / "more"), num_images=4, seed=1, size_range=(48, 64))
    assert [r.boxes for r in few] == [r.boxes for r in more[:2]]
    for a, b in zip(few, more[:2], strict=True):
        with open(a.path, "rb") as fa, open(b.path, "rb") as fb:
            assert fa.read() == fb.read()


def test_generate_cub_layout_arguments(tmp_path):
    records = generate_cub_layout(
        str(tmp_path), num_images=4, seed=0, size_range=(40, 40), train_fraction=0.25
    )
    assert [r.split for r in records].count("train") == 1
    assert all((r.width, r.height) == (40, 40) for r in records)
    with pytest.raises(ValueError, match="num_images"):
        generate_cub_layout(str(tmp_path), num_images=0)
    with pytest.raises(ValueError, match="train_fraction"):
        generate_cub_layout(str(tmp_path), num_images=2, train_fraction=1.5)


def test_background_only_sample_has_no_object():
    import numpy as np

    from coloc_core.synthetic import render_synthetic_sample

    sample = render_synthetic_sample(np.random.default_rng(3), 64, 48, with_object=False)
    assert sample.image.size == (64, 48)
    assert not sample.mask.any() and sample.box == (0.0, 0.0, 0.0, 0.0)
    assert np.asarray(sample.image).std() > 0  # background and clutter are still drawn
