"""pipelines/memory.py: the per-worker memory estimate of CAML training and the check against a node."""

from __future__ import annotations

import pytest

from coloc_core.config import apply_overrides
from pipelines import memory
from pipelines.config import TrainJobConfig

GIB = memory.GIB
# Saved for backward by EfficientNet-Lite0 at 224 (both views of one image): 204.3 MiB when
# bench/bench_train_memory.py measured the peaks below; 192.0 MiB (201,274,392 bytes) since Conv2dSame
# lets the convolution pad symmetric borders (no padded copy of the input is saved).
LITE0_SAVED = int(192.0 * 2**20)


def config(backbone: str = "tiny", batch: int = 16, crop: int = 64, resize: int = 72) -> TrainJobConfig:
    return apply_overrides(
        TrainJobConfig(method="caml"),
        {
            "model.backbone": backbone,
            "model.weights": None,
            "optim.batch_size": batch,
            "augment.crop": crop,
            "augment.resize": resize,
        },
    )


def test_saved_activations_grow_with_the_image_area_and_the_model() -> None:
    small = memory.saved_activation_bytes(config(crop=64, resize=72))
    large = memory.saved_activation_bytes(config(crop=128, resize=144))
    assert small > 0
    # Every saved map of a conv net scales with the pixels: 4× the area, about 4× the bytes.
    assert large / small == pytest.approx(4.0, rel=0.1)


def test_efficientnet_lite0_at_224_keeps_about_200_mib_per_image() -> None:
    saved = memory.saved_activation_bytes(config("efficientnet_lite0", crop=224, resize=256))
    assert saved == pytest.approx(LITE0_SAVED, rel=0.05)


def test_estimate_is_linear_in_the_per_worker_batch() -> None:
    saved = 10 * 2**20
    e8 = memory.estimate_worker_memory(config(batch=8), 1, saved_per_image=saved)
    e16 = memory.estimate_worker_memory(config(batch=16), 1, saved_per_image=saved)
    assert (e8.local_batch, e16.local_batch) == (8, 16)
    assert e16.peak - e8.peak == pytest.approx(8 * memory.ACTIVATION_FACTOR * saved, abs=1)
    assert e8.peak > memory.WORKER_BASE_BYTES + memory.PARAM_COPIES * e8.param_bytes
    # Two workers split the global batch: each holds half the images.
    two = memory.estimate_worker_memory(config(batch=16), 2, saved_per_image=saved)
    assert two.local_batch == 8 and two.peak == e8.peak
    # On GPU the activations are in GPU memory: the node's RAM holds the base and the parameters.
    gpu = memory.estimate_worker_memory(config(batch=16), 1, use_gpu=True, saved_per_image=saved)
    assert gpu.peak == memory.WORKER_BASE_BYTES + memory.PARAM_COPIES * gpu.param_bytes


# Peak RSS of the CAML step (EfficientNet-Lite0, 224 px, CPU) per batch, measured by
# bench/bench_train_memory.py (docs/BENCHMARKS.md).
MEASURED_PEAK_GIB = {8: 2.81, 16: 4.48, 32: 7.66}


def test_estimate_is_at_most_a_quarter_above_the_measured_peaks() -> None:
    lite0 = memory.estimate_worker_memory(
        config("efficientnet_lite0", 8, 224, 256), 1, saved_per_image=LITE0_SAVED
    )
    for batch, measured in MEASURED_PEAK_GIB.items():
        ratio = lite0.with_batch(batch).peak / (measured * GIB)
        assert 1.0 <= ratio <= 1.25, (batch, ratio)


def test_the_issue_configuration_does_not_fit_where_it_was_killed() -> None:
    # Issue 12 item 10: global batch 64, one CPU worker, EfficientNet-Lite0 at 224: the worker was killed
    # at 13.1 GB, still growing; batch 16 used 4.3 GB. A 12 GiB budget refuses the first, takes the second.
    at64 = memory.estimate_worker_memory(
        config("efficientnet_lite0", 64, 224, 256), 1, saved_per_image=LITE0_SAVED
    )
    at16 = at64.with_batch(16)
    assert at64.peak > 13.1e9 and at16.peak == pytest.approx(4.3e9, rel=0.25)
    with pytest.raises(memory.MemoryBudgetError, match=r"lower --optim.batch_size to (\d+) or less") as info:
        memory.check_fits(at64, workers_on_node=1, budget=12 * GIB, global_batch=64)
    suggested = int(str(info.value).split("--optim.batch_size to ")[1].split()[0])
    assert at64.with_batch(suggested).peak <= 12 * GIB < at64.with_batch(suggested + 1).peak
    memory.check_fits(at16, workers_on_node=1, budget=12 * GIB, global_batch=16)  # fits: no error


def test_check_counts_every_worker_on_the_node_and_scales_the_advice_to_the_global_batch() -> None:
    saved = 100 * 2**20
    estimate = memory.estimate_worker_memory(config(batch=32), 2, saved_per_image=saved)
    assert estimate.local_batch == 16
    budget = int(1.5 * estimate.peak)  # one worker fits, two do not
    memory.check_fits(estimate, workers_on_node=1, budget=budget, global_batch=32)
    with pytest.raises(memory.MemoryBudgetError, match=r"2 worker\(s\)") as info:
        memory.check_fits(estimate, workers_on_node=2, budget=budget, global_batch=32)
    suggested = int(str(info.value).split("--optim.batch_size to ")[1].split()[0])
    assert suggested % 2 == 0  # a global batch: per-worker batch × 2 workers
    assert (
        2 * estimate.with_batch(suggested // 2).peak
        <= budget
        < 2 * estimate.with_batch(suggested // 2 + 1).peak
    )


def test_nothing_fits_says_which_other_option_to_lower() -> None:
    estimate = memory.estimate_worker_memory(config(batch=8), 1, saved_per_image=2**20)
    with pytest.raises(memory.MemoryBudgetError, match="even a batch of 1 per worker does not fit"):
        memory.check_fits(estimate, workers_on_node=1, budget=memory.WORKER_BASE_BYTES // 2, global_batch=8)


def test_threshold_and_node_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_memory_usage_threshold", raising=False)
    assert memory.memory_threshold() == memory.DEFAULT_MEMORY_THRESHOLD == 0.95
    monkeypatch.setenv("RAY_memory_usage_threshold", "0.5")
    assert memory.memory_threshold() == 0.5
    total, available = memory._meminfo()
    assert 0 < available <= total
    assert memory.local_node_budget() <= total * 0.5
    assert memory.local_node_budget(threshold=0.0) == 0
    for bad in ("nan-ish", "0", "1.5"):
        monkeypatch.setenv("RAY_memory_usage_threshold", bad)
        assert memory.memory_threshold() == 0.95
    assert memory.workers_per_node(5, 2) == 3 and memory.workers_per_node(2, 0) == 2
