"""pipelines/train_worker.py without a Ray cluster: the typed loop config, the stopping and evaluation
epochs, checkpoint save/load symmetry, and the once-built loss module of the training step."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from coloc_core.config import apply_overrides
from coloc_core.model import build_model
from coloc_core.pretext import PretextTransform, sample_labels
from coloc_core.step import build_caml, make_optimizer
from pipelines.config import TrainJobConfig
from pipelines.train_worker import (
    CHECKPOINT_FILES,
    LoopConfig,
    ResumePoint,
    evaluates_after,
    load_checkpoint,
    save_checkpoint,
    stopping_epoch,
    train_batch,
)


def _cfg(**overrides: object) -> TrainJobConfig:
    base = {"model.backbone": "tiny", "model.weights": None, "pretext.tasks": ("rotation", "translation")}
    return apply_overrides(TrainJobConfig(), {**base, **overrides})


def _trained_model(cfg: TrainJobConfig) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A tiny model after one SGD step, so that the optimizer has momentum buffers to save."""
    torch.manual_seed(0)
    model = build_model(cfg, weights=False)
    optimizer = make_optimizer(model, cfg.optim)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    train_batch(model, images, cfg, optimizer, generator=torch.Generator().manual_seed(0))
    return model, optimizer


def test_loop_config_round_trips_through_pickle_and_the_train_loop_config_dict():
    loop = LoopConfig(
        cfg=_cfg(**{"optim.epochs": 7, "run.name": "r1", "run.stop_after_epochs": 2}),
        invocation="abc123",
        resume_from=ResumePoint(uri="s3://bucket/runs/r1/epoch_0003", epoch=3),
        num_decode_errors=2,
        num_test_images=10,
        num_test_decode_errors=1,
    )
    config = pickle.loads(pickle.dumps(loop.to_train_loop_config()))
    back = LoopConfig.from_train_loop_config(config)
    assert back == loop and back is not loop
    assert back.cfg.optim.epochs == 7 and back.cfg.model.backbone == "tiny"
    assert back.resume_from == ResumePoint("s3://bucket/runs/r1/epoch_0003", 3)
    fresh = LoopConfig(cfg=_cfg(), invocation="x")
    assert pickle.loads(pickle.dumps(fresh)) == fresh and fresh.resume_from is None


def test_a_train_loop_config_without_a_loop_config_is_an_error():
    with pytest.raises(TypeError, match="not LoopConfig"):
        LoopConfig.from_train_loop_config({"cfg": {}, "invocation": "abc"})


def test_stopping_epoch():
    cfg = _cfg(**{"optim.epochs": 10})
    assert stopping_epoch(cfg, 0, None, "new") == 10
    partial = _cfg(**{"optim.epochs": 10, "run.stop_after_epochs": 3})
    assert stopping_epoch(partial, 0, None, "new") == 3
    assert stopping_epoch(partial, 8, {"invocation": "old", "stop_at": 3}, "new") == 10  # capped
    assert stopping_epoch(partial, 4, {"invocation": "old", "stop_at": 3}, "new") == 7  # a new invocation
    # A restart after a worker failure keeps its invocation's stopping point.
    assert stopping_epoch(partial, 4, {"invocation": "same", "stop_at": 6}, "same") == 6


def test_evaluates_every_n_epochs_and_at_the_last():
    cfg = _cfg(**{"optim.epochs": 5, "run.eval_every": 2})
    assert [e for e in range(5) if evaluates_after(cfg, e)] == [1, 3, 4]
    never = _cfg(**{"optim.epochs": 5, "run.eval_every": 0})
    assert [e for e in range(5) if evaluates_after(never, e)] == [4]


def test_checkpoint_save_and_load_are_symmetric(tmp_path: Path):
    cfg = _cfg(**{"run.name": "sym", "optim.lr": 0.01})
    model, optimizer = _trained_model(cfg)
    metrics = {"epoch": 3, "loss": 1.25, "images": 16, "corloc@0.5": 50.0}
    save_checkpoint(
        str(tmp_path),
        model,
        optimizer,
        cfg,
        epoch=3,
        metrics=metrics,
        extra={"invocation": "i", "stop_at": 4},
    )
    assert {p.name for p in tmp_path.iterdir()} == CHECKPOINT_FILES

    saved = load_checkpoint(str(tmp_path))
    assert saved.cfg == cfg
    assert saved.metrics == metrics
    assert (saved.state["epoch"], saved.state["invocation"], saved.state["stop_at"]) == (3, "i", 4)
    expected = model.state_dict()
    assert saved.state["model"].keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(saved.state["model"][key], value.cpu()), key

    # Loaded into a fresh model and optimizer, both continue exactly as the saved ones would.
    fresh = build_model(saved.cfg, weights=False)
    fresh.load_state_dict(saved.state["model"])
    fresh_optimizer = make_optimizer(fresh, saved.cfg.optim)
    fresh_optimizer.load_state_dict(saved.state["optimizer"])
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    labels = sample_labels(cfg.pretext.tasks, 2, generator=torch.Generator().manual_seed(2))
    for m, opt in ((model, optimizer), (fresh, fresh_optimizer)):
        train_batch(m, images, cfg, opt, transform=PretextTransform(cfg.pretext.tasks, labels))
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_a_state_file_that_is_not_a_checkpoint_is_an_error(tmp_path: Path):
    cfg = _cfg()
    model, optimizer = _trained_model(cfg)
    save_checkpoint(str(tmp_path), model, optimizer, cfg, epoch=1, metrics={})
    torch.save({"weights": 1}, tmp_path / "state.pt")
    with pytest.raises(ValueError, match="not a coloc training checkpoint"):
        load_checkpoint(str(tmp_path))


def test_a_prebuilt_loss_module_gives_the_same_step_as_one_built_per_step():
    cfg = _cfg(**{"optim.lr": 0.5})
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
    labels = sample_labels(cfg.pretext.tasks, 4, generator=torch.Generator().manual_seed(1))
    caml = build_caml(cfg)
    results = []
    for prebuilt in (None, caml):
        torch.manual_seed(0)
        model = build_model(cfg, weights=False)
        optimizer = make_optimizer(model, cfg.optim)
        steps = [
            train_batch(
                model,
                images,
                cfg,
                optimizer,
                transform=PretextTransform(cfg.pretext.tasks, labels),
                caml=prebuilt,
            )
            for _ in range(2)
        ]
        results.append((steps, model.state_dict()))
    (steps_a, state_a), (steps_b, state_b) = results
    assert steps_a == steps_b
    for key, value in state_a.items():
        assert torch.equal(state_b[key], value), key


def test_per_epoch_evaluation_counts_undecodable_images_as_misses():
    from pipelines import ingest
    from pipelines.train_worker import evaluate

    cfg = _cfg()
    torch.manual_seed(0)
    model = build_model(cfg, weights=False).eval()
    rng = np.random.default_rng(3)
    batch = {
        ingest.IMAGE: rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8),
        ingest.WIDTH: np.array([64, 80, 64, 96]),
        ingest.HEIGHT: np.array([64, 64, 72, 96]),
        ingest.BOXES: [
            [0.0, 0.0, 63.0, 63.0],
            [10.0, 5.0, 60.0, 50.0],
            [0, 0, 20, 20, 30, 30, 60, 70],
            [5, 5, 90, 90],
        ],
    }
    clean = evaluate(model, [batch], cfg)
    missed = evaluate(model, [batch], cfg, num_errors=2)
    assert clean["num_test_images"] == 4 and missed["num_test_images"] == 6
    assert missed["corloc_threshold"] == pytest.approx(cfg.boxes.threshold)
    for key in ("corloc@0.5", "corloc_mean", "maxboxaccv2", "maxboxacc@0.5"):
        assert missed[key] == pytest.approx(clean[key] * 4 / 6), key
    assert clean["corloc@0.3"] > 0  # the whole-image GT box is found by any map: the check is not vacuous
    assert evaluate(model, [], cfg) == {}
