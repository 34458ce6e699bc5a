"""What ``coloc label`` prints, by default and with ``--verbose``, on a real local Ray cluster.

Each run is ``python -m jobs.cli label ...`` in a child process with its own local Ray (no
``RAY_ADDRESS``), its output captured: not a terminal, so the progress bars print plain lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coloc_core.synthetic import generate_cub_layout

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(400)]

REPO_ROOT = Path(__file__).resolve().parents[2]
# Lines of Ray's own that the default output must not have (and --verbose must bring back some of).
RAY_LINES = (
    "Running Dataset",
    "Starting execution of Dataset",
    "Execution plan of Dataset",
    "logging_progress",
)


def _label(tmp_path: Path, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    data = tmp_path / "data"
    if not (data / "images.txt").exists():
        generate_cub_layout(str(data), num_images=12, seed=0)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "COLOC_PROGRESS_INTERVAL_S")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.cli",
            "label",
            "--method=ddt",
            "--backbone=tiny",
            f"--images={data}",
            "--format=cub",
            f"--out={tmp_path / name}",
            "--batch_size=4",
            "--actor_cpus=0.5",
            "--decode_cpus=0.5",
            "--rows_per_file=6",
            *extra,
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=360,
    )


def test_label_prints_a_header_progress_and_a_summary_and_no_ray_output(tmp_path: Path) -> None:
    done = _label(tmp_path, "labels")
    assert done.returncode == 0, done.stderr[-4000:]
    err = done.stderr
    lines = err.splitlines()
    # The header: the job, its inputs and outputs, the cluster.
    assert lines[0].startswith("coloc ") and "label" in lines[0], err
    assert any(line.startswith("  images: ") for line in lines), err
    assert any(line.startswith("  out: ") for line in lines), err
    assert sum(line.startswith("  ray: ") and "--verbose" in line for line in lines) == 1, err  # once
    # One plain line per stage off a terminal (the fit, the labeling), never carriage returns.
    assert "\r" not in err
    # One bar for the whole fit: the statistics pass, then the typical-box pass over the same images.
    fit_bar = "fit DDT (12 images, box sizes on 12): 24/24 images in "
    assert any(line.startswith(fit_bar) for line in lines), err
    assert any(line.startswith("label labels: 12/12 images in ") for line in lines), err
    # None of Ray's own lines.
    for ray_line in RAY_LINES:
        assert ray_line not in err, (ray_line, err)
    assert "INFO" not in err and "PlacementGroupCleaner" not in err, err
    assert len(lines) <= 12, err
    # The summary: the JSON result on stdout, alone.
    summary = json.loads(done.stdout)
    assert summary["images"] == 12 and summary["errors"] == 0


def test_label_verbose_brings_back_ray_and_our_info_lines(tmp_path: Path) -> None:
    done = _label(tmp_path, "labels_verbose", "--verbose")
    assert done.returncode == 0, done.stderr[-4000:]
    out = done.stdout + done.stderr
    assert any(ray_line in out for ray_line in RAY_LINES), out[-4000:]
    assert " INFO pipelines.label: label: " in out  # our INFO lines, with their timestamps
    assert '"images": 12' in done.stdout
