"""pipelines.schema: the predictions table as pandas reads it (real Parquet files, no Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import schema

pd = pytest.importorskip("pandas")

HEATMAP = np.arange(12, dtype=np.uint8).reshape(3, 4)


def _rows(good: int, bad: int) -> pa.Table:
    columns = schema.empty_columns()
    data, h, w = schema.encode_heatmap(HEATMAP)
    for i in range(good + bad):
        ok = i < good
        values = {
            schema.PATH: f"/photos/{i:03d}.jpg",
            schema.WIDTH: 640 if ok else None,
            schema.HEIGHT: 480 if ok else None,
            schema.X0: 1.0 if ok else None,
            schema.Y0: 2.0 if ok else None,
            schema.X1: 300.0 if ok else None,
            schema.Y1: 200.0 if ok else None,
            schema.SCORE: 0.5 if ok else None,
            schema.THRESHOLD: 0.2,
            schema.HEATMAP: data if ok else None,
            schema.HEATMAP_H: h if ok else None,
            schema.HEATMAP_W: w if ok else None,
            schema.MODEL: "m1",
            schema.ERROR: None if ok else f"/photos/{i:03d}.jpg: UnidentifiedImageError: cannot identify",
        }
        for name, value in values.items():
            columns[name].append(value)
    return schema.to_table(columns)


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
