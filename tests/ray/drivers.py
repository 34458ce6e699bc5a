"""A ``coloc`` command as a job driver: its own process, joined to the session's Ray cluster by address.

The kill tests (``test_label_kill.py``, ``test_train_resume.py``) start such a driver, SIGKILL it once
the run has reached a chosen point, and run the same command again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def driver_env(ray_cluster: object, **extra: str) -> dict[str, str]:
    """This process's environment, pointed at the session's cluster (``RAY_ADDRESS``), plus ``extra``."""
    env = dict(os.environ)
    env["RAY_ADDRESS"] = ray_cluster.address_info["gcs_address"]  # type: ignore[attr-defined]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def run_driver(command: list[str], env: dict[str, str], log_path: Path, timeout_s: float = 200) -> str:
    """Run the command to its end; its output (stdout and stderr), after checking it exited 0."""
    with open(log_path, "wb") as log_file:
        done = subprocess.run(
            command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, timeout=timeout_s
        )
    output = log_path.read_text(errors="replace")
    assert done.returncode == 0, output[-4000:]
    return output


def kill_driver_when(
    command: list[str],
    env: dict[str, str],
    log_path: Path,
    ready: Callable[[], bool],
    what: str,
    timeout_s: float,
    poll_s: float = 0.05,
) -> None:
    """Start the command and SIGKILL the driver (only it: no handler runs) as soon as ``ready()`` holds.

    Fails, with the end of the driver's output, if it exits first or ``what`` has not happened within
    ``timeout_s``. Its actors and tasks die with their owner; whatever it was writing stays as it was.
    """
    with open(log_path, "wb") as log_file:
        driver = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            assert driver.poll() is None, log_path.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, f"{what} not seen in {timeout_s:g} s"
            time.sleep(poll_s)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=30)
    assert driver.returncode == -signal.SIGKILL
