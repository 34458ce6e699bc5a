"""pipelines.schema: the predictions table as pandas reads it (real Parquet files, no Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import schema
from tests.ray import labeling_data as data

pd = pytest.importorskip("pandas")

HEATMAP = np.arange(12, dtype=np.uint8).reshape(3, 4)


def _rows(good: int, bad: int) -> pa.Table:
    """``good`` rows with a box and a heatmap, then ``bad`` error rows (no size, box, score or heatmap)."""
    items: list[data.PredictionItem] = [
        (f"/photos/{i:03d}.jpg", 640, 480, HEATMAP, (1.0, 2.0, 300.0, 200.0), 0.5)
        if i < good
        else (f"/photos/{i:03d}.jpg", None, None, None, None, None)
        for i in range(good + bad)
    ]
    return data.prediction_rows(items, model="m1")


def _write_table(out: Path) -> None:
    """Two part files as labeling writes them (zstd Parquet), one with error rows, plus the side files."""
    out.mkdir()
    pq.write_table(_rows(good=2, bad=2), out / "part-00000.parquet", compression="zstd")
    pq.write_table(_rows(good=3, bad=0), out / "part-00001.parquet", compression="zstd")
    (out / "_SUCCESS").write_text("{}")
    (out / "_manifest.json").write_text("{}")


@pytest.mark.parametrize("part", [None, "part-00000.parquet"])
def test_pandas_keeps_integer_columns_integer_with_error_rows(tmp_path: Path, part: str | None):
    out = tmp_path / "labels"
    _write_table(out)
    df = pd.read_parquet(out if part is None else out / part)
    for name in schema.INTEGER_COLUMNS:
        assert pd.api.types.is_integer_dtype(df[name].dtype), (name, df[name].dtype)
    assert df.heatmap_h.isna().sum() == 2 and df.width.isna().sum() == 2
    good = df[df.error.isna()]
    assert len(good) == (5 if part is None else 2)
    # The README's one-liner, on every row that has a heatmap.
    for row in good.itertuples():
        heat = np.frombuffer(row.heatmap, np.uint8).reshape(row.heatmap_h, row.heatmap_w)
        np.testing.assert_array_equal(heat, HEATMAP)
    assert good.width.tolist() == [640] * len(good)
    # The Arrow types are unchanged for every other reader.
    assert pq.read_schema(out / "part-00000.parquet").equals(schema.PREDICTIONS_SCHEMA)


def test_pandas_dtype_backends_work_too(tmp_path: Path):
    out = tmp_path / "labels"
    _write_table(out)
    for backend in ("numpy_nullable", "pyarrow"):
        df = pd.read_parquet(out, dtype_backend=backend)
        assert all(pd.api.types.is_integer_dtype(df[name].dtype) for name in schema.INTEGER_COLUMNS), backend
        row = df[df.error.isna()].iloc[0]
        heat = np.frombuffer(row.heatmap, np.uint8).reshape(row.heatmap_h, row.heatmap_w)
        np.testing.assert_array_equal(heat, HEATMAP)


def test_the_schema_metadata_names_only_the_integer_columns():
    assert schema.INTEGER_COLUMNS == (schema.WIDTH, schema.HEIGHT, schema.HEATMAP_H, schema.HEATMAP_W)
    table = _rows(good=1, bad=1)
    schema.check_schema(table.schema)
    frame = table.to_pandas()
    assert str(frame.heatmap_h.dtype) == "Int16" and str(frame.width.dtype) == "Int32"
    assert str(frame.x0.dtype) == "float32"


def test_the_boxes_column_round_trips_and_reads_in_pandas(tmp_path: Path):
    table = _rows(good=2, bad=1)
    entries = schema.box_entries([[1, 2, 300, 200], [400, 10, 500, 90]], [0.9, 0.25])
    table = table.set_column(
        table.schema.get_field_index(schema.BOXES),
        schema.PREDICTIONS_SCHEMA.field(schema.BOXES),
        pa.array([entries, [], None], schema.PREDICTIONS_SCHEMA.field(schema.BOXES).type),
    )
    pq.write_table(table, tmp_path / "part-00000.parquet")
    back = schema.read_table(tmp_path / "part-00000.parquet")
    assert back.schema.equals(schema.PREDICTIONS_SCHEMA)
    rows = back.column(schema.BOXES).to_pylist()
    assert rows[1] == [] and rows[2] is None
    assert [(b["x0"], b["x1"], b["score"]) for b in rows[0]] == [
        (1.0, 300.0, pytest.approx(0.9)),
        (400.0, 500.0, 0.25),
    ]
    frame = pd.read_parquet(tmp_path / "part-00000.parquet")
    assert len(frame.boxes.iloc[0]) == 2 and frame.boxes.iloc[0][1]["y1"] == 90.0
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        schema.box_entries([[0, 0, 1, 1], [0, 0, 2, 2]], [0.5])


def test_a_version_1_table_reads_as_the_current_schema_with_null_boxes(tmp_path: Path):
    table = _rows(good=2, bad=1)
    assert table.column(schema.BOXES).null_count == 3  # left empty: all null
    v1 = table.drop_columns([schema.BOXES, schema.ERROR_KIND])
    schema.check_schema(v1.schema)  # a version-1 file is a predictions table
    assert v1.schema.equals(schema.V1_SCHEMA) and schema.version_of_columns(v1.column_names) == 1
    pq.write_table(v1, tmp_path / "part-00000.parquet")
    back = schema.read_table(tmp_path / "part-00000.parquet", columns=[schema.PATH, schema.BOXES])
    assert back.column_names == [schema.PATH, schema.BOXES]
    assert back.column(schema.BOXES).null_count == 3
    assert back.schema.field(schema.BOXES).type == schema.PREDICTIONS_SCHEMA.field(schema.BOXES).type
    with pytest.raises(ValueError, match="not a predictions table"):
        schema.check_schema(v1.drop_columns([schema.SCORE]).schema)
    assert schema.SCHEMA_VERSION == 3
    assert schema.file_metadata("m", schema_version=1)[schema.META_SCHEMA_VERSION] == b"1"


def test_a_version_2_table_reads_with_a_null_error_kind_and_keeps_its_layout(tmp_path: Path):
    table = _rows(good=1, bad=2)
    v2 = table.drop_columns([schema.ERROR_KIND])
    schema.check_schema(v2.schema)
    assert v2.schema.equals(schema.V2_SCHEMA) and schema.schema_of_version(2).equals(schema.V2_SCHEMA)
    assert schema.version_of_columns(v2.column_names) == 2
    assert schema.version_of_columns(table.column_names) == schema.SCHEMA_VERSION == 3
    pq.write_table(v2, tmp_path / "part-00000.parquet")
    back = schema.read_table(tmp_path / "part-00000.parquet")
    assert back.schema.equals(schema.PREDICTIONS_SCHEMA)
    assert back.column(schema.ERROR_KIND).to_pylist() == [None, None, None]
    # Columns of a later version without those of an earlier one: not a table of any version.
    with pytest.raises(ValueError, match="not a predictions table"):
        schema.check_schema(table.drop_columns([schema.BOXES]).schema)
    with pytest.raises(ValueError, match="unknown predictions schema version 4"):
        schema.schema_of_version(4)


def test_error_kind_is_a_string_column_null_on_good_rows_and_read_by_pandas(tmp_path: Path):
    columns = {name: values for name, values in _rows(good=1, bad=1).to_pydict().items()}
    columns[schema.ERROR_KIND] = [None, schema.KIND_UNSUPPORTED]
    table = schema.to_table(columns)
    assert table.schema.field(schema.ERROR_KIND).type == pa.string()
    assert schema.COLUMNS[-1] == schema.ERROR_KIND and set(schema.ERROR_KINDS) == {
        "decode",
        "too_large",
        "unsupported",
        "missing",
        "unreadable",
        "model",
    }
    pq.write_table(table, tmp_path / "part-00000.parquet")
    frame = pd.read_parquet(tmp_path / "part-00000.parquet")
    assert frame.error_kind.isna().tolist() == [True, False]
    assert frame[frame.error_kind == "unsupported"].path.tolist() == ["/photos/001.jpg"]
