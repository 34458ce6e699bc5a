"""pipelines.ingest through Ray Data: the Ray Dataset on S3 and file://, error rows, the training stage.

The decode and augmentation kernels are tested in-process in tests/unit/test_ingest.py, whose inputs
(good and bad files) these tests read through Ray Data and the loopback S3 server.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from coloc_core import decode
from coloc_core.datasets import ImageRecord
from coloc_core.synthetic import generate_cub_layout
from pipelines import ingest, storage
from tests.unit.test_ingest import BAD_FILES, GOOD_FILES

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]


def test_a_missing_input_bucket_says_so(s3_server):
    with pytest.raises(FileNotFoundError, match="input bucket s3://coloc-no-such-bucket does not exist"):
        ingest.records_from_folder("s3://coloc-no-such-bucket/photos")
    missing = s3_server.uri(s3_server.unique_prefix("nowhere"))
    with pytest.raises(FileNotFoundError, match=f"input folder {missing} does not exist"):
        ingest.records_from_folder(missing)


# -------------------------------------------------------------------------------------- through Ray


def _rows_by_index(ds) -> list[dict]:
    return sorted(ds.take_all(), key=lambda row: row["index"])


def test_cub_layout_on_s3(ray_cluster, s3_server, tmp_path: Path):
    generated = generate_cub_layout(str(tmp_path / "cub"), num_images=12, seed=3, size_range=(48, 96))
    root = s3_server.upload_dir(tmp_path / "cub", s3_server.unique_prefix("cub"))
    records = ingest.read_records("cub", root, "test")
    assert records and all(r.path.startswith(f"{root}/images/") for r in records)
    # CUB's files give no sizes: the generator's records know them.
    sizes = {storage.relative_path(r.path, str(tmp_path / "cub")): (r.width, r.height) for r in generated}
    ds = ingest.images_dataset(records, size=224)
    schema = ds.schema()
    types = dict(zip(schema.names, schema.types, strict=True))
    assert types["width"] == pa.int32() and types["height"] == pa.int32()
    assert types["boxes"] == pa.list_(pa.float32()) and types["error"] == pa.string()
    assert tuple(types["image"].shape) == (224, 224, 3)
    rows = _rows_by_index(ds)
    assert len(rows) == len(records)
    for row, record in zip(rows, records, strict=True):
        assert row["path"] == record.path and row["error"] is None
        assert (row["width"], row["height"]) == sizes[storage.relative_path(record.path, root)]
        assert np.allclose(row["boxes"], np.asarray(record.boxes, np.float32).ravel())
        assert row["image"].dtype == np.uint8 and row["image"].shape == (224, 224, 3)
    local = tmp_path / "cub" / storage.relative_path(records[0].path, root)
    expected, _, _ = decode.decode_image(local.read_bytes(), size=224)
    assert np.array_equal(rows[0]["image"], expected)


def test_bad_inputs_on_s3_become_error_rows_and_the_read_finishes(ray_cluster, s3_server, caplog):
    prefix = s3_server.unique_prefix("bad")
    for name, (data, _) in {**GOOD_FILES, **BAD_FILES}.items():
        s3_server.put(f"{prefix}/{name}", data)
    listed = storage.list_images(s3_server.uri(prefix))
    assert len(listed) == len(GOOD_FILES) + len(BAD_FILES)
    missing = s3_server.uri(prefix, "missing.jpg")
    records = [ImageRecord(path=p, split="all") for p in listed] + [ImageRecord(path=missing, split="all")]
    ds = ingest.images_dataset(records, size=64, rows_per_block=4)
    with caplog.at_level(logging.INFO, logger="pipelines.ingest"):
        good, errors = ingest.split_errors(ds)
    assert good.count() == len(GOOD_FILES)
    total = len(GOOD_FILES) + len(BAD_FILES) + 1
    summary = f"ingest: {total} images read, {len(GOOD_FILES)} usable, {len(BAD_FILES) + 1} errors"
    assert summary in caplog.text
    by_name = {row["path"].rsplit("/", 1)[1]: row for row in good.take_all()}
    assert set(by_name) == set(GOOD_FILES)
    for name, (_, size) in GOOD_FILES.items():
        assert (by_name[name]["width"], by_name[name]["height"]) == size, name
        assert by_name[name]["image"].shape == (64, 64, 3)
    error_names = {row["path"].rsplit("/", 1)[1]: row["error"] for row in errors}
    assert set(error_names) == set(BAD_FILES) | {"missing.jpg"}
    for name, message in error_names.items():
        assert message.startswith(s3_server.uri(prefix, name) + ": ")
    for name, (_, reason) in BAD_FILES.items():
        assert reason in error_names[name], error_names[name]
    assert "FileNotFoundError" in error_names["missing.jpg"]


def test_folder_uri_source_keeps_file_uris(ray_cluster, restore_data_context, tmp_path: Path):
    restore_data_context.execution_options.preserve_order = True
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for rel in ("a.png", "sub/b.jpg", "notes.txt"):
        data = GOOD_FILES["rgb.jpg"][0] if rel.endswith(".jpg") else GOOD_FILES["one_pixel.png"][0]
        (folder / rel).write_bytes(data if rel != "notes.txt" else b"not an image")
    uri = f"file://{folder}"
    rows = ingest.images_dataset(uri, size=32).take_all()  # in listing order (preserve_order)
    assert [row["index"] for row in rows] == [0, 1]
    assert [row["path"] for row in rows] == [f"{uri}/a.png", f"{uri}/sub/b.jpg"]
    assert [(row["width"], row["height"]) for row in rows] == [(1, 1), (64, 48)]
    assert all(row["error"] is None for row in rows)
    with pytest.raises(FileNotFoundError):
        ingest.images_dataset(f"file://{tmp_path}/empty-folder", size=32)


def test_training_stage_is_reproducible_and_varies_by_epoch(ray_cluster, tmp_path: Path):
    records = generate_cub_layout(str(tmp_path / "cub"), num_images=8, seed=5, size_range=(40, 64))
    records.append(ImageRecord(path=str(tmp_path / "gone.jpg"), split="all"))  # excluded from training
    good, errors = ingest.split_errors(ingest.images_dataset(records, size=256))
    assert len(errors) == 1 and good.count() == 8

    def crops(epoch: int) -> dict[int, np.ndarray]:
        rows = ingest.augment(good, seed=11, epoch=epoch, crop=224, padding=4).take_all()
        return {int(row["index"]): row["image"] for row in rows}

    first, again, other = crops(0), crops(0), crops(1)
    assert sorted(first) == list(range(8))
    assert all(img.shape == (224, 224, 3) and img.dtype == np.uint8 for img in first.values())
    assert all(np.array_equal(first[i], again[i]) for i in first)
    assert any(not np.array_equal(first[i], other[i]) for i in first)
    # Only numeric columns remain, so the stage feeds iter_torch_batches directly.
    import torch

    epoch = ingest.augment(good, seed=11, epoch=0, crop=224, padding=4)
    batch = next(iter(epoch.iter_torch_batches(batch_size=4)))
    assert set(batch) == {"index", "image"}
    assert batch["image"].dtype == torch.uint8 and tuple(batch["image"].shape) == (4, 224, 224, 3)
