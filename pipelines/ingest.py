"""Records (or a bare image folder) → a Ray Dataset of decoded, resized, fixed-size uint8 images.

Stages (all CPU, Ray Data):

1. ``ray.data.from_arrow`` of the record list (path + annotations; no pixels), in blocks of
   ``rows_per_block`` rows.
2. :func:`decode_batch` via ``map_batches``: read the bytes through :mod:`pipelines.storage` (``s3fs``
   inside the task), decode with PIL and resize to ``size``×``size`` (:mod:`coloc_core.decode`). A file
   that was read and cannot be decoded (bad bytes, too large, not an image), or that is missing or not
   readable (``FileNotFoundError``/``PermissionError``), becomes an *error row* instead of failing the
   job. Storage that cannot be reached is not a fact about the file: transient faults (connection,
   timeout, throttling, HTTP 5xx) are retried with bounded backoff by ``storage.read_bytes`` (see
   :mod:`pipelines.storage`, ``COLOC_STORAGE_*``), and when they persist the task raises
   ``storage.StorageUnavailableError`` ("storage unreachable: ..."), so the job fails and a rerun
   reads the files again; no error row is written for them.
3. Training only, :func:`augment` / :func:`augment_batch`: random ``augment.crop`` crop (224) of the
   ``augment.resize`` resize (256) with ``augment.crop_padding``-px reflect padding (SPEC §5), with a
   per-row RNG seeded by ``(seed, epoch, index)``.

No size is fixed here: every caller passes the one its model reads (labeling: the model file's
``payload_input_size``; training: its ``AugmentConfig``).

Row schema of :func:`images_dataset` (Arrow types):

- ``path`` (string): the image URI as listed (``s3://`` kept).
- ``index`` (int64): position of the image in the input list; a stable id (seeds the augmentation).
- ``width``, ``height`` (int32): original size in the *displayed* orientation (EXIF applied); on an
  error row the annotation's size, or null.
- ``boxes`` (list<float32>): ground-truth boxes flattened ``x0, y0, x1, y1, x0, ...`` in original
  pixels (``4k`` values; empty when unknown). ``np.reshape(boxes, (-1, 4))`` gives them back.
- ``image`` (uint8 tensor (size, size, 3)): RGB, HWC; all zeros on an error row.
- ``error`` (string): null, or ``"<path>: <ExceptionType>: <reason>"``; the same file gives the same
  text on every run (no memory addresses: PIL's "cannot identify image file <_io.BytesIO object at
  0x…>" is reworded, and any ``object at 0x…`` left in a reason is cut to ``object``).
- ``error_kind`` (string): null, or the error's kind (:func:`error_kind`; the predictions table's
  ``error_kind``, :data:`pipelines.schema.ERROR_KINDS`): ``missing`` / ``unreadable`` when reading
  failed, ``too_large`` / ``unsupported`` / ``decode`` when decoding did.

Decoding (EXIF, modes, transparency, resize, the declared-size limit :data:`MAX_PIXELS`, truncated
files) is :func:`coloc_core.decode.decode_image_sizes`, the same decode ``coloc_core.predict`` runs on a
path; its module docstring says every choice. Each error it raises becomes the file's error row.

Error rows are logged once per file and worker process, counted by :func:`split_errors` (which logs
the totals), and :func:`drop_errors` / :func:`split_errors` / :func:`augment` exclude them from training.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import UnidentifiedImageError

from coloc_core.datasets import ImageRecord, read_dataset
from coloc_core.decode import MAX_PIXELS, ImageTooLargeError, decode_image_sizes
from coloc_core.errors import MissingInputError
from pipelines import schema, storage
from pipelines.schema import ERROR, ERROR_KIND, HEIGHT, PATH, WIDTH

log = logging.getLogger(__name__)

# Shared with the predictions table (pipelines/schema.py); the other three exist only in ingest rows.
INDEX = "index"
BOXES = "boxes"
IMAGE = "image"
# A second size of the same decode (images_dataset(eval_size=...)): training's evaluation images when
# the test split is the training split, so each image is decoded once.
EVAL_IMAGE = "eval_image"
PROGRESS_EVERY_S = 10.0  # seconds between two progress lines of materialize_with_progress

DEFAULT_DECODE_CPUS = 0.5

RECORD_SCHEMA = pa.schema(
    [
        pa.field(PATH, pa.string(), nullable=False),
        pa.field(INDEX, pa.int64(), nullable=False),
        pa.field(WIDTH, pa.int32()),
        pa.field(HEIGHT, pa.int32()),
        pa.field(BOXES, pa.list_(pa.float32())),
    ]
)
_LOGGED_ERRORS: set[str] = set()
_MAX_LOGGED = 10_000
_READ_THREADS = 8
# A repr's memory address, e.g. "<_io.BytesIO object at 0x7f3a...>": differs between runs.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


# ---------------------------------------------------------------------------------- record listing


def read_records(
    kind: str, root: str, split: str = "train", endpoint_url: str | None = None
) -> list[ImageRecord]:
    """``coloc_core.datasets.read_dataset`` on a local or ``s3://`` root; record paths keep the scheme."""
    fs = storage.filesystem_for(root, endpoint_url)[0] if storage.is_s3(root) else None
    return read_dataset(kind, root, split, fs=fs)


def records_from_folder(uri: str, endpoint_url: str | None = None) -> list[ImageRecord]:
    """Every image under a folder URI (recursively, sorted): split ``all``, no sizes, no boxes.

    Raises:
        MissingInputError: (a ``FileNotFoundError``) when there is no image under ``uri`` (see
            :func:`no_images_error`).
    """
    paths = storage.list_images(uri, endpoint_url=endpoint_url)
    if not paths:
        raise no_images_error(uri, endpoint_url)
    return [ImageRecord(path=p, split="all") for p in paths]


def no_images_error(uri: str, endpoint_url: str | None = None) -> MissingInputError:
    """The error for a folder that lists no image: says whether the bucket or the folder is missing.

    Call it after an empty listing (it looks the folder and, for ``s3://``, the bucket up once).
    """
    if not storage.exists(uri, endpoint_url):
        if storage.is_s3(uri):
            bucket = "s3://" + storage.strip_scheme(uri).split("/", 1)[0]
            if bucket.rstrip("/") == uri.rstrip("/") or not storage.exists(bucket, endpoint_url):
                return MissingInputError(
                    f"input bucket {bucket} does not exist (or these credentials cannot see it)"
                )
        return MissingInputError(f"input folder {uri} does not exist")
    return MissingInputError(f"no image files ({', '.join(storage.IMAGE_EXTENSIONS)}) under {uri}")


def records_table(records: Sequence[ImageRecord]) -> pa.Table:
    """Records → an Arrow table with :data:`RECORD_SCHEMA` (``index`` = position in ``records``)."""
    return pa.table(
        {
            PATH: [r.path for r in records],
            INDEX: list(range(len(records))),
            WIDTH: [r.width for r in records],
            HEIGHT: [r.height for r in records],
            BOXES: [[float(v) for box in r.boxes for v in box] for r in records],
        },
        schema=RECORD_SCHEMA,
    )


BLOCK_BYTES = 64 * 2**20  # decoded pixels per block (= per decode task) on a large collection


def default_rows_per_block(num_rows: int, row_bytes: int = 224 * 224 * 3) -> int:
    """Rows per block: at least 8 blocks (parallel decode on a small set), else about 64 MiB of pixels.

    Few large blocks: each decode task costs Ray a fixed overhead. Over 5,902 images at 224, 128-row
    blocks gave 0.46-0.51 of a plain PIL loop per core, 445-row blocks 0.60-0.65 (docs/BENCHMARKS.md,
    ingest). 64 MiB stays under Ray Data's 128 MiB target block size.

    Args:
        num_rows: rows of the dataset.
        row_bytes: decoded bytes per row (every image column), e.g. ``3 * size**2``.
    """
    cap = max(1, BLOCK_BYTES // max(1, row_bytes))
    return max(1, min(cap, math.ceil(num_rows / 8)))


# ------------------------------------------------------------------------------------------ decode

# PIL's message when a format is recognised but its codec is not built in ("decoder jpeg2k not available").
_NO_CODEC = re.compile(r"(decoder|encoder) \S+ not available")


def error_kind(err: BaseException, *, reading: bool, path: str = "") -> str:
    """The ``error_kind`` of an image that could not be used (:data:`pipelines.schema.ERROR_KINDS`).

    Args:
        err: the exception reading or decoding the file raised (never a storage outage: that one
            fails the task, :mod:`pipelines.storage`).
        reading: True when reading the bytes failed, False when decoding them did.
        path: the file's path; its extension tells a corrupt file from an unsupported format.

    Returns:
        ``missing`` (``FileNotFoundError``), ``unreadable`` (any other read error), ``too_large``
        (:class:`ImageTooLargeError`), ``unsupported`` (a format whose decoder is not built in, or
        bytes PIL does not identify under an extension outside ``storage.IMAGE_EXTENSIONS``, e.g. a
        ``.heic`` or ``.svg``), else ``decode``: empty, truncated or corrupt data, including bytes PIL
        does not identify in a file named as a format it reads (a ``.jpg`` of garbage is a bad JPEG).
    """
    if reading:
        return schema.KIND_MISSING if isinstance(err, FileNotFoundError) else schema.KIND_UNREADABLE
    if isinstance(err, ImageTooLargeError):
        return schema.KIND_TOO_LARGE
    if _NO_CODEC.search(str(err)):
        return schema.KIND_UNSUPPORTED
    if isinstance(err, UnidentifiedImageError) and not path.lower().endswith(storage.IMAGE_EXTENSIONS):
        return schema.KIND_UNSUPPORTED
    return schema.KIND_DECODE


def _warn_once(key: str, message: str, *args: Any) -> None:
    """Log a warning once per key and worker process (a re-read dataset does not repeat it)."""
    if key in _LOGGED_ERRORS:
        return
    if len(_LOGGED_ERRORS) < _MAX_LOGGED:
        _LOGGED_ERRORS.add(key)
    log.warning(message, *args)


def _read_one(path: str, endpoint_url: str | None) -> bytes | Exception:
    """The file's bytes, or the permanent error reading it (missing, not readable) for its error row.

    Raises:
        storage.StorageUnavailableError: storage stayed unreachable through the retries of
            ``storage.read_bytes``: not the file's fault, so no error row (the task fails).
    """
    try:
        return storage.read_bytes(path, endpoint_url)
    except storage.StorageUnavailableError:
        raise
    except Exception as e:  # noqa: BLE001 - becomes the row's error
        return e


def _read_all(paths: list[str], endpoint_url: str | None) -> list[bytes | Exception]:
    """The bytes of every path (or the permanent error reading it), in order.

    Object-store GETs are latency-bound, so remote files are fetched by a few threads while the task
    holds its (fractional) CPU; local files are read in order.

    Raises:
        storage.StorageUnavailableError: for the first file whose storage stayed unreachable (reads not
            started yet are cancelled).
    """
    if len(paths) <= 1 or not any("://" in p and not p.startswith("file://") for p in paths):
        return [_read_one(p, endpoint_url) for p in paths]
    pool = ThreadPoolExecutor(max_workers=_READ_THREADS)
    try:
        return list(pool.map(lambda p: _read_one(p, endpoint_url), paths))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class FileError:
    """Why one file gives an error row: the row's ``error`` text and ``error_kind``."""

    error: str
    kind: str


def decode_or_error(
    path: str,
    data: bytes | Exception,
    sizes: Sequence[int],
    max_pixels: int = MAX_PIXELS,
    crop_bottom: int = 0,
) -> tuple[list[np.ndarray], int, int] | FileError:
    """One file's read result (its bytes, or the permanent error reading it) → its decodes, or its error.

    ``crop_bottom``: rows cut off each image's bottom first (``coloc_core.decode``).

    Returns:
        ``(images, width, height)`` as :func:`decode_image_sizes`, or a :class:`FileError` with the
        deterministic text ``"<path>: <ExceptionType>: <reason>"`` and the :func:`error_kind`.
    """
    try:
        if isinstance(data, Exception):
            raise data
        return decode_image_sizes(data, sizes, max_pixels, crop_bottom)
    except Exception as e:  # noqa: BLE001 - every failure is surfaced as an error row and counted
        reason = _ADDRESS.sub("", str(e)) or type(e).__name__
        return FileError(
            f"{path}: {type(e).__name__}: {reason}",
            error_kind(e, reading=isinstance(data, Exception), path=path),
        )


def _tensor_column(images: np.ndarray) -> pa.Array:
    from ray.data.extensions import ArrowTensorArray  # noqa: PLC0415 (Ray only in the Ray layer)

    return ArrowTensorArray.from_numpy(images)


def decode_batch(
    batch: pa.Table,
    *,
    size: int,
    max_pixels: int = MAX_PIXELS,
    endpoint_url: str | None = None,
    eval_size: int | None = None,
    crop_bottom: int = 0,
) -> pa.Table:
    """A block of :data:`RECORD_SCHEMA` rows → the same rows plus ``image`` and ``error`` (module schema).

    With ``eval_size``, also an ``eval_image`` column: the same decode resized to ``eval_size``.
    ``crop_bottom``: rows cut off each image's bottom before it is resized; ``height`` is then what is
    left (``coloc_core.decode``).

    Never raises on a bad image: decoding errors and missing or unreadable files become error rows
    (zeros image, ``error = "<path>: <reason>"``), logged once per file.

    Raises:
        storage.StorageUnavailableError: storage could not be reached for a file (transient faults
            retried in vain; module docstring): the block fails as a whole, no row is made up.
    """
    num_rows = batch.num_rows
    sizes = (size,) if eval_size is None else (size, eval_size)
    images = np.zeros((num_rows, size, size, 3), dtype=np.uint8)
    eval_images = np.zeros((num_rows, eval_size or 0, eval_size or 0, 3), dtype=np.uint8)
    widths = batch.column(WIDTH).to_pylist()
    heights = batch.column(HEIGHT).to_pylist()
    errors: list[str | None] = [None] * num_rows
    kinds: list[str | None] = [None] * num_rows
    paths = batch.column(PATH).to_pylist()
    for i, (path, data) in enumerate(zip(paths, _read_all(paths, endpoint_url), strict=True)):
        result = decode_or_error(path, data, sizes, max_pixels, crop_bottom)
        if isinstance(result, FileError):
            errors[i], kinds[i] = result.error, result.kind
            _warn_once(f"error:{path}", "ingest: cannot use image %s", errors[i])
            continue
        decoded, width, height = result
        if widths[i] is not None and (widths[i], heights[i]) != (width, height + crop_bottom):
            # The annotation's size disagrees with the file: the file wins (its boxes may not).
            _warn_once(
                f"size:{path}",
                "ingest: %s is %dx%d but its annotation says %sx%s",
                path,
                width,
                height + crop_bottom,
                widths[i],
                heights[i],
            )
        images[i] = decoded[0]
        if eval_size is not None:
            eval_images[i] = decoded[1]
        widths[i], heights[i] = width, height
    columns = {
        PATH: batch.column(PATH),
        INDEX: batch.column(INDEX),
        WIDTH: pa.array(widths, type=pa.int32()),
        HEIGHT: pa.array(heights, type=pa.int32()),
        BOXES: batch.column(BOXES),
        IMAGE: _tensor_column(images),
        ERROR: pa.array(errors, type=pa.string()),
        ERROR_KIND: pa.array(kinds, type=pa.string()),
    }
    if eval_size is not None:
        columns[EVAL_IMAGE] = _tensor_column(eval_images)
    return pa.table(columns)


def images_dataset(
    source: Sequence[ImageRecord] | str,
    *,
    size: int,
    decode_cpus: float = DEFAULT_DECODE_CPUS,
    rows_per_block: int | None = None,
    max_pixels: int = MAX_PIXELS,
    endpoint_url: str | None = None,
    eval_size: int | None = None,
    crop_bottom: int = 0,
) -> Any:
    """Records, or a folder URI (every image under it), → a lazy Ray Dataset with the module's row schema.

    Args:
        source: records from a dataset reader (:func:`read_records`) or an image folder URI.
        size: output side: the model's input side for evaluation/labeling (``payload_input_size``,
            ``augment.crop``), ``augment.resize`` for training (then :func:`augment`).
        decode_cpus: CPU share of each decode task; keep it < 1 on small machines so training or
            labeling actors never starve the readers.
        rows_per_block: rows per block (= per decode task); None = :func:`default_rows_per_block`.
        max_pixels: decoded-pixel limit per image (see module docstring).
        endpoint_url: S3 endpoint override, passed to the decode tasks.
        eval_size: also an ``eval_image`` column at this side, from the same decode (training with
            the test split equal to the training split: one decode per image serves both).
        crop_bottom: rows cut off each image's bottom before it is resized (a banner; the rows'
            ``height`` is what is left).

    Returns:
        ``ray.data.Dataset`` (lazy: nothing is read until it is consumed). Error rows included; use
        :func:`split_errors` or :func:`drop_errors`.

    Raises:
        ValueError: on an empty record list; FileNotFoundError for a folder without images.
    """
    import ray.data  # noqa: PLC0415

    records = records_from_folder(source, endpoint_url) if isinstance(source, str) else list(source)
    if not records:
        raise ValueError("images_dataset: no records")
    table = records_table(records)
    row_bytes = 3 * (size * size + (eval_size or 0) ** 2)
    per_block = rows_per_block or default_rows_per_block(table.num_rows, row_bytes)
    blocks = [table.slice(start, per_block) for start in range(0, table.num_rows, per_block)]
    return ray.data.from_arrow(blocks).map_batches(
        decode_batch,  # type: ignore[arg-type]  # its keyword-only arguments come in fn_kwargs
        batch_format="pyarrow",
        batch_size=None,  # one call per block
        num_cpus=decode_cpus,
        fn_kwargs={
            "size": size,
            "max_pixels": max_pixels,
            "endpoint_url": endpoint_url,
            "eval_size": eval_size,
            "crop_bottom": crop_bottom,
        },
        udf_modifying_row_count=False,
    )


def _is_ok(batch: pa.Table, drop: Sequence[str] = (), rename: dict[str, str] | None = None) -> pa.Table:
    ok = batch.filter(pc.is_null(batch.column(ERROR)))
    if drop:
        ok = ok.drop_columns(list(drop))
    if rename:
        ok = ok.rename_columns([rename.get(name, name) for name in ok.column_names])
    return ok


def drop_errors(
    ds: Any,
    num_cpus: float = DEFAULT_DECODE_CPUS,
    *,
    drop: Sequence[str] = (),
    rename: dict[str, str] | None = None,
) -> Any:
    """The rows of ``ds`` without an error (lazy; nothing is counted: see :func:`split_errors`).

    ``drop`` removes columns and ``rename`` renames them (old → new) in the same pass.
    """
    return ds.map_batches(
        _is_ok,
        batch_format="pyarrow",
        batch_size=None,
        num_cpus=num_cpus,
        fn_kwargs={"drop": tuple(drop), "rename": dict(rename or {})},
    )


def materialize_with_progress(
    ds: Any, total: int, what: str = "ingest", every_s: float = PROGRESS_EVERY_S
) -> Any:
    """Run ``ds`` (a decode pipeline of ``total`` rows) to the end and return it materialized.

    Logs ``<what>: decoding N images`` at the start, ``<what>: n/N images decoded (r images/s)`` at
    most every ``every_s`` seconds as blocks come out of the decode tasks, and the total at the end,
    so preparing a large collection is never silent. The blocks stay in the object store (owned by
    this process), as with ``ds.materialize()``.

    Raises:
        RuntimeError: when the pipeline produced another number of rows than ``total``.
    """
    import ray.data  # noqa: PLC0415

    from pipelines import console  # noqa: PLC0415 - the run's progress bar (pipelines/console.py)

    log.info("%s: decoding %d images", what, total)
    refs, rows = [], 0
    started = last = time.monotonic()
    for bundle in ds.iter_internal_ref_bundles():
        for entry in bundle.blocks:
            refs.append(entry.ref)
            rows += int(entry.metadata.num_rows or 0)
            console.advance(int(entry.metadata.num_rows or 0))
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            log.info("%s: %d/%d images decoded (%.1f images/s)", what, rows, total, rows / (now - started))
    seconds = time.monotonic() - started
    log.info(
        "%s: %d/%d images decoded in %.1f s (%.1f images/s)",
        what,
        rows,
        total,
        seconds,
        rows / max(seconds, 1e-9),
    )
    if rows != total:
        raise RuntimeError(f"{what}: the decode produced {rows} rows for {total} images")
    return ray.data.from_arrow_refs(refs)


def split_errors(
    ds: Any, num_cpus: float = DEFAULT_DECODE_CPUS, *, total: int | None = None, what: str = "ingest"
) -> tuple[Any, list[dict[str, str]]]:
    """Materialize ``ds`` and split it into the good rows and the error rows; log both counts.

    With ``total`` (the number of rows ``ds`` makes), the decode logs its progress
    (:func:`materialize_with_progress`, lines prefixed with ``what``).

    Returns:
        ``(good, errors)``: ``good`` a materialized Dataset without error rows (decoded once, reused
        every epoch); ``errors`` a list of ``{"path": ..., "error": ...}`` sorted by path. The number
        of decode errors is ``len(errors)``.
    """
    materialized = ds.materialize() if total is None else materialize_with_progress(ds, total, what)
    errors = error_list(materialized, num_cpus)
    good = drop_errors(materialized, num_cpus).materialize()
    total = materialized.count()
    log.info("ingest: %d images read, %d usable, %d errors", total, total - len(errors), len(errors))
    return good, errors


def error_list(ds: Any, num_cpus: float = DEFAULT_DECODE_CPUS) -> list[dict[str, str]]:
    """The error rows of ``ds`` (best materialized) as ``{"path": ..., "error": ...}``, sorted by path."""
    errors = [
        {PATH: row[PATH], ERROR: row[ERROR]}
        for row in ds.select_columns([PATH, ERROR])
        .map_batches(_error_rows, batch_format="pyarrow", batch_size=None, num_cpus=num_cpus)
        .take_all()
    ]
    errors.sort(key=lambda row: row[PATH])
    return errors


def _error_rows(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.is_valid(batch.column(ERROR)))


# --------------------------------------------------------------------------------------- augmentation


def crop_offsets(indices: np.ndarray, *, seed: int, epoch: int, max_offset: int) -> np.ndarray:
    """Random crop corners, one per image, from a per-row RNG seeded with ``(seed, epoch, index)``.

    Args:
        indices: int array of shape (B,): the rows' ``index`` (stable image ids, >= 0).
        seed: the run's seed.
        epoch: the epoch (a new crop per epoch).
        max_offset: largest corner coordinate (padded side − crop).

    Returns:
        int64 array of shape (B, 2): ``(top, left)`` in ``[0, max_offset]``.
    """
    offsets = np.empty((len(indices), 2), dtype=np.int64)
    for row, index in enumerate(np.asarray(indices, dtype=np.int64)):
        rng = np.random.default_rng([int(seed), int(epoch), int(index)])
        offsets[row] = rng.integers(0, max_offset + 1, size=2)
    return offsets


def pad_and_crop(images: np.ndarray, offsets: np.ndarray, *, crop: int, padding: int) -> np.ndarray:
    """Reflect-pad each image by ``padding`` px, then cut a ``crop``×``crop`` window at its offset.

    Shape: images (B, H, W, 3) uint8; offsets (B, 2) ``(top, left)`` in the padded frame → (B, crop,
    crop, 3) uint8. ``images`` is not modified.
    """
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode="reflect")
    out = np.empty((images.shape[0], crop, crop, images.shape[3]), dtype=images.dtype)
    for row, (top, left) in enumerate(offsets):
        out[row] = padded[row, top : top + crop, left : left + crop]
    return out


def augment_batch(
    batch: dict[str, np.ndarray], *, seed: int, epoch: int, crop: int, padding: int
) -> dict[str, np.ndarray]:
    """SPEC §5 training transform on a batch of ``index`` + ``image`` (the ``augment.resize`` resize).

    Returns the batch with ``image`` replaced by a (B, crop, crop, 3) uint8 random crop of the
    reflect-padded image; the same ``(seed, epoch, index)`` always gives the same crop.
    """
    images = batch[IMAGE]
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(
            f"augment_batch expects (B, H, W, 3) uint8 images, got {images.dtype} {images.shape}"
        )
    side = min(images.shape[1], images.shape[2]) + 2 * padding
    if crop > side:
        raise ValueError(f"crop {crop} exceeds the padded image side {side}")
    max_offset = side - crop
    offsets = crop_offsets(batch[INDEX], seed=seed, epoch=epoch, max_offset=max_offset)
    out = dict(batch)
    out[IMAGE] = pad_and_crop(images, offsets, crop=crop, padding=padding)
    return out


def augment(
    ds: Any,
    *,
    seed: int,
    epoch: int,
    crop: int,
    padding: int,
    num_cpus: float = DEFAULT_DECODE_CPUS,
) -> Any:
    """The training dataset of one epoch: error rows dropped, ``index`` + augmented ``image`` only.

    ``ds`` is :func:`images_dataset` at ``augment.resize`` (ideally the materialized ``good`` part of
    :func:`split_errors`, so decoding happens once). Only the numeric columns are kept, so the result
    goes straight into ``iter_torch_batches``.
    """
    return (
        drop_errors(ds, num_cpus)
        .select_columns([INDEX, IMAGE])
        .map_batches(
            augment_batch,
            batch_format="numpy",
            num_cpus=num_cpus,
            fn_kwargs={"seed": seed, "epoch": epoch, "crop": crop, "padding": padding},
            udf_modifying_row_count=False,
        )
    )
