"""pipelines.storage's transient-fault classifier and retry loop (no Ray, no server).

Which failures are the way to the storage (retried, then "storage unreachable") and which are facts
about the file (an error row at once): see the module docstring of ``pipelines.storage``.
"""

from __future__ import annotations

import io

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from PIL import Image
from s3fs.errors import translate_boto_error

from coloc_core import decode
from coloc_core.errors import InvalidInputError
from pipelines import storage


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} message"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "GetObject",
    )


def decode_error(data: bytes, max_pixels: int = decode.MAX_PIXELS) -> Exception:
    with pytest.raises(Exception) as info:
        decode.decode_image(data, 32, max_pixels)
    return info.value


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "err",
    [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1/b/k"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1/b/k"),
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError("timed out"),
        client_error("ServiceUnavailable", 503),
        client_error("InternalError", 500),
        client_error("SlowDown", 503),
        client_error("TooManyRequests", 429),
        translate_boto_error(client_error("ServiceUnavailable", 503)),  # OSError(EIO) caused by the 503
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient_errors(err):
    assert storage.is_transient(err)


@pytest.mark.parametrize(
    "err",
    [
        FileNotFoundError("s3://b/missing.jpg"),
        PermissionError("denied"),
        IsADirectoryError("a folder"),
        translate_boto_error(client_error("NoSuchKey", 404)),  # FileNotFoundError
        translate_boto_error(client_error("AccessDenied", 403)),  # PermissionError
        client_error("NoSuchKey", 404),
        client_error("AccessDenied", 403),
        storage.StorageUnavailableError("storage unreachable: already retried"),
        ValueError("empty file (0 bytes)"),
        RuntimeError("anything else"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_permanent_errors(err):
    assert not storage.is_transient(err)


def test_decode_errors_are_permanent():
    """A file that was read and is bad: PIL errors (an OSError among them) are never retried."""
    not_image = decode_error(b"this is not an image at all")
    truncated = decode_error(png(64, 64)[:-40])
    too_large = decode_error(png(64, 64), max_pixels=100)
    assert isinstance(too_large, decode.ImageTooLargeError)
    for err in (not_image, truncated, too_large):
        assert not storage.is_transient(err), err


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setenv(storage.ATTEMPTS_ENV, "4")
    monkeypatch.setenv(storage.BACKOFF_ENV, "0.001")
    monkeypatch.setenv(storage.BACKOFF_MAX_ENV, "0.002")


def test_retry_recovers_from_transient_errors(fast_retries):
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError(104, "Connection reset by peer")
        return "ok"

    assert storage.retry_transient(flaky, "reading x") == "ok"
    assert len(calls) == 3


def test_retry_gives_up_with_storage_unreachable(fast_retries):
    calls = []

    def down() -> None:
        calls.append(1)
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1/b/k.jpg")

    with pytest.raises(
        storage.StorageUnavailableError, match="storage unreachable: reading s3://b/k.jpg"
    ) as info:
        storage.retry_transient(down, "reading s3://b/k.jpg")
    assert len(calls) == 4
    assert isinstance(info.value.__cause__, EndpointConnectionError)


def test_permanent_error_is_raised_at_once(fast_retries):
    calls = []

    def missing() -> None:
        calls.append(1)
        raise FileNotFoundError("b/k.jpg")

    with pytest.raises(FileNotFoundError):
        storage.retry_transient(missing, "reading s3://b/k.jpg")
    assert len(calls) == 1


def test_retry_settings(monkeypatch):
    for name in (storage.ATTEMPTS_ENV, storage.BACKOFF_ENV, storage.BACKOFF_MAX_ENV):
        monkeypatch.delenv(name, raising=False)
    attempts, backoff, backoff_max = storage.retry_settings()
    waits = [min(backoff * 2**i, backoff_max) for i in range(attempts - 1)]
    assert attempts == 5 and 20 <= sum(waits) <= 40  # bounded: about 30 s of waiting by default
    for bad in ("nan", "soon", "-1"):  # a bad setting of the environment is bad input: one line, exit 2
        monkeypatch.setenv(storage.BACKOFF_ENV, bad)
        with pytest.raises(InvalidInputError, match=storage.BACKOFF_ENV):
            storage.retry_settings()


class FlakyUploads:
    """A stand-in object store whose first ``failures`` uploads fail with a connection reset."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.objects: dict[str, bytes] = {}

    def pipe_file(self, path: str, data: bytes) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionResetError(104, "Connection reset by peer")
        self.objects[path] = bytes(data)


def test_object_store_writes_retry_transient_faults(fast_retries, monkeypatch):
    fake = FlakyUploads(failures=2)
    monkeypatch.setattr(storage, "filesystem_for", lambda uri, endpoint_url=None: (fake, "b/k.json"))
    storage.write_text_atomic("s3://b/k.json", '{"a": 1}')
    assert fake.calls == 3 and fake.objects == {"b/k.json": b'{"a": 1}'}

    down = FlakyUploads(failures=10)
    monkeypatch.setattr(storage, "filesystem_for", lambda uri, endpoint_url=None: (down, "b/k.json"))
    with pytest.raises(storage.StorageUnavailableError, match="storage unreachable: writing s3://b/k.json"):
        storage.write_bytes_atomic("s3://b/k.json", b"x")
    assert down.calls == 4 and down.objects == {}
