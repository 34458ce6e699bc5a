"""The README's first command, ``./run demo``, end to end in a child process (small sizes, tiny backbone).

The demo starts its own local Ray cluster, so it runs as ``python jobs/demo.py`` in a subprocess (its
own process and cluster, like a user's shell) rather than inside the test session's cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(420)]

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_end_to_end_and_writes_every_output(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [
            sys.executable,
            "jobs/demo.py",
            f"--out={out}",
            "--backbone=tiny",
            "--num_images=24",
            "--epochs=1",
            "--batch_size=8",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "coloc demo finished" in output
    # What a person reads (not a terminal here): the header, one line per long stage, the per-epoch
    # line, the summary, and none of Ray's own output (--verbose brings it back).
    assert "· demo" in output and "  out: " in output and "  ray: " in output
    assert "label labels: 24/24 images in " in output and "epoch 1/1: " in output
    for ray_line in ("Running Dataset", "Starting execution of Dataset", "PlacementGroupCleaner", "INFO"):
        assert ray_line not in output, (ray_line, output)
    assert len(output.splitlines()) < 60, output

    # The trained model, one prediction row per generated image, the evaluation and the exports.
    models = list(out.rglob("model.pt"))
    assert models, output[-2000:]
    labels = out / "labels"
    assert (labels / "_SUCCESS").is_file()
    parts = sorted(labels.glob("part-*.parquet"))
    assert parts
    assert sum(pq.read_metadata(p).num_rows for p in parts) == 24  # one row per generated image
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    flat = json.dumps(metrics).lower()
    assert "corloc" in flat and "maxboxacc" in flat
    assert (out / "evaluation" / "sheet.png").stat().st_size > 0
    # The training-free baseline is labelled and evaluated on the same split, and printed beside it.
    assert "training-free DDT" in output and "self-trained (default)" in output and "CAML (paper)" in output
    assert sum(pq.read_metadata(p).num_rows for p in (out / "labels_ddt").glob("part-*.parquet")) == 24
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baseline"]["method"] == "ddt" and "corloc@0.5" in summary["baseline"]["evaluation"]
    assert "corloc@0.5" in summary["caml"]["evaluation"] and summary["caml"]["model"].endswith("model.pt")
    assert (
        0.0 <= summary["calibrated"]["threshold"] < 1.0
        and "corloc@0.5" in summary["calibrated"]["evaluation"]
    )
    assert "(train boxes)" in output and "box_corloc@0.5" in output
    assert 0 <= summary["whole_image_boxes"] <= 24
    coco = json.loads((out / "exports" / "coco.json").read_text())
    assert len(coco["images"]) == 24 and coco["annotations"]
