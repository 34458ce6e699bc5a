"""pipelines.storage without a server: URI helpers, the S3 endpoint's precedence, local atomic writes.

The same operations on every backend (local, ``file://``, S3 on loopback): tests/ray/test_storage.py.
"""

from __future__ import annotations

import os

import pytest

from pipelines import storage

pytestmark = [pytest.mark.timeout(120)]


def test_uri_helpers():
    assert storage.join("s3://b/runs", "exp/", "/model.pt") == "s3://b/runs/exp/model.pt"
    assert storage.join("s3://b/", "k") == "s3://b/k"
    assert storage.join("/data", "") == "/data"
    assert storage.join("file:///data", "a", "b.jpg") == "file:///data/a/b.jpg"
    assert storage.strip_scheme("s3://b/k/x.jpg") == "b/k/x.jpg"
    assert storage.strip_scheme("file:///tmp/x") == "/tmp/x"
    assert storage.strip_scheme("rel/x") == "rel/x"
    assert storage.to_uri("b/k/x.jpg", like="s3://b/k") == "s3://b/k/x.jpg"
    assert storage.to_uri("/tmp/x.jpg", like="file:///tmp") == "file:///tmp/x.jpg"
    assert storage.to_uri("/tmp/x.jpg", like="/tmp") == "/tmp/x.jpg"
    assert storage.to_uri("s3://b/x", like="/tmp") == "s3://b/x"
    assert storage.scheme_of("/x") == "file" and storage.scheme_of("S3://b") == "s3"
    assert storage.relative_path("s3://b/root/a/b.jpg", "s3://b/root/") == "a/b.jpg"
    assert storage.absolute_uri("s3://b/runs/") == "s3://b/runs"
    assert storage.absolute_uri("file:///tmp/runs") == "/tmp/runs"
    assert storage.absolute_uri("runs") == os.path.join(os.getcwd(), "runs")
    with pytest.raises(ValueError, match="not under"):
        storage.relative_path("s3://b/other/x", "s3://b/root")


def test_s3_endpoint_precedence(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://generic:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3-specific:2")
    assert storage.s3_endpoint() == "http://s3-specific:2"
    assert storage.s3_endpoint("http://explicit:3") == "http://explicit:3"
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    assert storage.s3_endpoint() == "http://generic:1"
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert storage.s3_endpoint() is None


def test_atomic_write_local_keeps_normal_permissions(tmp_path):
    path = tmp_path / "f.bin"
    storage.write_bytes_atomic(str(path), b"x")
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
