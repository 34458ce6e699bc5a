"""coloc_core.box_content: the content term of the box score (statistics, terms, crops, backbone)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from coloc_core.box_content import (
    CONTENT_CLIP,
    CONTENT_MIN_SPREAD,
    CONTENT_SIDE,
    CONTENT_WEIGHT,
    ContentScorer,
    box_content_statistics,
    box_content_terms,
    content_backbone,
    payload_box_contents,
)
from coloc_core.checkpoint import model_payload
from coloc_core.config import ColocConfig, apply_overrides
from coloc_core.localizer import baseline_payload
from coloc_core.model import build_model


def test_statistics_are_the_mean_descriptor_and_the_spread_of_cosines_to_it():
    d = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    stats = box_content_statistics(d)
    np.testing.assert_allclose(stats["mean"], [2 / 3, 2 / 3])
    cos = np.array([1 / np.sqrt(2), 1 / np.sqrt(2), 1.0])  # each row against the diagonal
    assert stats["cos_mean"] == pytest.approx(cos.mean())
    assert stats["cos_spread"] == pytest.approx(cos.std())
    assert stats["images"] == 3
    # Identical crops: no spread, floored so the term never divides by zero.
    assert box_content_statistics(np.ones((4, 3)))["cos_spread"] == CONTENT_MIN_SPREAD
    with pytest.raises(ValueError, match="N >= 1"):
        box_content_statistics(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="finite"):
        box_content_statistics(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="zero"):
        box_content_statistics(np.array([[1.0, -1.0], [-1.0, 1.0]]))


def test_terms_reward_the_typical_content_and_are_bounded():
    rng = np.random.default_rng(0)
    typical = np.array([1.0, 2.0, 3.0, 0.0])
    d = typical + 0.1 * rng.standard_normal((50, 4))
    stats = box_content_statistics(d)
    odd = np.array([[0.0, 0.0, 0.0, 5.0]])
    terms = box_content_terms(np.vstack([typical[None], odd, np.zeros((1, 4))]), stats)
    assert terms[0] > 0 > terms[1]  # the mean content scores above average, an unrelated one below
    assert terms[1] == pytest.approx(-CONTENT_WEIGHT * CONTENT_CLIP)  # far off: clipped
    assert terms[2] == pytest.approx(-CONTENT_WEIGHT * CONTENT_CLIP)  # zero norm: cosine 0
    assert np.all(np.abs(box_content_terms(d, stats)) <= CONTENT_WEIGHT * CONTENT_CLIP)
    # One standard deviation above the collection's mean cosine is worth CONTENT_WEIGHT.
    shifted = {**stats, "cos_mean": stats["cos_mean"] - stats["cos_spread"]}
    base = box_content_terms(d[:5], stats)
    np.testing.assert_allclose(box_content_terms(d[:5], shifted) - base, CONTENT_WEIGHT, atol=1e-9)


def test_payload_contents_are_checked_and_optional():
    stats = box_content_statistics(np.eye(3) + 1.0)
    assert payload_box_contents({"box_contents": stats}) == stats
    assert payload_box_contents({}) is None and payload_box_contents({"box_contents": None}) is None
    with pytest.raises(ValueError, match="malformed"):
        payload_box_contents({"box_contents": {"mean": [1.0]}})
    with pytest.raises(ValueError, match="not finite"):
        payload_box_contents({"box_contents": {**stats, "cos_mean": float("nan")}})


def test_the_content_backbone_is_the_model_s_own_at_its_original_stride():
    torch.manual_seed(0)
    payload = baseline_payload(
        "ddt",
        backbone="efficientnet_lite0",
        weights=None,
        output_stride=16,
        dilate=False,
        ddt_mean=torch.zeros(320),
        ddt_vector=torch.ones(320) / 320**0.5,
        feature_layer="pre_head",
    )
    backbone = content_backbone(payload)
    assert backbone is not None and backbone.stride == 32 and not backbone.training
    own = {k[len("backbone.") :]: v for k, v in payload["state_dict"].items() if k.startswith("backbone.")}
    for key, value in backbone.state_dict().items():
        torch.testing.assert_close(value, own[key])  # the same weights, only the stride differs
    x = torch.rand(1, 3, 224, 224)
    assert backbone.features_at(x, "output").shape[-1] == 7  # 224 / 32
    # No backbone to rebuild: the full box, and a payload whose config names none.
    assert content_backbone(baseline_payload("full")) is None
    assert content_backbone({"kind": "colocnet", "config": {}}) is None


def test_a_caml_model_s_content_backbone_is_its_trained_backbone_at_stride_32():
    # A trained ColocNet's file has no "kind" and names its backbone under the config's "model".
    torch.manual_seed(0)
    overrides = ["model.backbone=efficientnet_lite0", "model.weights=none", "model.output_stride=16"]
    cfg = apply_overrides(ColocConfig(), overrides)
    model = build_model(cfg, weights=False)
    payload = model_payload(model, cfg)
    assert "kind" not in payload
    backbone = content_backbone(payload)
    assert backbone is not None and backbone.stride == 32 and model.backbone.stride == 16
    for key, value in backbone.state_dict().items():
        torch.testing.assert_close(value, model.backbone.state_dict()[key])


def test_a_descriptor_is_the_backbone_on_the_resized_crop():
    torch.manual_seed(0)
    payload = baseline_payload("caam", backbone="tiny", weights=None)
    scorer = ContentScorer.from_payload(payload, need_contents=False)
    assert scorer is not None and ContentScorer.from_payload(payload) is None  # no contents stored
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    # Score-map pixels (224 a side) → input pixels (112): half; inclusive far corners.
    boxes = [np.array([[20.0, 40.0, 119.0, 199.0]]), np.zeros((0, 4))]
    out = scorer.descriptors(images, boxes)
    assert out[0].shape == (1, 32) and out[1].shape == (0, 32)
    patch = torch.from_numpy(images[0, 20:100, 10:60].copy()).permute(2, 0, 1)[None].float() / 255
    crop = F.interpolate(patch, size=(CONTENT_SIDE, CONTENT_SIDE), mode="bilinear", antialias=True)
    backbone = content_backbone(payload)
    expected = backbone.features_at(backbone.normalize(crop.clamp(0, 1)), "output").mean(dim=(2, 3))
    np.testing.assert_allclose(out[0][0], expected[0].detach().numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="no box_contents"):
        scorer.terms(images, boxes)


def test_the_crop_that_differs_from_the_collection_gets_the_lowest_term():
    # Twelve images whose box holds the same bright square (with noise), one whose box holds noise:
    # even a random network's descriptors tell the odd one out.
    torch.manual_seed(0)
    scorer = ContentScorer.from_payload(
        baseline_payload("caam", backbone="tiny", weights=None), need_contents=False
    )
    rng = np.random.default_rng(1)
    images = rng.integers(0, 40, (13, 64, 64, 3), dtype=np.uint8)
    images[:12, 16:48, 16:48] = 220 + rng.integers(0, 30, (12, 32, 32, 3), dtype=np.uint8)
    images[12, 16:48, 16:48] = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    box = [np.array([[50.0, 50.0, 173.0, 173.0]])] * 13  # the square, in score-map pixels
    descriptors = np.concatenate(scorer.descriptors(images, box))
    scorer.box_contents = box_content_statistics(descriptors)
    terms = np.concatenate(scorer.terms(images, box))
    assert int(np.argmin(terms)) == 12 and terms[12] < 0
