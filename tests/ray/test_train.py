"""pipelines/train.py (driver) and pipelines/train_worker.py (worker) on a local 2-CPU Ray cluster.

2-worker training with checkpoints and the exported model on the loopback S3 server; resume across
invocations; a worker killed mid-run (Ray Train's failure handling resumes from a checkpoint); a
non-finite loss; one DDP step on a split batch equal to one single-process step.

Small on purpose (the whole file takes a few minutes on 2 busy cores): the "tiny" backbone without
pretrained weights, 16 training images of 64-96 px resized to 72 and cropped to 64, batch 8.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from coloc_core.checkpoint import model_from_payload, read_model_payload
from coloc_core.config import apply_overrides, to_dict
from coloc_core.model import build_model
from coloc_core.pretext import PretextTransform, sample_labels
from coloc_core.step import lr_at_epoch, make_optimizer
from coloc_core.synthetic import generate_cub_layout
from pipelines import storage
from pipelines.config import TrainJobConfig, build_config, resolve_train_config

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(240)]

NUM_IMAGES = 32  # half train, half test


@pytest.fixture(autouse=True)
def fast_controller_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray Train's controller polls the workers every 2 s, and a run's reports and its shutdown wait for
    # those polls. fit() propagates this variable from the driver to the controller and the workers.
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("cub") / "CUB_200_2011"
    generate_cub_layout(str(root), num_images=NUM_IMAGES, seed=0, size_range=(64, 96))
    return str(root)


def small_config(root: str, storage_path: str, name: str, *extra: str) -> TrainJobConfig:
    """A CAML config that trains in seconds on 2 CPUs."""
    args = [
        "--method=caml",
        f"--dataset.root={root}",
        "--dataset.format=cub",
        "--model.backbone=tiny",
        "--model.weights=none",
        "--augment.resize=72",
        "--augment.crop=64",
        "--optim.batch_size=8",
        "--optim.epochs=2",
        "--run.eval_every=0",
        "--run.cpus_per_worker=0.5",
        "--run.decode_cpus=0.5",
        f"--run.storage_path={storage_path}",
        f"--run.name={name}",
        *extra,
    ]
    return build_config(TrainJobConfig, args)


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key].cpu(), b[key].cpu()), key


def test_two_workers_checkpoint_to_s3_and_export(ray_cluster, s3_server, cub_root):  # noqa: ANN001
    from pipelines.train import run_training
    from pipelines.train_worker import model_from_checkpoint, open_checkpoint, read_checkpoint_state

    prefix = s3_server.unique_prefix("train")
    data_uri = s3_server.upload_dir(cub_root, f"{prefix}/data")
    # One whole CPU per worker: the 2 workers hold every CPU of the cluster. Nothing may starve: the
    # images are decoded (Ray Data tasks) before the trainer starts, never while it runs.
    cfg = small_config(
        data_uri,
        s3_server.uri(prefix, "runs"),
        "two-workers",
        "--run.num_workers=2",
        "--run.cpus_per_worker=1",
    )

    result = run_training(cfg)

    assert [m["epoch"] for m in result.history] == [1, 2]
    for metrics in result.history:
        for key in ("loss", "loss_cls", "loss_caml", "bg_fraction", "acc_rotation", "pretext_acc"):
            assert math.isfinite(metrics[key]), (key, metrics)
        assert metrics["num_decode_errors"] == 0
        assert metrics["images"] == NUM_IMAGES // 2  # both workers' images are counted
        assert metrics["images_per_s"] > 0
    # The last epoch is evaluated on the test split (its boxes); metrics are percentages.
    last = result.metrics
    assert last["epoch"] == 2
    for key in ("corloc@0.3", "corloc@0.5", "corloc@0.7", "corloc_mean", "maxboxaccv2"):
        assert 0.0 <= last[key] <= 100.0, (key, last)
    assert "corloc_mean" not in result.history[0]  # eval_every=0: only the last epoch

    # Checkpoints and the exported model are on the S3 server.
    keys = s3_server.keys(f"{prefix}/runs/two-workers/")
    for name in ("epoch_0002/state.pt", "epoch_0002/config.yaml", "epoch_0002/metrics.json", "model.pt"):
        assert f"{prefix}/runs/two-workers/{name}" in keys, keys
    assert result.checkpoint_path == s3_server.uri(prefix, "runs", "two-workers", "epoch_0002")
    assert result.model_path == s3_server.uri(prefix, "runs", "two-workers", "model.pt")

    # The checkpoint reloads into a fresh model with an equal state_dict, and so does the export.
    checkpoint = open_checkpoint(result.checkpoint_path)
    state = read_checkpoint_state(checkpoint)
    assert state["epoch"] == 2
    restored, restored_cfg = model_from_checkpoint(checkpoint)
    assert restored_cfg == resolve_train_config(cfg)  # the resolved config (auto and -1 settings replaced)
    fresh = build_model(cfg, weights=False)
    fresh.load_state_dict(state["model"])
    assert_same_state(fresh.state_dict(), state["model"])
    assert_same_state(restored.state_dict(), state["model"])

    payload = read_model_payload(storage.read_bytes(result.model_path))
    exported, exported_cfg = model_from_payload(payload)
    assert_same_state(exported.state_dict(), state["model"])
    assert exported_cfg.model == cfg.model
    assert payload["meta"]["epoch"] == 2
    # The export measured the model's typical box on the train images, at its τ, as a fit does.
    sizes = payload["box_sizes"]
    assert sizes["threshold"] == pytest.approx(payload["threshold"]) and 1 <= sizes["images"] <= NUM_IMAGES
    assert sizes["median"] <= 0.0 and sizes["spread"] >= 0.05
    assert "repeats" not in sizes  # the repetition term needs a fitted labeler's features
    # ... and its typical box content, on the trained backbone (tiny: 32 channels).
    contents = payload["box_contents"]
    assert len(contents["mean"]) == 32 and contents["images"] == sizes["images"]
    assert -1.0 <= contents["cos_mean"] <= 1.0 and contents["cos_spread"] >= 1e-3


def test_resume_continues_at_the_next_epoch(ray_cluster, cub_root, tmp_path: Path):  # noqa: ANN001
    from pipelines.train import run_training

    # lr x0.1 from the second epoch on: the resumed epoch must pick the schedule up from its epoch.
    cfg = small_config(
        cub_root,
        str(tmp_path / "runs"),
        "resume",
        "--run.num_workers=1",
        "--run.stop_after_epochs=1",
        "--optim.lr_milestones=1",
        "--optim.lr_gamma=0.1",
        "--dataset.test_split=",
    )
    first = run_training(cfg)
    assert [m["epoch"] for m in first.history] == [1]
    assert first.model_path is None  # not finished: nothing exported
    assert first.checkpoint_path == str(tmp_path / "runs" / "resume" / "epoch_0001")
    assert not (tmp_path / "runs" / "resume" / "model.pt").exists()

    second = run_training(cfg)
    assert [m["epoch"] for m in second.history] == [2]
    assert second.metrics["lr"] == pytest.approx(lr_at_epoch(1, cfg.optim)) == pytest.approx(1e-4)
    assert first.history[0]["lr"] == pytest.approx(1e-3)
    assert math.isfinite(second.metrics["loss"])
    assert second.checkpoint_path == str(tmp_path / "runs" / "resume" / "epoch_0002")
    assert second.model_path == str(tmp_path / "runs" / "resume" / "model.pt")
    assert Path(second.model_path).is_file()


def test_non_finite_loss_stops_training_with_a_clear_error(ray_cluster, cub_root, tmp_path: Path):  # noqa: ANN001
    from ray.train import TrainingFailedError

    from pipelines.train import run_training

    cfg = small_config(
        cub_root,
        str(tmp_path / "runs"),
        "diverge",
        "--run.num_workers=1",
        "--run.max_failures=0",
        "--optim.lr=1e30",  # the second step's loss is NaN
        "--dataset.test_split=",
    )
    with pytest.raises(TrainingFailedError, match="non-finite loss"):
        run_training(cfg)
    assert not (tmp_path / "runs" / "diverge" / "model.pt").exists()


def _ddp_one_step(config: dict) -> dict[str, np.ndarray]:
    """Ray Train worker: one train_batch on this rank's half of the batch with fixed pretext labels."""
    import ray.train
    import ray.train.torch

    from coloc_core.checkpoint import unwrap
    from coloc_core.config import from_dict
    from pipelines.train_worker import train_batch

    rank = ray.train.get_context().get_world_rank()
    cfg = from_dict(TrainJobConfig, config["cfg"])
    model = build_model(cfg, weights=False)
    model.load_state_dict(config["state"])
    ddp = ray.train.torch.prepare_model(model)
    optimizer = make_optimizer(ddp, cfg.optim)
    labels = {task: values[rank] for task, values in config["labels"].items()}
    train_batch(
        ddp, config["images"][rank], cfg, optimizer, transform=PretextTransform(cfg.pretext.tasks, labels)
    )
    # Ray Train returns no tensors from a worker: numpy it is.
    return {k: v.detach().cpu().numpy().copy() for k, v in unwrap(ddp).state_dict().items()}


def test_ddp_step_on_split_batch_equals_single_process_step(ray_cluster, tmp_path: Path):  # noqa: ANN001
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipelines.train_worker import train_batch

    cfg = apply_overrides(
        TrainJobConfig(),
        {
            "model.backbone": "tiny",
            "model.weights": None,
            "pretext.tasks": ("rotation", "translation"),
            "optim.lr": 0.5,  # a visible update, so "equal parameters" is not trivially true
        },
    )
    torch.manual_seed(0)
    model = build_model(cfg, weights=False)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8))
    labels = sample_labels(cfg.pretext.tasks, 8, generator=torch.Generator().manual_seed(1))

    optimizer = make_optimizer(model, cfg.optim)
    train_batch(model, images, cfg, optimizer, transform=PretextTransform(cfg.pretext.tasks, labels))
    single = model.state_dict()

    trainer = TorchTrainer(
        _ddp_one_step,  # type: ignore[arg-type]  # Ray Train V2 passes a worker's return value on
        train_loop_config={
            "cfg": to_dict(cfg),
            "state": initial,
            "images": [images[:4], images[4:]],
            "labels": {task: [v[:4], v[4:]] for task, v in labels.items()},
        },
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(storage_path=str(tmp_path), name="ddp"),
    )
    distributed = trainer.fit().return_value  # type: ignore[attr-defined]  # V2's Result; the stubs are V1's

    moved = max(float((single[k] - initial[k]).abs().max()) for k in initial)
    assert moved > 1e-3
    assert distributed.keys() == single.keys()
    for key in single:
        torch.testing.assert_close(torch.tensor(distributed[key]), single[key], rtol=1e-5, atol=1e-6, msg=key)


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _train_workers_of_this_process() -> list[int]:
    """PIDs of the RayTrainWorker processes of the cluster this process started (raylet's children)."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                if b"RayTrainWorker" not in fh.read():
                    continue
        except OSError:
            continue
        pid = int(entry)
        for _ in range(4):  # worker -> raylet -> this process
            pid = _parent(pid)
            if pid == me:
                found.append(int(entry))
                break
            if pid <= 1:
                break
    return found


def test_worker_killed_mid_run_resumes_from_the_latest_checkpoint(ray_cluster, cub_root, tmp_path: Path):  # noqa: ANN001
    from pipelines.train import run_training

    cfg = small_config(
        cub_root,
        str(tmp_path / "runs"),
        "fail",
        "--run.num_workers=2",
        "--run.max_failures=1",
        "--optim.epochs=6",
        "--dataset.test_split=",
    )
    # Ray Train resumes from the checkpoints its controller has registered (when it polls the workers,
    # it writes this snapshot), not from every folder already uploaded: kill after that.
    registered = tmp_path / "runs" / "fail" / "checkpoint_manager_snapshot.json"
    killed: list[int] = []

    def kill_one_worker_after_the_first_checkpoint() -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not registered.exists():
            time.sleep(0.05)
        workers = _train_workers_of_this_process()
        if workers:
            os.kill(workers[-1], signal.SIGKILL)
            killed.append(workers[-1])

    killer = threading.Thread(target=kill_one_worker_after_the_first_checkpoint, daemon=True)
    killer.start()
    result = run_training(cfg)
    killer.join(timeout=5)

    assert len(killed) == 1
    epochs = [m["epoch"] for m in result.history]
    # The restarted worker group continued from a checkpoint (not from scratch) and finished the run.
    assert epochs[-1] == 6
    assert 1 < epochs[0] <= 6
    assert epochs == list(range(epochs[0], 7))
    assert result.model_path == str(tmp_path / "runs" / "fail" / "model.pt")


def test_default_training_self_trains_a_head_that_labels(ray_cluster, cub_root, tmp_path: Path):  # noqa: ANN001
    from coloc_core.localizer import SelfTrainLocalizer, localizer_from_payload
    from pipelines.config import LabelJobConfig
    from pipelines.label import run_labeling
    from pipelines.train import run_training

    cfg = build_config(
        TrainJobConfig,
        [
            f"--dataset.root={cub_root}",
            "--dataset.format=cub",
            "--model.backbone=tiny",
            "--model.weights=none",
            "--run.cpus_per_worker=0.5",
            "--run.decode_cpus=0.5",
            f"--run.storage_path={tmp_path / 'runs'}",
            "--run.name=self",
        ],
    )
    assert cfg.method == "selftrain"
    result = run_training(cfg)
    assert result.model_path == str(tmp_path / "runs" / "self" / "model.pt")
    assert result.checkpoint_path is None and result.metrics["rounds"] == 3
    payload = read_model_payload((tmp_path / "runs" / "self" / "model.pt").read_bytes())
    assert payload["kind"] == "selftrain" and payload["meta"]["run"] == "self"
    assert payload["meta"]["dataset"]["split"] == "train"
    # Fitted on the train split only (the generator puts about half of the images there).
    assert 0 < payload["meta"]["fit_images"] < NUM_IMAGES
    assert isinstance(localizer_from_payload(payload), SelfTrainLocalizer)
    out = tmp_path / "labels"
    summary = run_labeling(
        LabelJobConfig(
            model=result.model_path, images=cub_root, format="cub", split="test", out=str(out), actor_cpus=0.5
        )
    )
    assert summary.errors == 0 and summary.images == NUM_IMAGES - payload["meta"]["fit_images"]
    with pytest.raises(ValueError, match="method='sgd'"):
        run_training(dataclasses.replace(cfg, method="sgd"))


def test_one_decode_per_image_when_the_test_split_is_the_train_split(
    ray_cluster, cub_root, caplog: pytest.LogCaptureFixture, tmp_path: Path
):  # noqa: ANN001
    from pipelines import ingest
    from pipelines.train import prepare_data, read_split_records

    caplog.set_level(logging.INFO, logger="pipelines")
    cfg = small_config(cub_root, str(tmp_path / "runs"), "one-pass", "--dataset.test_split=train")
    data = prepare_data(cfg)

    num_train = NUM_IMAGES // 2
    assert data.decoded == num_train  # not twice: one decode gives both sizes
    assert (data.num_train, data.num_errors, data.num_test, data.num_test_errors) == (
        num_train,
        0,
        num_train,
        0,
    )
    # Progress lines with counts during the decode.
    assert (
        f"preparing the training images (also the test split: the same images): decoding {num_train} images"
        in caplog.text
    )
    assert f"{num_train}/{num_train} images decoded in" in caplog.text
    # The training rows are the 72 px resize, the test rows the 64 px one, from the same decode, equal
    # to what a separate decode at 64 px gives (these small PNG/JPEGs are never DCT-reduced).
    assert data.test is not None
    train = data.train.take_all()
    test = data.test.take_all()
    assert ingest.EVAL_IMAGE not in train[0] and ingest.EVAL_IMAGE not in test[0]
    assert {r[ingest.IMAGE].shape for r in train} == {(72, 72, 3)}
    assert {r[ingest.IMAGE].shape for r in test} == {(64, 64, 3)}
    records = read_split_records(cfg, "train")
    separate = ingest.images_dataset(records, size=64).take_all()
    by_path = {r[ingest.PATH]: r for r in test}
    assert sorted(by_path) == sorted(r[ingest.PATH] for r in separate)
    for row in separate:
        np.testing.assert_array_equal(by_path[row[ingest.PATH]][ingest.IMAGE], row[ingest.IMAGE])
        assert list(by_path[row[ingest.PATH]][ingest.BOXES]) == list(row[ingest.BOXES])

    # Different splits: each is decoded on its own (train + test images).
    other = prepare_data(small_config(cub_root, str(tmp_path / "runs"), "two-pass"))
    assert other.decoded == NUM_IMAGES and other.num_test == NUM_IMAGES - num_train


def test_a_config_that_does_not_fit_in_memory_stops_before_reading_data(
    ray_cluster, cub_root, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):  # noqa: ANN001
    from jobs.train import main as train_main
    from pipelines.memory import MemoryBudgetError
    from pipelines.train import run_training

    # A node with (almost) nothing to give under the memory monitor's threshold.
    monkeypatch.setenv("RAY_memory_usage_threshold", "0.001")
    cfg = small_config(cub_root, str(tmp_path / "runs"), "too-big")
    with pytest.raises(MemoryBudgetError, match="before Ray's memory monitor kills a worker"):
        run_training(cfg)
    assert not (tmp_path / "runs" / "too-big").exists()  # nothing was started
    argv = [
        "--method=caml",
        "--format=cub",
        f"--data={cub_root}",
        "--model.backbone=tiny",
        "--model.weights=none",
        f"--run.storage_path={tmp_path / 'runs'}",
    ]
    assert train_main(argv) == 2
