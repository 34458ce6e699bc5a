"""``coloc train --method=caml`` killed with SIGKILL (the driver, not a worker), then run again.

The driver is a real ``coloc train`` process connected to the session's Ray cluster by its address
(``RAY_ADDRESS``), as a job driver would be. It is killed once Ray Train has registered at least one
checkpoint and before the run is finished; the same command run again must continue from the last
registered checkpoint (not from epoch 0) and finish with ``optim.epochs`` epochs and an exported model.

A driver kill can also leave the run folder half-written (the controller dies with its driver, in the
middle of whatever it was writing). The second test writes such a folder (a snapshot cut short, a
checkpoint folder uploaded in part) and checks that a rerun resumes from the newest whole checkpoint;
it runs in this process and writes the earlier epochs' checkpoints itself, to stay short.

Small on purpose: the "tiny" backbone without pretrained weights, 16 training images of 64-96 px
resized to 72 and cropped to 64, batch 8, one worker.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import pytest
import torch

from coloc_core.checkpoint import read_model_payload
from coloc_core.synthetic import generate_cub_layout
from pipelines.config import TrainJobConfig
from tests.ray.drivers import driver_env, kill_driver_when, run_driver

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]

EPOCHS = 12  # 0.2 s each here: the driver is killed well before the end
SNAPSHOT = "checkpoint_manager_snapshot.json"


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("resume-cub") / "CUB_200_2011"
    generate_cub_layout(str(root), num_images=32, seed=5, size_range=(64, 96))
    return str(root)


def _coloc() -> list[str]:
    exe = Path(sys.executable).with_name("coloc")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "jobs.cli"]


def _command(root: str, runs: Path) -> list[str]:
    return [
        *_coloc(),
        "train",
        "--method=caml",
        "--format=cub",
        f"--data={root}",
        "--model.backbone=tiny",
        "--model.weights=none",
        "--augment.resize=72",
        "--augment.crop=64",
        "--optim.batch_size=8",
        f"--optim.epochs={EPOCHS}",
        "--dataset.test_split=",
        "--run.num_workers=1",
        "--run.cpus_per_worker=0.5",
        "--run.decode_cpus=0.5",
        f"--run.checkpoints_to_keep={EPOCHS}",  # every epoch's folder stays: who wrote it is checked
        f"--run.storage_path={runs}",
        "--run.name=killed",
    ]


def _registered(run: Path) -> list[str]:
    """The checkpoint folders Ray Train's controller has registered (its snapshot), [] if none yet."""
    try:
        snapshot = json.loads((run / SNAPSHOT).read_text())
    except (OSError, ValueError):  # not written yet, or being rewritten
        return []
    return sorted(r["checkpoint_dir_name"] for r in snapshot.get("checkpoint_results", []))


def _kill_after_first_checkpoint(
    command: list[str], env: dict[str, str], run: Path, log_path: Path
) -> list[str]:
    """Start the driver, SIGKILL it once a checkpoint is registered; the registered folders then."""

    def registered() -> bool:
        return bool(_registered(run))

    kill_driver_when(command, env, log_path, registered, what="a registered checkpoint", timeout_s=150)
    return _registered(run)


def _complete_checkpoints(run: Path) -> list[str]:
    """The epoch folders holding all three files with a state.pt that loads."""
    complete = []
    for folder in sorted(run.glob("epoch_*")):
        if all((folder / name).is_file() for name in ("state.pt", "config.yaml", "metrics.json")):
            try:
                torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
            except Exception:  # noqa: BLE001 - a torn file: not complete
                continue
            complete.append(folder.name)
    return complete


def _invocation(run: Path, epoch: int) -> str:
    state = torch.load(run / f"epoch_{epoch:04d}" / "state.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == epoch
    return str(state["invocation"])


def _check_resumed(output: str, run: Path, registered_at_kill: list[str]) -> None:
    """The rerun resumed after the last registered epoch, trained the rest, and exported the model."""
    last_registered = int(registered_at_kill[-1].split("_")[1])
    resumed = re.findall(r"resuming after epoch (\d+) from checkpoint", output)
    assert resumed, output[-4000:]
    start = int(resumed[0])
    # Not from scratch: at least the checkpoint registered when the driver was killed.
    assert last_registered <= start < EPOCHS
    trained = [int(e) for e in re.findall(rf"\bepoch (\d+)/{EPOCHS}: ", output)]
    assert trained == list(range(start + 1, EPOCHS + 1)), trained
    # The epochs before the resume point keep the killed invocation's checkpoints; the rest are new.
    first = _invocation(run, 1)
    assert all(_invocation(run, e) == first for e in range(1, start + 1))
    assert all(_invocation(run, e) != first for e in range(start + 1, EPOCHS + 1))
    payload = read_model_payload((run / "model.pt").read_bytes())
    assert payload["meta"]["epoch"] == EPOCHS
    assert payload["meta"]["checkpoint"] == str(run / f"epoch_{EPOCHS:04d}")


def test_driver_killed_mid_run_resumes_from_the_last_checkpoint(
    ray_cluster: object, cub_root: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    run = runs / "killed"
    # The controller registers reports sooner.
    env = driver_env(ray_cluster, RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.2")
    command = _command(cub_root, runs)

    registered = _kill_after_first_checkpoint(command, env, run, tmp_path / "first.log")
    assert registered and not (run / "model.pt").exists()  # killed mid-run

    output = run_driver(command, env, tmp_path / "second.log")
    _check_resumed(output, run, registered)


def test_rerun_after_a_kill_that_left_the_run_half_written(
    ray_cluster: object,
    cub_root: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from coloc_core.model import build_model
    from coloc_core.step import make_optimizer
    from pipelines.config import build_config
    from pipelines.train import run_training
    from pipelines.train_worker import save_checkpoint

    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    runs = tmp_path / "runs"
    run = runs / "killed"
    args = [a for a in _command(cub_root, runs)[len(_coloc()) + 1 :] if not a.startswith("--format")]
    args = [a.replace("--data=", "--dataset.root=") for a in args]
    cfg = build_config(TrainJobConfig, [*args, "--dataset.format=cub", "--optim.epochs=4"])
    # The run folder a driver killed during epoch 3 can leave (written here, not trained, to keep the
    # test short): two whole checkpoints of the killed invocation, the controller's snapshot cut short
    # while it was rewritten, and epoch 3's folder uploaded in part (a truncated state.pt, no
    # metrics.json).
    model = build_model(cfg, weights=False)
    optimizer = make_optimizer(model, cfg.optim)
    for epoch in (1, 2):
        folder = run / f"epoch_{epoch:04d}"
        folder.mkdir(parents=True)
        extra = {"invocation": "killed", "stop_at": 4}
        save_checkpoint(
            str(folder), model, optimizer, cfg, epoch=epoch, metrics={"epoch": epoch}, extra=extra
        )
    torn_snapshot = b'{"checkpoint_results": [{"checkpoint_dir_name": "epoch_0001", "metrics": {"epo'
    (run / SNAPSHOT).write_bytes(torn_snapshot)
    torn = run / "epoch_0003"
    torn.mkdir()
    (torn / "state.pt").write_bytes((run / "epoch_0002" / "state.pt").read_bytes()[:1000])
    (torn / "config.yaml").write_bytes((run / "epoch_0002" / "config.yaml").read_bytes())

    caplog.set_level(logging.INFO, logger="pipelines.train")
    result = run_training(cfg)

    # It resumed from the newest complete checkpoint folder (epoch 2), not from scratch nor from the
    # torn one, and finished the run.
    assert [m["epoch"] for m in result.history] == [3, 4]
    assert result.model_path == str(run / "model.pt")
    assert read_model_payload((run / "model.pt").read_bytes())["meta"]["epoch"] == 4
    assert _invocation(run, 2) == "killed" != _invocation(run, 3)
    # ... and said what it set aside.
    assert "checkpoint snapshot" in caplog.text and "unreadable" in caplog.text, caplog.text
    assert "epoch_0003 is not complete" in caplog.text, caplog.text
    assert (run / (SNAPSHOT + ".unreadable")).read_bytes() == torn_snapshot
