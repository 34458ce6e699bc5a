"""pipelines.storage on a local folder, ``file://`` URIs and a real S3 API server (moto) on loopback.

The URI helpers and what needs no server: tests/unit/test_storage.py.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coloc_core.datasets import ImageRecord
from pipelines import ingest, storage
from tests.ray.conftest import OUTAGE_RETRIES, OwnS3
from tests.ray.labeling_data import jpeg_bytes, square_image

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]

BACKENDS = ("local", "file", "s3")


@pytest.fixture(params=BACKENDS)
def base(request: pytest.FixtureRequest, tmp_path) -> str:
    """A fresh, empty folder URI of each backend."""
    if request.param == "local":
        return str(tmp_path / "store")
    if request.param == "file":
        return f"file://{tmp_path}/store"
    s3 = request.getfixturevalue("s3_server")
    return s3.uri(s3.unique_prefix("storage"))


class Boom(RuntimeError):
    pass


def test_write_read_exists_roundtrip(base: str):
    uri = storage.join(base, "sub", "blob.bin")
    assert not storage.exists(uri)
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(uri)
    storage.write_bytes_atomic(uri, b"\x00\x01payload")
    assert storage.exists(uri)
    assert storage.read_bytes(uri) == b"\x00\x01payload"
    storage.write_text_atomic(uri, "héllo\n")  # overwrite
    assert storage.read_text(uri) == "héllo\n"
    with storage.atomic_write(storage.join(base, "t.txt"), "w") as f:
        f.write("line 1\n")
        f.write("line 2\n")
    assert storage.read_text(storage.join(base, "t.txt")) == "line 1\nline 2\n"
    storage.remove(uri)
    assert not storage.exists(uri)
    storage.remove(uri)  # missing is fine


def test_list_images_keeps_form_and_filters(base: str):
    for rel in ("b.jpg", "sub/a.PNG", "sub/deeper/c.jpeg", "notes.txt", ".hidden/d.jpg", "sub/.e.jpg"):
        storage.write_bytes_atomic(storage.join(base, rel), b"x")
    images = storage.list_images(base)
    assert images == [storage.join(base, rel) for rel in ("b.jpg", "sub/a.PNG", "sub/deeper/c.jpeg")]
    if base.startswith("s3://"):
        assert all(p.startswith("s3://") for p in images)
    assert storage.list_images(base, extensions=("png",)) == [storage.join(base, "sub/a.PNG")]
    assert len(storage.list_files(base)) == 6
    assert storage.list_images(storage.join(base, "missing")) == []


def test_list_images_drops_nothing_silently(base: str, caplog):
    """GIF and other image formats are listed (each gets a row); skipped files and folders are logged."""
    for rel in ("a.gif", "b.HEIC", "c.jpg", "notes.txt", "boxes.csv", "more.txt", "album.jpg/d.png"):
        storage.write_bytes_atomic(storage.join(base, rel), b"x")
    if not base.startswith("s3://"):  # an empty folder named like an image (S3 has no empty folders)
        os.makedirs(os.path.join(storage.strip_scheme(base), "empty.png"))
    with caplog.at_level("WARNING", logger="pipelines.storage"):
        images = storage.list_images(base)
    assert images == [storage.join(base, rel) for rel in ("a.gif", "album.jpg/d.png", "b.HEIC", "c.jpg")]
    lines = [r.getMessage() for r in caplog.records if r.name == "pipelines.storage"]
    assert len(lines) == 1, lines
    assert "skipped 3 files that are not images (1 .csv, 2 .txt)" in lines[0], lines[0]
    assert storage.join(base, "album.jpg") in lines[0], lines[0]
    if not base.startswith("s3://"):
        assert storage.join(base, "empty.png") in lines[0], lines[0]


def test_atomic_write_leaves_nothing_when_writer_raises(base: str):
    new = storage.join(base, "new.bin")
    old = storage.join(base, "old.bin")
    storage.write_bytes_atomic(old, b"old content")
    for uri in (new, old):
        with pytest.raises(Boom), storage.atomic_write(uri) as f:
            f.write(b"half of the")
            raise Boom("writer died mid-way")
    assert not storage.exists(new)
    assert storage.read_bytes(old) == b"old content"
    with pytest.raises(Boom), storage.atomic_write(new, "w") as f:
        f.write("partial text")
        raise Boom
    assert not storage.exists(new)
    # Locally no temporary file is left behind either.
    assert [os.path.basename(p) for p in storage.list_files(base)] == ["old.bin"]


def test_large_s3_write_goes_through_a_spilled_upload(s3_server, monkeypatch):
    monkeypatch.setattr(storage, "_SPOOL_BYTES", 1024)
    uri = s3_server.uri(s3_server.unique_prefix("big"), "blob.bin")
    data = os.urandom(10_000)
    with storage.atomic_write(uri) as f:
        for start in range(0, len(data), 3000):
            f.write(data[start : start + 3000])
    assert storage.read_bytes(uri) == data


def test_copy_dir_roundtrip_with_marker_last(base: str, tmp_path):
    src = tmp_path / "ckpt"
    (src / "nested").mkdir(parents=True)
    (src / "model.pt").write_bytes(b"weights")
    (src / "nested" / "state.json").write_text('{"epoch": 3}')
    written = storage.copy_dir_to(str(src), storage.join(base, "ckpt"), marker="_COMPLETE")
    assert written[-1] == storage.join(base, "ckpt", "_COMPLETE")
    assert sorted(written[:-1]) == [storage.join(base, "ckpt", r) for r in ("model.pt", "nested/state.json")]
    dest = tmp_path / "back"
    local = storage.copy_dir_from(storage.join(base, "ckpt"), str(dest))
    assert len(local) == 3
    assert (dest / "model.pt").read_bytes() == b"weights"
    assert (dest / "nested" / "state.json").read_text() == '{"epoch": 3}'
    assert (dest / "_COMPLETE").read_bytes() == b""
    with pytest.raises(FileNotFoundError):
        storage.copy_dir_from(storage.join(base, "nothing-here"), str(tmp_path / "none"))


def test_explicit_endpoint_without_environment(s3_server, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert storage.s3_endpoint() is None
    uri = s3_server.uri(s3_server.unique_prefix("explicit"), "x.bin")
    storage.write_bytes_atomic(uri, b"via explicit endpoint", endpoint_url=s3_server.endpoint_url)
    assert storage.read_bytes(uri, endpoint_url=s3_server.endpoint_url) == b"via explicit endpoint"
    key = storage.strip_scheme(uri).split("/", 1)[1]
    assert s3_server.keys(key) == [key]


def test_pyarrow_filesystem_writes_parquet_to_s3(s3_server):
    prefix = s3_server.unique_prefix("parquet")
    fs, path = storage.pyarrow_filesystem_for(s3_server.uri(prefix, "t.parquet"))
    table = pa.table({"path": ["a", "b"], "width": pa.array([3, 4], pa.int32())})
    pq.write_table(table, path, filesystem=fs)
    assert s3_server.keys(prefix) == [f"{prefix}/t.parquet"]
    got = pq.read_table(pa.BufferReader(storage.read_bytes(s3_server.uri(prefix, "t.parquet"))))
    assert got.equals(table)


# ------------------------------------------------------------------- storage outage while reading


def _outage_collection(server: OwnS3, num: int = 4) -> tuple[list[str], list[tuple[int, int]]]:
    rng = np.random.default_rng(12)
    paths, sizes = [], []
    for i in range(num):
        width, height = 40 + 8 * i, 48
        array, _box = square_image(rng, width, height)
        paths.append(server.put(f"photos/img{i}.jpg", jpeg_bytes(array)))
        sizes.append((width, height))
    server.upload()
    return paths, sizes


def test_storage_outage_while_reading_raises_instead_of_error_rows(own_s3, monkeypatch, caplog):
    """Stopped storage: reads are retried, then "storage unreachable" is raised; no error row is made.

    A missing object stays an error row; once storage is back, the same read gives every image.
    """
    for name, value in OUTAGE_RETRIES.items():
        monkeypatch.setenv(name, value)
    paths, sizes = _outage_collection(own_s3)
    records = [ImageRecord(path=p, split="all") for p in paths]
    missing = ImageRecord(path=f"s3://{own_s3.bucket}/photos/gone.jpg", split="all")
    table = ingest.records_table([*records, missing])
    ep = own_s3.endpoint_url

    before = ingest.decode_batch(table, size=32, endpoint_url=ep)
    errors = before.column(ingest.ERROR).to_pylist()
    assert errors[:-1] == [None] * len(paths)
    assert "FileNotFoundError" in errors[-1], errors[-1]  # really missing: an error row, as always

    own_s3.stop()
    with pytest.raises(storage.StorageUnavailableError, match="storage unreachable: reading s3://") as info:
        storage.read_bytes(paths[0], ep)
    assert storage.is_transient(info.value.__cause__), repr(info.value.__cause__)
    with caplog.at_level("WARNING", logger="pipelines.storage"):
        with pytest.raises(storage.StorageUnavailableError, match="failed 3 times"):
            ingest.decode_batch(table, size=32, endpoint_url=ep)
        with pytest.raises(storage.StorageUnavailableError, match="storage unreachable: listing"):
            storage.list_images(f"s3://{own_s3.bucket}/photos", endpoint_url=ep)
    assert any("attempt 2 of 3" in r.getMessage() for r in caplog.records), caplog.text

    own_s3.start()  # storage is back (same port, same objects)
    after = ingest.decode_batch(table, size=32, endpoint_url=ep)
    assert after.column(ingest.ERROR).to_pylist()[:-1] == [None] * len(paths)
    got = list(
        zip(after.column(ingest.WIDTH).to_pylist(), after.column(ingest.HEIGHT).to_pylist(), strict=True)
    )
    assert got[:-1] == sizes


@pytest.mark.timeout(300)
def test_storage_outage_fails_the_ray_data_task(own_s3, ray_cluster):
    """Through Ray Data (as labeling decodes): the outage fails the dataset with "storage unreachable"."""
    import ray.data

    paths, _sizes = _outage_collection(own_s3)
    table = ingest.records_table([ImageRecord(path=p, split="all") for p in paths])
    env = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}

    def decoded() -> object:
        return ray.data.from_arrow([table.slice(0, 2), table.slice(2)]).map_batches(
            ingest.decode_batch,  # type: ignore[arg-type]  # its keyword-only arguments come in fn_kwargs
            batch_format="pyarrow",
            batch_size=None,
            num_cpus=0.5,
            fn_kwargs={"size": 32, "endpoint_url": own_s3.endpoint_url},
            runtime_env={"env_vars": {**env, **OUTAGE_RETRIES}},
        )

    assert [row[ingest.ERROR] for row in decoded().take_all()] == [None] * len(paths)
    own_s3.stop()
    with pytest.raises(Exception, match="storage unreachable") as info:
        decoded().take_all()
    assert isinstance(info.value, storage.StorageUnavailableError) or "StorageUnavailableError" in str(
        info.value
    )
    own_s3.start()
    assert [row[ingest.ERROR] for row in decoded().take_all()] == [None] * len(paths)
