"""A storage outage while labeling (issue 12 item 1), end to end: the job fails, a rerun completes.

``coloc label`` runs as a real driver process joined to the session's Ray cluster; its job's
``runtime_env`` gives its workers short retries (``COLOC_STORAGE_*``) and an S3 endpoint on a closed
loopback port, as a submitted job's would. So the driver lists the images (the plan is written) while
every read of the workers fails the way it does when the server is down, deterministically (stopping the
server between the plan and the first read would be a race), and the session's server is never
stopped. The rerun, with storage reachable, runs in this process. An outage while a resumed run checks
its part files is made by stopping a server of the test's own (``OwnS3``).
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines import schema, storage
from pipelines.config import LabelJobConfig
from pipelines.label import run_labeling
from pipelines.label_shards import _valid_part
from pipelines.predictions import MANIFEST, SUCCESS, part_files
from tests.ray import labeling_data as data
from tests.ray.conftest import OUTAGE_RETRIES

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]

REPO_ROOT = Path(__file__).resolve().parents[2]
NUM_IMAGES = 6
ROWS_PER_FILE = 2
FAST = dict(batch_size=8, num_actors=1, actor_cpus=0.5, decode_cpus=0.25)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _photos(s3_server) -> str:
    """Square JPEGs and one garbage ``.jpg`` (a really bad file) on the session's server; their folder."""
    import numpy as np

    rng = np.random.default_rng(5)
    prefix = s3_server.unique_prefix("outage-photos")
    for i in range(NUM_IMAGES - 1):
        img, _box = data.square_image(rng, 64 + 8 * i, 72)
        s3_server.put(f"{prefix}/img{i}.jpg", data.jpeg_bytes(img))
    s3_server.put(f"{prefix}/zz_garbage.jpg", rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
    return s3_server.uri(prefix)


def _label_cli(images: str, out: str, model: str, *, read_at: str) -> subprocess.CompletedProcess[str]:
    """``coloc label`` as its own driver on the session's cluster; its workers read S3 at ``read_at``."""
    import ray
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    names = (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
    )
    worker_env = {name: os.environ[name] for name in names if name in os.environ}
    worker_env.update(OUTAGE_RETRIES, AWS_ENDPOINT_URL=read_at, PYTHONPATH=str(REPO_ROOT))
    env = {
        **os.environ,
        **OUTAGE_RETRIES,
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        RAY_JOB_CONFIG_JSON_ENV_VAR: json.dumps({"runtime_env": {"env_vars": worker_env}}),
    }
    args = [
        f"--model={model}",
        f"--images={images}",
        f"--out={out}",
        "--method=model",
        f"--rows_per_file={ROWS_PER_FILE}",
        *(f"--{key}={value}" for key, value in FAST.items()),
    ]
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", "label", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )


def test_a_storage_outage_fails_the_labeling_job_and_the_rerun_completes(ray_cluster, s3_server, tmp_path):
    images = _photos(s3_server)
    model = tmp_path / "bright.pt"
    model.write_bytes(data.save_payload(data.brightness_payload()))
    out = str(tmp_path / "labels")

    # Storage unreachable for every read: the job fails (exit 1) saying so, after the plan is written.
    down = f"http://127.0.0.1:{_closed_port()}"
    failed = _label_cli(images, out, str(model), read_at=down)
    log = failed.stdout + failed.stderr
    assert failed.returncode == 1, log[-4000:]
    assert "storage unreachable" in log, log[-4000:]
    assert "labeling failed" in log and "run the same command again" in log, log[-4000:]
    assert os.path.exists(os.path.join(out, MANIFEST))  # the plan was written, then the reads failed
    assert not os.path.exists(os.path.join(out, SUCCESS))
    assert part_files(out) == []  # no shard written: no error row for an image that was not read

    # Storage back: the rerun labels every image; only the really bad file is an error row.
    cfg = LabelJobConfig(model=str(model), images=images, out=out, rows_per_file=ROWS_PER_FILE, **FAST)
    rerun = run_labeling(cfg)
    assert (rerun.images, rerun.errors, rerun.errors_by_kind) == (NUM_IMAGES, 1, {"decode": 1})
    assert rerun.shards_written == NUM_IMAGES // ROWS_PER_FILE
    assert json.loads(Path(out, SUCCESS).read_text()) == rerun.to_dict()
    table = pq.read_table(out)
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in table.to_pylist()}
    assert len(rows) == table.num_rows == NUM_IMAGES
    bad = rows.pop("zz_garbage.jpg")
    assert bad["error_kind"] == "decode" and "unreachable" not in bad["error"], bad["error"]
    assert all(r["error"] is None and r["x0"] is not None for r in rows.values()), rows


def _part_bytes(rows: int) -> bytes:
    cols = schema.empty_columns()
    for i in range(rows):
        for name in cols:
            cols[name].append(None)
        cols[schema.PATH][-1] = f"s3://b/{i}.jpg"
        cols[schema.ERROR][-1] = "broken"
        cols[schema.ERROR_KIND][-1] = schema.KIND_DECODE
    buf = io.BytesIO()
    pq.write_table(schema.to_table(cols), buf)
    return buf.getvalue()


def test_an_outage_while_checking_part_files_deletes_none(own_s3, monkeypatch):
    """A resumed run checks the written part files: storage that is down is not a torn file.

    ``finished_shards`` deletes a part file that ``_valid_part`` calls invalid, so the outage must raise.
    """
    for name, value in OUTAGE_RETRIES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", own_s3.endpoint_url)  # this process only (no Ray here)
    uri = own_s3.put("labels/part-00000.parquet", _part_bytes(2))
    own_s3.upload()
    assert _valid_part(uri, 2) is True
    own_s3.stop()
    with pytest.raises(storage.StorageUnavailableError, match="storage unreachable: reading the footer"):
        _valid_part(uri, 2)
    own_s3.start()
    assert _valid_part(uri, 2) is True and _valid_part(uri, 3) is False  # a wrong row count is redone
