"""The predictions table on storage: its folder, the files in it, and reading it back.

:mod:`pipelines.label` writes a predictions folder; :mod:`pipelines.evaluate`, :mod:`pipelines.export`,
``jobs/calibrate.py`` and the demo read it through this module, never through the labeling stage.
The columns and their types are :mod:`pipelines.schema`'s. A folder (local or ``s3://``)::

    part-00000.parquet, ...  the table: one part file per shard (:func:`part_name`), written atomically;
                             the only ``*.parquet`` files, so ``read_parquet('labels/*.parquet')`` reads
                             exactly the table
    _manifest.json           the frozen plan (model id, τ, rows per file, the segments, the config;
                             ``version`` :data:`MANIFEST_VERSION`), written last: the commit point
    _inputs.arrow            the frozen input list (Arrow IPC); ``_inputs.parquet`` in older folders
    _model.pt                the fitted model file of a training-free method
    _ddt_backbone.pt         the frozen backbone the collection fits read
    _seed_backbone.pt        the self-trained head's seed backbone (its first round's DDT), when seeded
    _fit_model.pt            the fitted model that the typical-box pass reads (before its box sizes)
    _SUCCESS                 the summary of the whole folder (JSON), once every shard is written
    _eval/                   evaluate's default output folder

:class:`PredictionsFolder` names these files (one place instead of joining the folder with a name at
every use) and reads and writes the manifest and the success marker.

The ``heatmap`` column is the stored uint8 map (:func:`coloc_core.heatmap.quantize_heatmap`) as
row-major bytes plus its shape (``heatmap_h``, ``heatmap_w``): :func:`encode_heatmap` and
:func:`decode_heatmap` convert between the two.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from coloc_core.errors import MissingInputError
from pipelines import schema, storage

MANIFEST = "_manifest.json"
# The frozen input list: Arrow IPC, not Parquet, so that `*.parquet` matches the part files only.
INPUTS = "_inputs.arrow"
LEGACY_INPUTS = "_inputs.parquet"  # the name before; read (and replaced) when resuming such a folder
MODEL_FILE = "_model.pt"
BACKBONE_FILE = "_ddt_backbone.pt"
SEED_BACKBONE_FILE = "_seed_backbone.pt"
FITTED_FILE = "_fit_model.pt"
SUCCESS = "_SUCCESS"
EVAL_DIR = "_eval"
MANIFEST_VERSION = 1
PART_RE = re.compile(r"^part-(\d{5,})\.parquet$")


# ------------------------------------------------------------------------------------- part files


def part_name(shard: int) -> str:
    """File name of shard ``shard``: ``part-00042.parquet``."""
    return f"part-{shard:05d}.parquet"


def shard_of(name: str) -> int | None:
    """The shard of a part file's name (:func:`part_name`), or None for any other name."""
    match = PART_RE.match(name)
    return int(match.group(1)) if match else None


def is_part_temp(name: str) -> bool:
    """Whether ``name`` is the temporary file of a local part-file write (left by a killed run)."""
    return name.startswith(".part-") and name.endswith(".tmp")


# ----------------------------------------------------------------------------------------- folder


@dataclass(frozen=True)
class PredictionsFolder:
    """A predictions folder (local or ``s3://``) and the names of its files (module docstring)."""

    uri: str

    def file(self, name: str) -> str:
        """The URI of the file ``name`` in the folder."""
        return storage.join(self.uri, name)

    @property
    def manifest(self) -> str:
        """``_manifest.json``: the frozen plan."""
        return self.file(MANIFEST)

    @property
    def inputs(self) -> str:
        """``_inputs.arrow``: the frozen input list."""
        return self.file(INPUTS)

    @property
    def legacy_inputs(self) -> str:
        """``_inputs.parquet``: the input list of a folder written before ``_inputs.arrow``."""
        return self.file(LEGACY_INPUTS)

    @property
    def model_file(self) -> str:
        """``_model.pt``: the fitted model file of a training-free method."""
        return self.file(MODEL_FILE)

    @property
    def backbone_file(self) -> str:
        """``_ddt_backbone.pt``: the frozen backbone the collection fits read."""
        return self.file(BACKBONE_FILE)

    @property
    def seed_backbone_file(self) -> str:
        """``_seed_backbone.pt``: the seed backbone of a seeded self-training fit (``label_fit``)."""
        return self.file(SEED_BACKBONE_FILE)

    @property
    def fitted_file(self) -> str:
        """``_fit_model.pt``: the fitted model the typical-box pass reads (``pipelines.label_fit``)."""
        return self.file(FITTED_FILE)

    @property
    def success(self) -> str:
        """``_SUCCESS``: the success marker."""
        return self.file(SUCCESS)

    @property
    def eval_dir(self) -> str:
        """``_eval``: evaluate's default output folder."""
        return self.file(EVAL_DIR)

    def part(self, shard: int) -> str:
        """The URI of shard ``shard``'s part file."""
        return self.file(part_name(shard))

    def top_files(self) -> Iterator[tuple[str, str]]:
        """(URI, name) of every file directly in the folder (not in a subfolder), sorted."""
        prefix = self.uri.rstrip("/")
        for uri in storage.list_files(self.uri):
            name = uri[len(prefix) :].lstrip("/")
            if "/" not in name:
                yield uri, name

    def part_files(self) -> list[str]:
        """The URIs of the part files, sorted."""
        return sorted(uri for uri, name in self.top_files() if PART_RE.match(name))

    def has_manifest(self) -> bool:
        """Whether the folder has a manifest (a labeling run planned it)."""
        return storage.exists(self.manifest)

    def read_manifest(self) -> dict[str, Any]:
        """The manifest as a dict.

        Raises:
            FileNotFoundError: when the folder has none.
        """
        return dict(json.loads(storage.read_text(self.manifest)))

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Write the manifest (indented JSON), atomically."""
        storage.write_text_atomic(self.manifest, json.dumps(manifest, indent=2))

    def has_success(self) -> bool:
        """Whether the folder has the success marker."""
        return storage.exists(self.success)

    def write_success(self, summary: dict[str, Any]) -> None:
        """Write the success marker: the summary of the whole folder (indented JSON), atomically."""
        storage.write_text_atomic(self.success, json.dumps(summary, indent=2))

    def remove_success(self) -> None:
        """Remove the success marker (no error when there is none): the folder is incomplete."""
        storage.remove(self.success)


# ---------------------------------------------------------------------------------------- reading


def part_files(out: str) -> list[str]:
    """The part files of a predictions folder (local or ``s3://``), sorted."""
    return PredictionsFolder(out).part_files()


def require_part_files(out: str) -> list[str]:
    """The part files of a predictions folder, sorted; at least one.

    Raises:
        MissingInputError: the folder has no part file (it is not a ``coloc label --out`` folder, or
            that run wrote nothing yet).
    """
    parts = part_files(out)
    if not parts:
        raise MissingInputError(f"no predictions (part-*.parquet) under {out}")
    return parts


def iter_predictions(out: str, columns: list[str] | None = None) -> Iterable[pa.Table]:
    """The predictions table, one part file at a time (memory bounded by one part file).

    Every part file comes back in the current schema: a version-1 file (no ``boxes`` column) gets
    that column as nulls (``schema.read_table``).

    Raises:
        MissingInputError: the folder has no part file (:func:`require_part_files`).
    """
    for uri in require_part_files(out):
        data = pa.BufferReader(storage.read_bytes(uri))
        if columns is None:
            schema.check_schema(pq.read_schema(data))
        yield schema.read_table(data, columns=columns)


# ---------------------------------------------------------------------------------------- heatmap


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
    return decode_heatmap(row.get(schema.HEATMAP), row.get(schema.HEATMAP_H), row.get(schema.HEATMAP_W))
