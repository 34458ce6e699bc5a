import math

import pytest
import torch

from coloc_core.loss import ContrastiveAttentionMapLoss, background_mask, scale_map
from coloc_core.pretext import PretextTransform

# ------------------------------------------------------------------ slow reference, written from Eq. 3-4


def ref_scale(a, scaling, peak):
    vals = [v for row in a for v in row]
    hi, lo = max(vals), min(vals)
    out = []
    for row in a:
        new = []
        for v in row:
            if scaling == "raw":
                new.append(v)
            elif scaling == "max":
                new.append(v / hi)
            elif scaling == "peak":
                new.append(peak * v / hi)
            elif scaling == "minmax":
                new.append((v - lo) / (hi - lo))
            elif scaling == "sigmoid":
                new.append(1 / (1 + math.exp(-v)))
        out.append(new)
    return out


def ref_mask(a, theta, scaling, peak):
    s = ref_scale(a, scaling, peak)
    rev = [[1 - v for v in row] for row in s]
    floor = min(v for row in rev for v in row)
    return [[1.0 if v > theta * floor else 0.0 for v in row] for row in rev]


def ref_rot90(a, k):
    n = len(a)
    for _ in range(k % 4):
        a = [[a[j][n - 1 - i] for j in range(n)] for i in range(n)]
    return a


def ref_shift(a, d):
    """translation by theta offset d pixels (sample at p + d); returns map and valid."""
    h, w = len(a), len(a[0])
    out = [[0.0] * w for _ in range(h)]
    valid = [[0.0] * w for _ in range(h)]
    for i in range(h):
        for j in range(w):
            si, sj = i + d, j + d
            if 0 <= si < h and 0 <= sj < w:
                out[i][j] = a[si][sj]
                valid[i][j] = 1.0
    return out, valid


def ref_dist(a, b, valid):
    return math.sqrt(
        sum((a[i][j] - b[i][j]) ** 2 * valid[i][j] for i in range(len(a)) for j in range(len(a[0])))
    )


def ref_caml(a_ori, a_trans, warp, unwarp, theta, margin, scaling, peak):
    total = 0.0
    for x, y in zip(a_ori, a_trans, strict=True):
        m_x = ref_mask(x, theta, scaling, peak)
        m_y = ref_mask(y, theta, scaling, peak)
        bg_x = [[x[i][j] * m_x[i][j] for j in range(len(x[0]))] for i in range(len(x))]
        bg_y = [[y[i][j] * m_y[i][j] for j in range(len(y[0]))] for i in range(len(y))]
        anchor1, v1 = unwarp(y)
        anchor2, v2 = warp(x)
        t1 = max(0.0, ref_dist(anchor1, x, v1) - ref_dist(anchor1, bg_x, v1) + margin)
        t2 = max(0.0, ref_dist(anchor2, y, v2) - ref_dist(anchor2, bg_y, v2) + margin)
        total += t1 + t2
    return total / len(a_ori)


def _ones(h, w):
    return [[1.0] * w for _ in range(h)]


@pytest.mark.parametrize("scaling", ["peak", "raw", "max", "minmax", "sigmoid"])
@pytest.mark.parametrize("theta", [1.5, 2.3])
def test_caml_matches_loop_reference_rotation(scaling, theta):
    torch.manual_seed(1)
    b, n = 3, 6
    a_ori = torch.rand(b, n, n) * 2
    a_trans = torch.rand(b, n, n) * 2
    ks = [1, 2, 3]
    t = PretextTransform(("rotation",), {"rotation": torch.tensor(ks)})
    loss = ContrastiveAttentionMapLoss(margin=1.0, theta_bg=theta, map_scaling=scaling, map_peak=0.8)
    got = loss(a_ori, a_trans, t).loss.item()
    expected = 0.0
    for i in range(b):
        expected += ref_caml(
            [a_ori[i].tolist()],
            [a_trans[i].tolist()],
            warp=lambda m, k=ks[i]: (ref_rot90(m, k), _ones(n, n)),
            unwarp=lambda m, k=ks[i]: (ref_rot90(m, -k), _ones(n, n)),
            theta=theta,
            margin=1.0,
            scaling=scaling,
            peak=0.8,
        )
    assert got == pytest.approx(expected / b, rel=1e-5, abs=1e-5)


def test_caml_matches_loop_reference_translation_with_validity():
    torch.manual_seed(2)
    n = 20  # 0.1 normalised = 1 px
    a_ori = torch.rand(2, n, n)
    a_trans = torch.rand(2, n, n)
    labels = [0, 2]
    t = PretextTransform(("translation",), {"translation": torch.tensor(labels)})
    got = ContrastiveAttentionMapLoss(theta_bg=2.3, map_peak=0.8)(a_ori, a_trans, t).loss.item()
    expected = 0.0
    for i, lab in enumerate(labels):
        d = lab - 1
        expected += ref_caml(
            [a_ori[i].tolist()],
            [a_trans[i].tolist()],
            warp=lambda m, d=d: ref_shift(m, d),
            unwarp=lambda m, d=d: ref_shift(m, -d),
            theta=2.3,
            margin=1.0,
            scaling="peak",
            peak=0.8,
        )
    assert got == pytest.approx(expected / 2, rel=1e-4, abs=1e-4)


def test_caml_is_zero_margin_free_when_views_agree_and_background_is_far():
    # A perfect object map: anchors equal positives, negatives are far away => loss is 0
    a = torch.zeros(2, 8, 8)
    a[:, 2:6, 2:6] = 5.0
    a = a + 0.01
    t = PretextTransform(("rotation",), {"rotation": torch.tensor([0, 2])})
    a_trans, _ = t.maps(a)
    out = ContrastiveAttentionMapLoss(theta_bg=2.3)(a, a_trans, t)
    assert out.loss.item() == pytest.approx(0.0, abs=1e-5)
    assert 0.5 < out.bg_fraction.item() < 0.9


def test_background_grows_as_theta_falls_and_object_stays_out():
    yy, xx = torch.meshgrid(torch.arange(14.0), torch.arange(14.0), indexing="ij")
    blob = torch.exp(-((yy - 7) ** 2 + (xx - 6) ** 2) / 8.0).unsqueeze(0) + 0.05
    fractions = []
    for theta in (2.6, 2.3, 1.5):
        m = background_mask(blob, theta, "peak", 0.8)
        fractions.append(m.mean().item())
        assert m[0, 7, 6] == 0  # the peak is never background
    assert fractions[0] < fractions[1] < fractions[2]
    # the degenerate scalings the SPEC warns about
    assert background_mask(blob, 2.3, "max").mean().item() > 0.95
    assert background_mask(blob * 10, 2.3, "raw").mean().item() > 0.95


def test_mask_has_no_gradient_and_loss_is_differentiable():
    a_ori = torch.rand(2, 6, 6, requires_grad=True)
    a_trans = torch.rand(2, 6, 6, requires_grad=True)
    t = PretextTransform(("hflip",), {"hflip": torch.tensor([0, 1])})
    out = ContrastiveAttentionMapLoss()(a_ori, a_trans, t)
    out.loss.backward()
    assert a_ori.grad is not None and torch.isfinite(a_ori.grad).all()
    assert not background_mask(a_ori, 2.3).requires_grad


def test_pair_ablations():
    torch.manual_seed(0)
    a_ori, a_trans = torch.rand(2, 6, 6), torch.rand(2, 6, 6)
    t = PretextTransform(("rotation",), {"rotation": torch.tensor([1, 3])})
    pos = ContrastiveAttentionMapLoss(pairs="positive")(a_ori, a_trans, t).loss.item()
    expected = 0.0
    for i, k in enumerate([1, 3]):
        expected += torch.linalg.norm(torch.rot90(a_trans[i], -k, dims=(0, 1)) - a_ori[i]).item()
        expected += torch.linalg.norm(torch.rot90(a_ori[i], k, dims=(0, 1)) - a_trans[i]).item()
    assert pos == pytest.approx(expected / 2, rel=1e-5)
    neg = ContrastiveAttentionMapLoss(pairs="negative", margin=100.0)(a_ori, a_trans, t).loss.item()
    assert 0 < neg <= 200.0
    with pytest.raises(ValueError):
        ContrastiveAttentionMapLoss(pairs="all")


def test_caml_on_feature_maps_uses_all_channels():
    torch.manual_seed(0)
    a_ori, a_trans = torch.rand(2, 6, 6), torch.rand(2, 6, 6)
    f_ori, f_trans = torch.rand(2, 4, 6, 6), torch.rand(2, 4, 6, 6)
    t = PretextTransform(("rotation",), {"rotation": torch.tensor([1, 2])})
    loss = ContrastiveAttentionMapLoss()
    on_maps = loss(a_ori, a_trans, t).loss
    on_feats = loss(a_ori, a_trans, t, embed_ori=f_ori, embed_trans=f_trans).loss
    assert torch.isfinite(on_feats) and not torch.isclose(on_maps, on_feats)


def test_batch_permutation_invariance():
    torch.manual_seed(3)
    a_ori, a_trans = torch.rand(4, 6, 6), torch.rand(4, 6, 6)
    labels = torch.tensor([0, 1, 2, 3])
    loss = ContrastiveAttentionMapLoss()
    base = loss(a_ori, a_trans, PretextTransform(("rotation",), {"rotation": labels})).loss
    perm = torch.tensor([2, 0, 3, 1])
    permuted = loss(
        a_ori[perm], a_trans[perm], PretextTransform(("rotation",), {"rotation": labels[perm]})
    ).loss
    torch.testing.assert_close(base, permuted)


def test_scale_map_peak_is_below_one():
    a = torch.rand(3, 5, 5) * 7
    s = scale_map(a, "peak", 0.8)
    torch.testing.assert_close(s.flatten(1).amax(1), torch.full((3,), 0.8))
    with pytest.raises(ValueError):
        scale_map(a, "log")
