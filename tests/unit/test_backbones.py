"""Backbones (SPEC §1): feature-map sizes, weight loading and key mapping, registry errors."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torchvision

from coloc_core.backbones import (
    Backbone,
    Conv2dSame,
    EfficientNetLite0Backbone,
    EfficientNetLiteBackbone,
    WeightsUnavailableError,
    available_backbones,
    build_backbone,
    efficientnet_lite0_weights_path,
    efficientnet_lite2_weights_path,
    load_backbone_weights,
    register_backbone,
)
from coloc_core.tv_backbones import SEResNet50Backbone


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _forward(backbone: Backbone, size: tuple[int, int] = (224, 224)) -> torch.Tensor:
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        return backbone.eval()(x)


# name, weights, output_stride, channels, side at 224 (SPEC §1 table)
MAP_SIZES = [
    ("vgg16", None, None, 512, 28),
    ("vgg16_bn", None, None, 512, 28),
    ("resnet50", None, None, 2048, 14),
    ("resnet18", None, None, 512, 14),
    ("seresnet50", None, None, 2048, 14),
    ("efficientnet_lite0", "auto", None, 1280, 14),
    ("efficientnet_lite0", "auto", 32, 1280, 7),
    ("tiny", "auto", None, 32, 56),
]


@pytest.mark.parametrize(("name", "weights", "output_stride", "channels", "side"), MAP_SIZES)
def test_feature_map_size_at_224(
    name: str, weights: str | None, output_stride: int | None, channels: int, side: int
) -> None:
    backbone = build_backbone(name, weights=weights, output_stride=output_stride)
    feats = _forward(backbone)
    assert feats.shape == (1, channels, side, side)
    assert backbone.out_channels == channels
    assert backbone.stride == 224 // side
    assert torch.isfinite(feats).all()
    assert feats.min() >= 0  # post-ReLU
    assert (feats > 0).any()


def test_registry_lists_every_spec_backbone() -> None:
    expected = {"vgg16", "vgg16_bn", "resnet50", "resnet18", "seresnet50", "efficientnet_lite0", "tiny"}
    assert expected <= set(available_backbones())


def test_registry_rejects_duplicate_names() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("tiny")
    assert "tiny" in available_backbones()


def test_unknown_backbone_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'resnet51'.*resnet50"):
        build_backbone("resnet51", weights=None)


def test_fixed_stride_backbones_reject_another_output_stride() -> None:
    assert build_backbone("tiny", weights=None, output_stride=4).stride == 4
    with pytest.raises(ValueError, match="fixed output stride"):
        build_backbone("tiny", weights=None, output_stride=8)
    with pytest.raises(ValueError, match="output_stride 16 or 32"):
        build_backbone("efficientnet_lite0", weights=None, output_stride=8)


@pytest.mark.parametrize(
    ("name", "file"),
    [("vgg16", "vgg16-397923af.pth"), ("resnet50", "resnet50-0676ba61.pth"), ("seresnet50", "se_resnet50")],
)
def test_auto_weights_that_cannot_be_downloaded_is_a_clear_error(name: str, file: str) -> None:
    with pytest.raises(WeightsUnavailableError, match="cannot be downloaded") as info:
        build_backbone(name, weights="auto")
    message = str(info.value)
    assert "model.weights=" in message and file in message and "model.weights=none" in message
    assert isinstance(info.value, FileNotFoundError)


def test_tiny_any_input_size_and_normalize() -> None:
    tiny = build_backbone("tiny")
    assert _forward(tiny, (37, 50)).shape == (1, 32, 10, 13)
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    torch.testing.assert_close(tiny.normalize(images), tiny.normalize(images.float() / 255))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny.normalize(torch.zeros(2, 8, 8, 3))


# --------------------------------------------------------------------------------- EfficientNet-Lite0


def _blocks(backbone: Any) -> list[Any]:
    """An EfficientNet-Lite backbone's MBConv blocks (typed loosely: the tests read their convs' settings)."""
    return list(backbone._blocks)


def test_efficientnet_packaged_weights_load_without_missing_or_unexpected_keys() -> None:
    path = efficientnet_lite0_weights_path()
    file_state = torch.load(path, map_location="cpu", weights_only=True)
    backbone = EfficientNetLite0Backbone()
    report = load_backbone_weights(backbone, path)
    assert report.missing == [] and report.unexpected == [] and report.ok
    assert report.ignored == ["_fc.bias", "_fc.weight"]
    own = backbone.state_dict()
    assert set(own) == set(file_state) - {"_fc.bias", "_fc.weight"}
    for key, value in own.items():
        assert torch.equal(value, file_state[key]), key


def test_efficientnet_lite0_port_conventions() -> None:
    backbone = EfficientNetLite0Backbone(output_stride=32)
    assert backbone.mean == backbone.std == (0.5, 0.5, 0.5)
    bns = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 for m in bns)  # TF's epsilon
    assert all(isinstance(m, Conv2dSame) for m in backbone.modules() if isinstance(m, torch.nn.Conv2d))
    images = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    assert backbone.normalize(images).flatten().tolist() == [-1.0, 1.0, -1.0, 1.0, -1.0, 1.0]


@pytest.mark.parametrize("channels_last", [False, True])
def test_same_padding_of_strided_depthwise_convs_needs_no_padded_copy(channels_last: bool) -> None:
    # The slabs path (one more zero at the end than at the start) against an explicit padded copy.
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    checked = 0
    for k, d, (h, w) in itertools.product((1, 3, 5), (1, 2), ((8, 8), (16, 12), (17, 16), (6, 9), (2, 2))):
        conv = Conv2dSame(6, 6, k, stride=2, groups=6, bias=True, dilation=d)
        x = torch.randn(2, 6, h, w).contiguous(memory_format=fmt)
        pads = []
        for size in (w, h):
            total = max((math.ceil(size / 2) - 1) * 2 + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        expected = F.conv2d(F.pad(x, pads), conv.weight, conv.bias, 2, 0, d, 6)
        got = conv(x)
        assert got.shape == expected.shape == (2, 6, math.ceil(h / 2), math.ceil(w / 2))
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
        checked += pads[1] == pads[0] + 1 and pads[3] == pads[2] + 1
    assert checked >= 10  # the slabs path ran, not only the padded fallback


def test_efficientnet_in_place_activations_leave_inputs_alone_and_train() -> None:
    # The ReLU6s and residual sums write into their conv's fresh output: never into a block's input
    # (which a residual block still adds), and autograd still has what it needs.
    torch.manual_seed(0)
    backbone = EfficientNetLite0Backbone(output_stride=16).train()
    t = torch.randn(2, 32, 32, 32)
    for block in _blocks(backbone):
        kept = t.clone()
        out = block(t)
        assert torch.equal(t, kept)
        t = out.detach()
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    kept = x.detach().clone()
    backbone(x).square().mean().backward()
    assert torch.equal(x.detach(), kept)
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)
    assert all(p.grad is not None for p in backbone.parameters())


def test_efficientnet_output_stride_16_dilates_after_the_removed_stride() -> None:
    # Blocks 11-14 are the 192-channel stage, 15 the 320-channel one.
    os16 = EfficientNetLite0Backbone(output_stride=16)
    os32 = EfficientNetLite0Backbone(output_stride=32)
    strides16 = [b._depthwise_conv.stride[0] for b in _blocks(os16)]
    dilations16 = [b._depthwise_conv.dilation[0] for b in _blocks(os16)]
    assert strides16 == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    assert dilations16 == [1] * 12 + [2] * 4
    assert [b._depthwise_conv.stride[0] for b in _blocks(os32)][11] == 2
    assert all(b._depthwise_conv.dilation[0] == 1 for b in _blocks(os32))


def test_efficientnet_lite2_packaged_weights_fill_every_layer() -> None:
    path = efficientnet_lite2_weights_path()
    file_state = torch.load(path, map_location="cpu", weights_only=True)
    backbone = EfficientNetLiteBackbone(variant=2)
    report = load_backbone_weights(backbone, path, strict=True)
    assert report.missing == [] and report.unexpected == [] and report.ignored == ["_fc.bias", "_fc.weight"]
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, file_state[key]), key
    # Lite2 scales Lite0's depth (21 blocks, not 16) and width (352 channels before the head).
    assert len(backbone._blocks) == 21 and backbone.feature_channels("pre_head") == 352
    assert backbone.feature_channels("output") == 1280


def test_efficientnet_lite2_at_stride_16_plain_or_dilated() -> None:
    plain = build_backbone("efficientnet_lite2", weights=None, dilate=False).eval()
    dilated = build_backbone("efficientnet_lite2", weights=None).eval()
    # The 208-channel stage (blocks 15-19) is the one set to stride 1; the blocks after its first dilate.
    assert [b._depthwise_conv.stride[0] for b in _blocks(plain)][15] == 1
    assert [b._depthwise_conv.dilation[0] for b in _blocks(plain)] == [1] * 21
    assert [b._depthwise_conv.dilation[0] for b in _blocks(dilated)] == [1] * 16 + [2] * 5
    with torch.no_grad():
        x = torch.zeros(1, 3, 320, 320)
        assert tuple(plain.features_at(x, "pre_head").shape) == (1, 352, 20, 20)
        assert tuple(dilated(x).shape) == (1, 1280, 20, 20)
    assert tuple(build_backbone("efficientnet_lite2", weights=None, output_stride=32)(x).shape[2:]) == (
        10,
        10,
    )
    with pytest.raises(ValueError, match="variant 1 is not one of"):
        EfficientNetLiteBackbone(variant=1)


@pytest.mark.parametrize(("size", "kernel", "pads"), [(8, 3, (0, 1)), (8, 5, (1, 2)), (7, 3, (1, 1))])
def test_conv2d_same_pads_like_tensorflow(size: int, kernel: int, pads: tuple[int, int]) -> None:
    # TF "SAME", stride 2: output ceil(size / 2); an odd total pad puts the extra pixel bottom/right.
    conv = Conv2dSame(2, 3, kernel, stride=2, bias=False)
    x = torch.randn(1, 2, size, size + 1)
    total_w = max((math.ceil((size + 1) / 2) - 1) * 2 + kernel - (size + 1), 0)
    expected = F.conv2d(F.pad(x, [total_w // 2, total_w - total_w // 2, *pads]), conv.weight, stride=2)
    out = conv(x)
    assert out.shape[-2:] == (math.ceil(size / 2), math.ceil((size + 1) / 2))
    torch.testing.assert_close(out, expected)


def test_efficientnet_pretrained_features_are_sane_on_a_synthetic_image() -> None:
    # A smooth background with a bright disk: ImageNet features must be sparse but alive, and the
    # object must excite the map more than the background does.
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 224), torch.linspace(-1, 1, 224), indexing="ij")
    disk = ((xx - 0.2) ** 2 + (yy + 0.1) ** 2 < 0.35**2).float()
    image = torch.stack([0.3 + 0.2 * yy + 0.6 * disk, 0.4 + 0.1 * xx, 0.5 - 0.4 * disk]).clamp(0, 1)
    backbone = build_backbone("efficientnet_lite0").eval()
    with torch.inference_mode():
        feats = backbone(backbone.normalize(image[None]))
    assert feats.shape == (1, 1280, 14, 14)
    assert 0 <= feats.min() and feats.max() <= 6  # ReLU6
    assert 0.01 < (feats > 0).float().mean() < 0.9
    energy = feats[0].mean(0)
    inside = F.interpolate(disk[None, None], size=(14, 14), mode="area")[0, 0] > 0.5
    assert energy[inside].mean() > energy[~inside].mean()


# ------------------------------------------------------------------------------ torchvision round trip


def _assert_loaded_exactly(backbone: Backbone, file_state: dict[str, torch.Tensor], head: list[str]) -> None:
    report = load_backbone_weights(backbone, file_state)
    assert report.missing == [] and report.unexpected == []
    assert report.ignored == sorted(head)
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, file_state[key]), key


def test_torchvision_vgg16_state_dict_loads_exactly() -> None:
    file_state = torchvision.models.vgg16(weights=None).state_dict()
    backbone = build_backbone("vgg16", weights=None)
    head = [k for k in file_state if k.startswith("classifier.")]
    assert len(head) == 6
    _assert_loaded_exactly(backbone, file_state, head)


def test_torchvision_vgg16_bn_state_dict_loads_exactly() -> None:
    file_state = torchvision.models.vgg16_bn(weights=None).state_dict()
    backbone = build_backbone("vgg16_bn", weights=None)
    _assert_loaded_exactly(backbone, file_state, [k for k in file_state if k.startswith("classifier.")])


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_resnet_state_dict_loads_exactly(name: str) -> None:
    net = getattr(torchvision.models, name)(weights=None)
    file_state = net.state_dict()
    backbone: Any = build_backbone(name, weights=None)  # its torchvision layers, read by name below
    _assert_loaded_exactly(backbone, file_state, ["fc.bias", "fc.weight"])
    # Only layer4's stride changed: up to layer3 both compute the same map.
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        ref = net.eval().layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x)))))))
        b = backbone.eval()
        ours = b.layer3(b.layer2(b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(x)))))))
    torch.testing.assert_close(ours, ref)
    assert all(m.stride == (1, 1) for m in backbone.layer4.modules() if isinstance(m, torch.nn.Conv2d))
    assert all(m.dilation == (1, 1) for m in backbone.layer4.modules() if isinstance(m, torch.nn.Conv2d))


# -------------------------------------------------------------------------------------- SE-ResNet50


def _randomised_seresnet() -> SEResNet50Backbone:
    source = SEResNet50Backbone()
    with torch.no_grad():
        for name, buf in source.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buf.uniform_(0.5, 1.5)
    return source


def _to_cadene(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if key == "cadene_layout":
            continue
        out[f"layer0.{key}" if key.startswith(("conv1.", "bn1.")) else key] = value
    out["last_linear.weight"] = torch.zeros(1000, 2048)
    out["last_linear.bias"] = torch.zeros(1000)
    return out


def _to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {k.replace(".se_module.", ".se."): v for k, v in state.items() if k != "cadene_layout"}
    out["fc.weight"] = torch.zeros(1000, 2048)
    out["fc.bias"] = torch.zeros(1000)
    return out


def test_seresnet50_loads_cadene_names_and_switches_to_their_layout() -> None:
    state = _randomised_seresnet().state_dict()
    cadene = _to_cadene(state)
    assert "layer0.conv1.weight" in cadene and "layer1.0.se_module.fc1.weight" in cadene
    backbone = SEResNet50Backbone()
    report = load_backbone_weights(backbone, {"state_dict": {f"module.{k}": v for k, v in cadene.items()}})
    assert report.ok and report.ignored == ["last_linear.bias", "last_linear.weight"]
    for key, value in backbone.state_dict().items():
        if key != "cadene_layout":
            assert torch.equal(value, state[key]), key
    assert bool(backbone.cadene_layout)
    assert backbone.layer2[0].conv1.stride == (2, 2) and backbone.layer2[0].conv2.stride == (1, 1)
    assert backbone.maxpool.ceil_mode and backbone.maxpool.padding == 0
    # A saved state_dict restores the layout in a freshly built backbone.
    fresh: Any = build_backbone("seresnet50", weights=None)  # its layers, read by name below
    assert not bool(fresh.cadene_layout)
    fresh.load_state_dict(backbone.state_dict())
    assert fresh.layer3[0].conv1.stride == (2, 2) and fresh.maxpool.ceil_mode
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(fresh.eval()(x), backbone.eval()(x))
        assert backbone(x).shape == (1, 2048, 4, 4)


def test_seresnet50_loads_timm_names_with_torchvision_layout() -> None:
    state = _randomised_seresnet().state_dict()
    timm_state = _to_timm(state)
    assert "layer1.0.se.fc1.weight" in timm_state and "conv1.weight" in timm_state
    backbone = SEResNet50Backbone()
    backbone.set_cadene_layout(True)  # loading a timm file must switch it back
    report = load_backbone_weights(backbone, {"model": timm_state})
    assert report.ok and report.ignored == ["fc.bias", "fc.weight"]
    for key, value in backbone.state_dict().items():
        if key != "cadene_layout":
            assert torch.equal(value, state[key]), key
    assert not bool(backbone.cadene_layout)
    assert backbone.layer2[0].conv1.stride == (1, 1) and backbone.layer2[0].conv2.stride == (2, 2)
    assert backbone.maxpool.padding == 1 and not backbone.maxpool.ceil_mode


# ------------------------------------------------------------------------------------ files and URIs


def test_weights_from_path_file_uri_and_fsspec_uri(tmp_path: Path) -> None:
    import fsspec

    source = build_backbone("tiny", weights=None)
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, path)
    for weights in (str(path), f"file://{path}"):
        loaded = build_backbone("tiny", weights=weights)
        assert all(torch.equal(v, source.state_dict()[k]) for k, v in loaded.state_dict().items())
    with fsspec.open("memory://weights/tiny.pth", "wb") as fh:
        torch.save(source.state_dict(), fh)
    report = load_backbone_weights(build_backbone("tiny", weights=None), "memory://weights/tiny.pth")
    assert report.ok and report.source == "memory://weights/tiny.pth"


def test_missing_weights_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "vgg16-397923af.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(f"weights file not found: {missing}")):
        build_backbone("vgg16", weights=str(missing))
    with pytest.raises(FileNotFoundError, match="memory://no/such.pth"):
        build_backbone("tiny", weights="memory://no/such.pth")


def test_colocnet_checkpoint_loads_its_backbone_part() -> None:
    source = build_backbone("tiny", weights=None)
    checkpoint = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    checkpoint["heads.rotation.weight"] = torch.zeros(4, 32, 1, 1)
    target = build_backbone("tiny", weights=None)
    report = load_backbone_weights(target, {"model": checkpoint})
    assert report.ok and report.ignored == ["heads.rotation.weight"]
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items())


def test_weights_of_another_backbone_are_rejected() -> None:
    resnet_state = build_backbone("resnet18", weights=None).state_dict()
    report = load_backbone_weights(build_backbone("tiny", weights=None), resnet_state)
    assert len(report.missing) == 6 and len(report.unexpected) == len(resnet_state)
    with pytest.raises(ValueError, match="does not match this backbone"):
        load_backbone_weights(build_backbone("tiny", weights=None), resnet_state, strict=True)
    wrong_shape = {k: v[:1] for k, v in build_backbone("tiny", weights=None).state_dict().items()}
    with pytest.raises(ValueError, match="shape mismatch"):
        load_backbone_weights(build_backbone("tiny", weights=None), wrong_shape)


def test_efficientnet_stride16_plain_and_pre_head_layer():
    dilated = build_backbone("efficientnet_lite0", weights=None)
    plain = build_backbone("efficientnet_lite0", weights=None, dilate=False)
    assert dilated.dilate and not plain.dilate
    assert max(b._depthwise_conv.dilation[0] for b in dilated._blocks) == 2
    assert all(b._depthwise_conv.dilation == (1, 1) for b in plain._blocks)
    plain.load_state_dict(dilated.state_dict())  # same weights, only the dilation differs
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        pre = plain.features_at(x, "pre_head")
        assert pre.shape == (1, 320, 4, 4) and plain.feature_channels("pre_head") == 320
        torch.testing.assert_close(plain.features_at(x, "output"), plain(x))
        assert not torch.allclose(plain(x), dilated.eval()(x))
    with pytest.raises(ValueError, match="feature layer"):
        plain.features_at(x, "conv4")
    with pytest.raises(ValueError, match="no feature layer"):
        build_backbone("tiny", weights=None).feature_channels("pre_head")
    with pytest.raises(ValueError, match="no dilate option"):
        build_backbone("resnet18", weights=None, dilate=False)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "dilation"), [(14, 3, 1, 1), (15, 5, 2, 1), (16, 3, 2, 1), (14, 5, 1, 2)]
)
def test_conv2d_same_pads_like_tf_same_on_both_paths(size, kernel, stride, dilation):
    # symmetric padding goes to the convolution itself, asymmetric through F.pad: both equal TF "same"
    torch.manual_seed(0)
    conv = Conv2dSame(3, 4, kernel, stride=stride, dilation=dilation, bias=True)
    x = torch.randn(2, 3, size, size)
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    pads = [total // 2, total - total // 2] * 2
    want = F.conv2d(F.pad(x, pads), conv.weight, conv.bias, stride, 0, dilation)
    got = conv(x)
    assert got.shape == want.shape == (2, 4, math.ceil(size / stride), math.ceil(size / stride))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # same sums; the kernel may differ


def test_folding_batchnorm_keeps_the_eval_features():
    torch.manual_seed(0)
    net = EfficientNetLite0Backbone()
    for m in net.modules():  # non-trivial running statistics and affine parameters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    net.eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        want, want_pre = net(x), net.pre_head(x)
        net.fold_batchnorm()
        net.fold_batchnorm()  # a second call changes nothing
        got, got_pre = net(x), net.pre_head(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_pre, want_pre, rtol=1e-4, atol=1e-4)
