"""The labeling stage's actors: their number (sized to the cluster by default) and the decode cap."""

from __future__ import annotations

import pytest

from pipelines.config import LabelJobConfig, check_label_config
from pipelines.label_actors import actor_count, actor_memory_bytes, decode_tasks


def _cfg(**kw: object) -> LabelJobConfig:
    return LabelJobConfig(images="/x", out="/y", **kw)  # type: ignore[arg-type]


def test_decode_tasks_leave_the_actors_their_cpus() -> None:
    # 2 CPUs, one actor of 1 CPU, decode at 0.5: two decode tasks, the actor starts at once
    assert decode_tasks(_cfg(num_actors=1, actor_cpus=1.0, decode_cpus=0.5), 2.0) == 2
    # the benchmark's layout: 2 actors x 0.75 leave 0.5 CPU, two tasks of 0.25
    assert decode_tasks(_cfg(num_actors=2, actor_cpus=0.75, decode_cpus=0.25), 2.0) == 2
    # a large cluster: many decode tasks
    assert decode_tasks(_cfg(num_actors=4, actor_cpus=1.0, decode_cpus=0.5), 64.0) == 120
    # a fit pass outside run_labeling (num_actors 0, unsized) leaves one share to its work tasks
    assert decode_tasks(_cfg(num_actors=0, actor_cpus=1.0, decode_cpus=0.5), 2.0) == 2
    # GPU actors hold their CPU share too
    assert decode_tasks(_cfg(num_actors=2, actor_cpus=1.0, decode_cpus=1.0, use_gpu=True), 8.0) == 6


def test_no_cap_where_the_cluster_cannot_hold_actors_and_a_decode_task() -> None:
    # a head without CPUs (workers not joined yet) or a cluster smaller than the actors: Ray decides
    assert decode_tasks(_cfg(num_actors=1, actor_cpus=1.0, decode_cpus=0.5), 0.0) is None
    assert decode_tasks(_cfg(num_actors=2, actor_cpus=1.0, decode_cpus=0.5), 2.0) is None


def test_num_actors_zero_sizes_the_pool_to_the_cluster() -> None:
    auto = {"actor_cpus": 1.0, "decode_cpus": 0.5}
    # a 2-core machine: one actor, the rest decodes (what num_actors=1 gave before)
    assert actor_count(_cfg(**auto), {"CPU": 2.0}) == 1
    # a 16-core node: 2 CPUs (1/8) for decoding, one single-thread actor per remaining core
    assert actor_count(_cfg(**auto), {"CPU": 16.0}) == 14
    # actors of 2 threads each take 2 cores; a fractional share still runs one torch thread
    assert actor_count(_cfg(actor_cpus=2.0, decode_cpus=0.5), {"CPU": 16.0}) == 7
    assert actor_count(_cfg(actor_cpus=0.5, decode_cpus=0.5), {"CPU": 2.0}) == 1
    # GPUs: one actor per GPU, whatever the CPUs
    assert actor_count(_cfg(use_gpu=True, **auto), {"CPU": 64.0, "GPU": 4.0}) == 4
    # a cluster whose workers have not joined (no CPU or GPU yet): one actor, placed when they do
    assert actor_count(_cfg(**auto), {}) == 1
    assert actor_count(_cfg(use_gpu=True, **auto), {"CPU": 8.0}) == 1
    # memory caps the CPU count: at batch 32 and 480 px an actor plans 0.8 GB + 240 B x 32 x 480² ≈ 2.57 GB
    big = dict(batch_size=32, **auto)
    assert actor_memory_bytes(_cfg(**big)) == pytest.approx(0.8e9 + 240 * 32 * 480 * 480)
    assert actor_count(_cfg(**big), {"CPU": 16.0, "memory": 16e9}) == 4  # 0.8 x 16 GB / 2.57 GB
    assert actor_count(_cfg(**big), {"CPU": 16.0, "memory": 128e9}) == 14  # the CPUs bind first
    assert actor_count(_cfg(**auto), {"CPU": 16.0, "memory": 16e9}) == 10  # batch 8 (default): 1.24 GB
    assert actor_count(_cfg(batch_size=8, image_size=224, **auto), {"CPU": 16.0, "memory": 16e9}) == 14
    assert actor_count(_cfg(**auto), {"CPU": 16.0, "memory": 1e9}) == 1  # never fewer than one
    assert actor_count(_cfg(use_gpu=True, **auto), {"GPU": 4.0, "memory": 1e9}) == 4  # host memory: CPU only
    # a number given is kept
    assert actor_count(_cfg(num_actors=3, **auto), {"CPU": 64.0}) == 3
    # the auto count leaves the decode tasks their CPUs (decode_tasks' cap)
    cfg = _cfg(num_actors=actor_count(_cfg(**auto), {"CPU": 16.0}), **auto)
    assert decode_tasks(cfg, 16.0) == 4


def test_a_negative_num_actors_is_refused() -> None:
    with pytest.raises(ValueError, match="num_actors"):
        check_label_config(_cfg(num_actors=-1))
    assert check_label_config(_cfg()).num_actors == 0  # the default: sized to the cluster


def test_a_model_with_box_contents_boxes_in_its_actor_and_its_plan_says_so(tmp_path) -> None:
    # The content term crops each box from the decoded image, which only the actor holds: such a
    # model's plan asks for boxes in the actor on every device, and an actor told otherwise refuses.
    import io

    import numpy as np
    import torch

    from coloc_core.box_content import box_content_statistics
    from coloc_core.localizer import baseline_payload
    from pipelines.label_actors import LocalizeBatch
    from pipelines.label_plan import _model_plan

    torch.manual_seed(0)
    plain = baseline_payload("caam", backbone="tiny", weights=None)
    payload = {**plain, "box_contents": box_content_statistics(np.random.default_rng(0).random((5, 32)))}
    buf = io.BytesIO()
    torch.save(payload, buf)
    model = tmp_path / "content.pt"
    model.write_bytes(buf.getvalue())
    kw = {"model_uri": str(model), "threshold": 0.2, "model_id": payload["model_id"]}
    with pytest.raises(ValueError, match="postprocess"):
        LocalizeBatch(**kw, postprocess=False)
    assert LocalizeBatch(**kw).content is not None
    import pyarrow as pa

    inputs = pa.table({"path": pa.array([], pa.string())})
    cfg = _cfg(rows_per_file=10)
    assert _model_plan(payload, inputs, str(model), 0.2, cfg, {}).content
    assert not _model_plan(plain, inputs, str(model), 0.2, cfg, {}).content
