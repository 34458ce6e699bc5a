"""pipelines.schema's checks: which Arrow schemas are predictions tables, of which version."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipelines import schema


@pytest.mark.parametrize("version", range(1, schema.SCHEMA_VERSION + 1))
def test_every_known_version_passes_the_check(version):
    schema.check_schema(schema.schema_of_version(version))
    names = schema.schema_of_version(version).names
    assert schema.version_of_columns(names) == version


def test_the_current_schema_is_the_newest_version():
    assert schema.schema_of_version(schema.SCHEMA_VERSION).equals(schema.PREDICTIONS_SCHEMA)
    assert schema.version_of_columns(schema.COLUMNS) == schema.SCHEMA_VERSION


@pytest.mark.parametrize("version", [0, schema.SCHEMA_VERSION + 1])
def test_an_unknown_version_is_refused(version):
    with pytest.raises(ValueError, match=f"unknown predictions schema version {version}"):
        schema.schema_of_version(version)


def _changed(fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(fields)


@pytest.mark.parametrize(
    "change",
    [
        "score_float64",  # a column of the wrong type
        "swapped",  # the right columns in another order
        "extra",  # one column more
        "missing_path",  # one of the first version's columns left out
        "boxes_without_v2",  # a column added in version 3 without the one of version 2
    ],
)
def test_a_schema_that_is_not_a_version_is_refused(change):
    fields = list(schema.PREDICTIONS_SCHEMA)
    if change == "score_float64":
        i = schema.PREDICTIONS_SCHEMA.get_field_index(schema.SCORE)
        fields[i] = pa.field(schema.SCORE, pa.float64())
    elif change == "swapped":
        fields[0], fields[1] = fields[1], fields[0]
    elif change == "extra":
        fields.append(pa.field("note", pa.string()))
    elif change == "missing_path":
        fields = [f for f in fields if f.name != schema.PATH]
    else:
        fields = [f for f in fields if f.name != schema.BOXES]
    with pytest.raises(ValueError, match="not a predictions table"):
        schema.check_schema(_changed(fields))


def test_version_of_columns_needs_every_column_of_a_version_and_of_the_ones_before():
    v1 = list(schema.V1_SCHEMA.names)
    assert schema.version_of_columns(v1) == 1
    assert schema.version_of_columns([*v1, schema.ERROR_KIND]) == 1  # version 3's column without 2's
    assert schema.version_of_columns([*v1, schema.BOXES]) == 2


def test_to_table_needs_every_first_version_column_and_fills_the_added_ones():
    columns = schema.empty_columns()
    columns[schema.PATH] = ["a.jpg"]
    for name in schema.COLUMNS:
        if name != schema.PATH and name not in schema.ADDED_COLUMNS:
            columns[name] = [None]
    table = schema.to_table(columns)
    assert table.schema.equals(schema.PREDICTIONS_SCHEMA) and table.num_rows == 1
    assert all(table.column(name).null_count == 1 for name in schema.ADDED_COLUMNS)
    del columns[schema.SCORE]
    with pytest.raises(KeyError, match="score"):
        schema.to_table(columns)


def test_file_metadata_is_added_and_the_pandas_key_kept():
    table = schema.PREDICTIONS_SCHEMA.empty_table()
    tagged = schema.with_file_metadata(table, "model-7", schema_version=2)
    meta = tagged.schema.metadata
    assert meta[schema.META_MODEL_ID] == b"model-7" and meta[schema.META_SCHEMA_VERSION] == b"2"
    assert b"pandas" in meta


def test_box_entries_pairs_boxes_with_scores():
    entries = schema.box_entries([[1, 2, 3, 4], [5, 6, 7, 8]], [0.5, 0.25])
    assert entries[1] == {"x0": 5.0, "y0": 6.0, "x1": 7.0, "y1": 8.0, "score": 0.25}
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        schema.box_entries([[1, 2, 3, 4], [5, 6, 7, 8]], [0.5])
