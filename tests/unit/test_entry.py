"""The job scripts' one skeleton (jobs/entry.py): exit codes, log lines, JSON output, Ray only when asked.

No Ray here: ``console.ray_init`` is replaced by a recorder (or by a function that fails the test), and
``tests/unit/test_cli.py`` checks in a fresh interpreter that bad command lines import neither Ray nor
torch.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from coloc_core.errors import InvalidInputError, MissingInputError
from jobs import entry
from jobs.entry import Job, Refused, run_job
from pipelines import console

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_console(monkeypatch):
    """A console of the test's own: state, root handlers and level restored after it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    monkeypatch.setattr(console, "_state", console._State())
    err = io.StringIO()
    monkeypatch.setattr(console, "_stream", lambda: err)
    yield err
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def ray_starts(monkeypatch):
    """The number of times the job started (or joined) Ray."""
    calls: list[int] = []
    monkeypatch.setattr(console, "ray_init", lambda **kwargs: calls.append(1))
    return calls


def _parse(args: list[str]) -> dict[str, str]:
    cfg = dict(arg[2:].split("=", 1) for arg in args)
    if "out" not in cfg:
        raise ValueError("--out is required")
    return cfg


def _job(run, needs_ray: bool = False, **kwargs) -> Job:
    return Job(
        "toy",
        parse=_parse,
        run=run,
        failed="toy failed",
        header=lambda cfg: ("toy", {"out": cfg["out"]}),
        needs_ray=needs_ray,
        **kwargs,
    )


def test_success_prints_the_header_and_the_json_report_and_exits_0(fresh_console, ray_starts, capsys):
    job = _job(lambda cfg: {"images": 3, "out": cfg["out"]}, report=lambda cfg, result: result)
    assert run_job(job, ["--out=/o"]) == entry.OK == 0
    assert json.loads(capsys.readouterr().out) == {"images": 3, "out": "/o"}
    lines = fresh_console.getvalue().splitlines()
    assert lines[0].startswith("coloc ") and lines[0].endswith(" · toy"), lines
    assert lines[1:] == ["  out: /o"]
    assert ray_starts == []


def test_a_report_that_returns_nothing_prints_nothing_on_stdout(ray_starts, capsys):
    shown = []
    job = _job(lambda cfg: 7, report=lambda cfg, result: shown.append(result))
    assert run_job(job, ["--out=/o"]) == 0
    assert shown == [7] and capsys.readouterr().out == ""


def test_a_bad_command_line_exits_2_before_ray_and_before_the_run(caplog, ray_starts):
    def never(*args, **kwargs):
        raise AssertionError("called for a bad command line")

    for argv in (["--images=/x"], ["--verbose=maybe", "--out=/o"]):
        with caplog.at_level(logging.ERROR):
            assert run_job(_job(never, needs_ray=True), argv) == entry.BAD_ARGUMENTS == 2
    assert ray_starts == []
    assert "bad arguments: --out is required" in caplog.text
    assert "bad arguments: --verbose='maybe'" in caplog.text


def test_a_bad_command_line_never_starts_ray(monkeypatch):
    def no_ray(**kwargs):
        raise AssertionError("Ray was started for a bad command line")

    monkeypatch.setattr(console, "ray_init", no_ray)
    assert run_job(_job(lambda cfg: None, needs_ray=True), ["--nope=1"]) == 2


def test_a_failing_run_exits_1_with_the_jobs_message_and_the_traceback(caplog, ray_starts, capsys):
    def boom(cfg):
        raise FileNotFoundError("no annotations in /o")

    with caplog.at_level(logging.ERROR):
        assert run_job(_job(boom, report=lambda cfg, result: {"x": 1}), ["--out=/o"]) == entry.FAILED == 1
    record = next(r for r in caplog.records if r.getMessage() == "toy failed")
    assert record.name == "jobs.toy" and record.exc_info is not None
    assert "FileNotFoundError" in caplog.text
    assert capsys.readouterr().out == ""  # no report after a failure


def test_a_refused_run_exits_2_with_its_message(caplog, ray_starts):
    def refuse(cfg):
        raise Refused("bad arguments: 4 workers need 40 GiB, the node has 16")

    with caplog.at_level(logging.ERROR):
        assert run_job(_job(refuse), ["--out=/o"]) == 2
    assert "bad arguments: 4 workers need 40 GiB" in caplog.text
    assert "toy failed" not in caplog.text


@pytest.mark.parametrize(
    "error",
    [
        MissingInputError("cub: expected file /d/images.txt was not found"),
        InvalidInputError("none of the 3 images of /p is in the ground truth of /d"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_traceback(error, caplog, ray_starts):
    def bad(cfg):
        raise error

    with caplog.at_level(logging.ERROR):
        assert run_job(_job(bad), ["--out=/o"]) == entry.BAD_ARGUMENTS
    record = next(r for r in caplog.records if r.name == "jobs.toy")
    assert record.getMessage() == f"bad input: {error}" and record.exc_info is None
    assert "toy failed" not in caplog.text


def test_bad_input_raised_in_a_ray_task_is_reported_without_the_remote_traceback(caplog, ray_starts):
    from ray.exceptions import RayTaskError

    cause = MissingInputError("no image files (.jpg) under s3://b/photos")
    wrapped = RayTaskError("read_task", "Traceback (most recent call last): ...", cause).as_instanceof_cause()
    assert isinstance(wrapped, MissingInputError)  # what Ray raises in the driver

    def bad(cfg):
        raise wrapped

    with caplog.at_level(logging.ERROR):
        assert run_job(_job(bad), ["--out=/o"]) == 2
    assert [r.getMessage() for r in caplog.records if r.name == "jobs.toy"] == [f"bad input: {cause}"]


def test_a_bad_storage_retry_setting_is_bad_input_before_ray_starts(monkeypatch, caplog, ray_starts):
    ran = []
    monkeypatch.setenv("COLOC_STORAGE_BACKOFF_S", "soon")
    with caplog.at_level(logging.ERROR):
        assert run_job(_job(ran.append, needs_ray=True), ["--out=/o"]) == entry.BAD_ARGUMENTS
    assert ray_starts == [] and ran == []
    assert [r.getMessage() for r in caplog.records if r.name == "jobs.toy"] == [
        "bad input: COLOC_STORAGE_BACKOFF_S='soon' is not a number"
    ]


def test_ctrl_c_exits_130_with_a_short_line(caplog, ray_starts):
    def interrupted(cfg):
        raise KeyboardInterrupt

    with caplog.at_level(logging.ERROR):
        assert run_job(_job(interrupted, needs_ray=True), ["--out=/o"]) == entry.INTERRUPTED == 130
    assert "toy interrupted" in caplog.text and "toy failed" not in caplog.text


def test_ray_is_started_only_for_a_job_that_needs_it(ray_starts):
    assert run_job(_job(lambda cfg: None), ["--out=/o"]) == 0
    assert ray_starts == []
    assert run_job(_job(lambda cfg: None, needs_ray=True), ["--out=/o"]) == 0
    assert ray_starts == [1]


def test_ray_starts_before_the_run(ray_starts):
    seen = []
    assert run_job(_job(lambda cfg: seen.append(len(ray_starts)), needs_ray=True), ["--out=/o"]) == 0
    assert seen == [1]


def test_a_ray_that_cannot_be_reached_is_a_failure(monkeypatch, caplog):
    def unreachable(**kwargs):
        raise ConnectionError("no Ray at 10.0.0.1:6379")

    monkeypatch.setattr(console, "ray_init", unreachable)
    with caplog.at_level(logging.ERROR):
        assert run_job(_job(lambda cfg: None, needs_ray=True), ["--out=/o"]) == 1
    assert "toy failed" in caplog.text and "no Ray at" in caplog.text


def test_help_and_version_answer_from_the_parse_step(capsys):
    from pipelines.config import GenerateConfig, build_config

    job = Job("toy", parse=lambda args: build_config(GenerateConfig, args), run=lambda cfg: None, failed="x")
    with pytest.raises(SystemExit) as exit_:
        run_job(job, ["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("coloc ")


@pytest.mark.parametrize(
    "name", ["calibrate", "demo", "evaluate", "export", "generate", "label", "render", "train", "train_cub"]
)
def test_every_job_script_runs_through_the_helper(name):
    """No job script carries its own copy of the skeleton: it declares a ``Job`` (train_cub: train's)."""
    import importlib
    import inspect

    module = importlib.import_module(f"jobs.{name}")
    source = inspect.getsource(module)
    assert "Job(" in source or "train_main" in source, name
    for piece in ("console.start(", "console.ray_init(", "log.exception(", 'log.error("bad arguments'):
        assert piece not in source, (name, piece)


def test_preload_imports_the_stage_in_the_background_and_leaves_errors_to_run(tmp_path, monkeypatch):
    import threading

    from jobs import entry

    (tmp_path / "coloc_preload_probe.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("coloc_preload_probe", None)
    entry._preload(("coloc_preload_probe_missing", "coloc_preload_probe"))  # a bad name does not stop it
    for thread in threading.enumerate():
        if thread.name == "coloc-preload":
            thread.join(timeout=30)
    assert sys.modules["coloc_preload_probe"].LOADED


def test_preload_imports_opencv_first_so_that_ray_keeps_its_psutil_folder():
    """OpenCV's import sets ``sys.path`` back to what it found; ``import ray`` adds to it meanwhile.

    Run in a fresh interpreter as a job runs: numpy already imported (OpenCV's import is then quick),
    the preload started, and Ray imported at once on the main thread. With OpenCV imported in the
    preload thread, this failed with "No module named 'psutil'" in about half the runs.
    """
    code = (
        "import sys, numpy\n"
        "from jobs import entry\n"
        "entry._preload(('json',))\n"
        "assert 'cv2' in sys.modules, 'OpenCV was left to the preload thread'\n"
        "import ray\n"
        "print('psutil' in sys.modules)\n"
    )
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == "True"


@pytest.mark.parametrize(
    ("error", "code", "line", "traceback"),
    [
        (InvalidInputError("/o holds predictions with pick='score'"), 2, "bad input: /o holds", False),
        # any other error is a failure of the run, with its traceback: a bug is not passed off as a refusal
        (ValueError("operands could not be broadcast"), 1, "labeling failed", True),
    ],
)
def test_coloc_label_reports_bad_input_in_one_line_and_failures_with_their_traceback(
    error, code, line, traceback, tmp_path, monkeypatch, caplog, ray_starts
):
    import pipelines.label
    from jobs import label

    def run_labeling(cfg):
        raise error

    monkeypatch.setattr(pipelines.label, "run_labeling", run_labeling)
    (tmp_path / "photos").mkdir()
    args = [f"--images={tmp_path / 'photos'}", f"--out={tmp_path / 'o'}", "--method=ddt"]
    with caplog.at_level(logging.ERROR):
        assert label.main(args) == code
    assert line in caplog.text, caplog.text
    assert ("Traceback" in caplog.text) == traceback, caplog.text
    assert ("labeling failed" in caplog.text) == (code == 1), caplog.text
