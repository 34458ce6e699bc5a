"""pipelines.ingest.error_kind: the ``error_kind`` of real bad files, read and decoded as labeling does.

Each file is written by the test, read through ``ingest._read_all`` (``storage.read_bytes``) and
decoded by ``ingest.decode_or_error``, the per-file step of ``ingest.decode_batch`` (no Ray here).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from coloc_core import decode
from pipelines import ingest, schema

SIZES = (32,)


def _jpeg(width: int = 64, height: int = 48) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _declaring(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0) rewritten to declare ``width``×``height``."""
    data = bytearray(jpeg)
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (30, 20), (200, 10, 10)).save(buf, format="GIF")
    return buf.getvalue()


def _outcome(path: Path | str) -> ingest.FileError | tuple[int, int]:
    """What labeling makes of one file: its error, or its (width, height) when it decodes."""
    (data,) = ingest._read_all([str(path)], None)
    result = ingest.decode_or_error(str(path), data, SIZES)
    if isinstance(result, ingest.FileError):
        return result
    images, width, height = result
    assert images[0].shape == (SIZES[0], SIZES[0], 3)
    return width, height


def _kind(path: Path | str) -> str:
    result = _outcome(path)
    assert isinstance(result, ingest.FileError), f"{path} decoded: {result}"
    assert result.error.startswith(f"{path}: "), result.error
    assert result.kind in schema.ERROR_KINDS
    return result.kind


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("truncated.jpg", lambda: _jpeg()[: len(_jpeg()) // 3], schema.KIND_DECODE),
        ("garbage.png", lambda: b"\x89PNG\r\n\x1a\n" + os.urandom(500), schema.KIND_DECODE),
        ("empty.jpg", lambda: b"", schema.KIND_DECODE),
        ("declared_30000.jpg", lambda: _declaring(_jpeg(), 30_000, 30_000), schema.KIND_TOO_LARGE),
        ("random_bytes.jpg", lambda: np.random.default_rng(1).bytes(3000), schema.KIND_DECODE),
        ("text.jpg", lambda: b"just some text, not an image\n" * 20, schema.KIND_DECODE),
        # A listed-but-unsupported extension (storage.OTHER_IMAGE_EXTENSIONS): listed, then refused.
        (
            "drawing.svg",
            lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
            "unsupported",
        ),
    ],
)
def test_bad_files_get_their_kind(tmp_path: Path, name: str, content, kind: str):
    path = tmp_path / name
    path.write_bytes(content())
    assert _kind(path) == kind


def test_a_declared_huge_jpeg_is_refused_by_its_header_not_decoded(tmp_path: Path):
    path = tmp_path / "bomb.jpg"
    path.write_bytes(_declaring(_jpeg(), 30_000, 30_000))
    result = _outcome(path)
    assert isinstance(result, ingest.FileError) and "declares 30000x30000" in result.error
    # The same bytes declaring a small size decode: the size alone made the kind.
    path.write_bytes(_declaring(_jpeg(), 64, 48))
    assert _outcome(path) == (64, 48)


def test_a_gif_is_labelled_not_an_error(tmp_path: Path):
    path = tmp_path / "photo.gif"
    path.write_bytes(_gif())
    assert _outcome(path) == (30, 20)


def test_a_file_that_vanished_after_listing_is_missing(tmp_path: Path):
    path = tmp_path / "gone.jpg"
    path.write_bytes(_jpeg())
    listed = str(path)
    path.unlink()
    result = _outcome(listed)
    assert isinstance(result, ingest.FileError) and "FileNotFoundError" in result.error
    assert result.kind == schema.KIND_MISSING


def test_a_folder_named_like_an_image_is_unreadable(tmp_path: Path):
    folder = tmp_path / "album.jpg"
    folder.mkdir()
    assert _kind(folder) == schema.KIND_UNREADABLE


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_a_file_without_read_permission_is_unreadable(tmp_path: Path):
    path = tmp_path / "secret.jpg"
    path.write_bytes(_jpeg())
    path.chmod(0)
    try:
        assert _kind(path) == schema.KIND_UNREADABLE
    finally:
        path.chmod(0o644)


def test_error_kind_on_exceptions():
    assert ingest.error_kind(FileNotFoundError("x"), reading=True) == "missing"
    assert ingest.error_kind(PermissionError("x"), reading=True) == "unreadable"
    assert ingest.error_kind(decode.ImageTooLargeError("x"), reading=False) == "too_large"
    assert ingest.error_kind(UnidentifiedImageError("x"), reading=False, path="a.heic") == "unsupported"
    assert ingest.error_kind(UnidentifiedImageError("x"), reading=False, path="a.JPG") == "decode"
    assert ingest.error_kind(OSError("decoder jpeg2k not available"), reading=False) == "unsupported"
    assert ingest.error_kind(decode.TruncatedImageError("x"), reading=False) == "decode"
    assert ingest.error_kind(OSError("image file is truncated"), reading=False) == "decode"
