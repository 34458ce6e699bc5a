"""The predictions table's columns (Parquet), in one place: column names, Arrow types, versions.

One row per input image (ARCHITECTURE.md):

| column | type | meaning |
|---|---|---|
| ``path`` | string | the image URI as listed |
| ``width``, ``height`` | int32 | original size, displayed (EXIF-applied) orientation; null if unknown (*) |
| ``x0``, ``y0``, ``x1``, ``y1`` | float32 | box in original pixels, far corner inclusive; null on error |
| ``score`` | float32 | box confidence, see below (null on error) |
| ``threshold`` | float32 | τ used |
| ``heatmap`` | binary | attention map at feature resolution, min-max → uint8, row-major h*w bytes |
| ``heatmap_h``, ``heatmap_w`` | int16 | its shape (null on error) |
| ``model`` | string | model id (content hash of the model file's weights) |
| ``error`` | string | null, or why this image could not be labelled |
| ``boxes`` | list<struct<x0, y0, x1, y1, score>> | ``boxes=all``: every box, best first; else null |
| ``error_kind`` | string | on an error row, what went wrong (:data:`ERROR_KINDS`); null on good rows |

(*) In a folder labelled with rows cut off the images' bottom (the manifest's ``crop_bottom``:
FGVC-Aircraft's banner), ``height`` is the part above the cut; the boxes keep the image's coordinates.

**error_kind** (schema version 3): one word per error row, so rows can be filtered by cause without
parsing ``error`` (:data:`ERROR_KINDS`):

- ``missing``: the file is not there any more (listed, then gone: ``FileNotFoundError``, S3 ``NoSuchKey``);
- ``unreadable``: it exists but cannot be read (no permission, a folder, another read error);
- ``too_large``: its header declares more pixels than the limit (``coloc_core.decode.MAX_PIXELS``, a possible
  decompression bomb), refused before any pixel is decoded;
- ``unsupported``: not an image format the decoder reads (e.g. ``.heic``, ``.svg`` without a plugin;
  ``storage.OTHER_IMAGE_EXTENSIONS`` are listed so that they get this row), or a format whose decoder
  is not built in;
- ``decode``: a file in a known format whose data is bad: empty, truncated, corrupt bytes;
- ``model``: the image decoded but the model's attention map is not finite.

A storage outage is never an error row (see ``pipelines.storage``: the job fails and a rerun reads the
files). Tables written before version 3 have no ``error_kind`` column: :func:`read_table` gives it as
null there.

**score** (``coloc_core.box_score.box_score``), in [−4, 3], on S, the 224×224 score map (the stored
heatmap upsampled bicubically and min-max scaled, SPEC §6): the box's *stability*, the IoU of the
boxes at τ/2 and at min(2τ, 0.99) (1 when the region keeps its extent over a four-fold range of τ),
plus its *compactness*, ``Σ_inside S / Σ S − area_inside / area_image`` (the excess map mass it
captures), plus, for a fitted or trained model (self-trained head, DDT, RPS, CAML), its
*typicality*: −1/8 per spread (median absolute deviation) its log-area lies from the median of the
collection's boxes, at most −1 (``box_score.box_typicality``; the model file stores the collection's
``box_sizes``). Rows of models without box sizes (CAAM, the full box, files written before
2026-12-01) score in [−1, 2]. A fitted model (self-trained head, DDT, RPS) fitted since 2026-12-02,
or a CAML model trained since that day, adds its box's *content* term in [−1, 1]
(``coloc_core.box_content``): the box's crop of the image, encoded by the model's backbone, against
the collection's typical crop (``box_contents`` in the model file), 0.25 per standard deviation over
the collection, less what the more typical of the box's two halves across its longer side gains over
the whole box (rows labelled by version 0.1.0 since 2026-12-02 12:00 UTC, with model files of any date,
unless labelled with ``--halves=off``: the folder's manifest says, ``content_halves``). That
term needs the image, so a stored score is not reproduced from the heatmap alone. A fitted model
(self-trained head, DDT, RPS) fitted since 2026-12-03 also subtracts its box's *repetition excess*
in [0, 1] (``box_score.box_repetition``, ``box_repeat_excess``): the share of the box's map mass
whose part appears again in the box, apart from itself (a box around several objects of the kind),
less the collection's usual share (``repeats`` in the model file's ``box_sizes``), when positive; the
score is then in [−4, 3]. It needs the model's features, so it too is not reproduced from the
heatmap alone. docs/RESULTS.md measures how the score ranks IoU.

**Box**: the single largest-contour box at τ on that score map (SPEC §6), computed from the *stored*
(quantised) heatmap, so ``boxes_from_scoremap(scoremap_from_attention(dequantize_heatmap(heat)), τ)``
with ``heat = pipelines.predictions.decode_heatmap_row(row)`` reproduces the stored box at 224
exactly; it is scaled to the original size with ``coloc_core.boxes.boxes_to_original``.

**All boxes** (``boxes``, schema version 2; labeling with ``boxes=all``): one box per region of the
mask at τ (``coloc_core.boxes.region_boxes_from_scoremap``: the multi-contour boxes without the
borders of holes), in original pixels like the single box, each with its own ``box_score`` (the
stability term is the map's, the compactness term the box's), sorted by score; an empty list when no
pixel passes τ. The single box (``x0..y1``, ``score``) is one of them and keeps its meaning, so readers
of the single box need no change. Null with ``boxes=one`` (the default) and on error rows. Computed by
``coloc_core.predict.locate``, as ``Predictor.predict(..., all_boxes=True)`` does.

**Box convention** (wsolevaluation's, ``coloc_core.boxes``): ``x0, y0, x1, y1`` are pixel positions and
the far corner is *inclusive*: the box covers columns ``x0..x1`` and rows ``y0..y1``, so its width is
``x1 - x0 + 1`` and its height ``y1 - y0 + 1`` (``0 <= x0 <= x1 <= width - 1``, likewise for y). A box
over the whole image is ``0, 0, width - 1, height - 1``. The exports convert it (``pipelines.export``:
COCO ``w = x1 - x0 + 1``). It is not torchvision's continuous ``(x1 - x0) * (y1 - y0)`` convention.

**File metadata**: every part file carries key-value metadata (:func:`with_file_metadata`):
``coloc.version`` (the package that wrote it), ``coloc.schema_version`` (:data:`SCHEMA_VERSION`, raised
when a column changes) and ``coloc.model_id`` (the model of every row), readable without reading a row
(``pyarrow.parquet.read_schema(f).metadata``, DuckDB ``parquet_kv_metadata``, Polars
``read_parquet_metadata``).

The heatmap is plain bytes plus its shape, so any Parquet reader can use it
(numpy: ``np.frombuffer(heatmap, np.uint8).reshape(heatmap_h, heatmap_w)``; in this package
``pipelines.predictions.decode_heatmap``). The folder around the table (part-file names, manifest,
``_SUCCESS``) and reading it back are :mod:`pipelines.predictions`'.

**pandas**: an integer column with nulls (``width``/``height``/``heatmap_h``/``heatmap_w`` on an error
row) would become float64 in pandas (``7.0``, ``NaN``), and ``reshape(row.heatmap_h, row.heatmap_w)``
would raise ``TypeError``. So the schema carries pandas metadata (the ``pandas`` key that pyarrow
reads back in ``to_pandas``) declaring these columns as pandas' nullable integers: a plain
``pd.read_parquet(out)`` gives ``Int32``/``Int16`` columns, ``<NA>`` where the row has no value,
whatever the rows of a file hold. The metadata names only those columns; the others convert as usual,
and readers other than pandas ignore it. (Tables written before it existed: read them with
``pd.read_parquet(out, dtype_backend="numpy_nullable")``.)
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from coloc_core import __version__
from coloc_core.errors import InvalidInputError

# Version of the table's columns and their meaning; raised on any change to them.
# 1: the single box; 2: + ``boxes`` (every box, --boxes=all); 3: + ``error_kind``. Older tables are still
# read (and resumed in their own layout).
SCHEMA_VERSION = 3
META_VERSION = b"coloc.version"
META_SCHEMA_VERSION = b"coloc.schema_version"
META_MODEL_ID = b"coloc.model_id"

PATH = "path"
WIDTH = "width"
HEIGHT = "height"
X0, Y0, X1, Y1 = "x0", "y0", "x1", "y1"
BOX_COLUMNS = (X0, Y0, X1, Y1)
SCORE = "score"
THRESHOLD = "threshold"
HEATMAP = "heatmap"
HEATMAP_H = "heatmap_h"
HEATMAP_W = "heatmap_w"
MODEL = "model"
ERROR = "error"
BOXES = "boxes"
ERROR_KIND = "error_kind"
# The values of ``error_kind`` (module docstring), one per cause of an error row.
KIND_MISSING = "missing"
KIND_UNREADABLE = "unreadable"
KIND_TOO_LARGE = "too_large"
KIND_UNSUPPORTED = "unsupported"
KIND_DECODE = "decode"
KIND_MODEL = "model"
ERROR_KINDS = (KIND_DECODE, KIND_TOO_LARGE, KIND_UNSUPPORTED, KIND_MISSING, KIND_UNREADABLE, KIND_MODEL)
SCORE_FIELD = "score"  # the score of one entry of ``boxes``
BOX_TYPE = pa.struct([pa.field(name, pa.float32()) for name in (*BOX_COLUMNS, SCORE_FIELD)])

_FIELDS = [
    pa.field(PATH, pa.string(), nullable=False),
    pa.field(WIDTH, pa.int32()),
    pa.field(HEIGHT, pa.int32()),
    pa.field(X0, pa.float32()),
    pa.field(Y0, pa.float32()),
    pa.field(X1, pa.float32()),
    pa.field(Y1, pa.float32()),
    pa.field(SCORE, pa.float32()),
    pa.field(THRESHOLD, pa.float32()),
    pa.field(HEATMAP, pa.binary()),
    pa.field(HEATMAP_H, pa.int16()),
    pa.field(HEATMAP_W, pa.int16()),
    pa.field(MODEL, pa.string()),
    pa.field(ERROR, pa.string()),
    pa.field(BOXES, pa.list_(BOX_TYPE)),
    pa.field(ERROR_KIND, pa.string()),
]
# The columns each schema version added (the last ones of the table, in order): absent from older
# tables, read as null (see read_table).
ADDED_IN = {2: (BOXES,), 3: (ERROR_KIND,)}
ADDED_COLUMNS = tuple(name for version in sorted(ADDED_IN) for name in ADDED_IN[version])
# Columns that pandas must read as nullable integers (not float64) whatever the rows hold.
INTEGER_COLUMNS = tuple(f.name for f in _FIELDS if pa.types.is_integer(f.type))


def _pandas_metadata(fields: list[pa.Field]) -> bytes:
    """The ``pandas`` schema metadata (as pyarrow writes it) naming the integer columns' pandas dtypes."""
    columns = [
        {
            "name": f.name,
            "field_name": f.name,
            "pandas_type": str(f.type),
            "numpy_type": str(f.type).capitalize(),  # int16 -> Int16: pandas' nullable integer dtype
            "metadata": None,
        }
        for f in fields
        if pa.types.is_integer(f.type)
    ]
    return json.dumps({"index_columns": [], "column_indexes": [], "columns": columns}).encode()


PREDICTIONS_SCHEMA = pa.schema(_FIELDS, metadata={b"pandas": _pandas_metadata(_FIELDS)})
COLUMNS = tuple(PREDICTIONS_SCHEMA.names)


def empty_columns() -> dict[str, list[Any]]:
    """One empty list per column, in schema order (to fill row by row)."""
    return {name: [] for name in COLUMNS}


def to_table(columns: dict[str, list[Any]]) -> pa.Table:
    """Python lists per column (``None`` = null) → an Arrow table with exactly the schema.

    A column of :data:`ADDED_COLUMNS` left out or left empty (as :func:`empty_columns` gives it) is all
    null, so code written for version 1 keeps working.

    Raises:
        KeyError: when a column is missing; pyarrow errors on values of the wrong type.
    """
    missing = [name for name in COLUMNS if name not in columns and name not in ADDED_COLUMNS]
    if missing:
        raise KeyError(f"missing prediction columns: {missing}")
    rows = len(columns[PATH])
    arrays = []
    for f in PREDICTIONS_SCHEMA:
        values = columns.get(f.name) or []
        if f.name in ADDED_COLUMNS and not values:
            values = [None] * rows
        arrays.append(pa.array(values, type=f.type))
    return pa.Table.from_arrays(arrays, schema=PREDICTIONS_SCHEMA)


def file_metadata(model_id: str, schema_version: int = SCHEMA_VERSION) -> dict[bytes, bytes]:
    """The key-value metadata of a part file: coloc version, schema version, model id."""
    return {
        META_VERSION: __version__.encode(),
        META_SCHEMA_VERSION: str(schema_version).encode(),
        META_MODEL_ID: model_id.encode(),
    }


def with_file_metadata(table: pa.Table, model_id: str, schema_version: int = SCHEMA_VERSION) -> pa.Table:
    """``table`` with :func:`file_metadata` added to its schema metadata (the ``pandas`` key is kept)."""
    meta = {**(table.schema.metadata or {}), **file_metadata(model_id, schema_version)}
    return table.replace_schema_metadata(meta)


def _fields_of_version(version: int) -> list[pa.Field]:
    later = {name for v, names in ADDED_IN.items() if v > version for name in names}
    return [f for f in _FIELDS if f.name not in later]


def schema_of_version(version: int) -> pa.Schema:
    """The part files' schema of a schema version (1 .. :data:`SCHEMA_VERSION`).

    A folder started under an older version keeps its layout when it is resumed.

    Raises:
        ValueError: for an unknown version.
    """
    if not 1 <= version <= SCHEMA_VERSION:
        raise InvalidInputError(f"unknown predictions schema version {version} (known: 1..{SCHEMA_VERSION})")
    fields = _fields_of_version(version)
    return pa.schema(fields, metadata={b"pandas": _pandas_metadata(fields)})


def version_of_columns(names: Any) -> int:
    """The newest schema version whose columns are all among ``names`` (1 when none added is)."""
    present = set(names)
    version = 1
    for v in sorted(ADDED_IN):
        if not all(name in present for name in ADDED_IN[v]):
            break
        version = v
    return version


# The schemas before ``boxes`` (1) and before ``error_kind`` (2).
V1_SCHEMA = schema_of_version(1)
V2_SCHEMA = schema_of_version(2)


def check_schema(schema: pa.Schema) -> None:
    """Raise ``ValueError`` unless ``schema`` has exactly the prediction columns and types.

    The table of an older version (every column but those added after it, :data:`ADDED_IN`) passes too.
    """
    got = [(f.name, f.type) for f in schema]
    for version in range(SCHEMA_VERSION, 0, -1):
        if got == [(f.name, f.type) for f in _fields_of_version(version)]:
            return
    want = [(f.name, f.type) for f in PREDICTIONS_SCHEMA]
    raise InvalidInputError(f"not a predictions table: columns {got}, expected {want}")


def read_table(source: Any, columns: list[str] | None = None) -> pa.Table:
    """Read a part file (path, file object or buffer for ``pyarrow.parquet``) as the current schema.

    Columns of :data:`ADDED_COLUMNS` that an older file lacks come back as nulls of their type, so
    readers need not know which version wrote the file.
    """
    import pyarrow.parquet as pq  # noqa: PLC0415

    parquet = pq.ParquetFile(source)
    present = set(parquet.schema_arrow.names)
    wanted = list(COLUMNS) if columns is None else list(columns)
    table = parquet.read(columns=[c for c in wanted if c in present])
    for name in wanted:
        if name not in present and name in ADDED_COLUMNS:
            field = PREDICTIONS_SCHEMA.field(name)
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table.select(wanted)


def box_entries(boxes: Any, scores: Any) -> list[dict[str, float]]:
    """(N, 4) boxes and (N,) scores → the ``boxes`` column's value for one row."""
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(values) != len(arr):
        raise ValueError(f"{len(arr)} boxes but {len(values)} scores")
    return [
        {X0: float(b[0]), Y0: float(b[1]), X1: float(b[2]), Y1: float(b[3]), SCORE_FIELD: float(v)}
        for b, v in zip(arr, values, strict=True)
    ]
