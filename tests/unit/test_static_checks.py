"""The linters the project is kept clean under: ruff (lint and format) and mypy.

Each runs as the developer would run it from the repository root (`ruff check .`, `ruff format
--check .`, `mypy` with the files of pyproject.toml), so a change that breaks one fails here and
not at review.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _ruff() -> str:
    # The ruff of the environment the tests run in, not one that happens to be on PATH.
    exe = Path(sys.executable).with_name("ruff")
    found = str(exe) if exe.exists() else shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed: it comes with the dev extra (`./run setup`)")
    return found


def test_ruff_check_is_clean():
    proc = _run(_ruff(), "check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_is_clean():
    proc = _run(_ruff(), "format", "--check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_is_clean():
    proc = _run(sys.executable, "-m", "mypy")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Success" in proc.stdout
