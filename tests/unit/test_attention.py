import pytest
import torch

from coloc_core.attention import PTAP, ECAGate, eca_kernel_size, num_pooled_channels, pool_channels


@pytest.mark.parametrize("channels,expected", [(512, 5), (2048, 7), (1280, 5), (64, 3), (1, 1)])
def test_eca_kernel_rule(channels, expected):
    assert eca_kernel_size(channels) == expected


def test_eca_gate_shape_and_range():
    gate = ECAGate(16)
    g = gate(torch.randn(3, 16, 5, 7))
    assert g.shape == (3, 16, 1, 1)
    assert bool(((g > 0) & (g < 1)).all())


@pytest.mark.parametrize("shape", [(1, 8, 3, 3), (2, 17, 5, 4), (3, 64, 7, 7)])
def test_ptap_ratio_one_is_channel_mean_and_k1_is_channel_max(shape):
    torch.manual_seed(0)
    feats = torch.rand(*shape)
    ptap_all = PTAP(shape[1], pooling="topk", ratio=1.0, eca=True)
    attn, weighted = ptap_all(feats)
    torch.testing.assert_close(attn, weighted.mean(dim=1))
    # weighted really is F * gate: the gate is not the identity
    assert not torch.allclose(weighted, feats)
    ptap_one = PTAP(shape[1], pooling="topk", ratio=1.0 / shape[1], eca=True)
    ptap_one.load_state_dict(ptap_all.state_dict())
    assert num_pooled_channels(shape[1], 1.0 / shape[1]) == 1
    attn1, weighted1 = ptap_one(feats)
    torch.testing.assert_close(attn1, weighted1.amax(dim=1))


def test_pool_channels_by_hand():
    # one pixel, channels 1..10: top-70% = mean(4..10) = 7, bottom-30% = mean(1,2,3) = 2
    feats = torch.arange(1.0, 11.0).view(1, 10, 1, 1)
    assert pool_channels(feats, "topk", 0.7).item() == pytest.approx(7.0)
    assert pool_channels(feats, "bottomk", 0.3).item() == pytest.approx(2.0)
    assert pool_channels(feats, "mean").item() == pytest.approx(5.5)
    assert pool_channels(feats, "max").item() == pytest.approx(10.0)


def test_pool_channels_pools_per_pixel_not_globally():
    feats = torch.zeros(1, 4, 1, 2)
    feats[0, :, 0, 0] = torch.tensor([4.0, 0.0, 0.0, 0.0])
    feats[0, :, 0, 1] = torch.tensor([1.0, 1.0, 1.0, 1.0])
    out = pool_channels(feats, "topk", 0.5)
    torch.testing.assert_close(out, torch.tensor([[[2.0, 1.0]]]))


def test_pool_channels_errors():
    with pytest.raises(ValueError):
        pool_channels(torch.zeros(1, 4, 2, 2), "median")
    with pytest.raises(ValueError):
        pool_channels(torch.zeros(1, 4, 2, 2), "topk", 0.0)
    with pytest.raises(ValueError):
        pool_channels(torch.zeros(4, 2, 2), "topk", 0.5)


def test_ptap_without_eca_uses_plain_features():
    feats = torch.rand(2, 6, 3, 3)
    attn, weighted = PTAP(6, pooling="mean", eca=False)(feats)
    assert weighted is feats
    torch.testing.assert_close(attn, feats.mean(dim=1))


def test_pooling_gradcheck_float64():
    feats = torch.rand(2, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    for mode in ("topk", "bottomk", "mean", "max"):
        assert torch.autograd.gradcheck(lambda f, m=mode: pool_channels(f, m, 0.6), (feats,))
