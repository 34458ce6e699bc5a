"""Bulk pseudo-labeling: every image of a collection → one row of the predictions table (Parquet).

Stages (Ray Data, streaming; nothing is collected on the driver but the rows of unfinished shards)::

    frozen input list (sorted paths)                                  driver, once per output folder
      → ingest.decode_batch            CPU tasks (decode_cpus each): read, EXIF, RGB, uint8, resized to
                                       the model's input (224; a CAML model's training crop)
      → LocalizeBatch                  actor pool (num_actors × actor_cpus, a GPU each when use_gpu):
                                       model file loaded once; normalise → attention map → uint8 heatmap
      → heatmaps_to_box_rows           CPU tasks: score map (SPEC §6) → box at τ → original pixels, score
                                       (with boxes=all also every region's box and score;
                                       coloc_core.predict.locate, the Python API's own step); in the
                                       actor itself on CPU, and on every device for a model whose
                                       scores take the content term (it encodes each box's crop)
      → driver: rows grouped by shard; a complete shard is written as ONE Parquet file, atomically

Exactly-once and resumable
--------------------------
The first run freezes the plan in the output folder: ``_inputs.arrow`` (the sorted, de-duplicated
input paths, an Arrow IPC file), the baseline model file ``_model.pt`` (training-free methods only) and
``_manifest.json`` (model id, τ, rows_per_file, input count, the segments, the resolved config) —
written in that order, the manifest last. The input list is cut into fixed shards of R = rows_per_file
images; shard k is written as ``part-%05d.parquet`` (with the key-value metadata of
:func:`pipelines.schema.file_metadata`) with one atomic write (local: temp file + fsync + rename; S3:
one upload that becomes visible only when complete), so a part file either holds its whole shard or
does not exist.
A run (first or resumed) labels only the shards without a valid part file (footer readable, row count
and schema right; anything else is deleted and redone) and writes ``_SUCCESS`` (the summary of the
whole folder as JSON) when every shard is present. Since every image belongs to exactly one shard and
each shard has one file name, an interrupted run — at any point — started again with the same output
ends with exactly one row per input image, and finished shards are never rewritten. A different
model, method, τ or rows_per_file on the same output is an error (checked before anything is
written). One run at a time per output folder.

A storage outage is not a bad image: reads retry transient faults (``pipelines.storage``), and when
storage stays unreachable the run stops with ``StorageUnavailableError`` ("storage unreachable ..."):
the part files written so far stay, the other shards are not written (no error row is made up for an
image that was not read), ``_SUCCESS`` is not written, and the same command run again once storage is
back labels the rest. Checking the part files of a resumed run is no exception: a part file whose footer
cannot be read because storage is down is not taken for a torn one (and deleted).

New inputs on a rerun
---------------------
A rerun lists the inputs again. Images not in the frozen list are appended to it as a new *segment*:
sorted, cut into shards of R starting at the next free shard number (a segment never shares a shard
with an earlier one, so the old part files keep their meaning and are never rewritten; the last shard
of each segment may be short). The manifest's ``segments`` (image counts, in order) fixes the layout.
The rerun commits the new segment in a crash-safe order: ``_SUCCESS`` is removed, ``_inputs.arrow`` is
rewritten (old rows + the new ones appended) and then ``_manifest.json``, which is the commit point:
inputs rows beyond the manifest's ``num_images`` are an uncommitted append of a run that died in
between, dropped when the folder is read (and the new images are found again by the listing). Part
files of the new shards are written only after the commit. Images of the frozen list that are no
longer listed are reported (a warning with the count and examples, and ``images_missing`` in the
summary); their rows stay. New images while none of the labelled ones is listed any more (the same
images under other names?) are refused rather than labelled twice. A fitted training-free model
(``_model.pt``) is reused for the new images, not refitted. A rerun that finds nothing to do writes
nothing.

Readers open the folder with a glob
------------------------------------
The part files are the only ``*.parquet`` files of the folder, so ``read_parquet('labels/*.parquet')``
(DuckDB, Polars), ``pd.read_parquet('labels')`` and ``pyarrow.dataset`` all read exactly one row per
input image. The folder's own bookkeeping is not Parquet: folders written before this layout hold
``_inputs.parquet`` instead, which a resumed run reads and replaces with ``_inputs.arrow``
(:func:`pipelines.label_inputs.read_inputs`).

The folder's file names, the manifest and ``_SUCCESS`` files, the part-file names and reading the table
back are :mod:`pipelines.predictions`' (evaluate, export and calibrate read the folder through it).

Boxes and score: see :mod:`pipelines.schema` (the box is computed from the stored, quantised heatmap,
so evaluation from the table reproduces it exactly). ``boxes=all`` also fills the ``boxes`` column
(every region's box and score); the folder records the choice in its manifest, and a rerun must make
the same one. A folder written before that column existed (schema version 1) is resumed in its own
layout (no ``boxes`` column, ``boxes=one`` only), so its part files stay alike.

The stage's parts: :mod:`pipelines.label_inputs` (the input list), :mod:`pipelines.label_plan` (the
plan and its manifest), :mod:`pipelines.label_fit` (the training-free models),
:mod:`pipelines.label_actors` (the per-batch work on the workers) and :mod:`pipelines.label_shards`
(rows → part files); this module runs them (:func:`run_labeling`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from coloc_core.box_score import has_repeats
from pipelines import console, storage
from pipelines.config import LabelJobConfig, check_label_config
from pipelines.label_actors import LocalizeBatch, actor_count, decoded_images
from pipelines.label_plan import MISSING_EXAMPLES, plan_labeling
from pipelines.label_shards import ShardWriter, finished_shards, heatmaps_to_box_rows, table_totals
from pipelines.predictions import SUCCESS

log = logging.getLogger(__name__)


@dataclass
class LabelSummary:
    """What a labeling run did.

    Attributes:
        out: the output folder.
        images: rows in the table (= input images) when complete.
        errors: error rows in the table.
        errors_by_kind: those rows counted by ``error_kind`` (``pipelines.schema.ERROR_KINDS``); rows of
            part files written before that column existed count as ``"unknown"``.
        shards: part files in the table.
        shards_written: part files written by this run (the rest were there already).
        images_labelled: images labelled by this run.
        seconds: wall time of this run.
        images_per_s: ``images_labelled / seconds`` (this run).
        model_id: model id written in every row.
        threshold: τ used.
        images_added: images found by this run's listing that were not in the frozen input list
            (labelled into new part files).
        images_missing: images of the frozen input list that this run's listing no longer finds
            (their rows stay).
        missing_examples: a few of those paths.
    """

    out: str
    images: int
    errors: int
    errors_by_kind: dict[str, int]
    shards: int
    shards_written: int
    images_labelled: int
    seconds: float
    images_per_s: float
    model_id: str
    threshold: float
    images_added: int = 0
    images_missing: int = 0
    missing_examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict."""
        return asdict(self)


def _storage_outage(err: BaseException) -> str | None:
    """The "storage unreachable" message when ``err`` is, or wraps, a storage outage; else None.

    Ray hands a task's exception back wrapped (``RayTaskError``, Ray Data's ``UserCodeException``),
    sometimes only as text: its causes (``__cause__``, ``cause``) are followed and its text looked at.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, storage.StorageUnavailableError):
            return str(current).splitlines()[0] if str(current) else type(current).__name__
        inner = getattr(current, "cause", None)
        current = current.__cause__ or (inner if isinstance(inner, BaseException) else None)
    text = str(err)
    start = text.find("storage unreachable:")
    if start >= 0 or "StorageUnavailableError" in text:
        return text[max(start, 0) :].splitlines()[0]
    return None


# ------------------------------------------------------------------------------------------- run


def run_labeling(cfg: LabelJobConfig, on_shard_written: Any = None) -> LabelSummary:
    """Label every image of ``cfg.images`` into the predictions table at ``cfg.out`` (resumable).

    Args:
        cfg: the job config (see :class:`pipelines.config.LabelJobConfig`).
        on_shard_written: optional ``callable(shard_index)`` called right after each part file is
            written, before the next one (progress hooks; tests use it to interrupt a run).

    Returns:
        The summary: totals of the whole folder (``images``, ``errors``, ``shards``) and what this run
        did; also written to ``<out>/_SUCCESS`` as JSON when this run wrote a part file or the folder
        had no ``_SUCCESS`` yet.

    Raises:
        ValueError: on a bad config, or an output folder labelled with another model / τ / rows_per_file.
    """
    import ray.data  # noqa: PLC0415

    cfg = check_label_config(cfg)
    start = time.monotonic()
    if cfg.num_actors == 0:  # sized to the cluster now, so the fit passes leave the actors their CPUs too
        console.ray_init()
        cfg = replace(cfg, num_actors=actor_count(cfg, ray.cluster_resources()))
    storage.makedirs(cfg.out)
    plan = plan_labeling(cfg)
    done = finished_shards(plan, cfg.out)
    pending = [s for s in range(plan.num_shards) if s not in done]
    log.info(
        "label: %d images in %d shards of %d; %d shards already written, %d to do; model %s, τ=%.3f; "
        "%d model actor%s",
        plan.num_images,
        plan.num_shards,
        plan.rows_per_file,
        len(done),
        len(pending),
        plan.model_id,
        plan.threshold,
        cfg.num_actors,
        "" if cfg.num_actors == 1 else "s",
    )
    writer = ShardWriter(plan, cfg.out, pending)
    folder = writer.folder
    if pending:
        folder.remove_success()
        indices = np.concatenate([plan.shard_rows(s) for s in pending])
        # A model whose scores take the content term crops its boxes from the images in the actor, and
        # one whose scores take the repetition term reads the features of the actor's forward pass.
        postprocess_in_actor = not cfg.use_gpu or plan.content or has_repeats(plan.box_sizes)
        ds = decoded_images(plan.inputs, indices, cfg, plan.image_size).map_batches(
            LocalizeBatch,
            compute=ray.data.ActorPoolStrategy(size=cfg.num_actors),
            num_cpus=cfg.actor_cpus,
            num_gpus=1 if cfg.use_gpu else None,
            batch_size=cfg.batch_size,
            batch_format="numpy",
            fn_constructor_kwargs={
                "model_uri": plan.model_uri,
                "threshold": plan.threshold,
                "model_id": plan.model_id,
                "use_gpu": cfg.use_gpu,
                "num_threads": max(1, math.ceil(cfg.actor_cpus)),
                "postprocess": postprocess_in_actor,
                "all_boxes": plan.all_boxes,
                "box_sizes": plan.box_sizes,
                "pick": plan.pick,
                "content_halves": plan.content_halves,
            },
            udf_modifying_row_count=False,
        )
        if not postprocess_in_actor:  # boxes on CPU tasks, so the GPU actors only run the network
            ds = ds.map_batches(
                heatmaps_to_box_rows,
                batch_format="pyarrow",
                batch_size=None,
                num_cpus=cfg.decode_cpus,
                fn_kwargs={"all_boxes": plan.all_boxes, "box_sizes": plan.box_sizes, "pick": plan.pick},
                udf_modifying_row_count=False,
            )
        todo = int(sum(plan.shard_size(s) for s in pending))
        name = cfg.out.rstrip("/").rsplit("/", 1)[-1]
        try:
            with console.progress(f"label {name}", total=todo) as bar:
                for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                    bar.update(batch.num_rows)
                    writer.add(batch, on_written=on_shard_written)
        except Exception as err:
            outage = _storage_outage(err)
            if outage is None:
                raise
            # No row was made up for the images not read: their shards stay unwritten, so a rerun
            # labels them (the shards written so far are kept).
            raise storage.StorageUnavailableError(
                f"label: storage unreachable, labeling of {cfg.out} stopped: {writer.written} of "
                f"{len(pending)} pending part files written by this run, the other "
                f"{len(writer.pending)} not written (no error row for their images) and no {SUCCESS}; "
                f"run the same command again once storage is reachable. Cause: {outage}"
            ) from err
        writer.check_complete()
    elapsed = time.monotonic() - start
    rows, errors_by_kind = table_totals(cfg.out, plan)
    if rows != plan.num_images:
        raise RuntimeError(f"label: the table has {rows} rows for {plan.num_images} images")
    summary = LabelSummary(
        out=cfg.out,
        images=rows,
        errors=sum(errors_by_kind.values()),
        errors_by_kind=errors_by_kind,
        shards=plan.num_shards,
        shards_written=writer.written,
        images_labelled=writer.rows_written,
        seconds=round(elapsed, 3),
        images_per_s=round(writer.rows_written / elapsed, 3) if elapsed > 0 else 0.0,
        model_id=plan.model_id,
        threshold=plan.threshold,
        images_added=plan.images_added,
        images_missing=len(plan.missing),
        missing_examples=plan.missing[:MISSING_EXAMPLES],
    )
    # The totals are the whole folder's. A rerun that wrote nothing leaves an existing _SUCCESS alone
    # (it writes nothing); a missing one (a crash after the last part file) is written.
    if writer.written or not folder.has_success():
        folder.write_success(summary.to_dict())
    log.info(
        "label: done: %d images (%d errors%s) in %d part files; "
        "this run labelled %d images in %.1f s (%.1f images/s)",
        summary.images,
        summary.errors,
        "".join(f", {n} {kind}" for kind, n in summary.errors_by_kind.items()),
        summary.shards,
        summary.images_labelled,
        summary.seconds,
        summary.images_per_s,
    )
    return summary
