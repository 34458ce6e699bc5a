"""The training jobs (jobs/train.py, jobs/train_cub.py) refuse a bad command line before touching Ray.

Each job file is loaded as a script (``python jobs/train.py``); no Ray cluster is started: ``ray.init``
is replaced by a stand-in that fails the test. Submitted to a real head node: tests/ray/test_jobs.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = [pytest.mark.timeout(240)]

REPO_ROOT = Path(__file__).resolve().parents[2]


def _load_job(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"coloc_job_{name}", REPO_ROOT / "jobs" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("job", "argv"),
    [
        ("train_cub", ["--data=/x", "--dataset.format=cars"]),  # train_cub is CUB only
        ("train_cub", ["--data=/x", "--no.such_key=1"]),
        ("train", ["--format=unknown", "--data=/x"]),
        ("train", ["--format=folder"]),  # no --data
    ],
)
def test_bad_command_lines_exit_2_before_starting_ray(
    job: str, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    def no_ray(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started for a bad command line")

    # Whatever the session's state, the job must reject the command line before it touches Ray.
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", no_ray)
    assert _load_job(job).main(argv) == 2
