"""Encoded image bytes → RGB uint8 arrays at the model's size: the one decode of the project.

Both the Ray ingest stage (``pipelines.ingest``, one call per file inside the decode tasks) and the
one-call API (``coloc_core.predict.prepare_image`` on a path) decode through :func:`decode_image_sizes`,
so a file gives the same pixels, the same original size and the same refusals in both. Pure PIL/NumPy:
no Ray, no storage (the caller reads the bytes). In ``pipelines.ingest`` every error raised here
becomes the file's error row.

Decoding choices:

- EXIF orientation is applied (``ImageOps.exif_transpose``); width/height are the displayed ones.
- ``crop_bottom`` (default 0): that many rows are cut off the bottom of the displayed image before it
  is resized (a banner, such as FGVC-Aircraft's 20-px copyright line, that is not part of the photo);
  the height returned is then the height of what is left, whose pixel coordinates are the original
  image's (the cut is below them). An image not taller than the cut is refused (``ValueError``).
- Any mode becomes RGB. Transparent pixels (``RGBA``, ``LA``, ``PA``, ``P``/``L`` with a transparency
  key) are composited on **white**, as image viewers and web pages show them: cut-out product photos
  and logos are drawn for a white page (dark strokes on a transparent background would vanish on black).
  16-bit and 32-bit grey (``I;16*``, ``I``) are scaled from their range to 8 bits (``/257`` for
  values up to 65535, min-max above); float (``F``) from [0, 1] or [0, 255], else min-max.
- Resize: PIL bilinear on the whole image (PIL widens the kernel when shrinking, i.e. antialiased).
- Size limit, the one decompression-bomb limit of the project: an image whose header *declares* more
  than ``max_pixels`` pixels (default :data:`MAX_PIXELS` = 2**27, about 134 million, e.g. 11585×11585;
  a 108-megapixel 12000×9000 phone photo passes) is refused (``ImageTooLargeError``, "possible
  decompression bomb") before any pixel is decoded, whatever its format. The declared size is what
  counts, not what the file holds: a 690-byte JPEG declaring 30000×30000 is refused, not decoded into
  grey filler. Below the limit, JPEGs are decoded at a reduced DCT scale (``Image.draft``: 1/2, 1/4 or
  1/8, the strongest reduction that keeps both sides >= ``size``), so a large photo costs little; other
  formats are decoded at full size (at the limit ~0.4 GB as RGB, ~1.2 GB peak with the conversions).
  PIL's own ``MAX_IMAGE_PIXELS`` check is lifted while the header is read and this limit applies instead.
- Truncated files: a file whose data ends early is refused ("image file is truncated"). A JPEG
  cut short *with an end-of-image marker appended* decodes without any error in PIL (libjpeg only warns,
  and PIL does not report it) and fills the missing blocks with mid-grey. The cheap check
  :func:`_grey_filled_tail` catches the common case, a baseline (sequential) JPEG whose last decoded
  row is exactly grey 128 in every channel while rows above it are not: ``TruncatedImageError``, the
  scan data ends early. Not caught: progressive JPEGs cut this way (their early scans already cover the
  whole image, so it only loses detail), and a cut inside the last row of blocks. Refused by mistake:
  a sequential JPEG whose bottom row is exactly flat grey 128 (rare in photos).

Errors: :class:`ImageTooLargeError` (a ``ValueError``) for a declared size over the limit,
:class:`TruncatedImageError` (an ``OSError``) for the grey-filled tail, ``ValueError`` for an empty
file, and PIL's own ``OSError``/``ValueError`` (``UnidentifiedImageError`` reworded without the memory
address) for anything else it cannot read.
"""

from __future__ import annotations

import contextlib
import io
import threading
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 2**27  # declared pixels per image; the only size limit (module docstring)
# The orientations (EXIF tag 0x0112) that swap width and height when applied.
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
_ALPHA_BACKGROUND = (255, 255, 255)
_PIL_LIMIT_LOCK = threading.Lock()


class ImageTooLargeError(ValueError):
    """An image whose declared pixel count exceeds the limit (a possible decompression bomb)."""


class TruncatedImageError(OSError):
    """An image whose data ends before its last pixel (see module docstring, "Truncated files")."""


@contextlib.contextmanager
def _pil_limit_lifted() -> Iterator[None]:
    """Lift PIL's process-wide MAX_IMAGE_PIXELS while a header is read (we apply our own limit)."""
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
        return int(value) if value in range(1, 9) else 1
    except Exception:  # a malformed EXIF block: show the image as stored
        return 1


def _grey_to_uint8(values: np.ndarray, floating: bool) -> np.ndarray:
    """A high-bit-depth grey array → uint8, scaled from its nominal range (see module docstring)."""
    values = values.astype(np.float64)
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if floating and lo >= 0.0 and hi <= 1.0:
        scaled = values * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        scaled = values
    elif not floating and lo >= 0.0 and hi <= 65535.0:
        scaled = values / 257.0
    else:
        scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_rgb(im: Image.Image, background: tuple[int, int, int] = _ALPHA_BACKGROUND) -> Image.Image:
    """Any PIL mode → an ``RGB`` image (a new image; ``im`` is not modified).

    Transparency is composited on ``background`` (white by default); 16/32-bit and float grey are
    scaled to 8 bits (see module docstring).
    """
    mode = im.mode
    if mode.startswith("I") or mode == "F":
        grey = _grey_to_uint8(np.asarray(im), floating=mode == "F")
        return Image.fromarray(grey).convert("RGB")
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return im.convert("RGB") if mode != "RGB" else im.copy()


def _grey_filled_tail(im: Image.Image) -> bool:
    """True for a loaded sequential JPEG whose last row is libjpeg's grey filler (data ended early).

    When the entropy-coded data runs out (a cut file with an end-of-image marker appended), libjpeg
    only warns and decodes the missing blocks as all-zero coefficients: exactly 128 in every channel.
    The last row being exactly that, while some row above it is not, is taken as the sign.
    """
    if im.format != "JPEG" or im.mode not in ("L", "RGB") or im.info.get("progressive"):
        return False
    pixels = np.asarray(im)
    if not (pixels[-1] == 128).all():
        return False
    return bool((pixels != 128).any())


def decode_image(
    data: bytes, size: int, max_pixels: int = MAX_PIXELS, crop_bottom: int = 0
) -> tuple[np.ndarray, int, int]:
    """Encoded image bytes → (RGB uint8 array of shape (size, size, 3), width, height).

    ``width``/``height`` are the original size in the displayed orientation (after EXIF transpose), not
    the possibly reduced size a JPEG draft decodes at; ``height`` less ``crop_bottom``.
    :func:`decode_image_sizes` with one size.

    Raises:
        as :func:`decode_image_sizes`.
    """
    images, width, height = decode_image_sizes(data, (size,), max_pixels, crop_bottom)
    return images[0], width, height


def decode_image_sizes(
    data: bytes, sizes: Sequence[int], max_pixels: int = MAX_PIXELS, crop_bottom: int = 0
) -> tuple[list[np.ndarray], int, int]:
    """Encoded image bytes, decoded once → one RGB uint8 (s, s, 3) resize per size in ``sizes``.

    A JPEG is decoded at the DCT scale that still covers the largest size (module docstring), and
    every resize is made from that one decoded image. ``crop_bottom``: rows cut off the bottom first
    (module docstring); the height returned is what is left.

    Raises:
        ImageTooLargeError: when the header declares more than ``max_pixels`` pixels.
        TruncatedImageError: a sequential JPEG whose scan data ends early (module docstring).
        OSError / ValueError (PIL): an unreadable, truncated or unsupported file.
    """
    if not data:
        raise ValueError("empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with _pil_limit_lifted():
            try:
                im: Image.Image = Image.open(io.BytesIO(data))  # reads the header only
            except UnidentifiedImageError:
                # PIL's message names the BytesIO object and its memory address: not the same twice.
                raise UnidentifiedImageError(
                    f"cannot identify image file: not an image format PIL reads ({len(data)} bytes)"
                ) from None
        width, height = im.size
        declared = width * height
        if declared > max_pixels:
            raise ImageTooLargeError(
                f"image declares {width}x{height} = {declared} pixels, over the limit of {max_pixels} "
                "(possible decompression bomb)"
            )
        if im.format == "JPEG":
            # Decode at 1/2, 1/4 or 1/8 scale when the result still covers the largest size.
            im.draft(None, (max(sizes), max(sizes)))
        im.load()
        if _grey_filled_tail(im):
            raise TruncatedImageError(
                "image file is truncated: the JPEG scan data ends early (the bottom rows are grey filler)"
            )
        return resize_displayed(im, sizes, declared=(width, height), crop_bottom=crop_bottom)


def resize_displayed(
    im: Image.Image, sizes: Sequence[int], declared: tuple[int, int] | None = None, crop_bottom: int = 0
) -> tuple[list[np.ndarray], int, int]:
    """A loaded PIL image → one RGB uint8 (s, s, 3) resize per size, as displayed (EXIF applied).

    The last step of :func:`decode_image_sizes`, also used as it is for a PIL image already in memory
    (``coloc_core.predict.prepare_image``). ``im`` is not modified.

    Args:
        im: the image (any mode; its EXIF orientation, if any, is applied).
        sizes: output sides, each >= 1.
        declared: (width, height) as stored in the file's header, when ``im`` was decoded at a
            reduced JPEG draft scale; None = ``im.size``.
        crop_bottom: rows of the displayed original image cut off its bottom before resizing.

    Returns:
        ``(images, width, height)``: width/height are the original size in the displayed orientation,
        the height less ``crop_bottom``.

    Raises:
        ValueError: ``crop_bottom`` is negative, or the image is not taller than it.
    """
    width, height = declared if declared is not None else im.size
    orientation = _orientation(im)
    if orientation != 1:
        im = ImageOps.exif_transpose(im)
        if orientation in _TRANSPOSING_ORIENTATIONS:
            width, height = height, width
    if crop_bottom < 0:
        raise ValueError(f"crop_bottom must be >= 0, got {crop_bottom}")
    if crop_bottom:
        if crop_bottom >= height:
            raise ValueError(
                f"image is {height} px tall: nothing is left above the {crop_bottom} rows cut off its bottom"
            )
        # In the rows of the decoded image, which a JPEG draft may have reduced.
        keep = max(1, round((height - crop_bottom) * im.height / height))
        im = im.crop((0, 0, im.width, keep))
        height -= crop_bottom
    rgb = to_rgb(im)
    images = [np.asarray(rgb.resize((s, s), Image.Resampling.BILINEAR), dtype=np.uint8) for s in sizes]
    for size, image in zip(sizes, images, strict=True):
        if image.shape != (size, size, 3):  # defensive: PIL returned something unexpected
            raise ValueError(f"decoded to shape {image.shape}, expected {(size, size, 3)}")
    return images, int(width), int(height)
