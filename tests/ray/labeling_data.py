"""Test data of the labeling/evaluation/export tests: square collections, bad files, tiny models.

Not a test module: helpers imported by ``test_label.py``, ``test_evaluate.py`` and ``test_export.py``.
"""

from __future__ import annotations

import csv
import io
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from PIL import Image

from coloc_core.checkpoint import model_payload
from coloc_core.config import ColocConfig, apply_overrides
from coloc_core.localizer import baseline_payload
from coloc_core.model import build_model

# One row of :func:`prediction_rows`: (path, width, height, uint8 heatmap, box, score); None = an error row's.
PredictionItem = tuple[
    str, int | None, int | None, np.ndarray | None, tuple[float, float, float, float] | None, float | None
]


@dataclass
class Expected:
    """What the labeling of one file must give: an error row (of ``kind``), or a box near ``box``."""

    rel: str
    error: bool
    size: tuple[int, int] | None = None  # displayed (width, height)
    box: tuple[float, float, float, float] | None = None
    kind: str | None = None  # the error row's error_kind


def square_image(
    rng: np.random.Generator, width: int, height: int
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A dark noisy RGB image with one bright square; returns the array and its inclusive box."""
    img = rng.integers(10, 50, (height, width, 3)).astype(np.uint8)
    side = int(min(width, height) * rng.uniform(0.35, 0.6))
    x0 = int(rng.integers(0, width - side))
    y0 = int(rng.integers(0, height - side))
    img[y0 : y0 + side, x0 : x0 + side] = rng.integers(200, 250, (side, side, 3))
    return img, (x0, y0, x0 + side - 1, y0 + side - 1)


def jpeg_bytes(array: np.ndarray, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=92, **kwargs)
    return buf.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims a huge image (a decompression bomb's signature)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def write_boxes_csv(
    root: str, rows: Sequence[tuple[str, int | None, int | None, Sequence[float] | None]]
) -> None:
    with open(os.path.join(root, "boxes.csv"), "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "width", "height", "x0", "y0", "x1", "y1"])
        for rel, w, h, box in rows:
            writer.writerow([rel, "" if w is None else w, "" if h is None else h, *(box or ("", "", "", ""))])


def square_collection(root: str, num_good: int = 12, seed: int = 0) -> list[Expected]:
    """Good square images (JPEG) + a ``boxes.csv`` with their GT boxes."""
    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    rng = np.random.default_rng(seed)
    expected, rows = [], []
    for i in range(num_good):
        w, h = int(rng.integers(96, 200)), int(rng.integers(96, 200))
        img, box = square_image(rng, w, h)
        rel = f"img/good_{i:03d}.jpg"
        with open(os.path.join(root, rel), "wb") as fh:
            fh.write(jpeg_bytes(img))
        expected.append(Expected(rel, False, (w, h), box))
        rows.append((rel, w, h, box))
    write_boxes_csv(root, rows)
    return expected


def bad_collection(root: str, seed: int = 1) -> list[Expected]:
    """Every kind of awkward input, with GT boxes where the image is usable, listed in ``boxes.csv``."""
    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    rng = np.random.default_rng(seed)
    expected: list[Expected] = []
    files: dict[str, bytes] = {}

    img, box = square_image(rng, 150, 110)
    good = jpeg_bytes(img)
    files["img/ok.jpg"] = good
    expected.append(Expected("img/ok.jpg", False, (150, 110), box))
    files["img/zero_bytes.jpg"] = b""
    expected.append(Expected("img/zero_bytes.jpg", True, kind="decode"))
    files["img/truncated.jpg"] = good[: len(good) // 3]
    expected.append(Expected("img/truncated.jpg", True, kind="decode"))
    files["img/random_bytes.jpg"] = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    expected.append(Expected("img/random_bytes.jpg", True, kind="decode"))

    img, box = square_image(rng, 140, 120)
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    rgba[:6, :6, 3] = 0  # a transparent corner (composited on white by ingest)
    files["img/alpha.png"] = png_bytes(Image.fromarray(rgba))
    expected.append(Expected("img/alpha.png", False, (140, 120), box))

    img, box = square_image(rng, 130, 100)
    grey16 = (img[..., 0].astype(np.uint16) * 257).astype(np.uint16)
    files["img/grey16.png"] = png_bytes(Image.fromarray(grey16))
    expected.append(Expected("img/grey16.png", False, (130, 100), box))

    img, box = square_image(rng, 120, 140)
    files["img/grey.jpg"] = jpeg_bytes(img[..., 0])
    expected.append(Expected("img/grey.jpg", False, (120, 140), box))

    img, box = square_image(rng, 160, 100)
    buf = io.BytesIO()
    Image.fromarray(img).convert("CMYK").save(buf, format="JPEG", quality=92)
    files["img/cmyk.jpg"] = buf.getvalue()
    expected.append(Expected("img/cmyk.jpg", False, (160, 100), box))

    # EXIF orientation 6: the stored pixels are the displayed image turned 90° counter-clockwise.
    displayed, box = square_image(rng, 180, 100)
    stored = np.ascontiguousarray(np.rot90(displayed, k=1))
    exif = Image.Exif()
    exif[0x0112] = 6
    files["img/exif_rotated.jpg"] = jpeg_bytes(stored, exif=exif.tobytes())
    expected.append(Expected("img/exif_rotated.jpg", False, (180, 100), box))

    files["img/one_pixel.png"] = png_bytes(Image.new("RGB", (1, 1), (200, 10, 10)))
    expected.append(Expected("img/one_pixel.png", False, (1, 1), None))
    files["img/bomb.png"] = bomb_png()
    expected.append(Expected("img/bomb.png", True, kind="too_large"))
    expected.append(Expected("img/missing.jpg", True, kind="missing"))  # listed in boxes.csv, never written
    # A 0.7 kB JPEG declaring 30000x30000 (refused by its declared size), a JPEG cut in half with an
    # end-of-image marker appended (decodes without error in PIL; caught by its grey-filled tail).
    bomb = bytearray(jpeg_bytes(np.full((64, 64, 3), 90, np.uint8)))
    sof = bomb.index(b"\xff\xc0")
    bomb[sof + 5 : sof + 9] = (30_000).to_bytes(2, "big") * 2
    files["img/declared_30000.jpg"] = bytes(bomb)
    expected.append(Expected("img/declared_30000.jpg", True, kind="too_large"))
    noisy = jpeg_bytes(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    files["img/cut_with_eoi.jpg"] = noisy[: len(noisy) // 2] + b"\xff\xd9"
    expected.append(Expected("img/cut_with_eoi.jpg", True, kind="decode"))
    img, box = square_image(rng, 150, 100)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="GIF")
    files["img/photo.gif"] = buf.getvalue()  # labelled: a GIF is its first frame
    expected.append(Expected("img/photo.gif", False, (150, 100), box))
    # A format that is listed (storage.OTHER_IMAGE_EXTENSIONS) but that PIL does not read.
    files["img/drawing.svg"] = b'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="30"/>\n'
    expected.append(Expected("img/drawing.svg", True, kind="unsupported"))

    for rel, data in files.items():
        with open(os.path.join(root, rel), "wb") as fh:
            fh.write(data)
    write_boxes_csv(root, [(e.rel, None, None, e.box) for e in expected])
    return expected


def tiny_colocnet_payload(seed: int = 0, threshold: float | None = None) -> dict:
    """A random tiny ColocNet in the exported-model format."""
    torch.manual_seed(seed)
    cfg = apply_overrides(ColocConfig(), ["model.backbone=tiny", "model.weights=none"])
    return model_payload(build_model(cfg), cfg, threshold=threshold)


def brightness_state() -> dict[str, torch.Tensor]:
    """Tiny-backbone weights that make every channel a blurred brightness detector.

    Positive averaging kernels and zero biases: on normalised input, dark pixels give negative sums (0
    after ReLU) and bright ones positive, so the channel mean (CAAM) lights up exactly the bright square.
    """
    from coloc_core.backbones import build_backbone

    backbone = build_backbone("tiny", weights=None)
    state = {}
    for key, value in backbone.state_dict().items():
        if key.endswith("weight"):
            fan_in = value.shape[1] * value.shape[2] * value.shape[3]
            state[key] = torch.full_like(value, 1.0 / fan_in)
        else:
            state[key] = torch.zeros_like(value)
    return state


def brightness_payload(threshold: float = 0.2) -> dict:
    """A CAAM model file over the brightness backbone: finds bright squares (an "oracle" for them)."""
    return baseline_payload("caam", backbone="tiny", backbone_state=brightness_state(), threshold=threshold)


def save_payload(payload: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def read_table_bytes(data: bytes) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(data))


def prediction_rows(
    items: Sequence[PredictionItem],
    threshold: float = 0.2,
    model: str = "test-model",
) -> pa.Table:
    """A predictions table from (path, width, height, uint8 heatmap or None, box or None, score)."""
    from pipelines import schema
    from pipelines.predictions import encode_heatmap

    cols = schema.empty_columns()
    for path, width, height, heat, box, score in items:
        cols["path"].append(path)
        cols["width"].append(width)
        cols["height"].append(height)
        for name, value in zip(schema.BOX_COLUMNS, box or (None,) * 4, strict=True):
            cols[name].append(value)
        cols["score"].append(score)
        cols["threshold"].append(threshold)
        if heat is None:
            cols["heatmap"].append(None)
            cols["heatmap_h"].append(None)
            cols["heatmap_w"].append(None)
            cols["error"].append(f"{path}: broken")
        else:
            data, h, w = encode_heatmap(heat)
            cols["heatmap"].append(data)
            cols["heatmap_h"].append(h)
            cols["heatmap_w"].append(w)
            cols["error"].append(None)
        cols["model"].append(model)
    return schema.to_table(cols)


def write_parts(out: str, table: pa.Table, rows_per_file: int) -> None:
    """Write a table as part files (like the labeling stage)."""
    import pyarrow.parquet as pq

    from pipelines import storage
    from pipelines.predictions import PredictionsFolder

    for k, start in enumerate(range(0, table.num_rows, rows_per_file)):
        buf = io.BytesIO()
        pq.write_table(table.slice(start, rows_per_file), buf)
        storage.write_bytes_atomic(PredictionsFolder(out).part(k), buf.getvalue())


def box_mask_224(box: tuple[float, ...], size: tuple[int, int], halo: float = 0.0) -> np.ndarray:
    """An "oracle" heatmap at 224×224: 255 on the GT box (scaled to 224).

    With ``halo``, ``halo``·255 on a box twice its size around it.
    """
    from coloc_core.boxes import SCOREMAP_SIZE, resize_boxes

    hw = (size[1], size[0])  # size is (width, height), as the records store it
    x0, y0, x1, y1 = (int(v) for v in resize_boxes(np.asarray(box, dtype=np.float64), hw, SCOREMAP_SIZE)[0])
    heat = np.zeros((224, 224), dtype=np.uint8)
    if halo:
        w, h = x1 - x0 + 1, y1 - y0 + 1
        heat[max(0, y0 - h // 2) : y1 + h // 2 + 1, max(0, x0 - w // 2) : x1 + w // 2 + 1] = round(halo * 255)
    heat[y0 : y1 + 1, x0 : x1 + 1] = 255
    return heat
