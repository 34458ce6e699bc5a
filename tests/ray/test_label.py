"""Labeling to Parquet (local and loopback S3): schema, values, exactly-once resume, bad inputs, DDT."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coloc_core.boxes import iou_matrix
from coloc_core.errors import InvalidInputError
from coloc_core.synthetic import generate_cub_layout
from pipelines import schema, storage
from pipelines.config import LabelJobConfig
from pipelines.label import run_labeling
from pipelines.label_inputs import read_inputs
from pipelines.predictions import MANIFEST, SUCCESS, decode_heatmap_row, part_files
from tests.ray import labeling_data as data

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]

FAST: dict[str, Any] = dict(batch_size=8, num_actors=1, actor_cpus=0.5, decode_cpus=0.25)


def _read_parts(out: str) -> pa.Table:
    tables = [data.read_table_bytes(storage.read_bytes(uri)) for uri in part_files(out)]
    for table in tables:
        assert table.schema.equals(schema.PREDICTIONS_SCHEMA), table.schema
    return pa.concat_tables(tables)


def _etags(s3_server, prefix: str) -> dict[str, str]:
    return {
        key: s3_server.client.head_object(Bucket=s3_server.bucket, Key=key)["ETag"]
        for key in s3_server.keys(prefix)
        if key.rsplit("/", 1)[-1].startswith("part-")
    }


@pytest.fixture(scope="module")
def cub_on_s3(tmp_path_factory, s3_server):
    root = tmp_path_factory.mktemp("cub")
    local = generate_cub_layout(str(root), num_images=20, seed=3, size_range=(64, 160))
    prefix = s3_server.unique_prefix("cub")
    images = s3_server.upload_dir(root, prefix)
    model = s3_server.put(f"{prefix}-models/tiny.pt", data.save_payload(data.tiny_colocnet_payload(seed=0)))
    # The same records as listed on S3.
    records = [
        dataclasses.replace(r, path=storage.join(images, storage.relative_path(r.path, str(root))))
        for r in local
    ]
    return images, model, records


def test_label_collection_on_s3_to_parquet_on_s3(ray_cluster, s3_server, cub_on_s3):
    images, model, records = cub_on_s3
    out = s3_server.uri(s3_server.unique_prefix("pred"))
    cfg = LabelJobConfig(
        model=model, images=images, format="cub", split="all", out=out, rows_per_file=8, **FAST
    )
    summary = run_labeling(cfg)
    assert (summary.images, summary.errors, summary.shards, summary.shards_written) == (20, 0, 3, 3)
    assert summary.images_per_s > 0

    # Bounded files: ceil(20 / 8) part files, never one per image.
    assert [uri.rsplit("/", 1)[-1] for uri in part_files(out)] == [f"part-0000{i}.parquet" for i in range(3)]
    table = _read_parts(out)
    rows = table.to_pylist()
    assert sorted(r["path"] for r in rows) == sorted(r.path for r in records)
    assert len({r["path"] for r in rows}) == 20
    sizes = {r.path: (r.width, r.height) for r in records}
    payload_id = data.tiny_colocnet_payload(seed=0)["model_id"]
    for row in rows:
        assert row["error"] is None
        assert (row["width"], row["height"]) == sizes[row["path"]]
        assert 0 <= row["x0"] <= row["x1"] <= row["width"] - 1
        assert 0 <= row["y0"] <= row["y1"] <= row["height"] - 1
        assert -1.0 <= row["score"] <= 1.0
        assert row["threshold"] == pytest.approx(0.2)
        assert row["model"] == payload_id
        heat = decode_heatmap_row(row)
        assert heat.dtype == np.uint8 and heat.shape == (56, 56)  # tiny backbone: stride 4 at 224
        assert heat.min() == 0 and heat.max() == 255  # min-max normalised before quantising
    manifest = json.loads(storage.read_text(storage.join(out, MANIFEST)))
    assert manifest["num_images"] == 20 and manifest["model_id"] == payload_id
    assert json.loads(storage.read_text(storage.join(out, SUCCESS)))["images"] == 20

    # A second run finds everything done: nothing is rewritten (same ETags).
    before = _etags(s3_server, out.split("/", 3)[3])
    again = run_labeling(cfg)
    assert (again.images, again.shards_written, again.images_labelled) == (20, 0, 0)
    assert _etags(s3_server, out.split("/", 3)[3]) == before

    # Another model, τ or file size on the same output is a clear error, before any labeling.
    other = s3_server.put(
        f"{out.split('/', 3)[3]}-other.pt", data.save_payload(data.tiny_colocnet_payload(seed=1))
    )
    with pytest.raises(InvalidInputError, match="model id.*new output folder"):
        run_labeling(dataclasses.replace(cfg, model=other))
    with pytest.raises(InvalidInputError, match="threshold"):
        run_labeling(dataclasses.replace(cfg, threshold=0.5))
    with pytest.raises(InvalidInputError, match="rows_per_file"):
        run_labeling(dataclasses.replace(cfg, rows_per_file=5))


class _Crash(RuntimeError):
    pass


def test_a_caml_model_labels_at_its_own_size_with_its_content_term(ray_cluster, tmp_path, cub_on_s3):
    import torch

    from coloc_core.box_content import ContentScorer, box_content_statistics
    from coloc_core.checkpoint import model_payload
    from coloc_core.config import ColocConfig, apply_overrides
    from coloc_core.decode import decode_image
    from coloc_core.localizer import payload_input_size
    from coloc_core.model import build_model
    from coloc_core.predict import locate
    from pipelines.predictions import decode_heatmap

    images, _, _ = cub_on_s3
    torch.manual_seed(0)
    cfg = apply_overrides(ColocConfig(), ["model.backbone=tiny", "model.weights=none", "augment.crop=96"])
    net = build_model(cfg).eval()
    payload = model_payload(net, cfg)
    assert payload_input_size(payload) == 96 and payload_input_size(data.brightness_payload()) == 224
    # A CAML model stores its typical box content as `coloc train` measures it: here from the halves
    # of the first four images, so that the stored scores must hold the term of the trained backbone,
    # and a box's halves can look more typical than the box (the halves count).
    scorer = ContentScorer.from_payload(payload, need_contents=False)
    assert scorer is not None
    firsts = sorted(r.path for r in cub_on_s3[2])[:4]
    pixels4 = np.stack([decode_image(storage.read_bytes(p), 96)[0] for p in firsts])
    halves = [np.array([[0.0, 0.0, 111.0, 223.0], [112.0, 0.0, 223.0, 223.0], [0.0, 0.0, 223.0, 223.0]])] * 4
    payload["box_contents"] = box_content_statistics(np.concatenate(scorer.descriptors(pixels4, halves)))
    model = tmp_path / "crop96.pt"
    model.write_bytes(data.save_payload(payload))
    out = str(tmp_path / "crop96")
    summary = run_labeling(
        LabelJobConfig(model=str(model), images=images, format="cub", split="all", out=out, limit=4, **FAST)
    )
    assert (summary.images, summary.errors) == (4, 0)
    with torch.no_grad():
        expected = tuple(net(torch.zeros(1, 3, 96, 96)).attention.shape[1:])
        at_224 = tuple(net(torch.zeros(1, 3, 224, 224)).attention.shape[1:])
    assert expected != at_224
    table = pq.read_table(out)
    sizes = zip(table.column("heatmap_h").to_pylist(), table.column("heatmap_w").to_pylist(), strict=True)
    assert set(sizes) == {expected}
    scorer = ContentScorer.from_payload(payload)
    whole = ContentScorer.from_payload(
        {**payload, "box_contents": {**payload["box_contents"], "halves": False}}
    )

    def scores(table: pa.Table, scorer: ContentScorer | None) -> list[float]:
        """What locate scores each row with ``scorer``'s content term (the image's aspect given)."""
        out = []
        for row in table.to_pylist():
            heat = decode_heatmap(row["heatmap"], row["heatmap_h"], row["heatmap_w"])
            assert heat is not None
            pixels, _, _ = decode_image(storage.read_bytes(row["path"]), 96)
            wh = (row["width"], row["height"])
            term = None
            if scorer is not None:
                term = lambda boxes, p=pixels, a=wh[0] / wh[1]: scorer.terms(p[None], [boxes], [a])[0]  # noqa: E731
            out.append(locate(heat, row["threshold"], wh, content=term).score)
        return out

    stored = table.column("score").to_pylist()
    widths, heights = table.column("width").to_pylist(), table.column("height").to_pylist()
    assert any(w != h for w, h in zip(widths, heights, strict=True))  # the aspect decides the halves
    assert stored == pytest.approx(scores(table, scorer), abs=1e-5)  # the box's halves in the term
    assert stored != pytest.approx(scores(table, whole), abs=1e-4)
    assert stored != pytest.approx(scores(table, None), abs=1e-4)
    # A folder labelled before the halves (no `content_halves` in its manifest) resumes without them.
    manifest = json.loads(storage.read_text(storage.join(out, MANIFEST)))
    assert manifest["content_halves"] is True
    old = str(tmp_path / "crop96-old")
    shutil.copytree(out, old)
    manifest.pop("content_halves")
    storage.write_text_atomic(storage.join(old, MANIFEST), json.dumps(manifest))
    for uri in [*part_files(old), storage.join(old, SUCCESS)]:
        os.remove(uri)
    cfg = LabelJobConfig(model=str(model), images=images, format="cub", split="all", out=old, limit=4, **FAST)
    assert run_labeling(cfg).images_labelled == 4
    resumed = pq.read_table(old)
    assert resumed.column("path").to_pylist() == table.column("path").to_pylist()
    assert resumed.column("score").to_pylist() == pytest.approx(scores(resumed, whole), abs=1e-5)
    # --halves=off: one crop per box, recorded; a folder started with the halves refuses it.
    off = str(tmp_path / "crop96-off")
    assert run_labeling(dataclasses.replace(cfg, out=off, halves="off")).images_labelled == 4
    assert json.loads(storage.read_text(storage.join(off, MANIFEST)))["content_halves"] is False
    unhalved = pq.read_table(off)
    assert unhalved.column("score").to_pylist() == pytest.approx(scores(unhalved, whole), abs=1e-5)
    with pytest.raises(InvalidInputError, match=r"halves='auto', this run has halves='off'.*--halves=auto"):
        run_labeling(dataclasses.replace(cfg, out=out, halves="off"))


def test_interrupted_run_resumes_exactly_once(ray_cluster, tmp_path, cub_on_s3):
    images, model, records = cub_on_s3
    out = str(tmp_path / "pred")
    cfg = LabelJobConfig(
        model=model, images=images, format="cub", split="all", out=out, rows_per_file=6, **FAST
    )

    def crash_after_first(shard: int) -> None:
        raise _Crash(f"simulated crash after shard {shard}")

    with pytest.raises(_Crash):
        run_labeling(cfg, on_shard_written=crash_after_first)
    parts = sorted(p for p in os.listdir(out) if p.startswith("part-"))
    # The hook runs right after each part file, before the next: however the streamed blocks come
    # (one batch can complete several shards when they come out of order), the crash leaves one.
    assert len(parts) == 1 and not os.path.exists(os.path.join(out, SUCCESS)), parts
    sizes = {f"part-{i:05d}.parquet": n for i, n in enumerate((6, 6, 6, 2))}
    first = os.path.join(out, parts[0])
    first_stat = os.stat(first)
    first_bytes = open(first, "rb").read()
    # Damage left by a harder crash: a temp file of an unfinished atomic write and a torn part file.
    missing = sorted({f"part-{i:05d}.parquet" for i in range(4)} - set(parts))
    with open(os.path.join(out, f".{missing[0]}.k2j3h4.tmp"), "wb") as fh:
        fh.write(first_bytes[:100])
    with open(os.path.join(out, missing[1]), "wb") as fh:
        fh.write(first_bytes[: len(first_bytes) // 2])

    summary = run_labeling(cfg)
    assert summary.images == 20 and summary.shards == 4 and summary.shards_written == 4 - len(parts)
    assert summary.images_labelled == 20 - sum(sizes[p] for p in parts)
    assert sorted(os.listdir(out)) == sorted(
        ["_SUCCESS", "_inputs.arrow", "_manifest.json"] + [f"part-{i:05d}.parquet" for i in range(4)]
    )
    # The finished shard was not rewritten.
    assert os.stat(first).st_mtime_ns == first_stat.st_mtime_ns and open(first, "rb").read() == first_bytes
    # Exactly one row per input image; any Parquet reader sees the folder as one table.
    table = pq.read_table(out)
    paths = table.column("path").to_pylist()
    assert len(paths) == len(set(paths)) == 20
    assert set(paths) == {r.path for r in records}


def test_every_bad_input_gets_a_row_and_the_job_finishes(ray_cluster, tmp_path):
    root = str(tmp_path / "bad")
    expected = data.bad_collection(root)
    model = str(tmp_path / "bright.pt")
    with open(model, "wb") as fh:
        fh.write(data.save_payload(data.brightness_payload()))
    out = str(tmp_path / "pred")
    cfg = LabelJobConfig(model=model, images=root, format="boxes_csv", out=out, rows_per_file=5, **FAST)
    summary = run_labeling(cfg)
    assert summary.images == len(expected)
    rows = {os.path.relpath(r["path"], root): r for r in _read_parts(out).to_pylist()}
    assert set(rows) == {e.rel for e in expected}
    assert summary.errors == sum(e.error for e in expected)
    kinds = [e.kind for e in expected if e.error]
    assert summary.errors_by_kind == {kind: kinds.count(kind) for kind in sorted(set(kinds))}
    assert set(kinds) == {"decode", "too_large", "unsupported", "missing"}
    assert (
        json.loads(storage.read_text(storage.join(out, SUCCESS)))["errors_by_kind"] == summary.errors_by_kind
    )
    for exp in expected:
        row = rows[exp.rel]
        if exp.error:
            assert row["error"] and exp.rel in row["error"], (exp.rel, row["error"])
            assert row["error_kind"] == exp.kind, (exp.rel, row["error_kind"], row["error"])
            assert all(row[c] is None for c in (*schema.BOX_COLUMNS, "score", "heatmap", "heatmap_h"))
            assert row["model"] and row["threshold"] == pytest.approx(0.2)
            continue
        assert row["error"] is None and row["error_kind"] is None, (exp.rel, row["error"])
        assert (row["width"], row["height"]) == exp.size, exp.rel
        box = [row[c] for c in schema.BOX_COLUMNS]
        assert 0 <= box[0] <= box[2] <= exp.size[0] - 1 and 0 <= box[1] <= box[3] <= exp.size[1] - 1
        if exp.box is not None:  # the brightness localizer finds the square, in displayed orientation
            iou = iou_matrix(np.array(box), np.array(exp.box, dtype=np.float64))[0, 0]
            assert iou > 0.6, (exp.rel, box, exp.box, iou)
    reasons = {e.rel: rows[e.rel]["error"] for e in expected if e.error}
    assert "empty" in reasons["img/zero_bytes.jpg"]
    assert "FileNotFoundError" in reasons["img/missing.jpg"]
    assert "decompression bomb" in reasons["img/bomb.png"]
    assert "declares 30000x30000" in reasons["img/declared_30000.jpg"]
    assert "truncated" in reasons["img/cut_with_eoi.jpg"]
    assert not any(" at 0x" in reason for reason in reasons.values()), reasons  # the same text every run
    # pandas on the folder: integer columns stay integer although files hold error rows (no float64
    # heatmap_h), so the README's one-liner works on every good row.
    import pandas as pd

    df = pd.read_parquet(out)
    assert len(df) == len(expected)
    assert all(pd.api.types.is_integer_dtype(df[name].dtype) for name in schema.INTEGER_COLUMNS), df.dtypes
    for row in df[df.error.isna()].itertuples():
        heatmap = np.frombuffer(row.heatmap, np.uint8).reshape(row.heatmap_h, row.heatmap_w)
        assert heatmap.shape == (row.heatmap_h, row.heatmap_w)


def test_training_free_ddt_baseline(ray_cluster, tmp_path, cub_on_s3):
    images, _, _ = cub_on_s3
    out = str(tmp_path / "ddt")
    cfg = LabelJobConfig(
        method="ddt",
        backbone="tiny",
        images=images,
        format="cub",
        split="all",
        out=out,
        rows_per_file=10,
        **FAST,
    )
    summary = run_labeling(cfg)
    assert (summary.images, summary.errors, summary.shards) == (20, 0, 2)
    # The fitted model is frozen in the output: every row names it, and a resumed run reuses it.
    model = storage.read_bytes(os.path.join(out, "_model.pt"))
    from coloc_core.checkpoint import read_model_payload

    payload = read_model_payload(model)
    assert payload["kind"] == "ddt" and payload["meta"]["fit_images"] == 20
    assert payload["threshold"] == pytest.approx(0.1)  # the DDT default τ (no --threshold given)
    assert payload["config"]["feature_layer"] == "output"  # auto: tiny has no pre_head layer
    # The fit measured the typical box of the collection (every image, at τ) and stored it.
    sizes = payload["box_sizes"]
    assert sizes["images"] == 20 and sizes["median"] <= 0.0 and sizes["spread"] >= 0.05
    # ... how much of those boxes' maps usually repeats (the repetition term's collection value) ...
    assert 0.0 <= sizes["repeats"] <= 1.0
    # ... and the typical content of those boxes: the mean descriptor of their crops (tiny: 32 channels).
    contents = payload["box_contents"]
    assert contents["images"] == 20 and len(contents["mean"]) == 32 and contents["cos_spread"] > 0
    table = pq.read_table(out)
    assert all(t == pytest.approx(0.1) for t in table.column("threshold").to_pylist())
    assert all(-4.0 <= s <= 3.0 for s in table.column("score").to_pylist())  # box_score's range
    # Each score is the labeling stage's box score with the stored box sizes, the content term of
    # the box's crop from the decoded image and the repetition term on the model's features (the
    # Python API's too).
    import torch

    from coloc_core.box_content import ContentScorer
    from coloc_core.decode import decode_image
    from coloc_core.localizer import localizer_from_payload, payload_input_size
    from coloc_core.predict import inference_layout, locate, maps_and_features
    from pipelines.predictions import decode_heatmap

    localizer = inference_layout(localizer_from_payload(payload), torch.device("cpu"))

    scorer = ContentScorer.from_payload(payload)
    assert scorer is not None
    terms = []
    for row in table.slice(0, 3).to_pylist():
        heat = decode_heatmap(row["heatmap"], row["heatmap_h"], row["heatmap_w"])
        pixels, _, _ = decode_image(storage.read_bytes(row["path"]), payload_input_size(payload))
        _, feats = maps_and_features(localizer, pixels[None].copy())
        assert feats is not None
        loc = locate(
            heat,
            row["threshold"],
            (row["width"], row["height"]),
            box_sizes=sizes,
            content=lambda boxes, pixels=pixels, aspect=row["width"] / row["height"]: scorer.terms(
                pixels[None], [boxes], [aspect]
            )[0],
            features=feats[0],
        )
        assert row["score"] == pytest.approx(loc.score, abs=1e-5)
        size = (row["width"], row["height"])
        bare = locate(heat, row["threshold"], size, box_sizes=sizes, features=feats[0])
        terms.append(loc.score - bare.score)
    assert any(abs(t) > 1e-4 for t in terms)  # the content term is part of the stored scores
    assert set(table.column("model").to_pylist()) == {payload["model_id"]}
    assert run_labeling(cfg).shards_written == 0
    with pytest.raises(InvalidInputError, match="method"):
        run_labeling(dataclasses.replace(cfg, method="caam"))


def test_training_free_rps_labeler(ray_cluster, tmp_path, cub_on_s3):
    images, _, _ = cub_on_s3
    out = str(tmp_path / "rps")
    cfg = LabelJobConfig(
        method="rps", backbone="tiny", images=images, format="cub", split="all", out=out, **FAST
    )
    summary = run_labeling(cfg)
    assert (summary.images, summary.errors) == (20, 0)
    from coloc_core.checkpoint import read_model_payload

    payload = read_model_payload(storage.read_bytes(os.path.join(out, "_model.pt")))
    assert payload["kind"] == "rps" and payload["threshold"] == pytest.approx(0.2)
    vector = payload["state_dict"]["rps_vector"]
    assert vector.shape == (32,) and float(vector.norm()) == pytest.approx(1.0, abs=1e-5)
    table = pq.read_table(out)
    assert table.num_rows == 20 and table.column("error").null_count == 20
    # A layer the backbone does not have is refused before any image is labelled.
    with pytest.raises(ValueError, match="feature_layer"):
        run_labeling(dataclasses.replace(cfg, out=str(tmp_path / "bad"), feature_layer="conv9"))
    # A --model that is not a model file (here the labels' own listing) is bad input, named by its path.
    listing = os.path.join(out, "_inputs.arrow")
    bad = dataclasses.replace(cfg, method="model", model=listing, out=str(tmp_path / "bad2"))
    with pytest.raises(InvalidInputError, match=f"{listing} is not a coloc model file"):
        run_labeling(bad)


def test_self_trained_labeler_fits_its_head_on_the_collection(ray_cluster, tmp_path, cub_on_s3):
    images, _, _ = cub_on_s3
    out = str(tmp_path / "selftrain")
    cfg = LabelJobConfig(
        method="selftrain", backbone="tiny", images=images, format="cub", split="all", out=out, **FAST
    )
    summary = run_labeling(cfg)
    assert (summary.images, summary.errors) == (20, 0)
    from coloc_core.checkpoint import read_model_payload

    payload = read_model_payload(storage.read_bytes(os.path.join(out, "_model.pt")))
    assert payload["kind"] == "selftrain" and payload["threshold"] == pytest.approx(0.25)
    rounds = payload["meta"]["selftrain_rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert all(r["foreground"] > 0 and r["background"] > 0 for r in rounds)
    # The default head: linear rounds, then a quadratic last round (its linear term is not a unit vector).
    weight, square = payload["state_dict"]["head_weight"], payload["state_dict"]["head_quadratic"]
    assert weight.shape == (32,) and square.shape == (32, 32) and bool(square.isfinite().all())
    assert float((square - square.T).abs().max()) <= 1e-6 * float(square.abs().max())
    table = pq.read_table(out)
    assert table.num_rows == 20 and table.column("error").null_count == 20
    assert set(table.column("model").to_pylist()) == {payload["model_id"]}
    assert run_labeling(cfg).shards_written == 0  # the rerun reuses the fitted head
    from coloc_core.localizer import DEFAULT_FIT_SIZE, DEFAULT_INPUT_SIZES, payload_input_size

    assert payload_input_size(payload) == DEFAULT_INPUT_SIZES["selftrain"]
    assert payload["config"]["fit_size"] == DEFAULT_FIT_SIZE


def test_the_default_head_reads_lite2_and_is_seeded_by_lite0s_ddt(ray_cluster, tmp_path, cub_on_s3):
    # backbone=auto: the head on EfficientNet-Lite2 (real weights), its first round labelled by the
    # DDT of Lite0 at the same side (small sides here: the mechanism, not the accuracy).
    from coloc_core.checkpoint import read_model_payload
    from pipelines.config import check_label_config

    images, _, _ = cub_on_s3
    out = str(tmp_path / "seeded")
    cfg = check_label_config(
        LabelJobConfig(images=images, format="cub", split="all", out=out, fit_size=64, image_size=64, **FAST)
    )
    assert (cfg.method, cfg.backbone) == ("selftrain", "efficientnet_lite2")
    summary = run_labeling(cfg)
    assert (summary.images, summary.errors) == (20, 0)
    payload = read_model_payload(storage.read_bytes(os.path.join(out, "_model.pt")))
    assert payload["config"]["backbone"] == "efficientnet_lite2"
    assert payload["meta"]["selftrain_seed"] == "ddt on efficientnet_lite0 pre_head"
    assert payload["meta"]["first_labels"] == "auto"
    # The typical content is measured with Lite2 itself (its 1280-channel head, at stride 32).
    assert payload["box_contents"]["images"] == 20 and len(payload["box_contents"]["mean"]) == 1280
    assert payload["state_dict"]["head_weight"].shape == (352,)
    rounds = payload["meta"]["selftrain_rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert all(r["foreground"] > 0 and r["background"] > 0 for r in rounds)
    assert os.path.exists(os.path.join(out, "_seed_backbone.pt"))
    assert pq.read_table(out).num_rows == 20

    # first_labels=own: the head labels its first round with Lite2's own DDT; no Lite0 in the fit.
    own = str(tmp_path / "own")
    own_cfg = dataclasses.replace(cfg, out=own, first_labels="own")
    assert run_labeling(own_cfg).errors == 0
    unseeded = read_model_payload(storage.read_bytes(os.path.join(own, "_model.pt")))
    assert unseeded["meta"]["first_labels"] == "own"  # the file says how its first round was labelled
    assert "selftrain_seed" not in unseeded["meta"] and not os.path.exists(
        os.path.join(own, "_seed_backbone.pt")
    )
    assert not np.allclose(
        unseeded["state_dict"]["head_weight"].numpy(), payload["state_dict"]["head_weight"].numpy()
    )
    with pytest.raises(InvalidInputError, match="already holds predictions with method"):
        run_labeling(dataclasses.replace(own_cfg, first_labels="auto"))  # a folder keeps its first labels


def test_the_fit_passes_read_fit_size_and_the_model_labels_at_image_size(ray_cluster, tmp_path, cub_on_s3):
    import torch

    from coloc_core.backbones import build_backbone
    from coloc_core.checkpoint import read_model_payload
    from coloc_core.localizer import payload_input_size

    images, _, _ = cub_on_s3
    out = str(tmp_path / "sizes")
    cfg = LabelJobConfig(
        method="ddt", backbone="tiny", images=images, format="cub", split="all", out=out,
        fit_size=64, image_size=96, **FAST,
    )  # fmt: skip
    assert run_labeling(cfg).images == 20
    payload = read_model_payload(storage.read_bytes(os.path.join(out, "_model.pt")))
    assert payload_input_size(payload) == 96 and payload["config"]["fit_size"] == 64
    net = build_backbone("tiny", weights=None, dilate=payload["config"]["dilate"])
    with torch.no_grad():
        h, w = net.features_at(torch.zeros(1, 3, 64, 64), payload["config"]["feature_layer"]).shape[2:]
    assert payload["meta"]["fit_descriptors"] == 20 * h * w  # every fit pass decoded at 64, not 96


@pytest.fixture(scope="module")
def square_labels(ray_cluster, tmp_path_factory):
    """A labels folder from a real run: 12 images in part files of 5 rows (3 parts)."""
    root = tmp_path_factory.mktemp("squares")
    expected = data.square_collection(str(root / "data"), num_good=12)
    model = root / "bright.pt"
    model.write_bytes(data.save_payload(data.brightness_payload()))
    out = str(root / "labels")
    cfg = LabelJobConfig(
        model=str(model), images=str(root / "data"), format="boxes_csv", out=out, rows_per_file=5, **FAST
    )
    summary = run_labeling(cfg)
    assert (summary.images, summary.shards) == (12, 3)
    return cfg, summary, expected


def _glob_counts(folder: str) -> dict[str, tuple[int, int]]:
    """(rows, distinct paths) of ``folder/*.parquet`` in DuckDB (plain, union_by_name) and Polars."""
    duckdb = pytest.importorskip("duckdb")
    pl = pytest.importorskip("polars")
    pattern = os.path.join(folder, "*.parquet")
    con = duckdb.connect()
    counts = {}
    for name, options in (("duckdb", ""), ("duckdb union_by_name", ", union_by_name=true")):
        query = f"SELECT count(*), count(DISTINCT path) FROM read_parquet('{pattern}'{options})"
        counts[name] = tuple(con.execute(query).fetchone())
    frame = pl.read_parquet(pattern)
    counts["polars"] = (frame.height, frame["path"].n_unique())
    return counts


def test_a_labels_folder_reads_with_a_glob_in_duckdb_and_polars(square_labels):
    import glob

    import coloc_core

    cfg, summary, expected = square_labels
    n = len(expected)
    # Only the part files match the glob: the folder's own bookkeeping is not Parquet.
    matched = sorted(glob.glob(os.path.join(cfg.out, "*.parquet")))
    assert matched == part_files(cfg.out)
    assert _glob_counts(cfg.out) == {"duckdb": (n, n), "duckdb union_by_name": (n, n), "polars": (n, n)}
    # pyarrow and pandas on the folder itself.
    assert pq.read_table(cfg.out).num_rows == n
    import pandas as pd

    assert len(pd.read_parquet(cfg.out)) == n
    # Every part file says what wrote it.
    for uri in part_files(cfg.out):
        meta = pq.read_schema(uri).metadata
        assert meta[b"coloc.version"].decode() == coloc_core.__version__
        assert meta[b"coloc.schema_version"].decode() == str(schema.SCHEMA_VERSION)
        assert meta[b"coloc.model_id"].decode() == summary.model_id


def test_a_labels_folder_of_the_old_layout_resumes(square_labels, tmp_path):
    """A folder labelled before the rename (``_inputs.parquet``) is resumed and left glob-readable."""

    from pipelines.predictions import INPUTS, LEGACY_INPUTS

    cfg, _, expected = square_labels
    old = str(tmp_path / "old")
    shutil.copytree(cfg.out, old)
    inputs = read_inputs(old)
    os.remove(os.path.join(old, INPUTS))
    pq.write_table(inputs, os.path.join(old, LEGACY_INPUTS), compression="zstd")
    os.remove(os.path.join(old, "part-00001.parquet"))  # an interrupted old run
    os.remove(os.path.join(old, SUCCESS))

    summary = run_labeling(dataclasses.replace(cfg, out=old))
    assert (summary.images, summary.shards, summary.shards_written) == (len(expected), 3, 1)
    names = sorted(os.listdir(old))
    assert LEGACY_INPUTS not in names and INPUTS in names, names
    n = len(expected)
    assert _glob_counts(old) == {"duckdb": (n, n), "duckdb union_by_name": (n, n), "polars": (n, n)}


# ------------------------------------------------------------------- new and removed inputs on a rerun


def _square_files(root: str, names: list[str], seed: int) -> None:
    """Square JPEGs (the brightness model finds the square) named ``names`` in the folder ``root``."""
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        img, _ = data.square_image(rng, int(rng.integers(96, 160)), int(rng.integers(96, 160)))
        with open(os.path.join(root, name), "wb") as fh:
            fh.write(data.jpeg_bytes(img))


def _folder_state(out: str) -> dict[str, tuple[int, bytes]]:
    """Every file of a labels folder: (mtime, bytes)."""
    state = {}
    for name in sorted(os.listdir(out)):
        path = os.path.join(out, name)
        with open(path, "rb") as fh:
            state[name] = (os.stat(path).st_mtime_ns, fh.read())
    return state


def _part_paths(out: str, shard: int) -> list[str]:
    table = pq.read_table(os.path.join(out, f"part-{shard:05d}.parquet"))
    return [os.path.basename(p) for p in table.column("path").to_pylist()]


def _brightness_folder_cfg(tmp_path, root: str, out: str, rows_per_file: int) -> LabelJobConfig:
    model = tmp_path / "bright.pt"
    model.write_bytes(data.save_payload(data.brightness_payload()))
    return LabelJobConfig(model=str(model), images=root, out=out, rows_per_file=rows_per_file, **FAST)


def test_a_rerun_labels_new_images_into_new_part_files(ray_cluster, tmp_path):
    root, out = str(tmp_path / "photos"), str(tmp_path / "labels")
    old_names = [f"good_{i:03d}.jpg" for i in range(10)]
    _square_files(root, old_names, seed=0)
    cfg = _brightness_folder_cfg(tmp_path, root, out, rows_per_file=4)
    first = run_labeling(cfg)
    assert (first.images, first.shards, first.images_added) == (10, 3, 0)  # shards of 4, 4, 2
    old_parts = {n: b for n, (_, b) in _folder_state(out).items() if n.startswith("part-")}
    assert sorted(old_parts) == [f"part-{i:05d}.parquet" for i in range(3)]

    # Five new images whose names sort between the old ones: they must not reshuffle the old shards.
    new_names = [f"good_{i:03d}_new.jpg" for i in (0, 3, 5, 7, 9)]
    _square_files(root, new_names, seed=1)
    second = run_labeling(cfg)
    assert (second.images, second.errors, second.shards) == (15, 0, 5)
    assert (second.shards_written, second.images_labelled, second.images_added) == (2, 5, 5)
    assert second.images_missing == 0
    # The old part files are byte-identical; the new rows are in new part files after them.
    for name, content in old_parts.items():
        with open(os.path.join(out, name), "rb") as fh:
            assert fh.read() == content, name
    assert _part_paths(out, 3) == new_names[:4] and _part_paths(out, 4) == new_names[4:]
    # Exactly one row per image, old and new, every one labelled.
    table = pq.read_table(out)
    paths = [os.path.basename(p) for p in table.column("path").to_pylist()]
    assert len(paths) == len(set(paths)) == 15 and set(paths) == set(old_names + new_names)
    assert table.column("error").null_count == 15
    # _SUCCESS and the manifest have the totals of the whole folder.
    success = json.loads(storage.read_text(os.path.join(out, SUCCESS)))
    assert (success["images"], success["errors"], success["shards"]) == (15, 0, 5)
    assert (success["images_labelled"], success["images_added"]) == (5, 5)
    manifest = json.loads(storage.read_text(os.path.join(out, MANIFEST)))
    assert (manifest["num_images"], manifest["num_shards"]) == (15, 5)
    assert [(s["images"], s["first_shard"]) for s in manifest["segments"]] == [(10, 0), (5, 3)]
    assert read_inputs(out).num_rows == 15

    # A third run finds nothing to do and writes nothing (no file of the folder changes).
    before = _folder_state(out)
    third = run_labeling(cfg)
    assert (third.images, third.shards, third.shards_written, third.images_labelled) == (15, 5, 0, 0)
    assert third.images_added == 0
    assert _folder_state(out) == before


def test_a_crash_during_a_rerun_with_new_images_resumes_exactly_once(ray_cluster, tmp_path, monkeypatch):
    root, out = str(tmp_path / "photos"), str(tmp_path / "labels")
    old_names = [f"good_{i:03d}.jpg" for i in range(6)]
    _square_files(root, old_names, seed=0)
    cfg = _brightness_folder_cfg(tmp_path, root, out, rows_per_file=4)
    assert run_labeling(cfg).shards == 2  # 4 + 2
    old_parts = {n: s for n, s in _folder_state(out).items() if n.startswith("part-")}

    # 1. The rerun dies between the new input list and the manifest (the commit point).
    _square_files(root, ["good_000_a.jpg", "good_002_a.jpg", "good_004_a.jpg"], seed=1)
    write_text_atomic = storage.write_text_atomic

    def die_at_manifest(uri: str, text: str, *args, **kwargs):
        if uri.endswith(MANIFEST):
            raise _Crash("killed before the manifest")
        return write_text_atomic(uri, text, *args, **kwargs)

    monkeypatch.setattr(storage, "write_text_atomic", die_at_manifest)
    with pytest.raises(_Crash):
        run_labeling(cfg)
    monkeypatch.undo()
    assert read_inputs(out).num_rows == 9  # written, but not committed
    assert json.loads(storage.read_text(os.path.join(out, MANIFEST)))["num_images"] == 6
    assert not os.path.exists(os.path.join(out, SUCCESS))

    # 2. More images arrive; the next rerun commits all five and dies after its first new part file.
    _square_files(root, ["good_001_b.jpg", "good_005_b.jpg"], seed=2)

    def crash(shard: int) -> None:
        raise _Crash(f"simulated crash after shard {shard}")

    with pytest.raises(_Crash):  # the hook runs before a second new shard can be written
        run_labeling(dataclasses.replace(cfg, batch_size=2), on_shard_written=crash)
    assert not os.path.exists(os.path.join(out, SUCCESS))
    written = sorted(n for n in os.listdir(out) if n.startswith("part-"))
    assert len(written) == 3 and set(old_parts) < set(written)

    # 3. The last rerun writes the remaining new shard only: one row per image, none lost or repeated.
    summary = run_labeling(cfg)
    assert (summary.images, summary.shards, summary.shards_written, summary.images_added) == (11, 4, 1, 0)
    table = pq.read_table(out)
    paths = [os.path.basename(p) for p in table.column("path").to_pylist()]
    assert len(paths) == len(set(paths)) == 11
    assert set(paths) == {n for n in os.listdir(root) if n.endswith(".jpg")}
    assert {n: s for n, s in _folder_state(out).items() if n in old_parts} == old_parts
    manifest = json.loads(storage.read_text(os.path.join(out, MANIFEST)))
    assert [s["images"] for s in manifest["segments"]] == [6, 5]
    assert json.loads(storage.read_text(os.path.join(out, SUCCESS)))["images"] == 11


def test_a_rerun_reports_removed_images_and_reuses_the_fitted_model(ray_cluster, tmp_path, caplog):
    import logging

    root, out = str(tmp_path / "photos"), str(tmp_path / "labels")
    names = [f"good_{i:03d}.jpg" for i in range(6)]
    _square_files(root, names, seed=0)
    cfg = LabelJobConfig(method="ddt", backbone="tiny", images=root, out=out, rows_per_file=3, **FAST)
    assert run_labeling(cfg).images == 6
    with open(os.path.join(out, "_model.pt"), "rb") as fh:
        fitted = fh.read()

    # A folder of the previous version: its manifest has no segments (one listing).
    manifest_path = os.path.join(out, MANIFEST)
    manifest = json.loads(storage.read_text(manifest_path))
    del manifest["segments"]
    storage.write_text_atomic(manifest_path, json.dumps(manifest))

    os.remove(os.path.join(root, names[2]))
    _square_files(root, ["good_009_new.jpg"], seed=1)
    with caplog.at_level(logging.WARNING, logger="pipelines.label"):
        summary = run_labeling(cfg)
    assert (summary.images, summary.shards_written, summary.images_added) == (7, 1, 1)
    assert summary.images_missing == 1
    assert [os.path.basename(p) for p in summary.missing_examples] == [names[2]]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("1 of the 6 images" in w and names[2] in w and "rows stay" in w for w in warnings), warnings
    # The removed image keeps its row; the new one is labelled with the model fitted at the first run.
    table = pq.read_table(out)
    assert sorted(os.path.basename(p) for p in table.column("path").to_pylist()) == sorted(
        names + ["good_009_new.jpg"]
    )
    with open(os.path.join(out, "_model.pt"), "rb") as fh:
        assert fh.read() == fitted
    from coloc_core.checkpoint import read_model_payload

    assert set(table.column("model").to_pylist()) == {read_model_payload(fitted)["model_id"]}
    assert json.loads(storage.read_text(os.path.join(out, SUCCESS)))["images_missing"] == 1
    manifest = json.loads(storage.read_text(manifest_path))
    assert [(s["images"], s["first_shard"]) for s in manifest["segments"]] == [(6, 0), (1, 2)]

    # No labelled image listed any more but others are (say, the same images under other names): refused
    # before anything is written, rather than labelling them twice.
    for name in os.listdir(root):
        os.rename(os.path.join(root, name), os.path.join(root, "renamed_" + name))
    before = _folder_state(out)
    with pytest.raises(InvalidInputError, match="none of its 7 labelled images"):
        run_labeling(cfg)
    assert _folder_state(out) == before


# ------------------------------------------------------------------------------ several boxes per image


def test_boxes_all_labels_every_object_and_matches_the_python_api(ray_cluster, tmp_path):
    from PIL import Image

    from coloc_core import Predictor

    root, out = tmp_path / "pairs", str(tmp_path / "labels")
    root.mkdir()
    rng = np.random.default_rng(7)
    truth = {}
    for i in range(5):
        w, h = int(rng.integers(180, 260)), int(rng.integers(120, 180))
        img = rng.integers(10, 50, (h, w, 3)).astype(np.uint8)
        big = (8, 10, 8 + w // 3, 10 + h // 2)  # inclusive boxes, far apart
        small = (w - 10 - w // 5, h - 10 - h // 4, w - 10, h - 10)
        for x0, y0, x1, y1 in (big, small):
            img[y0 : y1 + 1, x0 : x1 + 1] = 230
        Image.fromarray(img).save(root / f"pair_{i}.png")
        truth[str(root / f"pair_{i}.png")] = np.array([big, small])
    cfg = dataclasses.replace(_brightness_folder_cfg(tmp_path, str(root), out, rows_per_file=3), boxes="all")
    summary = run_labeling(cfg)
    assert (summary.images, summary.errors, summary.shards) == (5, 0, 2)
    manifest = json.loads(storage.read_text(storage.join(out, MANIFEST)))
    assert (manifest["boxes"], manifest["pick"]) == ("all", "score")
    predictor = Predictor.load(cfg.model)
    for row in _read_parts(out).to_pylist():
        boxes = np.array([[b[c] for c in schema.BOX_COLUMNS] for b in row["boxes"]])
        scores = [b["score"] for b in row["boxes"]]
        assert boxes.shape == (2, 4) and scores == sorted(scores, reverse=True)
        ious = iou_matrix(boxes, truth[row["path"]])
        assert ious[0, 0] > 0.7 and ious[1, 1] > 0.7, ious  # in original pixels, big one first
        single = [row[c] for c in schema.BOX_COLUMNS]
        assert single == boxes[0].tolist() and row["score"] == pytest.approx(scores[0])
        # The Python API on the same file gives the row (same model file, same steps).
        pred = predictor.predict(row["path"], all_boxes=True)
        np.testing.assert_array_equal(pred.boxes, boxes.astype(np.float32))
        np.testing.assert_array_equal(pred.heatmap, decode_heatmap_row(row))
    # The folder holds every box: a rerun must ask for the same.
    with pytest.raises(InvalidInputError, match="boxes='all'.*boxes='one'"):
        run_labeling(dataclasses.replace(cfg, boxes="one"))
    with pytest.raises(InvalidInputError, match="pick='score'.*pick='largest'"):  # nor another box per image
        run_labeling(dataclasses.replace(cfg, pick="largest"))
    from jobs.label import main as label_main

    assert label_main([f"--images={root}", f"--out={out}-x", "--boxes=many"]) == 2  # before any work
    assert not os.path.exists(f"{out}-x")


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_folder_resumes_in_its_own_layout(square_labels, tmp_path, version):
    """A folder labelled before ``boxes`` (1) or ``error_kind`` (2): its new part files match its old ones."""

    from pipelines.predictions import iter_predictions

    cfg, _, expected = square_labels
    old = str(tmp_path / f"v{version}")
    shutil.copytree(cfg.out, old)
    later = [name for v, names in schema.ADDED_IN.items() if v > version for name in names]
    assert later == ([schema.BOXES, schema.ERROR_KIND] if version == 1 else [schema.ERROR_KIND])
    for uri in part_files(old):
        table = pq.read_table(uri).drop_columns(later)
        meta = {**table.schema.metadata, b"coloc.schema_version": str(version).encode()}
        pq.write_table(table.replace_schema_metadata(meta), uri)
    manifest = json.loads(storage.read_text(storage.join(old, MANIFEST)))
    if version == 1:
        manifest.pop("boxes")
    manifest.pop("pick")  # both are from before the option: their boxes are the largest contour's
    manifest["schema_version"] = version
    manifest["schema"] = [c for c in manifest["schema"] if c.split(":", 1)[0] not in later]
    storage.write_text_atomic(storage.join(old, MANIFEST), json.dumps(manifest))
    os.remove(os.path.join(old, "part-00001.parquet"))
    os.remove(os.path.join(old, SUCCESS))

    if version == 1:
        with pytest.raises(InvalidInputError, match="boxes"):
            run_labeling(dataclasses.replace(cfg, out=old, boxes="all", pick="largest"))
    with pytest.raises(InvalidInputError, match=r"pick='largest', this run has pick='score'.*--pick=largest"):
        run_labeling(dataclasses.replace(cfg, out=old))
    summary = run_labeling(dataclasses.replace(cfg, out=old, pick="largest"))
    assert (summary.images, summary.shards_written, summary.errors_by_kind) == (len(expected), 1, {})
    for uri in part_files(old):
        file_schema = pq.read_schema(uri)
        assert [f.name for f in file_schema] == schema.schema_of_version(version).names, file_schema
        assert file_schema.metadata[b"coloc.schema_version"] == str(version).encode()
    # Read in the current schema: the columns the folder lacks come back as nulls.
    table = pa.concat_tables(iter_predictions(old))
    assert table.schema.names == list(schema.COLUMNS)
    assert table.column(schema.ERROR_KIND).null_count == len(expected)
    n = len(expected)
    assert _glob_counts(old) == {"duckdb": (n, n), "duckdb union_by_name": (n, n), "polars": (n, n)}


def test_the_default_actor_pool_is_sized_to_the_cluster(ray_cluster, tmp_path, caplog):
    import logging

    root, out = str(tmp_path / "photos"), str(tmp_path / "labels")
    _square_files(root, [f"good_{i:03d}.jpg" for i in range(3)], seed=0)
    cfg = dataclasses.replace(_brightness_folder_cfg(tmp_path, root, out, rows_per_file=4), num_actors=0)
    with caplog.at_level(logging.INFO, logger="pipelines.label"):
        assert run_labeling(cfg).images == 3
    # The session's cluster has 2 CPUs: an eighth (at least decode_cpus 0.25) decodes, one actor of
    # ceil(0.5) = 1 thread fits in the rest once (pipelines.label_actors.actor_count).
    assert any(r.getMessage().endswith("; 1 model actor") for r in caplog.records), caplog.text


def test_an_aircraft_collection_is_labelled_above_its_banner(ray_cluster, tmp_path):
    """``--format aircraft`` cuts FGVC-Aircraft's 20-px copyright banner off every image by default."""
    from PIL import Image

    from pipelines.config import EvaluateJobConfig
    from pipelines.evaluate import run_evaluation

    root, out = tmp_path / "fgvc", str(tmp_path / "labels")
    (root / "data" / "images").mkdir(parents=True)
    rng = np.random.default_rng(3)
    names, lines = [f"{1000 + i}" for i in range(4)], []
    for name in names:
        w, h = int(rng.integers(200, 260)), int(rng.integers(140, 180))
        img = rng.integers(10, 40, (h, w, 3)).astype(np.uint8)
        x0, y0 = int(rng.integers(10, 40)), int(rng.integers(10, 30))
        x1, y1 = x0 + w // 2, y0 + (h - 20) // 2
        img[y0 : y1 + 1, x0 : x1 + 1] = 200  # the plane
        img[h - 20 :] = 255  # a white banner: brighter than the plane
        Image.fromarray(img).save(root / "data" / "images" / f"{name}.jpg", quality=95)
        lines.append(f"{name} {x0 + 1} {y0 + 1} {x1 + 1} {y1 + 1}")  # 1-based, inclusive
    (root / "data" / "images_test.txt").write_text("\n".join(names) + "\n")
    (root / "data" / "images_box.txt").write_text("\n".join(lines) + "\n")
    model = tmp_path / "bright.pt"
    model.write_bytes(data.save_payload(data.brightness_payload()))
    cfg = LabelJobConfig(model=str(model), images=str(root), format="aircraft", split="test", out=out, **FAST)
    assert run_labeling(cfg).images == 4
    manifest = json.loads(storage.read_text(storage.join(out, MANIFEST)))
    assert manifest["crop_bottom"] == 20
    from coloc_core import Predictor

    predictor = Predictor.load(str(model))
    for row in _read_parts(out).to_pylist():
        with Image.open(row["path"]) as im:
            assert (row["width"], row["height"]) == (im.width, im.height - 20)  # the part above the cut
        assert row["y1"] < row["height"]  # the box is the plane's, not the banner's
        pred = predictor.predict(row["path"], crop_bottom=20)  # the Python API cuts the same rows
        np.testing.assert_array_equal(pred.box, np.array([row[c] for c in schema.BOX_COLUMNS], np.float32))
        np.testing.assert_array_equal(pred.heatmap, decode_heatmap_row(row))

    def corloc(predictions: str) -> float:
        gt: dict[str, Any] = dict(gt=str(root), format="aircraft", split="test", sheet_images=0)
        return run_evaluation(EvaluateJobConfig(predictions=predictions, **gt)).metrics["corloc@0.5"]

    assert corloc(out) == 100.0
    # Left in (crop_bottom=0), the banner is the brightest part of every map; cut off, it is not seen.
    whole = dataclasses.replace(cfg, out=f"{out}-whole", crop_bottom=0)
    run_labeling(whole)
    for cut, kept in zip(_read_parts(out).to_pylist(), _read_parts(whole.out).to_pylist(), strict=True):
        assert kept["height"] == cut["height"] + 20
        assert decode_heatmap_row(kept)[-1].max() > 128 > decode_heatmap_row(cut)[-1].max()
    # A folder keeps the cut it was started with.
    with pytest.raises(InvalidInputError, match=r"crop_bottom=20.*crop_bottom=0.*pass --crop_bottom=20"):
        run_labeling(dataclasses.replace(cfg, crop_bottom=0))
