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
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.predictions import SUCCESS, part_files
from tests.ray import labeling_data as data
from tests.ray.drivers import driver_env, kill_driver_when, run_driver

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]

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


def _kill_after_first_part(
    command: list[str], env: dict[str, str], out: Path, log_path: Path
) -> dict[str, bytes]:
    """Start the driver, SIGKILL it once a part file exists; the part files (and bytes) at that moment."""

    def has_part() -> bool:
        return any(out.glob("part-*.parquet"))

    kill_driver_when(command, env, log_path, has_part, what="a part file", timeout_s=180, poll_s=0.02)
    # A part file's name appears only when its write is complete (written to a temporary name, then
    # renamed), so every one listed now is whole.
    return {p.name: p.read_bytes() for p in sorted(out.glob("part-*.parquet"))}


def test_labeling_driver_killed_mid_run_reruns_exactly_once(ray_cluster, tmp_path):
    images = tmp_path / "photos"
    paths = _images(images)
    model = tmp_path / "bright.pt"
    model.write_bytes(data.save_payload(data.brightness_payload()))
    out = tmp_path / "labels"
    command, env = _command(images, model, out), driver_env(ray_cluster)

    before = _kill_after_first_part(command, env, out, tmp_path / "killed.log")
    shards = NUM_IMAGES // ROWS_PER_FILE
    assert 1 <= len(before) < shards, f"killed too late to test a resume: {sorted(before)}"
    assert not (out / SUCCESS).exists()
    added = _images(images, first=NUM_IMAGES, count=NEW_IMAGES)  # arrive while the job is down

    run_driver(command, env, tmp_path / "rerun.log")
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
