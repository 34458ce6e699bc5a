"""The ``coloc`` command answers --help, --version and bad command lines early: no Ray, no torch.

Each case runs in a fresh interpreter (the test process itself has imported torch long ago) and reports
the exit code, the output and whether ``ray`` / ``torch`` ended up in ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.cli import COMMANDS

REPO_ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("ray", "torch", "torchvision", "pyarrow")

_PROBE = r"""
import contextlib, io, json, sys
from jobs.cli import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    import logging
    logging.basicConfig(stream=err, force=True)
    try:
        code = main(json.loads(sys.argv[1]))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
heavy = [name for name in json.loads(sys.argv[2]) if name in sys.modules]
print(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue(), "heavy": heavy}))
"""


def _coloc(*argv: str) -> dict:
    """``coloc argv...`` in a fresh interpreter: exit code, stdout, stderr (log) and heavy modules loaded."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(list(argv)), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _version() -> str:
    import coloc_core

    return coloc_core.__version__


def test_the_version_is_the_package_version():
    import importlib.metadata

    assert _version() == importlib.metadata.version("coloc")


def test_coloc_version():
    for flag in ("--version", "-V"):
        result = _coloc(flag)
        assert result["code"] == 0, result
        assert result["out"].strip() == f"coloc {_version()}"
        assert result["heavy"] == []


def test_bare_coloc_prints_usage():
    result = _coloc()
    assert result["code"] == 2
    assert "usage: coloc <command>" in result["out"] + result["err"]
    for name in COMMANDS:
        assert name in result["out"] + result["err"]
    assert "--version" in result["out"] + result["err"]
    assert result["heavy"] == []


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_help_imports_neither_ray_nor_torch(command):
    result = _coloc(command, "--help")
    assert result["code"] == 0, result
    assert result["out"].startswith("Options"), result["out"][:200]
    assert result["heavy"] == [], f"coloc {command} --help imported {result['heavy']}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_version(command):
    result = _coloc(command, "--version")
    assert result["code"] == 0, result
    assert result["out"].strip() == f"coloc {_version()}"
    assert result["heavy"] == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["label"], "--images"),
        (["label", "--images=/x"], "--out"),
        (["label", "--out=/x"], "--images"),
        (["label", "--method=model", "--images=/x", "--out=/y"], "--model"),  # needs a model file
        (["label", "--method=nope", "--images=/x", "--out=/y"], "method='nope'"),
        (["label", "--method=ddt", "--images=/x", "--out=/y", "--format=xml"], "format='xml'"),
        (["label", "--method=ddt", "--images=/x", "--out=/y", "--feature_layer=conv9"], "feature_layer"),
        (["label", "--method=ddt", "--images=/x", "--out=/y", "--batch_size=0"], "batch_size=0"),
        (["label", "--no_such_key=1"], "no_such_key"),
        (["train"], "dataset.root is required"),
        (["train", "--data=/x", "--format=xml"], "dataset.format='xml'"),
        (["train-cub"], "dataset.root is required"),
        (["train-cub", "--data=/x", "--optim.lr=nan"], "optim.lr=nan"),
        (["evaluate"], "--predictions"),
        (["evaluate", "--predictions=/p", "--sheet_images=-1"], "sheet_images=-1"),
        (["calibrate", "--predictions=/p"], "--gt"),
        (["export", "--predictions=/p"], "--out"),
        (["export", "--predictions=/p", "--out=/o", "--category=c", "--to=xml"], "--to='xml'"),
        (["demo", "--no_such_key=1"], "no_such_key"),
        (["generate", "--num_images=0"], "num_images=0"),
        (["label", "positional"], "unexpected argument"),
    ],
)
def test_bad_command_lines_exit_2_without_ray_or_torch(argv, message):
    result = _coloc(*argv)
    assert result["code"] == 2, result
    assert "bad arguments" in result["err"] and message in result["err"], result["err"]
    assert result["heavy"] == [], f"coloc {' '.join(argv)} imported {result['heavy']}"


def test_unknown_command_exits_2():
    result = _coloc("lable")
    assert result["code"] == 2
    assert "unknown command 'lable'" in result["err"]
    assert result["heavy"] == []


def test_the_console_script_answers_version_and_help():
    """The installed ``coloc`` entry point and ``python jobs/<job>.py`` behave the same way."""
    coloc = Path(sys.executable).parent / "coloc"
    if not coloc.exists():
        pytest.skip("the coloc console script is not installed in this environment")
    done = subprocess.run([str(coloc), "--version"], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, f"coloc {_version()}")
    done = subprocess.run(
        [sys.executable, "jobs/label.py", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert (done.returncode, done.stdout.strip()) == (0, f"coloc {_version()}")
    done = subprocess.run(
        [sys.executable, "jobs/label.py", "--images=/x"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 2 and "--out" in done.stderr, done.stderr
