"""pipelines.ingest without Ray: decoding every kind of input (good and bad), error texts, augmentation.

The decode and augmentation kernels are tested in-process (fast, exact); tests/ray/test_ingest.py runs
the same code through Ray Data against the loopback S3 server, with the inputs defined here.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from coloc_core import decode
from coloc_core.datasets import ImageRecord
from pipelines import ingest, storage

pytestmark = [pytest.mark.timeout(180)]


# ------------------------------------------------------------------------------------- test inputs


def _encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _halves(width: int, height: int, left: tuple[int, ...], right: tuple[int, ...], mode: str) -> Image.Image:
    im = Image.new(mode, (width, height), left)
    im.paste(Image.new(mode, (width - width // 2, height), right), (width // 2, 0))
    return im


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A ~100-byte PNG whose IHDR claims width×height RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + _png_chunk(b"IEND", b"")
    )


def bomb_jpeg(width: int = 65_000, height: int = 65_000) -> bytes:
    """A small valid JPEG whose SOF0 header is patched to claim width×height (JPEG's max side is 65535)."""
    data = bytearray(_encode(Image.new("RGB", (64, 64), (200, 10, 10)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def exif_rotated_jpeg() -> bytes:
    """40×20 as stored, left half red, right half blue, orientation 6 (display = rotate 90° clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(_halves(40, 20, (255, 0, 0), (0, 0, 255), "RGB"), "JPEG", quality=95, exif=exif.tobytes())


def truncated_jpeg() -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(noise), "JPEG", quality=90)
    return data[: len(data) // 2]


def cut_jpeg_with_eoi() -> bytes:
    """A good sequential JPEG cut in half with an end-of-image marker appended (PIL decodes it silently)."""
    noise = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(noise), "JPEG", quality=90)
    return data[: len(data) // 2] + b"\xff\xd9"


def palette_with_transparency() -> bytes:
    im = Image.new("P", (20, 10), 0)
    im.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    im.paste(1, (10, 0, 20, 10))
    return _encode(im, "PNG", transparency=0)


def animated_gif() -> bytes:
    """Two frames, red then blue: the first frame is the image."""
    frames = [Image.new("RGB", (30, 20), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


# name → (bytes, displayed (width, height)) for files that must decode; None size = must be an error.
GOOD_FILES: dict[str, tuple[bytes, tuple[int, int]]] = {
    "rgb.jpg": (_encode(Image.new("RGB", (64, 48), (10, 200, 30)), "JPEG"), (64, 48)),
    "gray.jpg": (_encode(Image.new("L", (30, 50), 77), "JPEG"), (30, 50)),
    "alpha.png": (_encode(_halves(33, 17, (0, 0, 0, 0), (255, 0, 0, 255), "RGBA"), "PNG"), (33, 17)),
    "gray_alpha.png": (_encode(Image.new("LA", (12, 9), (50, 0)), "PNG"), (12, 9)),
    "palette_transparent.png": (palette_with_transparency(), (20, 10)),
    "sixteen_bit.png": (_encode(Image.fromarray(np.full((35, 25), 128 * 257, np.uint16)), "PNG"), (25, 35)),
    "bilevel.png": (_encode(Image.new("1", (16, 8), 1), "PNG"), (16, 8)),
    "cmyk.jpg": (_encode(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG", quality=95), (40, 30)),
    "exif_rotated.jpg": (exif_rotated_jpeg(), (20, 40)),
    "one_pixel.png": (_encode(Image.new("RGB", (1, 1), (9, 99, 199)), "PNG"), (1, 1)),
    "animated.gif": (animated_gif(), (30, 20)),
}
BAD_FILES: dict[str, tuple[bytes, str]] = {
    "zero_bytes.jpg": (b"", "empty file"),
    "truncated.jpg": (truncated_jpeg(), "truncated"),
    "random_bytes.jpg": (np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes(), "cannot"),
    "bomb.png": (bomb_png(), "decompression bomb"),
    "bomb.jpg": (bomb_jpeg(), "decompression bomb"),
    # Under 1 kB, declares 30000x30000: at 1/8 scale it used to decode into grey filler and get a box.
    "declared_30000.jpg": (bomb_jpeg(30_000, 30_000), "declares 30000x30000"),
    "cut_with_eoi.jpg": (cut_jpeg_with_eoi(), "truncated"),
}


# ------------------------------------------------------------------------------- decode, in-process


@pytest.mark.parametrize("name", sorted(GOOD_FILES))
def test_decode_image_good_inputs(name: str):
    data, (width, height) = GOOD_FILES[name]
    image, got_w, got_h = decode.decode_image(data, size=224)
    assert image.dtype == np.uint8 and image.shape == (224, 224, 3)
    assert (got_w, got_h) == (width, height)


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_decode_image_bad_inputs_raise(name: str):
    data, reason = BAD_FILES[name]
    with pytest.raises(Exception, match=reason):
        decode.decode_image(data, size=224)


def test_exif_orientation_is_applied():
    image, width, height = decode.decode_image(exif_rotated_jpeg(), size=224)
    assert (width, height) == (20, 40)
    # Rotating the stored image 90° clockwise puts its left (red) half on top.
    top, bottom = image[20:90].reshape(-1, 3).mean(0), image[134:204].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_a_gif_is_its_first_frame():
    image, width, height = decode.decode_image(animated_gif(), size=224)
    assert (width, height) == (30, 20)
    assert image[..., 0].min() > 240 and image[..., 2].max() < 15  # red, not the blue second frame


def test_alpha_is_composited_on_white():
    image, _, _ = decode.decode_image(GOOD_FILES["alpha.png"][0], size=224)
    assert image[112, 10].tolist() == [255, 255, 255]  # fully transparent (black) pixel → white
    assert image[112, 214].tolist() == [255, 0, 0]  # opaque red stays red
    la, _, _ = decode.decode_image(GOOD_FILES["gray_alpha.png"][0], size=224)
    assert (la == 255).all()
    pal, _, _ = decode.decode_image(GOOD_FILES["palette_transparent.png"][0], size=224)
    assert pal[5, 5].tolist() == [255, 255, 255] and pal[5, 220].tolist() == [0, 255, 0]


def test_high_bit_depth_and_cmyk_colours():
    sixteen, _, _ = decode.decode_image(GOOD_FILES["sixteen_bit.png"][0], size=224)
    assert (sixteen == 128).all()  # 128*257 of 65535 → 128 of 255
    cmyk, _, _ = decode.decode_image(GOOD_FILES["cmyk.jpg"][0], size=224)
    r, g, b = cmyk.reshape(-1, 3).mean(0)
    assert r > 240 and g < 15 and b < 15  # C=0, M=Y=255 is red
    one, _, _ = decode.decode_image(GOOD_FILES["one_pixel.png"][0], size=224)
    assert (one == np.array([9, 99, 199], np.uint8)).all()


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.array([[0, 65535]], np.int32), [0, 255]),  # "I" within 16 bits: /257
        (np.array([[-10, 90]], np.int32), [0, 255]),  # out of range: min-max
        (np.array([[0.0, 1.0]], np.float32), [0, 255]),  # "F" in [0, 1]
        (np.array([[0.0, 200.0]], np.float32), [0, 200]),  # "F" in [0, 255]
        (np.array([[np.nan, 3.0]], np.float32), [0, 3]),
    ],
)
def test_to_rgb_scales_integer_and_float_grey(array: np.ndarray, expected: list[int]):
    im = Image.fromarray(array)
    assert im.mode in ("I", "F")
    rgb = np.asarray(decode.to_rgb(im))
    assert rgb.shape == (1, 2, 3)
    assert rgb[0, :, 0].tolist() == expected
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_the_limit_applies_to_the_declared_size_of_every_format_and_jpegs_decode_at_a_draft():
    jpeg = _encode(Image.new("RGB", (2048, 1536), (0, 0, 255)), "JPEG")
    png = _encode(Image.new("RGB", (2048, 1536), (0, 0, 255)), "PNG")
    # One limit, on the declared 3.1 M pixels, whatever the format (a JPEG draft does not lift it).
    for data in (jpeg, png):
        with pytest.raises(decode.ImageTooLargeError, match="2048x1536"):
            decode.decode_image(data, size=224, max_pixels=1_000_000)
    # Under the limit the JPEG decodes at a 1/4 draft (512x384); the size reported is the declared one.
    image, width, height = decode.decode_image(jpeg, size=224, max_pixels=2048 * 1536)
    assert (width, height) == (2048, 1536)
    assert image[100, 100, 2] > 240
    assert decode.decode_image(png, size=224, max_pixels=2048 * 1536)[1:] == (2048, 1536)
    # The default limit passes a 108-megapixel photo's header and refuses a 30000x30000 one.
    assert 12_000 * 9_000 <= decode.MAX_PIXELS < 30_000 * 30_000
    # PIL's process-wide limit is untouched afterwards.
    assert Image.MAX_IMAGE_PIXELS is not None


def test_a_flat_grey_bottom_is_only_filler_in_a_sequential_jpeg_with_content_above():
    grey = _encode(Image.new("RGB", (64, 48), (128, 128, 128)), "JPEG")  # all grey: a real grey image
    assert decode.decode_image(grey, size=224)[1:] == (64, 48)
    noise = np.random.default_rng(2).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    progressive = _encode(Image.fromarray(noise), "JPEG", quality=90, progressive=True)
    cut = progressive[: len(progressive) // 2] + b"\xff\xd9"
    assert decode.decode_image(cut, size=224)[1:] == (160, 120)  # documented as not detected


def test_decode_batch_turns_read_failures_into_error_rows(tmp_path: Path, monkeypatch, caplog):
    good = tmp_path / "good.jpg"
    good.write_bytes(GOOD_FILES["rgb.jpg"][0])
    folder_named_jpg = tmp_path / "folder.jpg"
    folder_named_jpg.mkdir()
    locked = tmp_path / "locked.jpg"
    locked.write_bytes(GOOD_FILES["rgb.jpg"][0])
    real_read = storage.read_bytes

    def read_bytes(uri: str, endpoint_url=None) -> bytes:
        if uri == str(locked):
            raise PermissionError(13, "Permission denied", uri)
        return real_read(uri, endpoint_url)

    monkeypatch.setattr(storage, "read_bytes", read_bytes)
    records = [
        ImageRecord(path=str(good), split="all"),
        ImageRecord(
            path=str(tmp_path / "missing.jpg"), split="all", width=10, height=20, boxes=((1, 2, 3, 4),)
        ),
        ImageRecord(path=str(folder_named_jpg), split="all"),
        ImageRecord(path=str(locked), split="all"),
    ]
    table = ingest.records_table(records)
    with caplog.at_level(logging.WARNING, logger="pipelines.ingest"):
        out = ingest.decode_batch(table, size=32)
        ingest.decode_batch(table, size=32)  # the same failures again: not logged again
    rows = out.drop_columns(["image"]).to_pylist()
    assert rows[0]["error"] is None and (rows[0]["width"], rows[0]["height"]) == (64, 48)
    assert rows[1]["error"].startswith(f"{tmp_path / 'missing.jpg'}: FileNotFoundError")
    assert (rows[1]["width"], rows[1]["height"]) == (10, 20)  # the annotation's size is kept
    assert rows[1]["boxes"] == [1.0, 2.0, 3.0, 4.0]
    assert rows[2]["error"].startswith(f"{folder_named_jpg}: ") and rows[2]["width"] is None
    assert rows[3]["error"].startswith(f"{locked}: PermissionError")
    images = out.column("image").combine_chunks().to_numpy()
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8
    assert images[0].any() and not images[1:].any()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all("cannot use image" in w for w in warnings)
    assert out.schema.field("width").type == pa.int32() and out.schema.field("error").type == pa.string()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_an_error_row(tmp_path: Path):
    locked = tmp_path / "locked.jpg"
    locked.write_bytes(GOOD_FILES["rgb.jpg"][0])
    locked.chmod(0)
    out = ingest.decode_batch(ingest.records_table([ImageRecord(path=str(locked), split="all")]), size=16)
    assert "PermissionError" in out.column("error")[0].as_py()


def test_error_texts_are_the_same_on_every_run(tmp_path: Path):
    """PIL names the BytesIO it could not identify, with its memory address; the row must not."""
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"a text file with an image name\n" * 10)
    table = ingest.records_table([ImageRecord(path=str(bad), split="all")])
    texts = {ingest.decode_batch(table, size=16).column("error")[0].as_py() for _ in range(3)}
    reason = "cannot identify image file: not an image format PIL reads (310 bytes)"
    assert texts == {f"{bad}: UnidentifiedImageError: {reason}"}


def test_an_address_in_any_other_reason_is_cut(tmp_path: Path, monkeypatch):
    path = tmp_path / "odd.png"
    path.write_bytes(GOOD_FILES["rgb.jpg"][0])

    def decode_image_sizes(
        data: bytes, sizes: tuple[int, ...], max_pixels: int, crop_bottom: int = 0
    ) -> tuple[list, int, int]:
        raise OSError(f"cannot read from {object()!r} in {io.BytesIO(data)!r}")

    monkeypatch.setattr(ingest, "decode_image_sizes", decode_image_sizes)
    out = ingest.decode_batch(ingest.records_table([ImageRecord(path=str(path), split="all")]), size=16)
    assert out.column("error")[0].as_py() == (
        f"{path}: OSError: cannot read from <object object> in <_io.BytesIO object>"
    )


def test_an_empty_listing_says_whether_the_folder_exists(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=f"input folder {tmp_path / 'nowhere'} does not exist"):
        ingest.records_from_folder(str(tmp_path / "nowhere"))
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match=f"no image files .* under {tmp_path}$"):
        ingest.records_from_folder(str(tmp_path))


# ------------------------------------------------------------------------------- augment, in-process


def test_augment_batch_shape_determinism_and_epochs():
    images = np.random.default_rng(0).integers(0, 256, (3, 256, 256, 3), dtype=np.uint8)
    before = images.copy()
    batch = {"index": np.array([0, 1, 2]), "image": images}
    a = ingest.augment_batch(batch, seed=7, epoch=0, crop=224, padding=4)
    b = ingest.augment_batch(batch, seed=7, epoch=0, crop=224, padding=4)
    c = ingest.augment_batch(batch, seed=7, epoch=1, crop=224, padding=4)
    assert a["image"].shape == (3, 224, 224, 3) and a["image"].dtype == np.uint8
    assert np.array_equal(a["image"], b["image"])
    assert not np.array_equal(a["image"], c["image"])
    assert np.array_equal(images, before)  # input untouched
    offsets = ingest.crop_offsets(np.arange(500), seed=7, epoch=0, max_offset=40)
    assert offsets.min() == 0 and offsets.max() == 40  # the whole range [0, 256 + 2*4 - 224] is used
    # The crop of one image depends on its own index only, not on its batch.
    one = {"index": np.array([2]), "image": images[2:]}
    alone = ingest.augment_batch(one, seed=7, epoch=0, crop=224, padding=4)
    assert np.array_equal(alone["image"][0], a["image"][2])


def test_pad_and_crop_uses_reflect_padding():
    images = np.random.default_rng(1).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    centre = ingest.pad_and_crop(images, np.array([[4, 4], [4, 4]]), crop=224, padding=4)
    assert np.array_equal(centre, images[:, :224, :224])
    corner = ingest.pad_and_crop(images, np.array([[0, 0], [0, 0]]), crop=224, padding=4)
    assert np.array_equal(corner[:, 4:, 4:], images[:, :220, :220])
    assert np.array_equal(corner[:, 0, 0], images[:, 4, 4])  # reflect: padded[0] = image[4]
    assert np.array_equal(corner[:, 3, 4:], images[:, 1, :220])


def test_augment_batch_refuses_what_it_cannot_crop():
    images = np.zeros((2, 32, 40, 3), np.uint8)
    batch = {"index": np.array([0, 1]), "image": images}
    with pytest.raises(ValueError, match="exceeds the padded image side 36"):
        ingest.augment_batch(batch, seed=0, epoch=0, crop=37, padding=2)  # the shorter side + 2*2
    with pytest.raises(ValueError, match=r"expects \(B, H, W, 3\) uint8 images"):
        ingest.augment_batch(
            {**batch, "image": images.astype(np.float32)}, seed=0, epoch=0, crop=8, padding=0
        )
    with pytest.raises(ValueError, match="uint8 images"):
        ingest.augment_batch({**batch, "image": images[0]}, seed=0, epoch=0, crop=8, padding=0)


def test_augment_batch_keeps_the_other_columns_and_a_full_side_crop_is_the_image():
    images = np.random.default_rng(2).integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    batch = {"index": np.array([5, 9]), "image": images, "path": np.array(["a", "b"])}
    out = ingest.augment_batch(batch, seed=1, epoch=3, crop=24, padding=0)  # max_offset 0: no crop
    assert np.array_equal(out["image"], images)
    assert out["index"] is batch["index"] and out["path"] is batch["path"]
    assert batch["image"] is images  # the input batch is not modified
    offsets = ingest.crop_offsets(np.array([5, 9]), seed=1, epoch=3, max_offset=0)
    assert offsets.dtype == np.int64 and offsets.shape == (2, 2) and not offsets.any()


# ------------------------------------------------------------------------------- decode, many sizes


def test_one_decode_makes_every_size_like_separate_decodes() -> None:
    # JPEG (DCT-reduced: a 2x large photo), PNG with alpha, EXIF-rotated JPEG: the sizes of one decode.
    for name, (data, _) in GOOD_FILES.items():
        (image_256, image_224), width, height = decode.decode_image_sizes(data, (256, 224))
        alone_256, w, h = decode.decode_image(data, 256)
        assert (width, height) == (w, h), name
        np.testing.assert_array_equal(image_256, alone_256, err_msg=name)
        assert image_224.shape == (224, 224, 3), name
        alone_224 = decode.decode_image(data, 224)[0]
        # The same pixels, up to the DCT scale a JPEG is decoded at (chosen for the larger size).
        assert np.abs(image_224.astype(int) - alone_224.astype(int)).mean() < 2.0, name


def test_decode_batch_adds_the_eval_image_of_the_same_decode(tmp_path: Path) -> None:
    path = tmp_path / "rgb.jpg"
    path.write_bytes(GOOD_FILES["rgb.jpg"][0])
    table = ingest.records_table([ImageRecord(path=str(path), split="all")])
    out = ingest.decode_batch(table, size=32, eval_size=24)
    assert out.column(ingest.IMAGE).chunk(0).to_numpy().shape == (1, 32, 32, 3)
    eval_images = out.column(ingest.EVAL_IMAGE).chunk(0).to_numpy()
    assert eval_images.shape == (1, 24, 24, 3)
    np.testing.assert_array_equal(
        eval_images[0], decode.decode_image_sizes(path.read_bytes(), (32, 24))[0][1]
    )
    assert ingest.EVAL_IMAGE not in ingest.decode_batch(table, size=32).column_names


def test_blocks_hold_about_64_mib_of_pixels_and_a_small_set_still_spreads():
    row_224 = 224 * 224 * 3
    assert ingest.default_rows_per_block(100_000, row_224) == ingest.BLOCK_BYTES // row_224 == 445
    # larger images, fewer rows; the training layout (256 + 224 eval copy) counts both columns
    assert ingest.default_rows_per_block(100_000, 480 * 480 * 3) == 97
    assert ingest.default_rows_per_block(100_000, 3 * (256**2 + 224**2)) == 193
    # a small set is cut into 8 blocks at least, so that every CPU decodes
    assert ingest.default_rows_per_block(80, row_224) == 10
    assert ingest.default_rows_per_block(3, row_224) == 1


def _banner_image(width: int, height: int, banner: int) -> Image.Image:
    """Blue above, a red banner of ``banner`` rows at the bottom."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, :, 2] = 255
    pixels[height - banner :] = (255, 0, 0)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_crop_bottom_cuts_the_banner_off_before_the_resize(fmt: str):
    # 1600 px tall: a JPEG decodes at a 1/4 draft scale for 224, and the cut follows the scale.
    data = _encode(_banner_image(1200, 1600, 20), fmt)
    image, width, height = decode.decode_image(data, size=224, crop_bottom=20)
    assert (width, height) == (1200, 1580)  # the height of what is left
    assert image[..., 0].max() < 40 and image[..., 2].min() > 200  # no red row left
    kept, _, full = decode.decode_image(data, size=224)
    assert full == 1600 and kept[-1, :, 0].min() > 200  # without the cut the banner is there


def test_crop_bottom_cuts_the_displayed_bottom_of_a_rotated_image():
    # Stored 40 wide, 20 tall and rotated 90° clockwise when displayed (20 × 40): the stored left
    # half (red) is the displayed top, the right half (blue) the displayed bottom.
    image, width, height = decode.decode_image(exif_rotated_jpeg(), size=224, crop_bottom=20)
    assert (width, height) == (20, 20)
    assert image.reshape(-1, 3).mean(0)[0] > 200  # only the red top is left


def test_crop_bottom_refuses_an_image_it_would_leave_empty():
    data = _encode(_banner_image(30, 20, 5), "PNG")
    with pytest.raises(ValueError, match="20 px tall: nothing is left above the 20 rows"):
        decode.decode_image(data, size=16, crop_bottom=20)
    with pytest.raises(ValueError, match="crop_bottom must be >= 0"):
        decode.decode_image(data, size=16, crop_bottom=-1)


def test_decode_batch_with_crop_bottom_stores_the_height_above_the_cut(tmp_path: Path, caplog) -> None:
    path = tmp_path / "plane.png"
    path.write_bytes(_encode(_banner_image(64, 48, 8), "PNG"))
    # The annotation gives the file's size: no size warning for the cut.
    table = ingest.records_table([ImageRecord(path=str(path), split="all", width=64, height=48)])
    with caplog.at_level(logging.WARNING):
        out = ingest.decode_batch(table, size=32, crop_bottom=8)
    assert out.column(ingest.HEIGHT).to_pylist() == [40] and out.column(ingest.WIDTH).to_pylist() == [64]
    assert out.column(ingest.IMAGE).chunk(0).to_numpy()[0, ..., 0].max() < 40
    assert "annotation says" not in caplog.text
    small = tmp_path / "small.png"
    small.write_bytes(_encode(_banner_image(10, 6, 2), "PNG"))
    out = ingest.decode_batch(
        ingest.records_table([ImageRecord(path=str(small), split="all")]), size=8, crop_bottom=8
    )
    assert "nothing is left above the 8 rows" in out.column(ingest.ERROR)[0].as_py()
