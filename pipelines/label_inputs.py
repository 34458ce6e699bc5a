"""The labeling stage's input list: listing the images to label and the frozen ``_inputs.arrow``.

Part of the labeling stage (:mod:`pipelines.label`, whose docstring describes the folder layout): the
sorted, de-duplicated input paths (+ sizes where the dataset gives them) that a first run freezes in
the output folder and a rerun lists again (:mod:`pipelines.label_plan`).
"""

from __future__ import annotations

import io
import logging

import pyarrow as pa
import pyarrow.parquet as pq

from coloc_core.errors import MissingInputError
from pipelines import ingest, storage
from pipelines.config import LabelJobConfig
from pipelines.predictions import INPUTS, LEGACY_INPUTS, PredictionsFolder

# The labeling stage's one logger: every line of the stage (driver, plan, shards, fit) is logged as
# ``pipelines.label`` (what the console shows and the tests look for).
log = logging.getLogger("pipelines.label")

INPUT_SCHEMA = pa.schema(
    [pa.field("path", pa.string(), nullable=False), ("width", pa.int32()), ("height", pa.int32())]
)


def list_inputs(cfg: LabelJobConfig, apply_limit: bool = True) -> pa.Table:
    """The images to label: sorted, de-duplicated paths (+ sizes where the dataset gives them).

    ``apply_limit=False`` lists them all, ignoring ``cfg.limit`` (a rerun caps its new images itself).
    """
    if cfg.format == "folder":
        paths = storage.list_images(cfg.images)
        if not paths:
            raise ingest.no_images_error(cfg.images)
        sizes: dict[str, tuple[int | None, int | None]] = {p: (None, None) for p in paths}
    else:
        records = ingest.read_records(cfg.format, cfg.images, cfg.split)
        sizes = {}
        for r in records:
            sizes.setdefault(r.path, (r.width, r.height))
    ordered = sorted(sizes)
    if apply_limit and cfg.limit > 0:
        ordered = ordered[: cfg.limit]
    if not ordered:
        raise MissingInputError(
            f"no images to label under {cfg.images} (format={cfg.format}, split={cfg.split})"
        )
    return pa.table(
        {
            "path": ordered,
            "width": [sizes[p][0] for p in ordered],
            "height": [sizes[p][1] for p in ordered],
        },
        schema=INPUT_SCHEMA,
    )


def _read_parquet(uri: str, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(io.BytesIO(storage.read_bytes(uri)), columns=columns)


def write_inputs(out: str, inputs: pa.Table) -> None:
    """Write the frozen input list to ``<out>/_inputs.arrow`` (Arrow IPC file, zstd), atomically."""
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_file(sink, inputs.schema, options=options) as writer:
        writer.write_table(inputs)
    storage.write_bytes_atomic(PredictionsFolder(out).inputs, sink.getvalue().to_pybytes())


def read_inputs(out: str) -> pa.Table:
    """The frozen input list of ``out``.

    A folder written before the inputs file left the ``*.parquet`` glob holds ``_inputs.parquet``:
    it is read, written again as ``_inputs.arrow`` and then removed, so the folder reads with a glob
    from then on (a crash in between leaves both, and the new one is read).

    Raises:
        FileNotFoundError: when neither file exists.
    """
    folder = PredictionsFolder(out)
    if storage.exists(folder.inputs):
        with pa.ipc.open_file(pa.BufferReader(storage.read_bytes(folder.inputs))) as reader:
            return reader.read_all()
    legacy = folder.legacy_inputs
    if not storage.exists(legacy):
        raise MissingInputError(
            f"{out} has no {INPUTS} (nor {LEGACY_INPUTS}): the labeling plan is incomplete"
        )
    inputs = _read_parquet(legacy)
    write_inputs(out, inputs)
    storage.remove(legacy)
    log.info("label: %s: moved the input list %s to %s (not a *.parquet file)", out, LEGACY_INPUTS, INPUTS)
    return inputs
