"""``coloc label`` killed with SIGKILL mid-run (the driver itself), then the same command again.

The in-process crash tests of ``test_label.py`` stop the run with an exception at chosen points; this
one kills a real ``coloc label`` process, joined to the session's Ray cluster by its address
(``RAY_ADDRESS``) as a job driver would be, with SIGKILL once its first part file has landed: no
handler runs, its actors die with their owner, an atomic write may be cut short. New images are then
added to the input folder (issue 12 item 4, with a real kill). The same command run again must finish
the job with exactly one row per image, old and new (none lost, none twice), leave the part files
written before the kill untouched, and write ``_SUCCESS`` with the totals.

Small on purpose: a brightness "model" (no network), 48 small JPEGs, shards of 2 rows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.predictions import SUCCESS, part_files
from tests.ray import labeling_data as data

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]

REPO_ROOT = Path(__file__).resolve().parents[2]
NUM_IMAGES = 48
NEW_IMAGES = 6
ROWS_PER_FILE = 2


def _images(root: Path, first: int = 0, count: int = NUM_IMAGES) -> list[str]:
    rng = np.random.default_rng(11 + first)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(first, first + count):
        img, _box = data.square_image(rng, 64 + (i % 5) * 8, 72)
        path = root / f"img{i:03d}.jpg"
        path.write_bytes(data.jpeg_bytes(img))
        paths.append(str(path))
    return paths


def _command(images: Path, model: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "jobs.cli",
        "label",
        f"--model={model}",
        f"--images={images}",
        f"--out={out}",
        f"--rows_per_file={ROWS_PER_FILE}",
        "--batch_size=2",
        "--num_actors=1",
        "--actor_cpus=0.5",
        "--decode_cpus=0.25",
    ]


def _env(ray_cluster: object) -> dict[str, str]:
    env = dict(os.environ)
    env["RAY_ADDRESS"] = ray_cluster.address_info["gcs_address"]  # type: ignore[attr-defined]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _kill_after_first_part(
    command: list[str], env: dict[str, str], out: Path, log_path: Path
) -> dict[str, bytes]:
    """Start the driver, SIGKILL it once a part file exists; the part files (and bytes) at that moment."""
    with open(log_path, "wb") as log_file:
        driver = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 180
        while not list(out.glob("part-*.parquet")):
            assert driver.poll() is None, log_path.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, "no part file in 180 s"
            time.sleep(0.02)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=30)
    assert driver.returncode == -signal.SIGKILL
    # A part file's name appears only when its write is complete (written to a temporary name, then
    # renamed), so every one listed now is whole.
    return {p.name: p.read_bytes() for p in sorted(out.glob("part-*.parquet"))}


def test_labeling_driver_killed_mid_run_reruns_exactly_once(ray_cluster, tmp_path):
    images = tmp_path / "photos"
    paths = _images(images)
    model = tmp_path / "bright.pt"
    model.write_bytes(data.save_payload(data.brightness_payload()))
    out = tmp_path / "labels"
    command, env = _command(images, model, out), _env(ray_cluster)

    before = _kill_after_first_part(command, env, out, tmp_path / "killed.log")
    shards = NUM_IMAGES // ROWS_PER_FILE
    assert 1 <= len(before) < shards, f"killed too late to test a resume: {sorted(before)}"
    assert not (out / SUCCESS).exists()
    added = _images(images, first=NUM_IMAGES, count=NEW_IMAGES)  # arrive while the job is down

    with open(tmp_path / "rerun.log", "wb") as log_file:
        rerun = subprocess.run(
            command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, timeout=200
        )
    log = (tmp_path / "rerun.log").read_text(errors="replace")
    assert rerun.returncode == 0, log[-4000:]
    summary = json.loads((out / SUCCESS).read_text())
    assert summary["images"] == NUM_IMAGES + NEW_IMAGES and summary["errors"] == 0, summary
    assert summary["images_added"] == NEW_IMAGES and summary["images_missing"] == 0, summary
    assert len(part_files(str(out))) == shards + NEW_IMAGES // ROWS_PER_FILE
    # The shards finished before the kill were kept as they were, not written again.
    for name, content in before.items():
        assert (out / name).read_bytes() == content, name
    # Exactly one row per image, none an error; any Parquet reader sees the folder as one table.
    table = pq.read_table(out)
    rows = table.to_pylist()
    assert sorted(r["path"] for r in rows) == sorted(paths + added)
    assert all(r["error"] is None and r["x0"] is not None for r in rows)
