import io

import pytest
import torch

from coloc_core.checkpoint import (
    method_config_dict,
    model_from_payload,
    model_id,
    model_payload,
    read_model_payload,
    save_model_file,
)
from coloc_core.config import ColocConfig, apply_overrides


def _cfg():
    return apply_overrides(
        ColocConfig(), ["model.backbone=tiny", "model.weights=none", "pretext.tasks=rotation,hflip"]
    )


def test_model_file_round_trip():
    from coloc_core.model import build_model

    torch.manual_seed(0)
    cfg = _cfg()
    model = build_model(cfg)
    payload = model_payload(model, cfg, threshold=0.35, meta={"epoch": 3})
    buffer = io.BytesIO()
    save_model_file(buffer, payload)
    loaded = read_model_payload(buffer.getvalue())
    assert loaded["threshold"] == pytest.approx(0.35)
    assert loaded["meta"]["epoch"] == 3
    assert loaded["model_id"] == model_id(model.state_dict())
    again, cfg2 = model_from_payload(loaded)
    assert cfg2 == cfg
    for (k, v), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    x = torch.randn(1, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(model(x).attention, again(x).attention)


def test_model_id_changes_with_weights():
    a = {"w": torch.zeros(3)}
    b = {"w": torch.tensor([0.0, 0.0, 1e-6])}
    assert model_id(a) != model_id(b)
    assert len(model_id(a)) == 16


def test_not_a_model_file():
    buffer = io.BytesIO()
    torch.save({"weights": 1}, buffer)
    with pytest.raises(ValueError, match="not a coloc model file"):
        read_model_payload(buffer.getvalue())


def test_method_config_drops_job_fields():
    from dataclasses import dataclass, field

    @dataclass
    class Job(ColocConfig):
        extra: dict = field(default_factory=dict)

    d = method_config_dict(Job())
    assert "extra" not in d and "model" in d
