"""The console of a run (pipelines/console.py): what is shown by default, what --verbose adds, progress.

No Ray here: the worker-line filter gets the batches Ray's log forwarding hands to its printer (plain
dicts), and the CLI checks run ``coloc`` in a fresh interpreter. ``tests/ray/test_console_output.py``
runs real jobs on a local Ray.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import console
from pipelines.config import LabelJobConfig, help_text, split_verbose

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_console(monkeypatch):
    """Run a test against a console of its own: state, root handlers and stderr restored after it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    monkeypatch.setattr(console, "_state", console._State())
    err = io.StringIO()
    monkeypatch.setattr(console, "_stream", lambda: err)  # (pytest swaps sys.stderr per test phase)
    yield err
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize(
    ("argv", "verbose", "rest"),
    [
        (["--images=/x"], False, ["--images=/x"]),
        (["--verbose", "--images=/x"], True, ["--images=/x"]),
        (["--images", "/x", "--verbose"], True, ["--images", "/x"]),
        (["--verbose=true"], True, []),
        (["--verbose=false", "--out=o"], False, ["--out=o"]),
        (["--verbose", "false", "--out=o"], False, ["--out=o"]),  # the --key value form
        (["--verbose", "--out=o"], True, ["--out=o"]),
    ],
)
def test_verbose_is_a_run_option_taken_out_of_the_command_line(argv, verbose, rest):
    assert split_verbose(argv) == (verbose, rest)


def test_a_bad_verbose_value_is_refused():
    with pytest.raises(ValueError, match="not a boolean"):
        split_verbose(["--verbose=maybe"])


def test_every_commands_help_documents_verbose():
    text = help_text(LabelJobConfig, {})
    assert "--verbose" in text and "Ray Data's progress" in text


def test_quiet_console_shows_notices_and_warnings_only(fresh_console):
    console.setup(verbose=False)
    log = logging.getLogger("pipelines.somewhere")
    log.info("the resolved config")
    console.note(log, "epoch 1/3: loss=1.0")
    log.warning("a part file is torn")
    logging.getLogger("ray.data.whatever").info("Running Dataset")  # not ours, not a warning
    logging.getLogger("some.library").warning("a library warning")
    lines = fresh_console.getvalue().splitlines()
    assert lines == [
        "epoch 1/3: loss=1.0",
        "WARNING pipelines.somewhere: a part file is torn",
        "WARNING some.library: a library warning",
    ]


def test_verbose_console_shows_info_with_timestamps(fresh_console):
    console.setup(verbose=True)
    logging.getLogger("pipelines.somewhere").info("the resolved config")
    console.note(logging.getLogger("pipelines.train"), "epoch 1/3: loss=1.0")
    lines = fresh_console.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(" INFO pipelines.somewhere: the resolved config")
    assert lines[1].endswith(" NOTICE pipelines.train: epoch 1/3: loss=1.0")
    assert lines[0][:4].isdigit()  # the timestamp


def _worker_batch(*lines: str, pid: object = 4242) -> dict:
    return {
        "pid": pid,
        "ip": "10.0.0.1",
        "is_err": True,
        "lines": list(lines),
        "actor_name": "RayTrainWorker",
    }


RAY_WORKER_LINES = [
    "Requesting resources: {'CPU': 0.5} * 1",
    "Exception in thread PlacementGroupCleanerMonitor:",
    '  File "/x/ray/train/v2/_internal/execution/controller/placement_group_cleaner.py", line 80',
    "Starting execution of Dataset train_1. Full logs are in /tmp/ray/session_x/logs/ray-data",
    "2026-11-30 14:44:33,350\tINFO logging_progress.py:225 -- Total Progress: 0/?",
    "/x/execution_options.py:436: RayDeprecationWarning: `ExecutionOptions.exclude_resources` is deprecated",
    "2026-11-30 14:44:30,451 INFO coloc_core.backbones: weights ... 0 missing",  # ours, but INFO
    '{"__magic_token__": "__ray_tqdm_magic_token__", "x": 1}',
]


def test_quiet_mode_keeps_only_our_notices_and_warnings_from_the_workers(fresh_console):
    console.setup(verbose=False)
    printed: list[dict] = []
    shown = console._WorkerLineFilter(printed.append)
    shown(
        _worker_batch(
            *RAY_WORKER_LINES,
            "2026-11-30 14:45:56,480 NOTICE pipelines.train: epoch 1/3: loss=1.942 images_per_s=0.56",
            "2026-11-30 14:45:57,000 WARNING pipelines.storage: storage: retrying s3://b/k in 2 s",
            "storage: reading s3://b/k failed (attempt 2 of 5); retrying in 2.0 s",  # a decode task's
        )
    )
    assert printed == []  # Ray's printer got nothing
    assert fresh_console.getvalue().splitlines() == [
        "epoch 1/3: loss=1.942 images_per_s=0.56",
        "WARNING pipelines.storage: storage: retrying s3://b/k in 2 s",
        "WARNING storage: reading s3://b/k failed (attempt 2 of 5); retrying in 2.0 s",
    ]
    # The raylet's lines (out-of-memory kills, ...) go to Ray's printer as they are.
    raylet = _worker_batch("A worker died or was killed while executing a task", pid="raylet")
    shown(raylet)
    assert printed == [raylet]


def test_verbose_mode_hands_every_worker_line_to_ray(fresh_console):
    console.setup(verbose=True)
    printed: list[dict] = []
    batch = _worker_batch(*RAY_WORKER_LINES)
    console._WorkerLineFilter(printed.append)(batch)
    assert printed == [batch] and fresh_console.getvalue() == ""


def test_progress_is_silent_without_setup(fresh_console):
    with console.progress("label", total=10) as bar:
        bar.update(10)
    assert fresh_console.getvalue() == ""


def test_progress_off_a_terminal_prints_plain_lines_not_carriage_returns(fresh_console, monkeypatch):
    console.setup(verbose=False)  # stderr is a StringIO: not a terminal
    monkeypatch.setattr(console, "LINE_INTERVAL_S", 0.0)  # a line at every update
    with console.progress("label photos", total=4) as bar:
        assert bar.mode == "lines"
        for _ in range(3):
            console.advance(1)  # counts on the innermost open progress
        bar.update(1)
    text = fresh_console.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 4  # 1/4, 2/4, 3/4, then the final line
    assert lines[0].startswith("label photos: 1/4 images (") and "ETA" in lines[0]
    assert lines[-1].startswith("label photos: 4/4 images in 00:0") and lines[-1].endswith("images/s)")


def test_progress_off_a_terminal_is_quiet_between_intervals(fresh_console):
    console.setup(verbose=False)
    with console.progress("fit DDT", total=1000) as bar:
        for _ in range(1000):
            bar.update(1)
    assert len(fresh_console.getvalue().splitlines()) == 1  # only the final line


def test_progress_on_a_terminal_is_a_tqdm_bar(fresh_console, monkeypatch):
    monkeypatch.setattr(fresh_console, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(console, "_terminal_columns", lambda: 120)
    console.setup(verbose=False)
    with console.progress("label photos", total=5) as bar:
        assert bar.mode == "bar" and bar._tqdm is not None
        bar.update(5)
        console.write("a line above the bar")
    text = fresh_console.getvalue()
    assert "a line above the bar" in text and "5/5" in text and "label photos" in text


def test_a_terminal_without_a_size_gets_plain_lines(fresh_console, monkeypatch):
    monkeypatch.setattr(fresh_console, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(console, "_terminal_columns", lambda: 0)  # a bare pty: tqdm would draw nothing
    console.setup(verbose=False)
    with console.progress("label photos", total=2) as bar:
        assert bar.mode == "lines"
        bar.update(2)
    assert fresh_console.getvalue().startswith("label photos: 2/2 images in ")


def test_header_lists_the_fields_that_have_a_value(fresh_console):
    console.setup(verbose=False)
    console.header("coloc 9.9 · label", {"images": "/photos (folder)", "boxes": "", "out": "/labels"})
    assert fresh_console.getvalue().splitlines() == [
        "coloc 9.9 · label",
        "  images: /photos (folder)",
        "  out: /labels",
    ]


def _coloc(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_coloc_label_help_lists_verbose():
    done = _coloc("label", "--help")
    assert done.returncode == 0 and "--verbose" in done.stdout


def test_a_bad_verbose_value_exits_2():
    done = _coloc("label", "--verbose=maybe", "--images=/x", "--out=/y")
    assert done.returncode == 2, done.stderr
    assert "bad arguments" in done.stderr and "--verbose='maybe'" in done.stderr


def test_generate_prints_no_log_noise(tmp_path):
    done = _coloc("generate", f"--out={tmp_path / 'd'}", "--num_images=4")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no timestamped INFO lines by default
    assert "wrote 4 images" in done.stdout
