"""Fixtures of the Ray integration tests: a real S3 API server on loopback and a local Ray cluster.

- ``s3_server`` (session): ``moto_server`` (moto's standalone S3 API server) on a free loopback port, a
  fresh bucket, and the AWS variables (fake credentials, region, ``AWS_ENDPOINT_URL``) set in this
  process's environment, restored at the end. Nothing touches real S3 or the network.
- ``ray_cluster`` (session): ``ray.init(num_cpus=2)`` started *after* the S3 variables are set, so
  Ray's worker processes inherit them (read tasks otherwise fail with ACCESS_DENIED), and with the
  repository on ``PYTHONPATH`` so workers import ``pipelines``/``coloc_core`` by reference.
- ``own_s3`` (per test): an :class:`OwnS3` server of the test's own, which it can stop and restart to
  make a storage outage (``OUTAGE_RETRIES``: the quick storage retries those tests set).

One cluster for the whole session, shut down only at its end. A Ray driver whose GCS goes away keeps
retrying, and after ``gcs_rpc_server_reconnect_timeout_s`` (60 s by default) its core worker ends the
*whole process* with ``_Exit(1)``: no traceback, no pytest summary, just exit code 1. Starting and
stopping a cluster per module gave any lingering GCS client of a torn-down cluster a chance to do that
to the test run; with one cluster the GCS outlives every test, and ``tests/conftest.py`` raises the
timeout besides.

Every Ray test module also sets a timeout (``pytest.mark.timeout``): on a 2-CPU machine a resource
deadlock hangs instead of failing.

A slow start is not a failure: on a loaded machine the raylet can take longer than the 30 s Ray waits
for it to register ("The current node timed out during startup"), and then every test of the session
errors at once. :func:`start_ray` gives each start :data:`RAY_START_TIMEOUT_S` (for the raylet to
register, and ``RAY_gcs_server_port_wait_time_s`` for the GCS) and, when a start fails anyway, ends
the processes that start spawned, by their ids, and tries once more (:data:`RAY_START_ATTEMPTS`).
The first Ray test's own timeout counts this start too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pipelines import storage

REPO_ROOT = Path(__file__).resolve().parents[2]
_S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
# Variables that would point boto/s3fs elsewhere than the test server.
_S3_ENV_CLEARED = ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")
# Start-up of the session's Ray cluster: seconds each start may take (Ray's own waits are 30 s), and
# how many starts are tried.
RAY_START_TIMEOUT_S = 60
RAY_START_ATTEMPTS = 2
T = TypeVar("T")


def _child_pids() -> set[int]:
    import psutil

    return {child.pid for child in psutil.Process().children(recursive=True)}


def _end_processes(pids: set[int], timeout: float = 10.0) -> None:
    """Terminate these processes (children of this one), then kill what is left after ``timeout``."""
    import psutil

    procs = []
    for pid in sorted(pids):
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=timeout)


def _patient(get_node: Callable[..., Any], timeout_s: float, interval_s: float = 0.5) -> Callable[..., Any]:
    """``ray._private.services.get_node`` retrying for up to ``timeout_s`` while the node is not registered.

    Ray's node start-up calls ``get_node`` in a loop that gives up after a fixed 30 s; a call that waits
    itself gives the raylet ``timeout_s`` instead.
    """

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return get_node(*args, **kwargs)
            except RuntimeError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(interval_s)

    return wrapper


def start_ray(
    init: Callable[[], T],
    shutdown: Callable[[], None],
    *,
    attempts: int = RAY_START_ATTEMPTS,
    timeout_s: float = RAY_START_TIMEOUT_S,
) -> T:
    """``init()`` with a longer start-up timeout, tried ``attempts`` times.

    Each try runs with Ray's raylet and GCS start-up waits raised to ``timeout_s``. After a failed try,
    ``shutdown()`` resets the driver and the processes that try spawned (children of this process that
    were not there before it) are ended, so the next try starts clean.

    Raises:
        The last try's exception when every try fails.
    """
    import ray._private.services as services

    for attempt in range(1, attempts + 1):
        before = _child_pids()
        mp = pytest.MonkeyPatch()
        mp.setenv("RAY_gcs_server_port_wait_time_s", str(int(timeout_s)))
        mp.setattr(services, "get_node", _patient(services.get_node, timeout_s))
        try:
            return init()
        except Exception as err:
            if attempt == attempts:
                raise
            warnings.warn(
                f"Ray did not start (try {attempt} of {attempts}): {err}; trying again", stacklevel=2
            )
            shutdown()
            _end_processes(_child_pids() - before)
        finally:
            mp.undo()
    raise AssertionError("unreachable")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _moto_server_command() -> list[str]:
    exe = Path(sys.executable).with_name("moto_server")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("moto_server")
    if found:
        return [found]
    pytest.skip("moto_server not installed (pip install 'moto[server]')")
    raise AssertionError  # unreachable


@dataclass
class S3Server:
    """A running S3 API server with one bucket, plus helpers to put test data on it."""

    endpoint_url: str
    bucket: str
    client: object = field(repr=False)

    def uri(self, *parts: str) -> str:
        """``s3://<bucket>/<parts joined by />``."""
        key = "/".join(p.strip("/") for p in parts if p)
        return f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"

    def upload_dir(self, local_dir: str | os.PathLike[str], prefix: str) -> str:
        """Upload a local folder recursively under ``prefix``; returns its ``s3://`` URI."""
        local_dir = Path(local_dir)
        for path in sorted(local_dir.rglob("*")):
            if path.is_file():
                key = f"{prefix.strip('/')}/{path.relative_to(local_dir).as_posix()}"
                self.client.upload_file(str(path), self.bucket, key)  # type: ignore[attr-defined]
        return self.uri(prefix)

    def put(self, key: str, data: bytes) -> str:
        """Put one object; returns its ``s3://`` URI."""
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)  # type: ignore[attr-defined]
        return self.uri(key)

    def keys(self, prefix: str = "") -> list[str]:
        """All keys under ``prefix``, sorted."""
        paginator = self.client.get_paginator("list_objects_v2")  # type: ignore[attr-defined]
        keys = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [obj["Key"] for obj in page.get("Contents", [])]
        return sorted(keys)

    def unique_prefix(self, name: str) -> str:
        """A fresh prefix (tests share the bucket; no test sees another's objects)."""
        return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """``moto_server`` on a free loopback port, one bucket, AWS variables set for this session."""
    import boto3

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*_moto_server_command(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    mp = pytest.MonkeyPatch()
    try:
        for name in _S3_ENV_CLEARED:
            mp.delenv(name, raising=False)
        for name, value in _S3_ENV.items():
            mp.setenv(name, value)
        mp.setenv("AWS_ENDPOINT_URL", endpoint)
        deadline = time.monotonic() + 20.0
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with code {proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not answer on {endpoint} within 20 s") from None
                time.sleep(0.05)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        bucket = "coloc-test"
        client.create_bucket(Bucket=bucket)
        yield S3Server(endpoint_url=endpoint, bucket=bucket, client=client)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        mp.undo()


@pytest.fixture(scope="session")
def ray_cluster(s3_server: S3Server) -> Iterator[object]:
    """A local 2-CPU Ray cluster (no dashboard) whose workers see the S3 server and the repository."""
    import ray

    if ray.is_initialized():  # started outside this fixture
        ray.shutdown()
    mp = pytest.MonkeyPatch()
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    mp.setenv("PYTHONPATH", pythonpath)
    env_vars = {name: os.environ[name] for name in (*_S3_ENV, "AWS_ENDPOINT_URL", "PYTHONPATH")}
    try:
        context = start_ray(
            lambda: ray.init(
                num_cpus=2,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                runtime_env={"env_vars": env_vars},
            ),
            ray.shutdown,
        )
        yield context
    finally:
        ray.shutdown()
        mp.undo()


@pytest.fixture
def restore_data_context(ray_cluster: object) -> Iterator[object]:
    """The current Ray Data context, restored after the test (tests may set ``preserve_order``)."""
    import copy

    import ray.data

    original = copy.deepcopy(ray.data.DataContext.get_current())
    yield ray.data.DataContext.get_current()
    ray.data.DataContext._set_current(original)


# ------------------------------------------------------------ a server a test can stop (outages)

# Storage retries of the outage tests: three quick attempts, so an outage fails fast.
OUTAGE_RETRIES = {storage.ATTEMPTS_ENV: "3", storage.BACKOFF_ENV: "0.01", storage.BACKOFF_MAX_ENV: "0.02"}


class OwnS3:
    """A moto S3 server of one test (never the session's), on a fixed loopback port: stop and restart it."""

    def __init__(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.bucket = "coloc-outage"
        self.objects: dict[str, bytes] = {}
        self.server: Any = None  # moto.server.ThreadedMotoServer while running

    def start(self) -> None:
        """Start (again) on the same port, with the same bucket and objects (uploaded again if lost)."""
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.upload()

    def upload(self) -> None:
        """Create the bucket and put every object of :meth:`put` (again)."""
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1")
        with contextlib.suppress(
            client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists
        ):
            client.create_bucket(Bucket=self.bucket)
        for key, data in self.objects.items():
            client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def put(self, key: str, data: bytes) -> str:
        self.objects[key] = data
        return f"s3://{self.bucket}/{key}"


@pytest.fixture
def own_s3(s3_server) -> Iterator[OwnS3]:
    """Our own server (``s3_server`` only for the session's fake credentials in the environment)."""
    server = OwnS3()
    server.start()
    try:
        yield server
    finally:
        server.stop()
