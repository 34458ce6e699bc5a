"""The training jobs, submitted with the Ray Jobs CLI to a head node started by this module.

The head runs as ``ray start --head --block`` in its own session, with its own temp dir, free ports and
token authentication (``RAY_AUTH_MODE=token``, a fresh token in ``RAY_AUTH_TOKEN`` for the head and the
CLI, so nothing is read from or written to ``~/.ray/auth_token``). Teardown stops exactly that head: a
SIGTERM to the ``ray start --block`` process (which shuts down every process it started), then SIGKILL
to whatever is left in its session. Not ``ray stop``: that kills every Ray process on the machine,
including other test sessions' clusters.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coloc_core.synthetic import generate_cub_layout

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(240)]

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


@dataclass
class RayHead:
    address: str  # the dashboard / Jobs API address
    env: dict[str, str]  # what the CLI needs: RAY_AUTH_MODE, RAY_AUTH_TOKEN, PATH

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "ray"), *args],
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def submit(self, *entrypoint: str) -> tuple[int, str]:
        """``ray job submit --working-dir . -- <entrypoint>``; (exit code, stdout + stderr)."""
        done = self.cli("job", "submit", "--address", self.address, "--working-dir", ".", "--", *entrypoint)
        return done.returncode, done.stdout + done.stderr


def _wait_for_dashboard(url: str, token: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(f"{url}/api/version", headers={"Authorization": f"Bearer {token}"})
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the Ray dashboard did not answer on {url} within {timeout} s")


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    temp_dir = tempfile.mkdtemp(prefix="coloc-rayhead-", dir="/tmp")  # short: Ray's socket paths are limited
    token = uuid.uuid4().hex
    dashboard_port = _free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        # On SIGTERM the node drains its leases for up to 30 s by default; this head has nothing to save.
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "5",
        # Ray Train's controller polls its workers every 2 s by default (the job's fit() passes it on).
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
        # The job's `python` is the one of this virtual environment.
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("RAY_ADDRESS", None)
    command = [
        str(VENV_BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--num-cpus=2",
        f"--port={_free_port()}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        f"--ray-client-server-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    log_path = Path(temp_dir) / "ray-start.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        address = f"http://127.0.0.1:{dashboard_port}"
        _wait_for_dashboard(address, token, proc)
        yield RayHead(address=address, env=env)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        for pid in _session_pids(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("jobs-cub") / "CUB_200_2011"
    generate_cub_layout(str(root), num_images=24, seed=3, size_range=(64, 96))
    return str(root)


SMALL = [
    "--model.backbone=tiny",
    "--method=caml",
    "--model.weights=none",
    "--optim.epochs=1",
    "--optim.batch_size=8",
    "--augment.resize=72",
    "--augment.crop=64",
    "--run.cpus_per_worker=0.5",
]


def test_train_cub_job_submitted_with_the_cli(ray_head: RayHead, cub_root: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    code, output = ray_head.submit(
        "python",
        "jobs/train_cub.py",
        "--data",
        cub_root,
        *SMALL,
        f"--run.storage_path={runs}",
        "--run.name=job",
    )
    assert code == 0, output[-4000:]
    assert "succeeded" in output
    # The job log shows the header, the metrics of the epoch, evaluation included, and none of Ray's
    # own progress blocks (the resolved config only with --verbose).
    assert "· train" in output and "  method: CAML" in output
    assert "final metrics:" in output
    assert "Running Dataset" not in output and "training config (resolved)" not in output
    for key in ("loss=", "loss_caml=", "acc_rotation=", "images_per_s=", "corloc_mean=", "maxboxaccv2="):
        assert key in output, key
    assert (runs / "job" / "epoch_0001" / "state.pt").is_file()
    assert (runs / "job" / "model.pt").is_file()


def test_failing_job_exits_non_zero(ray_head: RayHead, tmp_path: Path) -> None:
    # The folder exists (so the driver-side checks pass) but holds no Stanford Cars annotations: the
    # job fails while reading the data set, inside the running job, with the one line of bad input.
    empty = tmp_path / "empty"
    empty.mkdir()
    code, output = ray_head.submit(
        "python",
        "jobs/train.py",
        "--format=cars",
        f"--data={empty}",
        *SMALL,
        f"--run.storage_path={tmp_path / 'runs'}",
    )
    assert code != 0, output[-4000:]
    assert "bad input: cars: expected one of" in output, output[-4000:]
    assert "training failed" not in output
