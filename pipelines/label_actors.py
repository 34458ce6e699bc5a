"""The labeling stage's per-batch work, run by Ray Data on the workers.

Part of the labeling stage (:mod:`pipelines.label`): the decoded-images dataset of some input rows
(:func:`decoded_images`), the model actor that turns decoded images into heatmap (and box) rows
(:class:`LocalizeBatch`; how many run: :func:`actor_count`) and the statistics task of the
training-free fits (:func:`descriptor_moments_batch`, summed by
:func:`pipelines.label_fit.fit_statistics`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from coloc_core.box_content import ContentScorer
from coloc_core.checkpoint import read_model_payload
from coloc_core.heatmap import quantize_heatmap
from coloc_core.localizer import DEFAULT_INPUT_SIZES, localizer_from_payload
from coloc_core.predict import (
    DEFAULT_PICK,
    inference_layout,
    maps_and_features,
    scores_repeats,
)
from pipelines import ingest, schema, storage
from pipelines.config import LabelJobConfig, crop_bottom_of
from pipelines.label_shards import heatmaps_to_box_rows, nullable_ints
from pipelines.predictions import encode_heatmap


class LocalizeBatch:
    """Ray Data callable class: decoded uint8 images → uint8 heatmaps at feature resolution.

    The model file is read once per actor (local or ``s3://``). Runs under ``torch.inference_mode``;
    channels_last on every device (``coloc_core.predict.inference_layout``), bf16 autocast on GPU. Error
    rows pass through (no forward pass).

    Args:
        model_uri: model file (``coloc_core.checkpoint`` format, optional ``kind``).
        threshold: τ written in every row.
        model_id: id written in every row (checked against the file).
        use_gpu: run on CUDA (an error when no GPU is visible).
        num_threads: torch intra-op threads on CPU.
        postprocess: also compute boxes and scores (:func:`pipelines.label_shards.heatmaps_to_box_rows`)
            in the actor. On CPU that costs ~1 ms next to ~100 ms of network per image and saves a
            stage; on GPU it is left to a separate CPU stage so the accelerator never waits for contour
            searches.
        endpoint_url: S3 endpoint override.
        all_boxes: with ``postprocess``, also every region's box and score (``boxes=all``).
        box_sizes: with ``postprocess``, the model's typical box (``LabelPlan.box_sizes``).
        pick: with ``postprocess``, which region's box is the image's (``coloc_core.predict.PICKS``).
        content_halves: whether the content term compares each box's halves (``LabelPlan.content_halves``;
            false for a folder labelled before them; a model file can turn them off too).

    A model file that stores its collection's box contents (``coloc_core.box_content``) adds each
    box's content term to its score: the actor crops the box and its two halves from the decoded image
    and encodes them with the model's backbone, so such a model always computes its boxes in the actor
    (``LabelPlan.content``; ``postprocess`` must be true). A model whose ``box_sizes`` have ``repeats``
    (the fitted labelers) keeps each forward pass's features for the repetition term of its scores
    (``coloc_core.box_score.box_repetition``), so it too computes its boxes in the actor.
    """

    def __init__(
        self,
        model_uri: str,
        threshold: float,
        model_id: str,
        use_gpu: bool = False,
        num_threads: int = 1,
        postprocess: bool = True,
        endpoint_url: str | None = None,
        all_boxes: bool = False,
        box_sizes: dict[str, Any] | None = None,
        pick: str = DEFAULT_PICK,
        content_halves: bool = True,
    ) -> None:
        import torch  # noqa: PLC0415

        payload = read_model_payload(storage.read_bytes(model_uri, endpoint_url), model_uri)
        if payload.get("model_id") != model_id:
            raise ValueError(f"{model_uri} has model id {payload.get('model_id')}, expected {model_id}")
        localizer = localizer_from_payload(payload)
        if use_gpu:
            if not torch.cuda.is_available():
                raise RuntimeError("use_gpu=true but this actor sees no CUDA device")
            self.device = torch.device("cuda")
        else:
            self.device = torch.device("cpu")
            torch.set_num_threads(max(1, int(num_threads)))
        self.localizer = inference_layout(localizer, self.device)
        self.content = ContentScorer.from_payload(payload, self.device)
        if self.content is not None and self.content.box_contents is not None and not content_halves:
            self.content.box_contents = {**self.content.box_contents, "halves": False}
        if self.content is not None and not postprocess:
            raise ValueError("a model with box contents computes its boxes in the actor (postprocess=True)")
        self.repeats = postprocess and scores_repeats(self.localizer, box_sizes)
        self.threshold = float(threshold)
        self.model_id = model_id
        self.postprocess = postprocess
        self.all_boxes = all_boxes
        self.box_sizes = box_sizes
        self.pick = pick

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """A numpy batch of ingest rows → prediction rows (heatmap rows only when not ``postprocess``).

        A model output that is not finite becomes an error row (never a silent empty box).
        """
        errors = list(batch[ingest.ERROR])
        n = len(errors)
        kinds = list(batch[ingest.ERROR_KIND]) if ingest.ERROR_KIND in batch else [None] * n
        ok = np.array([e is None for e in errors], dtype=bool)
        heatmaps: list[bytes | None] = [None] * n
        hs: list[int | None] = [None] * n
        ws: list[int | None] = [None] * n
        features: dict[int, np.ndarray] | None = None
        if ok.any():
            maps, feats = maps_and_features(self.localizer, batch[ingest.IMAGE][ok], self.repeats)
            if feats is not None:
                features = dict(zip(np.flatnonzero(ok).tolist(), feats, strict=True))
            for i, attn in zip(np.flatnonzero(ok), maps, strict=True):
                if not np.isfinite(attn).all():
                    errors[i] = f"{batch[ingest.PATH][i]}: the model's attention map is not finite"
                    kinds[i] = schema.KIND_MODEL
                    continue
                data, h, w = encode_heatmap(quantize_heatmap(attn))
                heatmaps[i], hs[i], ws[i] = data, h, w
        table = pa.table(
            {
                schema.PATH: pa.array(list(batch[ingest.PATH]), pa.string()),
                ingest.INDEX: pa.array(batch[ingest.INDEX], pa.int64()),
                schema.WIDTH: pa.array(nullable_ints(batch[ingest.WIDTH]), pa.int32()),
                schema.HEIGHT: pa.array(nullable_ints(batch[ingest.HEIGHT]), pa.int32()),
                schema.HEATMAP: pa.array(heatmaps, pa.binary()),
                schema.HEATMAP_H: pa.array(hs, pa.int16()),
                schema.HEATMAP_W: pa.array(ws, pa.int16()),
                schema.THRESHOLD: pa.array([self.threshold] * n, pa.float32()),
                schema.MODEL: pa.array([self.model_id] * n, pa.string()),
                schema.ERROR: pa.array([None if e is None else str(e) for e in errors], pa.string()),
                schema.ERROR_KIND: pa.array([None if k is None else str(k) for k in kinds], pa.string()),
            }
        )
        if not self.postprocess:
            return table
        content = None
        if self.content is not None:
            scorer, images = self.content, batch[ingest.IMAGE]
            widths, heights = batch[ingest.WIDTH], batch[ingest.HEIGHT]

            def content(indices: list[int], boxes: list[np.ndarray]) -> list[np.ndarray]:
                aspects = [float(widths[i]) / float(heights[i]) for i in indices]  # decoded images only
                return scorer.terms(images[indices], boxes, aspects)

        return heatmaps_to_box_rows(table, self.all_boxes, self.box_sizes, content, self.pick, features)


# The DDT fit runs as plain Ray tasks (no actor pool to start for one pass over a sample); each worker
# process reads the backbone file once and keeps it here for the later batches it gets.
_FIT_LOCALIZERS: dict[str, Any] = {}
# The column of a statistics row that counts its input rows (for the driver's progress bar).
FIT_ROWS = "rows"


def descriptor_moments_batch(
    batch: dict[str, np.ndarray],
    model_uri: str,
    num_threads: int = 1,
    head: tuple[list[float], float, float] | None = None,
    seed_uri: str | None = None,
) -> dict[str, np.ndarray]:
    """Ingest rows → one row of feature statistics of the good images (DDT, RPS, self-training).

    Args:
        batch: ingest rows (``ingest.IMAGE`` uint8 images, ``ingest.ERROR``).
        model_uri: the frozen backbone's payload file (read once per worker process).
        num_threads: torch threads of the worker.
        head: ``(weight, bias, level)`` of a linear map: return its per-class moments
            (``coloc_core.fits.class_statistics``) instead of the collection statistics.
        seed_uri: with ``head``: another frozen backbone's payload file whose features the head's
            linear map labels the pixels with (the seeded first round of
            ``coloc_core.fits.fit_selftrain``).

    Returns:
        One row per key of ``coloc_core.fits.STATISTICS`` (``feature_statistics``) or, with
        ``head``, of ``CLASS_STATISTICS`` (with ``seed_uri`` also ``sum_x``, ``sum_xxT`` and
        ``count`` of the model's features); summed on the driver; matrices are flattened ((1, C*C)).
        Plus :data:`FIT_ROWS`, the number of input rows (the driver's progress bar counts them).
    """
    import torch  # noqa: PLC0415

    from coloc_core.fits import (  # noqa: PLC0415
        CLASS_STATISTICS,
        STATISTICS,
        class_statistics,
        feature_statistics,
    )
    from coloc_core.predict import feature_maps  # noqa: PLC0415

    def features_of(uri: str) -> Any:
        localizer: Any = _FIT_LOCALIZERS.get(uri)
        if localizer is None:
            torch.set_num_threads(max(1, int(num_threads)))
            payload = read_model_payload(storage.read_bytes(uri), uri)
            localizer = inference_layout(localizer_from_payload(payload), torch.device("cpu"))
            _FIT_LOCALIZERS[uri] = localizer
        if ok.any():
            return feature_maps(localizer, batch[ingest.IMAGE][ok])
        return torch.zeros(0, int(localizer.channels), 1, 1)  # no good image: no descriptor (all zero)

    ok = np.array([e is None for e in batch[ingest.ERROR]], dtype=bool)
    with torch.inference_mode():
        feats = features_of(model_uri)
        keys: tuple[str, ...]
        if head is None:
            stats, keys = feature_statistics(feats), STATISTICS
        else:
            weight, bias, level = head
            seed = None if seed_uri is None else features_of(seed_uri)
            stats = class_statistics(
                feats, torch.tensor(weight, dtype=torch.float64), bias, level, labels_from=seed
            )
            keys = CLASS_STATISTICS if seed is None else (*CLASS_STATISTICS, "sum_x", "sum_xxT", "count")
    out = {k: stats[k].numpy().reshape(1, -1) if stats[k].ndim else stats[k].numpy().reshape(1) for k in keys}
    out[FIT_ROWS] = np.array([len(ok)], dtype=np.int64)  # input rows of this batch: the driver's progress
    return out


# The typical-box pass's fitted model, kept by each worker process for its later batches (one at a time).
_SIZE_LOCALIZER: dict[str, Any] = {}


def box_areas_batch(
    batch: dict[str, np.ndarray], model_uri: str, model_id: str, threshold: float, num_threads: int = 1
) -> dict[str, np.ndarray]:
    """Ingest rows → each good image's box at τ: its area share, content descriptor and repetition.

    The typical-box pass of a fit. The box is the labeling stage's: the model's map → the stored
    uint8 heatmap → SPEC §6 score map at 224 → the single largest-contour box at ``threshold``; its
    area share (``coloc_core.box_score.box_area_share``) and the descriptor of its crop
    (``coloc_core.box_content.ContentScorer.descriptors``, the model's backbone at its original
    stride) and its repetition (``coloc_core.box_score.box_repetition``, from the same forward pass's
    features; NaN for a model without them: CAML). The model file is read once per worker process.

    Returns:
        ``area``: (n,) float64, one per input row, NaN for an image not decoded (or a map not finite);
        ``descriptor``: (n, C) float32, NaN in the same rows (C = 0 for a model without a backbone);
        ``repeat``: (n,) float64, NaN in the same rows and for a model without features.
    """
    import torch  # noqa: PLC0415

    from coloc_core.box_score import box_area_share  # noqa: PLC0415
    from coloc_core.predict import cut_boxes  # noqa: PLC0415

    key = f"{model_uri}#{model_id}"  # the file is rewritten by every fit in the same folder
    cached: Any = _SIZE_LOCALIZER.get(key)
    if cached is None:
        torch.set_num_threads(max(1, int(num_threads)))
        payload = read_model_payload(storage.read_bytes(model_uri), model_uri)
        if payload.get("model_id") != model_id:
            raise ValueError(f"{model_uri} has model id {payload.get('model_id')}, expected {model_id}")
        localizer = inference_layout(localizer_from_payload(payload), torch.device("cpu"))
        scorer = ContentScorer.from_payload(payload, need_contents=False)
        _SIZE_LOCALIZER.clear()  # one fitted model per worker process at a time
        cached = _SIZE_LOCALIZER[key] = (localizer, scorer)
    localizer, scorer = cached
    ok = np.array([e is None for e in batch[ingest.ERROR]], dtype=bool)
    areas = np.full(len(ok), np.nan)
    repeats = np.full(len(ok), np.nan)
    channels = 0 if scorer is None else scorer.backbone.feature_channels("output")
    descriptors = np.full((len(ok), channels), np.nan, dtype=np.float32)
    if ok.any():
        good, boxes = [], []
        maps, feats = maps_and_features(localizer, batch[ingest.IMAGE][ok])
        for k, (i, attn) in enumerate(zip(np.flatnonzero(ok), maps, strict=True)):
            if not np.isfinite(attn).all():
                continue
            grid = None if feats is None else feats[k]
            cut = cut_boxes(quantize_heatmap(attn), threshold, pick="largest", features=grid)
            areas[i] = box_area_share(cut.box[0], cut.scoremap.shape)
            repeat = cut.repetition_of(cut.box[0])
            if repeat is not None:
                repeats[i] = repeat
            good.append(int(i))
            boxes.append(cut.box)
        if scorer is not None and good:
            for j, d in zip(good, scorer.descriptors(batch[ingest.IMAGE][good], boxes), strict=True):
                descriptors[j] = d[0]
    return {"area": areas, "descriptor": descriptors, "repeat": repeats}


#: With ``num_actors=0`` this share of a CPU cluster's CPUs (at least one decode task's) is left to
#: decoding: decoding and resizing an image costs about a tenth to a thirtieth of its forward pass on
#: one core (docs/BENCHMARKS.md: ingest 325-544 images/s per core, labeling 7-11 at 224 pixels; the
#: self-trained head at 480 runs about 3 per thread).
AUTO_DECODE_SHARE = 0.125
#: A CPU model actor's memory, for sizing the pool to the cluster's ``memory`` resource: the process
#: (torch, the model) plus the forward pass's activations per input pixel of a batch. Measured with
#: the self-trained head at 480 on one thread (bench/bench_actor_memory.py, docs/BENCHMARKS.md): 0.72
#: GiB at batch 1, 1.07-1.11 GiB at batch 8, 2.32-2.35 GiB at batch 32 (228-258 bytes per pixel).
ACTOR_BASE_BYTES, ACTOR_BYTES_PER_PIXEL = 0.8e9, 240.0
#: The share of the cluster's ``memory`` resource the auto-sized actors may plan to use.
AUTO_MEMORY_SHARE = 0.8


def actor_count(cfg: LabelJobConfig, resources: dict[str, float]) -> int:
    """How many model actors label: ``cfg.num_actors``, or with 0 what the cluster holds at the start.

    ``resources``: ``ray.cluster_resources()``. With ``use_gpu``, one actor per GPU. On CPUs, one
    actor per ``ceil(actor_cpus)`` CPUs (the threads each actor's torch runs, so cores are never
    oversubscribed) after :data:`AUTO_DECODE_SHARE` of them, at least ``decode_cpus``, is left to the
    decode tasks, and no more than :data:`AUTO_MEMORY_SHARE` of the cluster's ``memory`` holds at
    :func:`actor_memory_bytes` each (a 16-core node with 32 GB would otherwise run out at batch 32).
    At least 1: a cluster still adding its workers (a GPU worker type with no node yet) gets one
    actor, which Ray places when a node joins; set ``num_actors`` to grow with it.
    """
    if cfg.num_actors > 0:
        return int(cfg.num_actors)
    if cfg.use_gpu:
        return max(1, int(resources.get("GPU", 0.0) + 1e-9))
    cpus = float(resources.get("CPU", 0.0))
    free = cpus - max(cfg.decode_cpus, AUTO_DECODE_SHARE * cpus)
    count = int(free // max(1, math.ceil(cfg.actor_cpus)) + 1e-9)
    memory = float(resources.get("memory", 0.0))
    if memory > 0:
        count = min(count, int(AUTO_MEMORY_SHARE * memory // actor_memory_bytes(cfg)))
    return max(1, count)


def actor_memory_bytes(cfg: LabelJobConfig) -> float:
    """The planned memory of one CPU model actor: :data:`ACTOR_BASE_BYTES` plus a batch's activations.

    At the labeling side ``image_size``, or 480 (the largest default, ``DEFAULT_INPUT_SIZES``) when the
    side is not known before the model file is read.
    """
    side = cfg.image_size or max(DEFAULT_INPUT_SIZES.values())
    return ACTOR_BASE_BYTES + ACTOR_BYTES_PER_PIXEL * cfg.batch_size * side * side


def decode_tasks(cfg: LabelJobConfig, cluster_cpus: float) -> int | None:
    """How many decode tasks may run at once: the CPUs the model actors leave (None: no cap).

    Without a cap Ray Data starts decode tasks first, and on a small cluster they hold the CPUs the
    actors wait for: on 2 CPUs the one actor stayed pending until every image was decoded (30 s before
    the first part file of 100 images). A cluster with fewer CPUs than the actors plus one decode task
    (a head without CPUs before its workers join) gets no cap.
    """
    # The actors hold their CPU share on GPU too; an unsized pool (num_actors 0: a fit pass outside
    # run_labeling, e.g. `coloc train`'s self-training) leaves at least one share to its work tasks.
    free = cluster_cpus - max(cfg.num_actors, 1) * cfg.actor_cpus
    if cfg.decode_cpus <= 0 or free < cfg.decode_cpus:
        return None
    return max(1, int(free // cfg.decode_cpus + 1e-9))


def decoded_images(inputs: pa.Table, indices: np.ndarray, cfg: LabelJobConfig, size: int) -> Any:
    """The decoded-images dataset of the given input rows (``index`` = global position in ``inputs``).

    ``size``: the side every image is resized to (the model's input size, ``payload_input_size``).
    """
    import ray.data  # noqa: PLC0415

    sub = inputs.take(pa.array(indices, pa.int64()))
    records = pa.table(
        {
            ingest.PATH: sub.column("path"),
            ingest.INDEX: pa.array(indices, pa.int64()),
            ingest.WIDTH: sub.column("width"),
            ingest.HEIGHT: sub.column("height"),
            ingest.BOXES: pa.array([[] for _ in range(sub.num_rows)], pa.list_(pa.float32())),
        },
        schema=ingest.RECORD_SCHEMA,
    )
    per_block = min(ingest.default_rows_per_block(records.num_rows), max(cfg.batch_size, 1) * 4)
    blocks = [records.slice(start, per_block) for start in range(0, records.num_rows, per_block)]
    tasks = decode_tasks(cfg, ray.cluster_resources().get("CPU", 0.0))
    if tasks is not None:
        tasks = min(tasks, max(len(blocks), 1))  # one task per block at most (Ray warns of a larger cap)
    return ray.data.from_arrow(blocks).map_batches(
        ingest.decode_batch,  # type: ignore[arg-type]  # its keyword-only arguments come in fn_kwargs
        batch_format="pyarrow",
        batch_size=None,
        num_cpus=cfg.decode_cpus,
        compute=ray.data.TaskPoolStrategy(size=tasks),
        fn_kwargs={"size": int(size), "crop_bottom": crop_bottom_of(cfg.crop_bottom, cfg.format)},
        udf_modifying_row_count=False,
    )
