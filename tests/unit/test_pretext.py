import pytest
import torch

from coloc_core.pretext import (
    NUM_CLASSES,
    PretextTransform,
    affine_theta,
    invert_theta,
    rotate90,
    sample_labels,
)


def _transform(task, labels):
    return PretextTransform((task,), {task: torch.as_tensor(labels)})


def test_sample_labels_ranges_and_seed():
    g = torch.Generator().manual_seed(0)
    labels = sample_labels(list(NUM_CLASSES), 500, generator=g)
    for task, n in NUM_CLASSES.items():
        assert labels[task].shape == (500,)
        assert set(labels[task].tolist()) == set(range(n))
    again = sample_labels(list(NUM_CLASSES), 500, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(labels[t], again[t]) for t in NUM_CLASSES)
    with pytest.raises(ValueError):
        sample_labels(["jigsaw"], 2)


def test_rotation_label_is_rot90_of_the_image():
    x = torch.randn(4, 3, 8, 8)
    t = _transform("rotation", [0, 1, 2, 3])
    out = t.images(x)
    for i in range(4):
        assert torch.equal(out[i], torch.rot90(x[i], i, dims=(-2, -1)))


@pytest.mark.parametrize(
    "task,labels", [("rotation", [0, 1, 2, 3]), ("hflip", [0, 1, 0, 1]), ("vflip", [1, 0, 0, 1])]
)
def test_exact_map_warps_are_invertible(task, labels):
    maps = torch.randn(4, 7, 7)
    t = _transform(task, labels)
    warped, valid = t.maps(maps)
    back, valid_back = t.inverse_maps(warped)
    assert torch.equal(back, maps)
    assert bool(valid.all()) and bool(valid_back.all())
    # the map warp is the image warp at map resolution
    assert torch.equal(warped, t.images(maps.unsqueeze(1)).squeeze(1))


def test_flip_labels():
    x = torch.arange(6.0).view(1, 1, 2, 3)
    assert torch.equal(_transform("hflip", [0]).images(x), x.flip(-1))
    assert torch.equal(_transform("hflip", [1]).images(x), x)
    assert torch.equal(_transform("vflip", [0]).images(x), x.flip(-2))


def test_rotation_inverse_direction():
    a = torch.arange(9.0).view(1, 3, 3)
    t = _transform("rotation", [1])
    warped, _ = t.maps(a)
    assert torch.equal(warped[0], torch.rot90(a[0], 1, dims=(0, 1)))
    back, _ = t.inverse_maps(warped)
    assert torch.equal(back, a)


def test_identity_labels_do_nothing():
    x = torch.randn(2, 3, 10, 10)
    for task, label in [
        ("translation", 1),
        ("scale", 1),
        ("pst", 2),
        ("hflip", 1),
        ("vflip", 1),
        ("rotation", 0),
    ]:
        out = _transform(task, [label, label]).images(x)
        torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_translation_is_a_one_pixel_shift_at_twenty_pixels_with_zero_fill():
    # 0.1 in normalised coordinates is one pixel of a 20-pixel map
    x = torch.randn(1, 1, 20, 20)
    out = _transform("translation", [2]).images(x)
    torch.testing.assert_close(out[0, 0, :-1, :-1], x[0, 0, 1:, 1:], atol=1e-5, rtol=0)
    assert float(out[0, 0, -1].abs().max()) == 0.0  # zero fill
    maps, valid = _transform("translation", [2]).maps(x[:, 0])
    assert not bool(valid[0, -1].any()) and not bool(valid[0, :, -1].any())
    assert bool(valid[0, :-1, :-1].all())


def test_pst_labels_zero_and_four_are_the_same_half_turn():
    x = torch.randn(1, 3, 16, 16)
    half_turn = torch.rot90(x, 2, dims=(-2, -1))
    out0 = _transform("pst", [0]).images(x)
    out4 = _transform("pst", [4]).images(x)
    torch.testing.assert_close(out0, half_turn, atol=1e-5, rtol=0)
    torch.testing.assert_close(out4, half_turn, atol=1e-5, rtol=0)
    assert not _transform("pst", [1]).invertible
    with pytest.raises(ValueError):
        _transform("pst", [1]).inverse_maps(torch.zeros(1, 4, 4))


def test_theta_inverse():
    for task, n in [("translation", 3), ("scale", 3)]:
        theta = affine_theta(task, torch.arange(n))
        inv = invert_theta(theta)
        eye = torch.eye(3).expand(n, 3, 3).clone()
        full = eye.clone()
        full[:, :2] = theta
        full_inv = eye.clone()
        full_inv[:, :2] = inv
        torch.testing.assert_close(full @ full_inv, eye, atol=1e-6, rtol=0)


@pytest.mark.parametrize("task,label", [("scale", 0), ("scale", 2), ("translation", 0), ("translation", 2)])
def test_affine_warp_then_unwarp_returns_the_map_on_its_valid_region(task, label):
    # bilinear sampling reproduces a linear ramp exactly, so any error is a geometry error
    h = w = 28
    ii, jj = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    ramp = (ii + 2 * jj).unsqueeze(0)
    t = _transform(task, [label])
    warped, valid_fwd = t.maps(ramp)
    back, valid = t.inverse_maps(warped)
    both = valid & valid_fwd if task == "translation" else valid
    # stay one pixel away from the edge of the valid region, where border padding takes over
    inner = torch.nn.functional.max_pool2d((~both).float().unsqueeze(0), 3, 1, 1).squeeze(0) == 0
    if task == "scale" and label == 0:
        # zoom-out with reflection fill: the outermost 2 px sit on the reflection fold
        inner[:, :2] = inner[:, -2:] = False
        inner[:, :, :2] = inner[:, :, -2:] = False
    assert int(inner.sum()) > 0.25 * h * w
    torch.testing.assert_close(back[inner], ramp[inner], atol=1e-3, rtol=0)
    if task == "scale" and label == 2:  # zoom in: the inverse cannot see the border of the original
        assert not bool(valid.all())


def test_composed_tasks_invert():
    maps = torch.randn(3, 12, 12)
    t = PretextTransform(
        ("rotation", "hflip"), {"rotation": torch.tensor([1, 2, 3]), "hflip": torch.tensor([0, 1, 0])}
    )
    warped, _ = t.maps(maps)
    expected = torch.stack([torch.rot90(maps[i], k, dims=(0, 1)) for i, k in enumerate([1, 2, 3])])
    expected[0] = expected[0].flip(-1)
    expected[2] = expected[2].flip(-1)
    assert torch.equal(warped, expected)
    back, _ = t.inverse_maps(warped)
    assert torch.equal(back, maps)


def test_rotate90_rejects_mixed_non_square():
    with pytest.raises(ValueError):
        rotate90(torch.zeros(2, 1, 3, 4), torch.tensor([0, 1]))
