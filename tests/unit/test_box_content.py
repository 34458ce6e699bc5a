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
    long_side_halves,
    payload_box_contents,
)
from coloc_core.checkpoint import model_payload
from coloc_core.config import ColocConfig, apply_overrides
from coloc_core.errors import InvalidInputError
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
    assert payload_box_contents({"box_contents": stats}) == {**stats, "halves": True}  # on unless off
    assert payload_box_contents({"box_contents": {**stats, "halves": False}})["halves"] is False
    assert payload_box_contents({}) is None and payload_box_contents({"box_contents": None}) is None
    with pytest.raises(InvalidInputError, match="malformed"):
        payload_box_contents({"box_contents": {"mean": [1.0]}})
    with pytest.raises(InvalidInputError, match="not finite"):
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


def _random_scorer() -> ContentScorer:
    """A content scorer on the tiny backbone's seeded random weights, without collection statistics."""
    torch.manual_seed(0)
    scorer = ContentScorer.from_payload(
        baseline_payload("caam", backbone="tiny", weights=None), need_contents=False
    )
    assert scorer is not None
    return scorer


def test_the_crop_that_differs_from_the_collection_gets_the_lowest_term():
    # Twelve images whose box holds the same bright square (with noise), one whose box holds noise:
    # even a random network's descriptors tell the odd one out.
    scorer = _random_scorer()
    rng = np.random.default_rng(1)
    images = rng.integers(0, 40, (13, 64, 64, 3), dtype=np.uint8)
    images[:12, 16:48, 16:48] = 220 + rng.integers(0, 30, (12, 32, 32, 3), dtype=np.uint8)
    images[12, 16:48, 16:48] = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    box = [np.array([[50.0, 50.0, 173.0, 173.0]])] * 13  # the square, in score-map pixels
    descriptors = np.concatenate(scorer.descriptors(images, box))
    scorer.box_contents = box_content_statistics(descriptors)
    terms = np.concatenate(scorer.terms(images, box))
    assert int(np.argmin(terms)) == 12 and terms[12] < 0


def test_halves_are_cut_across_the_longer_side_of_the_box_in_the_original_image():
    wide = np.array([10.0, 20.0, 109.0, 99.0])  # 100 × 80 score-map pixels
    np.testing.assert_allclose(long_side_halves(wide), [[10, 20, 59.5, 99], [59.5, 20, 109, 99]])
    # In a photo twice as tall as wide the same box is 50 × 80 in the image: cut top and bottom.
    np.testing.assert_allclose(long_side_halves(wide, aspect=0.5), [[10, 20, 109, 59.5], [10, 59.5, 109, 99]])
    np.testing.assert_allclose(
        long_side_halves(np.array([0.0, 0.0, 9.0, 9.0])), [[0, 0, 4.5, 9], [4.5, 0, 9, 9]]
    )


def test_a_half_more_typical_than_its_box_costs_the_box_what_the_half_gains():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(40, 6)) + 3.0
    stats = box_content_statistics(d)
    box = d[:3]
    plain = box_content_terms(box, stats)
    z = plain / CONTENT_WEIGHT
    typical = np.asarray(stats["mean"])
    # Halves no more typical than their box (here the box's own descriptor, and the box negated):
    same = box_content_terms(box, stats, np.stack([box, -box], axis=1))
    np.testing.assert_allclose(same, plain, atol=1e-12)
    # One half is the collection's mean box (the most typical content there is): z − (z_half − z).
    z_half = (1.0 - stats["cos_mean"]) / stats["cos_spread"]
    better = box_content_terms(box, stats, np.stack([typical[None].repeat(3, 0), -box], axis=1))
    expected = CONTENT_WEIGHT * np.clip(z - np.maximum(0.0, z_half - z), -CONTENT_CLIP, CONTENT_CLIP)
    np.testing.assert_allclose(better, expected, atol=1e-9)
    assert np.all(better <= plain) and np.all(better >= -CONTENT_WEIGHT * CONTENT_CLIP)


def test_a_box_around_the_object_and_its_surroundings_scores_below_its_own_content():
    # Twelve images with the same bright square; each box is twice as wide as the square, the square in
    # its left half. The left half looks like the collection's tight boxes, so the halves lower the term.
    scorer = _random_scorer()
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (12, 64, 64, 3), dtype=np.uint8)
    images[:, 16:48, 8:32] = 220 + rng.integers(0, 30, (12, 32, 24, 3), dtype=np.uint8)
    tight = [np.array([[28.0, 56.0, 111.0, 167.0]])] * 12  # the square, in score-map pixels
    wide = [np.array([[28.0, 56.0, 195.0, 167.0]])] * 12  # the square and as much noise to its right
    # The collection's boxes: tight ones and wide ones, so that the cosines have a spread to measure by.
    both = np.concatenate(scorer.descriptors(images, tight) + scorer.descriptors(images, wide))
    scorer.box_contents = box_content_statistics(both)
    with_halves = np.concatenate(scorer.terms(images, wide))
    whole_only = box_content_terms(np.concatenate(scorer.descriptors(images, wide)), scorer.box_contents)
    assert np.all(with_halves < whole_only), (with_halves, whole_only)
    scorer.box_contents = {**scorer.box_contents, "halves": False}  # a model file that turns them off
    np.testing.assert_allclose(np.concatenate(scorer.terms(images, wide)), whole_only, atol=1e-9)
    with pytest.raises(ValueError, match="aspects"):
        scorer.terms(images, wide, aspects=[1.0])
