"""The labeling stage's rows and part files without Ray: box rows from heatmaps, the shard writer,
finished-shard detection and the nullable-int helper (``pipelines.label_shards``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import ingest, schema
from pipelines.label_inputs import INPUT_SCHEMA
from pipelines.label_plan import LabelPlan
from pipelines.label_shards import (
    UNKNOWN_KIND,
    ShardWriter,
    _write_parquet,
    finished_shards,
    heatmaps_to_box_rows,
    nullable_ints,
    table_totals,
)
from pipelines.predictions import PredictionsFolder, encode_heatmap, part_name

MODEL_ID = "m-test"
TAU = 0.5


def _blob(h: int = 14, w: int = 14, rows: slice = slice(0, 7), cols: slice = slice(0, 7)) -> np.ndarray:
    """A uint8 heatmap: 255 inside the block ``rows × cols``, 0 elsewhere."""
    heat = np.zeros((h, w), dtype=np.uint8)
    heat[rows, cols] = 255
    return heat


def _heatmap_rows(indices: list[int], width: int | None = 200, height: int | None = 100) -> pa.Table:
    """Rows as :class:`LocalizeBatch` hands them on without ``postprocess`` (every 5th one an error)."""
    n = len(indices)
    data, h, w = encode_heatmap(_blob())
    bad = [i % 5 == 4 for i in indices]
    errors = [f"/photos/{i:03d}.jpg: broken" if i % 5 == 4 else None for i in indices]
    return pa.table(
        {
            schema.PATH: pa.array([f"/photos/{i:03d}.jpg" for i in indices], pa.string()),
            ingest.INDEX: pa.array(indices, pa.int64()),
            schema.WIDTH: pa.array([None if b else width for b in bad], pa.int32()),
            schema.HEIGHT: pa.array([None if b else height for b in bad], pa.int32()),
            schema.HEATMAP: pa.array([None if b else data for b in bad], pa.binary()),
            schema.HEATMAP_H: pa.array([None if b else h for b in bad], pa.int16()),
            schema.HEATMAP_W: pa.array([None if b else w for b in bad], pa.int16()),
            schema.THRESHOLD: pa.array([TAU] * n, pa.float32()),
            schema.MODEL: pa.array([MODEL_ID] * n, pa.string()),
            schema.ERROR: pa.array(errors, pa.string()),
            schema.ERROR_KIND: pa.array([schema.KIND_DECODE if b else None for b in bad], pa.string()),
        }
    )


def _plan(n: int, rows_per_file: int, segments: list[int] | None = None) -> LabelPlan:
    inputs = pa.table(
        {"path": [f"/photos/{i:03d}.jpg" for i in range(n)], "width": [200] * n, "height": [100] * n},
        schema=INPUT_SCHEMA,
    )
    return LabelPlan(inputs, "model.pt", MODEL_ID, TAU, rows_per_file, {}, segments, image_size=224)


# ------------------------------------------------------------------------------------ box rows


def test_heatmaps_to_box_rows_maps_the_blob_to_original_pixels():
    rows = heatmaps_to_box_rows(_heatmap_rows([7]), all_boxes=False).to_pylist()
    assert len(rows) == 1
    row = rows[0]
    assert row[ingest.INDEX] == 7 and row[schema.ERROR] is None
    # The blob covers the top-left quarter of the map: the box is the top-left quarter of the 200×100 image.
    box = [row[schema.X0], row[schema.Y0], row[schema.X1], row[schema.Y1]]
    assert box[0] == pytest.approx(0, abs=8) and box[1] == pytest.approx(0, abs=4)
    assert box[2] == pytest.approx(100, abs=8) and box[3] == pytest.approx(50, abs=4)
    assert 0 < row[schema.SCORE] <= 1
    assert row[schema.BOXES] is None  # boxes=one leaves the column null


def test_heatmaps_to_box_rows_all_boxes_lists_every_region():
    data, h, w = encode_heatmap(_blob() | _blob(rows=slice(9, 14), cols=slice(9, 14)))
    table = _heatmap_rows([0]).set_column(
        _heatmap_rows([0]).schema.get_field_index(schema.HEATMAP),
        schema.HEATMAP,
        pa.array([data], pa.binary()),
    )
    assert (h, w) == (14, 14)
    row = heatmaps_to_box_rows(table, all_boxes=True).to_pylist()[0]
    assert row[schema.BOXES] is not None and len(row[schema.BOXES]) == 2
    # The single box is the larger region's (the top-left one).
    assert row[schema.X1] == pytest.approx(100, abs=8)


def test_heatmaps_to_box_rows_keeps_error_rows_and_flags_unknown_sizes():
    table = pa.concat_tables([_heatmap_rows([4]), _heatmap_rows([1], width=None)])
    rows = heatmaps_to_box_rows(table).to_pylist()
    assert [r[ingest.INDEX] for r in rows] == [4, 1]
    broken, sizeless = rows
    assert (
        broken[schema.ERROR] == "/photos/004.jpg: broken" and broken[schema.ERROR_KIND] == schema.KIND_DECODE
    )
    assert broken[schema.X0] is None and broken[schema.SCORE] is None
    assert "unknown image size" in sizeless[schema.ERROR]
    assert sizeless[schema.ERROR_KIND] == schema.KIND_DECODE and sizeless[schema.X0] is None


def test_nullable_ints():
    values = [1, None, float("nan"), np.int64(3), 2.0, np.float64("nan"), np.int32(-5)]
    out = nullable_ints(values)
    assert out == [1, None, None, 3, 2, None, -5]
    assert all(v is None or type(v) is int for v in out)
    assert nullable_ints(np.array([640, 480])) == [640, 480]


# ------------------------------------------------------------------------------- shard writer


def _write_all(plan: LabelPlan, out: Path, pending: list[int]) -> list[int]:
    writer = ShardWriter(plan, str(out), pending)
    written: list[int] = []
    indices = [int(i) for s in pending for i in plan.shard_rows(s)][::-1]  # any order, across shards
    for start in range(0, len(indices), 3):
        written += writer.add(heatmaps_to_box_rows(_heatmap_rows(indices[start : start + 3])))
    writer.check_complete()
    return written


def test_shard_writer_writes_each_shard_once_and_finished_shards_finds_them(tmp_path):
    plan = _plan(10, 4)  # shards of 4, 4, 2
    out = tmp_path / "labels"
    out.mkdir()
    assert finished_shards(plan, str(out)) == set()
    assert sorted(_write_all(plan, out, [0, 1, 2])) == [0, 1, 2]
    assert sorted(p.name for p in out.glob("*.parquet")) == [part_name(s) for s in range(3)]
    part = pq.read_table(out / part_name(1))
    assert part.column(schema.PATH).to_pylist() == [f"/photos/{i:03d}.jpg" for i in range(4, 8)]
    assert ingest.INDEX not in part.column_names and part.schema.equals(plan.schema, check_metadata=False)
    assert finished_shards(plan, str(out)) == {0, 1, 2}
    rows, by_kind = table_totals(str(out), plan)
    assert (rows, by_kind) == (10, {schema.KIND_DECODE: 2})  # rows 4 and 9 are errors
    assert UNKNOWN_KIND not in by_kind


def test_shard_writer_refuses_rows_of_a_shard_not_pending(tmp_path):
    plan = _plan(10, 4)
    writer = ShardWriter(plan, str(tmp_path), [1])
    with pytest.raises(RuntimeError, match="not pending"):
        writer.add(heatmaps_to_box_rows(_heatmap_rows([0])))
    writer.add(heatmaps_to_box_rows(_heatmap_rows([4, 5])))
    with pytest.raises(RuntimeError, match="incomplete"):
        writer.check_complete()


def test_a_batch_completing_several_shards_calls_the_hook_between_their_writes(tmp_path):
    plan = _plan(10, 4)  # shards of 4, 4, 2
    writer = ShardWriter(plan, str(tmp_path), [0, 1, 2])
    seen: list[tuple[int, list[str]]] = []
    writer.add(heatmaps_to_box_rows(_heatmap_rows([0, 1, 2, 4, 5, 6])))  # no shard complete yet

    def hook(shard: int) -> None:
        seen.append((shard, sorted(p.name for p in tmp_path.glob("part-*"))))

    assert writer.add(heatmaps_to_box_rows(_heatmap_rows([3, 7, 8, 9])), on_written=hook) == [0, 1, 2]
    assert seen == [
        (0, [part_name(0)]),
        (1, [part_name(0), part_name(1)]),
        (2, [part_name(s) for s in range(3)]),
    ]

    def crash(shard: int) -> None:
        raise KeyboardInterrupt(f"killed after shard {shard}")

    other = tmp_path / "crashed"
    other.mkdir()
    writer = ShardWriter(plan, str(other), [0, 1, 2])
    writer.add(heatmaps_to_box_rows(_heatmap_rows([0, 1, 2, 4, 5, 6])))
    with pytest.raises(KeyboardInterrupt):
        writer.add(heatmaps_to_box_rows(_heatmap_rows([3, 7, 8, 9])), on_written=crash)
    assert sorted(p.name for p in other.iterdir()) == [part_name(0)]  # the others wait for a rerun


def test_finished_shards_deletes_truncated_short_and_stray_parts(tmp_path):
    plan = _plan(10, 4)
    out = tmp_path / "labels"
    out.mkdir()
    _write_all(plan, out, [0, 1, 2])
    folder = PredictionsFolder(str(out))
    # Shard 0: torn (the footer is gone).
    data = (out / part_name(0)).read_bytes()
    (out / part_name(0)).write_bytes(data[: len(data) // 2])
    # Shard 1: a readable part file with the wrong row count (3 of its 4 rows).
    short = pq.read_table(out / part_name(1)).slice(0, 3)
    _write_parquet(folder.part(1), short)
    # Shard 7: beyond the plan's 3 shards; a temp file of a killed local write.
    _write_parquet(folder.part(7), short)
    (out / f".{part_name(2)}.tmp").write_bytes(b"half")
    assert finished_shards(plan, str(out)) == {2}
    assert sorted(p.name for p in out.iterdir()) == [part_name(2)]
    # Redoing the deleted shards completes the folder again.
    assert sorted(_write_all(plan, out, [0, 1])) == [0, 1]
    assert finished_shards(plan, str(out)) == {0, 1, 2}
