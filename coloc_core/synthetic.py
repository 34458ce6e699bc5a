"""A procedural co-localization data set with known boxes, written in CUB-200-2011 layout.

Every image shows one object of one kind, a stylised upright "bird" (body, belly, wing, head with eye
and beak, tail, two legs), on cluttered background. The design serves the method under test:

- The bird has a canonical upright orientation (head up, legs down; it faces left or right and leans
  at most ``MAX_TILT_DEG``), so a rotation-prediction pretext task can be solved from the object.
- The background has no global orientation cue: a smooth colour field, shapes drawn at uniformly random
  orientations and per-pixel noise all look the same under any 90° rotation. To predict the rotation
  the network has to look at the bird, which is what makes its attention map localize it.
- Random colours (the bird's body hue is what tells the ``num_classes`` "species" apart; labels are
  written for layout fidelity and used by nothing), per-pixel texture noise, object size (box area a
  random fraction of the image, default 15-60%), aspect ratio, position, image size and aspect.

The box is the tight bounding box of the object's rendered pixels (:class:`SyntheticSample` carries
that mask): ``(x0, y0, x1, y1)`` with x1, y1 the last object column/row (inclusive, 0-based), written
to ``bounding_boxes.txt`` as CUB's ``x y w h`` with ``w = x1 - x0``, so that :func:`read_cub`'s
``(x, y, x + w, y + h)`` gives the box back exactly.

Everything is seeded: image ``i`` of :func:`generate_cub_layout` depends only on ``(seed, i)``.
"""

from __future__ import annotations

import colorsys
import math
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from coloc_core.datasets import Box, ImageRecord

MAX_TILT_DEG = 12.0
_NOISE = 12  # amplitude of the per-pixel texture noise, in grey levels
_ELLIPSE_POINTS = 28

Points = np.ndarray  # (N, 2) float64, x and y in image convention (y down)
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class SyntheticSample:
    """One rendered image and its ground truth.

    Attributes:
        image: RGB image, ``width`` × ``height``.
        mask: bool array of shape (height, width), True on the object's pixels.
        box: ``(x0, y0, x1, y1)``, the tight bounding box of ``mask`` (inclusive pixel indices).
        class_index: the "species" (body hue family), in ``[0, num_classes)``.
    """

    image: Image.Image
    mask: np.ndarray
    box: Box
    class_index: int


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle_deg: float = 0.0) -> Points:
    t = np.linspace(0.0, 2.0 * math.pi, _ELLIPSE_POINTS, endpoint=False)
    a = math.radians(angle_deg)
    x, y = rx * np.cos(t), ry * np.sin(t)
    return np.stack([cx + x * math.cos(a) - y * math.sin(a), cy + x * math.sin(a) + y * math.cos(a)], axis=1)


def _quad_line(x0: float, y0: float, x1: float, y1: float, width: float) -> Points:
    """A thick segment as a 4-point polygon (so the mask and the image rasterize it identically)."""
    dx, dy = x1 - x0, y1 - y0
    norm = math.hypot(dx, dy) or 1.0
    nx, ny = -dy / norm * width / 2.0, dx / norm * width / 2.0
    return np.array([[x0 + nx, y0 + ny], [x1 + nx, y1 + ny], [x1 - nx, y1 - ny], [x0 - nx, y0 - ny]])


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _random_colour(rng: np.random.Generator) -> RGB:
    return _hsv(rng.random(), rng.uniform(0.15, 1.0), rng.uniform(0.15, 1.0))


def _bird_parts(rng: np.random.Generator, hue: float) -> list[tuple[Points, RGB]]:
    """The bird's parts, facing right, upright, in a body-length-1 frame; drawn in list order."""
    body_rx, body_ry = rng.uniform(0.42, 0.55), rng.uniform(0.22, 0.32)
    head_r = rng.uniform(0.14, 0.2)
    hx, hy = body_rx * rng.uniform(0.75, 0.95), -body_ry - head_r * rng.uniform(0.3, 0.7)
    beak_len = rng.uniform(0.12, 0.28)
    tail_len = rng.uniform(0.3, 0.5)
    tail_drop = rng.uniform(-0.1, 0.25)
    leg_len = rng.uniform(0.22, 0.4)
    leg_w = rng.uniform(0.03, 0.05)
    body = _hsv(hue, rng.uniform(0.55, 1.0), rng.uniform(0.45, 0.95))
    belly = _hsv(hue + rng.uniform(-0.08, 0.08), rng.uniform(0.1, 0.4), rng.uniform(0.8, 1.0))
    wing = _hsv(hue + rng.uniform(-0.15, 0.15), rng.uniform(0.5, 1.0), rng.uniform(0.2, 0.6))
    head = body if rng.random() < 0.5 else _hsv(rng.random(), rng.uniform(0.4, 1.0), rng.uniform(0.3, 0.95))
    beak = _hsv(rng.uniform(0.05, 0.16), rng.uniform(0.7, 1.0), rng.uniform(0.8, 1.0))
    legs = _hsv(rng.uniform(0.0, 0.1), rng.uniform(0.3, 0.8), rng.uniform(0.15, 0.45))
    tail_x = -body_rx * 0.8
    tail = np.array(
        [
            [tail_x, -body_ry * 0.45],
            [tail_x - tail_len, tail_drop - 0.1],
            [tail_x - tail_len * 0.9, tail_drop + 0.12],
            [tail_x, body_ry * 0.35],
        ]
    )
    beak_pts = np.array(
        [
            [hx + head_r * 0.8, hy - head_r * 0.3],
            [hx + head_r * 0.8 + beak_len, hy],
            [hx + head_r * 0.8, hy + head_r * 0.3],
        ]
    )
    parts: list[tuple[Points, RGB]] = []
    for foot_x in (-0.12 * body_rx / 0.5, 0.15 * body_rx / 0.5):
        top_y = body_ry * 0.8
        parts.append((_quad_line(foot_x, top_y, foot_x - 0.03, top_y + leg_len, leg_w), legs))
        parts.append((_quad_line(foot_x - 0.1, top_y + leg_len, foot_x + 0.08, top_y + leg_len, leg_w), legs))
    parts += [
        (tail, wing),
        (_ellipse(0.0, 0.0, body_rx, body_ry, rng.uniform(-12.0, 4.0)), body),
        (_ellipse(body_rx * 0.1, body_ry * 0.45, body_rx * 0.7, body_ry * 0.45), belly),
        (
            _ellipse(-body_rx * 0.15, -body_ry * 0.1, body_rx * 0.65, body_ry * 0.5, rng.uniform(-20.0, 5.0)),
            wing,
        ),
        (beak_pts, beak),
        (_ellipse(hx, hy, head_r, head_r), head),
        (_ellipse(hx + head_r * 0.35, hy - head_r * 0.2, head_r * 0.18, head_r * 0.18), (15, 15, 15)),
    ]
    return parts


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int) -> None:
    """Random shapes at uniformly random orientations and positions: no cue for "up"."""
    side = min(width, height)
    for _ in range(int(rng.integers(8, 21))):
        colour = _random_colour(rng)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = side * rng.uniform(0.03, 0.15)
        angle = rng.uniform(0.0, 360.0)
        kind = int(rng.integers(0, 5))
        if kind == 0:  # ellipse
            pts = _ellipse(cx, cy, r, r * rng.uniform(0.3, 1.0), angle)
        elif kind == 1:  # rotated rectangle
            hw, hh = r, r * rng.uniform(0.2, 1.0)
            corners = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
            a = math.radians(angle)
            rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
            pts = corners @ rot.T + [cx, cy]
        elif kind == 2:  # irregular polygon
            n = int(rng.integers(3, 8))
            t = np.sort(rng.uniform(0.0, 2.0 * math.pi, n))
            rr = r * rng.uniform(0.4, 1.0, n)
            pts = np.stack([cx + rr * np.cos(t), cy + rr * np.sin(t)], axis=1)
        elif kind == 3:  # thick segment
            a = math.radians(angle)
            dx, dy = r * 1.5 * math.cos(a), r * 1.5 * math.sin(a)
            pts = _quad_line(cx - dx, cy - dy, cx + dx, cy + dy, max(1.0, r * rng.uniform(0.1, 0.3)))
        else:  # ring
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=colour, width=max(1, int(r * 0.25)))
            continue
        draw.polygon([tuple(p) for p in pts.tolist()], fill=colour)


def render_synthetic_sample(
    rng: np.random.Generator,
    width: int,
    height: int,
    *,
    area_range: tuple[float, float] = (0.15, 0.6),
    num_classes: int = 4,
    with_object: bool = True,
) -> SyntheticSample:
    """Render one image: an upright bird on clutter, with its pixel mask and tight box.

    Args:
        rng: the only source of randomness.
        width: image width in pixels (>= 16).
        height: image height in pixels (>= 16).
        area_range: range of the object's box area as a fraction of the image area (drawn uniformly;
            the object is shrunk where the image is too narrow for the drawn aspect ratio).
        num_classes: number of body-hue families ("species").
        with_object: ``False`` renders the background and clutter alone (no bird; the mask is empty
            and the box is ``(0, 0, 0, 0)``): images that a labeler's score should rank low.

    Returns:
        The sample; the object lies wholly inside the image, 2 px or more from its border.
    """
    if width < 16 or height < 16:
        raise ValueError(f"image size {width}x{height} is too small (min 16x16)")
    class_index = int(rng.integers(0, num_classes))
    hue = (class_index + rng.uniform(-0.3, 0.3)) / num_classes

    # Background: smooth colour field (a random low-resolution grid, upsampled) + clutter.
    grid = rng.integers(0, 256, (int(rng.integers(2, 7)), int(rng.integers(2, 7)), 3), dtype=np.uint8)
    contrast = rng.uniform(0.2, 0.8)
    base = rng.integers(0, 256, 3)
    grid = (base + (grid.astype(np.float64) - base) * contrast).astype(np.uint8)
    image = Image.fromarray(grid, "RGB").resize((width, height), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    _clutter(draw, rng, width, height)

    if not with_object:
        pixels = np.asarray(image, dtype=np.int16) + rng.integers(
            -_NOISE, _NOISE + 1, (height, width, 3), dtype=np.int16
        )
        empty = np.zeros((height, width), dtype=bool)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
        return SyntheticSample(image=image, mask=empty, box=(0.0, 0.0, 0.0, 0.0), class_index=class_index)

    # The bird: local frame -> facing, tilt, aspect stretch -> scale to the drawn area -> position.
    parts = _bird_parts(rng, hue)
    a = math.radians(rng.uniform(-MAX_TILT_DEG, MAX_TILT_DEG))
    stretch = math.exp(rng.uniform(-0.25, 0.25))
    linear = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) @ np.diag(
        [stretch, 1 / stretch]
    )
    if rng.random() < 0.5:  # face left
        linear = linear @ np.diag([-1.0, 1.0])
    placed = [(pts @ linear.T, colour) for pts, colour in parts]
    every = np.concatenate([pts for pts, _ in placed])
    lo, hi = every.min(axis=0), every.max(axis=0)
    ext_w, ext_h = hi - lo
    area = rng.uniform(*area_range) * width * height
    scale = min(math.sqrt(area / (ext_w * ext_h)), (width - 5) / ext_w, (height - 5) / ext_h)
    off_x = rng.uniform(2.0, max(2.0, width - 3.0 - ext_w * scale)) - lo[0] * scale
    off_y = rng.uniform(2.0, max(2.0, height - 3.0 - ext_h * scale)) - lo[1] * scale
    mask_img = Image.new("L", (width, height), 0)
    mask_draw = ImageDraw.Draw(mask_img)
    for pts, colour in placed:
        xy = [tuple(p) for p in (pts * scale + [off_x, off_y]).tolist()]
        draw.polygon(xy, fill=colour)
        mask_draw.polygon(xy, fill=255)

    # Texture: per-pixel noise over everything (object included).
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(
        -_NOISE, _NOISE + 1, (height, width, 3), dtype=np.int16
    )
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")

    mask = np.asarray(mask_img) > 0
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (float(cols[0]), float(rows[0]), float(cols[-1]), float(rows[-1]))
    return SyntheticSample(image=image, mask=mask, box=box, class_index=class_index)


def make_synthetic_image(rng: np.random.Generator, width: int, height: int) -> tuple[Image.Image, Box]:
    """One synthetic image and its object's box ``(x0, y0, x1, y1)`` (see :func:`render_synthetic_sample`)."""
    sample = render_synthetic_sample(rng, width, height)
    return sample.image, sample.box


def generate_cub_layout(
    root: str,
    num_images: int = 200,
    seed: int = 0,
    *,
    size_range: tuple[int, int] = (160, 320),
    area_range: tuple[float, float] = (0.15, 0.6),
    train_fraction: float = 0.5,
    num_classes: int = 4,
    quality: int = 90,
) -> list[ImageRecord]:
    """Write a synthetic data set in CUB-200-2011 layout to a local folder.

    Files: ``images.txt``, ``train_test_split.txt``, ``bounding_boxes.txt``, ``image_class_labels.txt``,
    ``classes.txt`` (space-separated, 1-based ids as in CUB) and ``images/<class>/<name>.jpg``. Existing
    files of the same names are overwritten. Read it back with ``read_cub(root, split)``.

    Args:
        root: local output folder (created if missing).
        num_images: number of images.
        seed: image ``i`` depends only on ``(seed, i)``; the split only on ``(seed, num_images)``.
        size_range: inclusive range of each image side in pixels, drawn independently for width and
            height (so aspect ratios vary too).
        area_range: range of the object's box area as a fraction of the image area.
        train_fraction: fraction of the images in the train split (``round(num_images * fraction)``,
            chosen by a seeded permutation); the rest are test.
        num_classes: number of "species" (body-hue families), for the class files only.
        quality: JPEG quality.

    Returns:
        The records of all images (train and test), in id order, with sizes and boxes.
    """
    if num_images < 1:
        raise ValueError(f"num_images={num_images} must be >= 1")
    if not 0.0 <= train_fraction <= 1.0:
        raise ValueError(f"train_fraction={train_fraction} must be in [0, 1]")
    classes = [f"{c + 1:03d}.Synthetic_bird_{c + 1}" for c in range(num_classes)]
    for name in classes:
        os.makedirs(os.path.join(root, "images", name), exist_ok=True)
    order = np.random.default_rng(seed).permutation(num_images)
    is_train = np.zeros(num_images, dtype=bool)
    is_train[order[: round(num_images * train_fraction)]] = True

    records, images_txt, split_txt, boxes_txt, labels_txt = [], [], [], [], []
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])
        width, height = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, 2))
        sample = render_synthetic_sample(rng, width, height, area_range=area_range, num_classes=num_classes)
        class_name = classes[sample.class_index]
        rel = f"{class_name}/{class_name.split('.', 1)[1]}_{i + 1:05d}.jpg"
        sample.image.save(os.path.join(root, "images", rel), format="JPEG", quality=quality)
        x0, y0, x1, y1 = sample.box
        image_id = i + 1
        images_txt.append(f"{image_id} {rel}")
        split_txt.append(f"{image_id} {int(is_train[i])}")
        boxes_txt.append(f"{image_id} {x0:.1f} {y0:.1f} {x1 - x0:.1f} {y1 - y0:.1f}")
        labels_txt.append(f"{image_id} {sample.class_index + 1}")
        records.append(
            ImageRecord(
                path=f"{root.rstrip('/')}/images/{rel}",
                split="train" if is_train[i] else "test",
                width=width,
                height=height,
                boxes=(sample.box,),
            )
        )
    files = {
        "images.txt": images_txt,
        "train_test_split.txt": split_txt,
        "bounding_boxes.txt": boxes_txt,
        "image_class_labels.txt": labels_txt,
        "classes.txt": [f"{c + 1} {name}" for c, name in enumerate(classes)],
    }
    for name, lines in files.items():
        with open(os.path.join(root, name), "w") as f:
            f.write("\n".join(lines) + "\n")
    return records
