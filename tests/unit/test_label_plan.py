"""The labeling stage's plan without Ray: shards of the input list, and a rerun's new images appended as a
new segment that keeps every old shard (``pipelines.label_plan``, ``pipelines.label_inputs``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipelines.config import LabelJobConfig
from pipelines.label_inputs import INPUT_SCHEMA, list_inputs, read_inputs, write_inputs
from pipelines.label_plan import LabelPlan, _extend_plan
from pipelines.predictions import PredictionsFolder

MODEL_ID = "m-test"


def _inputs(n: int) -> pa.Table:
    paths = [f"/photos/{i:03d}.jpg" for i in range(n)]
    return pa.table({"path": paths, "width": [None] * n, "height": [None] * n}, schema=INPUT_SCHEMA)


def _plan(inputs: pa.Table, rows_per_file: int, segments: list[int] | None = None, **manifest) -> LabelPlan:
    return LabelPlan(
        inputs, "model.pt", MODEL_ID, 0.2, rows_per_file, dict(manifest), segments, image_size=224
    )


def test_a_plan_cuts_the_inputs_into_shards_of_rows_per_file():
    plan = _plan(_inputs(11), 4)
    assert plan.num_images == 11 and plan.segments == [11]
    assert plan.num_shards == 3
    assert [plan.shard_size(s) for s in range(3)] == [4, 4, 3]
    assert plan.shard_rows(2).tolist() == [8, 9, 10]
    assert plan.shard_of(np.array([0, 3, 4, 7, 8, 10])).tolist() == [0, 0, 1, 1, 2, 2]
    assert _plan(_inputs(8), 4).num_shards == 2  # no empty last shard
    assert _plan(_inputs(1), 4).num_shards == 1


def test_each_segment_starts_a_new_shard():
    plan = _plan(_inputs(11), 4, segments=[6, 5])  # 6 → 4 + 2, then 5 → 4 + 1
    assert plan.num_shards == 4
    assert [plan.shard_size(s) for s in range(4)] == [4, 2, 4, 1]
    assert plan.shard_rows(1).tolist() == [4, 5]
    assert plan.shard_of(np.array([5, 6, 10])).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="do not add up"):
        _plan(_inputs(11), 4, segments=[5, 5])


def _touch(folder: Path, names: list[str]) -> None:
    for name in names:
        (folder / name).write_bytes(b"not decoded by the listing")


def _folder_plan(tmp_path: Path) -> tuple[LabelJobConfig, LabelPlan]:
    images = tmp_path / "images"
    images.mkdir()
    _touch(images, [f"a{i}.jpg" for i in range(6)])
    out = tmp_path / "labels"
    out.mkdir()
    cfg = LabelJobConfig(method="caam", images=str(images), out=str(out), rows_per_file=4)
    inputs = list_inputs(cfg)
    assert [Path(p).name for p in inputs.column("path").to_pylist()] == [f"a{i}.jpg" for i in range(6)]
    write_inputs(cfg.out, inputs)
    return cfg, _plan(inputs, 4, num_images=6)


def test_new_images_on_a_rerun_become_new_shards_and_keep_the_old_ones(tmp_path):
    cfg, plan = _folder_plan(tmp_path)
    assert plan.num_shards == 2
    old = {s: plan.inputs.take(pa.array(plan.shard_rows(s))).column("path").to_pylist() for s in range(2)}
    _touch(Path(cfg.images), ["z1.jpg", "a2b.jpg", "z0.jpg"])  # a2b sorts among the old ones

    extended = _extend_plan(cfg, plan)

    assert extended.images_added == 3 and extended.segments == [6, 3] and extended.missing == []
    assert extended.num_shards == 3
    for shard, paths in old.items():  # the old shards hold the very same images
        assert extended.inputs.take(pa.array(extended.shard_rows(shard))).column("path").to_pylist() == paths
    new = extended.inputs.take(pa.array(extended.shard_rows(2))).column("path").to_pylist()
    assert [Path(p).name for p in new] == ["a2b.jpg", "z0.jpg", "z1.jpg"]  # the new segment, sorted
    # Committed: the inputs file, then the manifest with the new segment.
    assert read_inputs(cfg.out).equals(extended.inputs)
    manifest = PredictionsFolder(cfg.out).read_manifest()
    assert manifest["num_images"] == 9 and manifest["num_shards"] == 3
    assert [(s["images"], s["first_shard"]) for s in manifest["segments"]] == [(6, 0), (3, 2)]

    # Listing again with nothing new changes nothing.
    assert _extend_plan(cfg, extended) is extended
    assert extended.num_shards == 3


def test_images_no_longer_listed_are_reported_and_keep_their_shard(tmp_path):
    cfg, plan = _folder_plan(tmp_path)
    (Path(cfg.images) / "a3.jpg").unlink()
    again = _extend_plan(cfg, plan)
    assert again is plan and again.num_shards == 2 and again.images_added == 0
    assert [Path(p).name for p in again.missing] == ["a3.jpg"]
    assert not PredictionsFolder(cfg.out).has_manifest()  # nothing new: nothing committed


def test_new_images_while_none_of_the_old_is_listed_are_refused(tmp_path):
    cfg, plan = _folder_plan(tmp_path)
    for i in range(6):
        (Path(cfg.images) / f"a{i}.jpg").unlink()
    _touch(Path(cfg.images), ["b0.jpg"])
    with pytest.raises(ValueError, match="none of its 6 labelled images"):
        _extend_plan(cfg, plan)
    assert read_inputs(cfg.out).num_rows == 6  # the frozen list is untouched


def test_a_model_file_labeling_cannot_use_is_bad_input_naming_it(tmp_path):
    import torch

    from coloc_core.checkpoint import save_model_file
    from coloc_core.errors import InvalidInputError
    from coloc_core.localizer import baseline_payload
    from pipelines.label_plan import read_model

    good = baseline_payload(
        "ddt", backbone="tiny", weights=None, ddt_mean=torch.zeros(32), ddt_vector=torch.ones(32) / 32**0.5
    )
    broken = {
        "kind": ({**good, "kind": "nope"}, "unknown model kind 'nope'"),
        "contents": ({**good, "box_contents": {"mean": [1.0]}}, "box_contents are malformed"),
        "tau": ({k: v for k, v in good.items() if k != "threshold"}, "no usable 'threshold'"),
        "id": ({k: v for k, v in good.items() if k != "model_id"}, "no usable 'model_id'"),
        "tau2": ({**good, "threshold": "high"}, "no usable 'threshold'"),
    }
    path = tmp_path / "good.pt"
    with open(path, "wb") as fh:
        save_model_file(fh, good)
    assert read_model(str(path))["model_id"] == good["model_id"]
    for name, (payload, message) in broken.items():
        path = tmp_path / f"{name}.pt"
        with open(path, "wb") as fh:
            save_model_file(fh, payload)
        with pytest.raises(InvalidInputError, match=f"{path}: .*{message}"):
            read_model(str(path))
