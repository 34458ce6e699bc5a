"""The labels folder as readers see it (no Ray): only part files match ``*.parquet``, each carries metadata.

The folder is written by the labeling stage's own writers (``write_inputs``, ``ShardWriter``) with
made-up rows; ``tests/ray/test_label.py`` checks the same on a folder from a real labeling run.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import coloc_core
from pipelines import ingest, predictions, schema
from pipelines.label_inputs import INPUT_SCHEMA, read_inputs, write_inputs
from pipelines.label_plan import LabelPlan
from pipelines.label_shards import ShardWriter
from tests.ray import labeling_data as data

duckdb = pytest.importorskip("duckdb")
pl = pytest.importorskip("polars")

NUM_IMAGES = 11
ROWS_PER_FILE = 4
MODEL_ID = "m-0123456789abcdef"


def _inputs(n: int = NUM_IMAGES) -> pa.Table:
    return pa.table(
        {
            "path": [f"/photos/{i:03d}.jpg" for i in range(n)],
            "width": [640] * n,
            "height": [None] * n,
        },
        schema=INPUT_SCHEMA,
    )


def _prediction_batch(indices: list[int]) -> pa.Table:
    """Rows as the localizer stage hands them to the driver: the schema's columns + the input index."""
    heat = np.arange(12, dtype=np.uint8).reshape(3, 4)
    items: list[data.PredictionItem] = [
        (f"/photos/{i:03d}.jpg", 640, 480, heat, (1.0, 2.0, 300.0, 200.0), 0.5)
        if i % 5 != 3
        else (f"/photos/{i:03d}.jpg", None, None, None, None, None)
        for i in indices
    ]
    table = data.prediction_rows(items, model=MODEL_ID)
    return table.append_column(ingest.INDEX, pa.array(indices, pa.int64()))


def _label_folder(out: Path) -> LabelPlan:
    """A complete labels folder, written the way ``run_labeling`` writes one (plan files + part files)."""
    out.mkdir()
    inputs = _inputs()
    write_inputs(str(out), inputs)
    (out / predictions.MANIFEST).write_text("{}")
    (out / predictions.MODEL_FILE).write_bytes(b"weights")
    plan = LabelPlan(inputs, "model.pt", MODEL_ID, 0.2, ROWS_PER_FILE, {}, image_size=224)
    writer = ShardWriter(plan, str(out), list(range(plan.num_shards)))
    order = list(range(NUM_IMAGES))[::-1]  # rows arrive in any order, in batches across shards
    for start in range(0, NUM_IMAGES, 3):
        writer.add(_prediction_batch(order[start : start + 3]))
    writer.check_complete()
    (out / predictions.SUCCESS).write_text("{}")
    return plan


def test_only_part_files_match_the_parquet_glob(tmp_path: Path):
    out = tmp_path / "labels"
    plan = _label_folder(out)
    matched = sorted(os.path.basename(p) for p in glob.glob(str(out / "*.parquet")))
    assert matched == [predictions.part_name(s) for s in range(plan.num_shards)]
    assert [os.path.basename(p) for p in predictions.part_files(str(out))] == matched


def test_duckdb_and_polars_read_one_row_per_image(tmp_path: Path):
    out = tmp_path / "labels"
    _label_folder(out)
    pattern = str(out / "*.parquet")
    con = duckdb.connect()
    for options in ("", ", union_by_name=true"):
        rows, paths = con.execute(
            f"SELECT count(*), count(DISTINCT path) FROM read_parquet('{pattern}'{options})"
        ).fetchone()
        assert (rows, paths) == (NUM_IMAGES, NUM_IMAGES), options
    frame = pl.read_parquet(pattern)
    assert frame.height == NUM_IMAGES and frame["path"].n_unique() == NUM_IMAGES
    assert pl.scan_parquet(pattern).select(pl.len()).collect().item() == NUM_IMAGES
    # The integer columns keep their types for both readers.
    assert frame.schema["heatmap_h"] == pl.Int16 and frame.schema["width"] == pl.Int32
    # pyarrow and pandas on the folder itself.
    assert pq.read_table(str(out)).num_rows == NUM_IMAGES
    pd = pytest.importorskip("pandas")
    assert len(pd.read_parquet(out)) == NUM_IMAGES


def test_every_part_file_carries_its_metadata(tmp_path: Path):
    out = tmp_path / "labels"
    plan = _label_folder(out)
    for uri in predictions.part_files(str(out)):
        meta = pq.read_schema(uri).metadata
        assert meta[b"coloc.version"].decode() == coloc_core.__version__
        assert meta[b"coloc.schema_version"].decode() == str(schema.SCHEMA_VERSION)
        assert meta[b"coloc.model_id"].decode() == plan.model_id
        assert b"pandas" in meta  # the nullable-integer hint for pandas stays
        schema.check_schema(pq.read_schema(uri))
    # DuckDB reads the same key-value metadata.
    kv = duckdb.connect().execute(
        f"SELECT key::VARCHAR, value::VARCHAR FROM parquet_kv_metadata('{out / 'part-00000.parquet'}')"
    )
    assert dict(kv.fetchall())["coloc.model_id"] == MODEL_ID


def test_the_inputs_file_round_trips(tmp_path: Path):
    out = tmp_path / "labels"
    out.mkdir()
    inputs = _inputs()
    write_inputs(str(out), inputs)
    assert not predictions.INPUTS.endswith(".parquet")
    assert read_inputs(str(out)).equals(inputs)


def test_a_folder_of_the_old_layout_is_read_and_migrated(tmp_path: Path):
    """Folders labelled before the rename hold ``_inputs.parquet``: resuming reads it, then moves it."""
    out = tmp_path / "labels"
    out.mkdir()
    inputs = _inputs()
    pq.write_table(inputs, out / predictions.LEGACY_INPUTS, compression="zstd")
    assert read_inputs(str(out)).equals(inputs)
    assert sorted(os.listdir(out)) == [predictions.INPUTS]
    assert read_inputs(str(out)).equals(inputs)  # and from the new file afterwards


def test_missing_inputs_file_is_an_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        read_inputs(str(tmp_path))
