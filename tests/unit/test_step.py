import pytest
import torch

from coloc_core.config import ColocConfig, apply_overrides
from coloc_core.model import ColocOutput, build_model, normalize_images
from coloc_core.pretext import PretextTransform
from coloc_core.step import compute_loss, inference_step, lr_at_epoch, make_optimizer, set_lr, train_step


def _cfg(*overrides):
    return apply_overrides(ColocConfig(), ["model.backbone=tiny", "model.weights=none", *overrides])


@pytest.mark.parametrize("tasks", ["rotation", "rotation,translation", "scale,hflip", "pst", "vflip"])
def test_gradients_reach_every_trainable_parameter(tasks):
    torch.manual_seed(0)
    cfg = _cfg(f"pretext.tasks={tasks}")
    model = build_model(cfg)
    images = torch.randn(4, 3, 32, 32)
    loss, metrics = compute_loss(model, images, cfg, generator=torch.Generator().manual_seed(0))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert any(float(p.grad.abs().sum()) > 0 for n, p in model.named_parameters() if "ptap" in n)
    assert {"loss", "loss_cls", "loss_caml", "bg_fraction"} <= set(metrics)


def test_model_output_is_typed():
    cfg = _cfg("pretext.tasks=rotation,hflip")
    model = build_model(cfg)
    out = model(torch.randn(2, 3, 32, 32))
    assert isinstance(out, ColocOutput)
    assert out.attention.shape == (2, *out.features.shape[-2:])
    assert out.logits["rotation"].shape == (2, 4) and out.logits["hflip"].shape == (2, 2)


def test_ablation_switches_change_the_objective():
    torch.manual_seed(0)
    images = torch.randn(4, 3, 32, 32)
    t = PretextTransform.sample(("rotation",), 4, generator=torch.Generator().manual_seed(1))
    model = build_model(_cfg())
    full, m = compute_loss(model, images, _cfg(), transform=t)
    no_caml, _ = compute_loss(model, images, _cfg("loss.use_caml=false"), transform=t)
    no_cls, _ = compute_loss(model, images, _cfg("loss.use_cls=false"), transform=t)
    torch.testing.assert_close(no_caml, m["loss_cls"])
    torch.testing.assert_close(no_cls, m["loss_caml"])
    torch.testing.assert_close(full, m["loss_cls"] + m["loss_caml"])
    feats, _ = compute_loss(model, images, _cfg("loss.caml_on=features"), transform=t)
    assert torch.isfinite(feats)


def test_train_step_updates_parameters_and_stops_on_nan():
    torch.manual_seed(0)
    cfg = _cfg("optim.lr=0.1")
    model = build_model(cfg)
    opt = make_optimizer(model, cfg.optim)
    before = [p.detach().clone() for p in model.parameters()]
    metrics = train_step(model, torch.randn(4, 3, 32, 32), cfg, opt)
    assert all(isinstance(v, float) for v in metrics.values())
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    with pytest.raises(FloatingPointError, match="non-finite"):
        train_step(model, torch.full((4, 3, 32, 32), float("nan")), cfg, opt)


def test_training_reduces_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    cfg = _cfg("optim.lr=0.05")
    model = build_model(cfg)
    opt = make_optimizer(model, cfg.optim)
    images = torch.randn(8, 3, 32, 32)
    t = PretextTransform.sample(("rotation",), 8, generator=torch.Generator().manual_seed(0))
    first = train_step(model, images, cfg, opt, transform=t)["loss"]
    for _ in range(30):
        last = train_step(model, images, cfg, opt, transform=t)["loss"]
    assert last < first


def test_inference_step_and_normalize():
    cfg = _cfg()
    model = build_model(cfg)
    u8 = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    x = normalize_images(u8, model.mean, model.std)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    attn = inference_step(model, x)
    assert attn.dtype == torch.float32 and attn.ndim == 3 and not model.training
    with pytest.raises(ValueError):
        normalize_images(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), model.mean, model.std)


def test_lr_schedule_is_a_pure_function_of_epoch():
    cfg = ColocConfig().optim
    assert lr_at_epoch(0, cfg) == pytest.approx(1e-3)
    assert lr_at_epoch(59, cfg) == pytest.approx(1e-3)
    assert lr_at_epoch(60, cfg) == pytest.approx(2e-4)
    assert lr_at_epoch(79, cfg) == pytest.approx(2e-4)


def test_train_step_stops_on_a_non_finite_gradient_before_the_update():
    torch.manual_seed(0)
    cfg = _cfg("optim.lr=0.1")
    model = build_model(cfg)
    opt = make_optimizer(model, cfg.optim)
    name, param = next((n, p) for n, p in model.named_parameters() if "ptap" in n or "head" in n)
    param.register_hook(lambda grad: torch.full_like(grad, float("nan")))  # the loss itself stays finite
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(FloatingPointError, match=f"non-finite gradient in {name}"):
        train_step(model, torch.randn(4, 3, 32, 32), cfg, opt)
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_train_step_stops_when_the_update_makes_a_weight_non_finite():
    torch.manual_seed(0)
    cfg = _cfg("optim.lr=0.1")
    model = build_model(cfg)
    opt = make_optimizer(model, cfg.optim)
    _, param = next((n, p) for n, p in model.named_parameters() if "ptap" in n or "head" in n)
    param.register_hook(lambda grad: torch.full_like(grad, 10.0))  # a finite, ordinary gradient
    set_lr(opt, 3e38)  # finite in float32 too, but lr * 10 is not: the update overflows the weight
    with pytest.raises(FloatingPointError, match=r"non-finite weight in \S+ \(after the update, lr 3e\+38\)"):
        train_step(model, torch.randn(4, 3, 32, 32), cfg, opt)


def test_huge_but_finite_values_are_not_mistaken_for_non_finite_ones():
    from coloc_core.step import _check_finite

    model = build_model(_cfg())
    huge = [torch.full((1000,), 1e30), torch.ones(3)]  # their 2-norm overflows float32
    _check_finite(model, "weight", huge, "test")
    with pytest.raises(FloatingPointError, match=r"non-finite weight \(test\)"):
        _check_finite(model, "weight", [*huge, torch.tensor([1.0, float("inf")])], "test")
