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
from coloc_core.errors import InvalidInputError


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


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (_saved({"weights": 1}), "found format None"),  # a torch.save file of something else
        (_saved([1, 2]), "found list"),
        (b"hello\n", "torch.load cannot read it"),  # a text file
        (bytes(range(256)) * 4, "torch.load cannot read it"),  # noise
        (_saved({"weights": torch.zeros(8)})[:-40], "torch.load cannot read it"),  # cut short
    ],
)
def test_not_a_model_file_is_bad_input_named_by_its_source(data, why):
    with pytest.raises(InvalidInputError, match="not a coloc model file") as info:
        read_model_payload(data, "s3://b/runs/x.pt")
    assert isinstance(info.value, ValueError)  # every ValueError handler still catches it
    assert str(info.value).startswith("s3://b/runs/x.pt is not a coloc model file"), info.value
    assert why in str(info.value) and "\n" not in str(info.value), info.value


def test_method_config_drops_job_fields():
    from dataclasses import dataclass, field

    @dataclass
    class Job(ColocConfig):
        extra: dict = field(default_factory=dict)

    d = method_config_dict(Job())
    assert "extra" not in d and "model" in d
