"""pipelines.predictions: folder layout, part-file names, manifest, success marker, heatmap bytes, reading.

Local folders only, no Ray.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import predictions, schema
from pipelines.predictions import PredictionsFolder


def test_the_folder_names_its_files():
    folder = PredictionsFolder("s3://bucket/labels")
    assert folder.manifest == "s3://bucket/labels/_manifest.json"
    assert folder.inputs == "s3://bucket/labels/_inputs.arrow"
    assert folder.legacy_inputs == "s3://bucket/labels/_inputs.parquet"
    assert folder.model_file == "s3://bucket/labels/_model.pt"
    assert folder.backbone_file == "s3://bucket/labels/_ddt_backbone.pt"
    assert folder.success == "s3://bucket/labels/_SUCCESS"
    assert folder.eval_dir == "s3://bucket/labels/_eval"
    assert folder.part(7) == "s3://bucket/labels/part-00007.parquet"
    assert PredictionsFolder("/data/labels/").part(0) == "/data/labels/part-00000.parquet"
    # Only the part files are Parquet, so a `*.parquet` glob reads the table alone.
    names = (predictions.MANIFEST, predictions.INPUTS, predictions.MODEL_FILE, predictions.SUCCESS)
    assert not any(name.endswith(".parquet") for name in names)


def test_part_file_names_round_trip():
    assert predictions.part_name(0) == "part-00000.parquet"
    assert predictions.part_name(123456) == "part-123456.parquet"
    for shard in (0, 42, 99999, 100000):
        assert predictions.shard_of(predictions.part_name(shard)) == shard
    for other in (
        "part-1.parquet",
        "part-00001.parquet.tmp",
        "_SUCCESS",
        "x/part-00001.parquet",
        "part-0000a.parquet",
    ):
        assert predictions.shard_of(other) is None
    assert predictions.is_part_temp(".part-00003.parquet.abc123.tmp")
    assert not predictions.is_part_temp("part-00003.parquet")
    assert not predictions.is_part_temp("._manifest.json.abc.tmp")


def test_manifest_and_success_marker_round_trip(tmp_path: Path):
    folder = PredictionsFolder(str(tmp_path / "labels"))
    (tmp_path / "labels").mkdir()
    assert not folder.has_manifest() and not folder.has_success()
    with pytest.raises(FileNotFoundError):
        folder.read_manifest()
    manifest = {"version": predictions.MANIFEST_VERSION, "model_id": "m1", "threshold": 0.25, "segments": []}
    folder.write_manifest(manifest)
    assert folder.has_manifest()
    assert folder.read_manifest() == manifest
    assert Path(folder.manifest).read_text() == json.dumps(manifest, indent=2)
    folder.write_success({"images": 3})
    assert folder.has_success()
    assert json.loads(Path(folder.success).read_text()) == {"images": 3}
    folder.remove_success()
    folder.remove_success()  # no error when there is none
    assert not folder.has_success()
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == [predictions.MANIFEST]


def test_heatmap_bytes_round_trip():
    heat = np.arange(12, dtype=np.uint8).reshape(3, 4)
    data, h, w = predictions.encode_heatmap(heat)
    assert (len(data), h, w) == (12, 3, 4)
    np.testing.assert_array_equal(predictions.decode_heatmap(data, h, w), heat)
    # a view that is not contiguous is stored row-major all the same
    data_t, h_t, w_t = predictions.encode_heatmap(heat.T)
    np.testing.assert_array_equal(predictions.decode_heatmap(data_t, h_t, w_t), heat.T)
    row = {schema.HEATMAP: data, schema.HEATMAP_H: h, schema.HEATMAP_W: w}
    np.testing.assert_array_equal(predictions.decode_heatmap_row(row), heat)
    assert predictions.decode_heatmap_row({schema.HEATMAP: None, schema.HEATMAP_H: None}) is None
    with pytest.raises(ValueError):
        predictions.decode_heatmap(data, 4, 4)
    with pytest.raises(ValueError):
        predictions.encode_heatmap(heat.astype(np.float32))
    with pytest.raises(ValueError):
        predictions.encode_heatmap(np.zeros((2, 2, 2), np.uint8))


def _part(paths: list[str]) -> bytes:
    columns = schema.empty_columns()
    for path in paths:
        for name in schema.COLUMNS:
            columns[name].append(path if name == schema.PATH else None)
    buffer = io.BytesIO()
    pq.write_table(schema.to_table(columns), buffer)
    return buffer.getvalue()


def test_part_files_and_iter_predictions_read_the_table_only(tmp_path: Path):
    out = tmp_path / "labels"
    out.mkdir()
    with pytest.raises(FileNotFoundError):
        list(predictions.iter_predictions(str(out)))
    folder = PredictionsFolder(str(out))
    Path(folder.part(1)).write_bytes(_part(["c"]))
    Path(folder.part(0)).write_bytes(_part(["a", "b"]))
    (out / predictions.MANIFEST).write_text("{}")
    (out / ".part-00002.parquet.x.tmp").write_bytes(b"torn")
    (out / "_eval").mkdir()
    (out / "_eval" / "part-00009.parquet").write_bytes(b"not the table's")
    assert predictions.part_files(str(out)) == [folder.part(0), folder.part(1)]
    names = [name for _, name in folder.top_files()]
    assert "part-00009.parquet" not in names and ".part-00002.parquet.x.tmp" in names
    tables = list(predictions.iter_predictions(str(out)))
    assert [t.num_rows for t in tables] == [2, 1]
    assert pa.concat_tables(tables).column(schema.PATH).to_pylist() == ["a", "b", "c"]
    only = list(predictions.iter_predictions(str(out), columns=[schema.PATH]))
    assert only[0].column_names == [schema.PATH]
