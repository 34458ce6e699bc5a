"""The labeling stage's decode cap: decode tasks never hold the CPUs the model actors wait for."""

from __future__ import annotations

from pipelines.config import LabelJobConfig
from pipelines.label_actors import decode_tasks


def _cfg(**kw: object) -> LabelJobConfig:
    return LabelJobConfig(images="/x", out="/y", **kw)  # type: ignore[arg-type]


def test_decode_tasks_leave_the_actors_their_cpus() -> None:
    # 2 CPUs, one actor of 1 CPU, decode at 0.5: two decode tasks, the actor starts at once
    assert decode_tasks(_cfg(num_actors=1, actor_cpus=1.0, decode_cpus=0.5), 2.0) == 2
    # the benchmark's layout: 2 actors x 0.75 leave 0.5 CPU, two tasks of 0.25
    assert decode_tasks(_cfg(num_actors=2, actor_cpus=0.75, decode_cpus=0.25), 2.0) == 2
    # a large cluster: many decode tasks
    assert decode_tasks(_cfg(num_actors=4, actor_cpus=1.0, decode_cpus=0.5), 64.0) == 120
    # GPU actors hold their CPU share too
    assert decode_tasks(_cfg(num_actors=2, actor_cpus=1.0, decode_cpus=1.0, use_gpu=True), 8.0) == 6


def test_no_cap_where_the_cluster_cannot_hold_actors_and_a_decode_task() -> None:
    # a head without CPUs (workers not joined yet) or a cluster smaller than the actors: Ray decides
    assert decode_tasks(_cfg(num_actors=1, actor_cpus=1.0, decode_cpus=0.5), 0.0) is None
    assert decode_tasks(_cfg(num_actors=2, actor_cpus=1.0, decode_cpus=0.5), 2.0) is None
