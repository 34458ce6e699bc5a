"""The predictions table (Parquet), in one place: column names, Arrow types, and how to read a heatmap.

One row per input image (ARCHITECTURE.md):

| column | type | meaning |
|---|---|---|
| ``path`` | string | the image URI as listed |
| ``width``, ``height`` | int32 | original size, displayed (EXIF-applied) orientation; null if unknown |
| ``x0``, ``y0``, ``x1``, ``y1`` | float32 | box in original pixels, far corner inclusive; null on error |
| ``score`` | float32 | box confidence, see below (null on error) |
| ``threshold`` | float32 | τ used |
| ``heatmap`` | binary | attention map at feature resolution, min-max → uint8, row-major h*w bytes |
| ``heatmap_h``, ``heatmap_w`` | int16 | its shape (null on error) |
| ``model`` | string | model id (content hash of the model file's weights) |
| ``error`` | string | null, or why this image could not be labelled |

**score** (``coloc_core.localizer.box_score``), in [−1, 2], on S, the 224×224 score map (the stored
heatmap upsampled bicubically and min-max scaled, SPEC §6): the box's *stability*, the IoU of the
boxes at τ/2 and at min(2τ, 0.99) (1 when the region keeps its extent over a four-fold range of τ),
plus its *compactness*, ``Σ_inside S / Σ S − area_inside / area_image`` (the excess map mass it
captures). docs/RESULTS.md measures how it ranks IoU.

**Box**: the single largest-contour box at τ on that score map (SPEC §6), computed from the *stored*
(quantised) heatmap, so ``boxes_from_scoremap(scoremap_from_attention(decode_heatmap(row)), τ)``
reproduces the stored box at 224 exactly; it is scaled to the original size with
``coloc_core.boxes.boxes_to_original``.

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
(numpy: ``np.frombuffer(heatmap, np.uint8).reshape(heatmap_h, heatmap_w)``).

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

# Version of the table's columns and their meaning; raised on any change to them.
SCHEMA_VERSION = 1
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
]
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

    Raises:
        KeyError: when a column is missing; pyarrow errors on values of the wrong type.
    """
    missing = [name for name in COLUMNS if name not in columns]
    if missing:
        raise KeyError(f"missing prediction columns: {missing}")
    arrays = [pa.array(columns[f.name], type=f.type) for f in PREDICTIONS_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=PREDICTIONS_SCHEMA)


def file_metadata(model_id: str) -> dict[bytes, bytes]:
    """The key-value metadata of a part file: coloc version, schema version, model id."""
    return {
        META_VERSION: __version__.encode(),
        META_SCHEMA_VERSION: str(SCHEMA_VERSION).encode(),
        META_MODEL_ID: model_id.encode(),
    }


def with_file_metadata(table: pa.Table, model_id: str) -> pa.Table:
    """``table`` with :func:`file_metadata` added to its schema metadata (the ``pandas`` key is kept)."""
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **file_metadata(model_id)})


def check_schema(schema: pa.Schema) -> None:
    """Raise ``ValueError`` unless ``schema`` has exactly the prediction columns and types."""
    got = [(f.name, f.type) for f in schema]
    want = [(f.name, f.type) for f in PREDICTIONS_SCHEMA]
    if got != want:
        raise ValueError(f"not a predictions table: columns {got}, expected {want}")


def encode_heatmap(heatmap: np.ndarray) -> tuple[bytes, int, int]:
    """A (h, w) uint8 heatmap → (row-major bytes, h, w)."""
    array = np.ascontiguousarray(heatmap)
    if array.dtype != np.uint8 or array.ndim != 2:
        raise ValueError(f"heatmap must be a (h, w) uint8 array, got {array.dtype} {array.shape}")
    return array.tobytes(), int(array.shape[0]), int(array.shape[1])


def decode_heatmap(data: bytes | None, height: int | None, width: int | None) -> np.ndarray | None:
    """One row's ``heatmap`` / ``heatmap_h`` / ``heatmap_w`` → a (h, w) uint8 array (``None`` on error rows).

    Works on plain Python values from any Parquet reader (no Ray needed).

    Raises:
        ValueError: when the byte count does not match the shape.
    """
    if data is None or height is None or width is None:
        return None
    h, w = int(height), int(width)
    if len(data) != h * w:
        raise ValueError(f"heatmap has {len(data)} bytes, expected {h}x{w}={h * w}")
    return np.frombuffer(data, dtype=np.uint8).reshape(h, w)


def decode_heatmap_row(row: dict[str, Any]) -> np.ndarray | None:
    """:func:`decode_heatmap` on a row dict (e.g. from ``table.to_pylist()``)."""
    return decode_heatmap(row.get(HEATMAP), row.get(HEATMAP_H), row.get(HEATMAP_W))
