"""Bulk pseudo-labeling: every image of a collection → one row of the predictions table (Parquet).

Stages (Ray Data, streaming; nothing is collected on the driver but the rows of unfinished shards)::

    frozen input list (sorted paths)                                  driver, once per output folder
      → ingest.decode_batch            CPU tasks (decode_cpus each): read, EXIF, RGB, uint8, resized to
                                       the model's input (224; a CAML model's training crop)
      → LocalizeBatch                  actor pool (num_actors × actor_cpus, a GPU each when use_gpu):
                                       model file loaded once; normalise → attention map → uint8 heatmap
      → heatmaps_to_box_rows           CPU tasks: score map (SPEC §6) → box at τ → original pixels, score
                                       (with boxes=all also every region's box and score;
                                       coloc_core.predict.locate, the Python API's own step)
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
(:func:`read_inputs`).

The folder's file names, the manifest and ``_SUCCESS`` files, the part-file names and reading the table
back are :mod:`pipelines.predictions`' (evaluate, export and calibrate read the folder through it).

Boxes and score: see :mod:`pipelines.schema` (the box is computed from the stored, quantised heatmap,
so evaluation from the table reproduces it exactly). ``boxes=all`` also fills the ``boxes`` column
(every region's box and score); the folder records the choice in its manifest, and a rerun must make
the same one. A folder written before that column existed (schema version 1) is resumed in its own
layout (no ``boxes`` column, ``boxes=one`` only), so its part files stay alike.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from coloc_core.checkpoint import read_model_payload
from coloc_core.heatmap import quantize_heatmap
from coloc_core.localizer import (
    DEFAULT_FIT_SIZE,
    DEFAULT_INPUT_SIZES,
    SELFTRAIN_ROUNDS,
    baseline_payload,
    ddt_from_statistics,
    fit_selftrain,
    localizer_from_payload,
    payload_input_size,
    payload_kind,
    rps_from_statistics,
)
from coloc_core.predict import attention_maps, locate
from pipelines import console, ingest, schema, storage
from pipelines.config import LABEL_METHODS, LabelJobConfig, check_label_config, dump
from pipelines.predictions import (
    INPUTS,
    LEGACY_INPUTS,
    MANIFEST,
    MANIFEST_VERSION,
    SUCCESS,
    PredictionsFolder,
    decode_heatmap,
    encode_heatmap,
    is_part_temp,
    part_files,
    part_name,
    shard_of,
)

log = logging.getLogger(__name__)

METHODS = LABEL_METHODS
# Methods fitted on collection statistics before labeling (one streamed pass over a sample).
FITTED = ("ddt", "rps", "selftrain")
# DDT / RPS are fitted on at most this many images, spread evenly over the sorted collection.
DDT_FIT_IMAGES = 2000
DDT_FIT_BATCH = 64
SHARD = "_shard"  # internal column: the row's shard (dropped before writing)
_INPUT_SCHEMA = pa.schema(
    [pa.field("path", pa.string(), nullable=False), ("width", pa.int32()), ("height", pa.int32())]
)


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


@dataclass
class LabelPlan:
    """The frozen plan of an output folder (see module docstring).

    ``segments``: the image counts of the input list's segments, in order (the first listing, then
    each rerun's new images); each segment is cut into shards of ``rows_per_file`` starting at a new
    shard. ``None`` = one segment (the whole list).
    """

    inputs: pa.Table  # _INPUT_SCHEMA, each segment sorted by path
    model_uri: str
    model_id: str
    threshold: float
    rows_per_file: int
    manifest: dict[str, Any]
    segments: list[int] | None = None
    images_added: int = 0  # this run's new images (the last segment), 0 when none
    missing: list[str] = field(default_factory=list)  # frozen inputs this run's listing lacks
    image_size: int = field(kw_only=True)  # side the images are resized to (the model's input size)

    def __post_init__(self) -> None:
        if self.segments is None:
            self.segments = [self.num_images]
        if sum(self.segments) != self.num_images or min(self.segments, default=0) < 0:
            raise ValueError(f"label: segments {self.segments} do not add up to {self.num_images} inputs")
        starts: list[int] = []
        offset = 0
        for count in self.segments:
            starts.extend(range(offset, offset + count, self.rows_per_file))
            offset += count
        # Shard s holds input rows [starts[s], starts[s + 1]).
        self._starts = np.array([*starts, offset], dtype=np.int64)

    @property
    def num_images(self) -> int:
        """Input images."""
        return int(self.inputs.num_rows)

    @property
    def all_boxes(self) -> bool:
        """Whether the folder holds every box (``boxes=all``, recorded in the manifest)."""
        return self.manifest.get("boxes", "one") == "all"

    @property
    def schema_version(self) -> int:
        """The part files' schema version: the folder's own (1 before ``boxes``, 2 before ``error_kind``).

        The manifest's ``schema_version``, lowered to what its column list (``schema``) holds.
        """
        version = int(self.manifest.get("schema_version", schema.SCHEMA_VERSION))
        listed = self.manifest.get("schema")
        if listed is not None:
            version = min(version, schema.version_of_columns(str(c).split(":", 1)[0] for c in listed))
        return version

    @property
    def schema(self) -> pa.Schema:
        """The part files' schema (:attr:`schema_version`)."""
        return schema.schema_of_version(self.schema_version)

    @property
    def num_shards(self) -> int:
        """Shards (= part files when complete)."""
        return len(self._starts) - 1

    def shard_size(self, shard: int) -> int:
        """Rows of shard ``shard``."""
        return int(self._starts[shard + 1] - self._starts[shard])

    def shard_rows(self, shard: int) -> np.ndarray:
        """The input rows (positions in ``inputs``) of shard ``shard``."""
        return np.arange(self._starts[shard], self._starts[shard + 1], dtype=np.int64)

    def shard_of(self, rows: np.ndarray) -> np.ndarray:
        """The shard of each input row position."""
        return np.searchsorted(self._starts, np.asarray(rows, dtype=np.int64), side="right") - 1


# --------------------------------------------------------------------------------------- actors


class LocalizeBatch:
    """Ray Data callable class: decoded uint8 images → uint8 heatmaps at feature resolution.

    The model file is read once per actor (local or ``s3://``). Runs under ``torch.inference_mode``;
    on GPU with bf16 autocast and channels_last. Error rows pass through (no forward pass).

    Args:
        model_uri: model file (``coloc_core.checkpoint`` format, optional ``kind``).
        threshold: τ written in every row.
        model_id: id written in every row (checked against the file).
        use_gpu: run on CUDA (an error when no GPU is visible).
        num_threads: torch intra-op threads on CPU.
        postprocess: also compute boxes and scores (:func:`heatmaps_to_box_rows`) in the actor. On CPU
            that costs ~1 ms next to ~100 ms of network per image and saves a stage; on GPU it is left
            to a separate CPU stage so the accelerator never waits for contour searches.
        endpoint_url: S3 endpoint override.
        all_boxes: with ``postprocess``, also every region's box and score (``boxes=all``).
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
    ) -> None:
        import torch  # noqa: PLC0415

        payload = read_model_payload(storage.read_bytes(model_uri, endpoint_url))
        if payload.get("model_id") != model_id:
            raise ValueError(f"{model_uri} has model id {payload.get('model_id')}, expected {model_id}")
        localizer = localizer_from_payload(payload)
        if use_gpu:
            if not torch.cuda.is_available():
                raise RuntimeError("use_gpu=true but this actor sees no CUDA device")
            self.device = torch.device("cuda")
            localizer = localizer.to(self.device).to(memory_format=torch.channels_last)
        else:
            self.device = torch.device("cpu")
            torch.set_num_threads(max(1, int(num_threads)))
        self.localizer = localizer.eval()
        self.threshold = float(threshold)
        self.model_id = model_id
        self.postprocess = postprocess
        self.all_boxes = all_boxes

    def attention(self, images: np.ndarray) -> np.ndarray:
        """Attention maps of uint8 images.

        Shape:
            images: (B, H, W, 3) uint8. Returns (B, h, w) float32 (CPU numpy).
        """
        return attention_maps(self.localizer, images)  # the Python API's step too

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
        if ok.any():
            maps = self.attention(batch[ingest.IMAGE][ok])
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
                schema.WIDTH: pa.array(_nullable_ints(batch[ingest.WIDTH]), pa.int32()),
                schema.HEIGHT: pa.array(_nullable_ints(batch[ingest.HEIGHT]), pa.int32()),
                schema.HEATMAP: pa.array(heatmaps, pa.binary()),
                schema.HEATMAP_H: pa.array(hs, pa.int16()),
                schema.HEATMAP_W: pa.array(ws, pa.int16()),
                schema.THRESHOLD: pa.array([self.threshold] * n, pa.float32()),
                schema.MODEL: pa.array([self.model_id] * n, pa.string()),
                schema.ERROR: pa.array([None if e is None else str(e) for e in errors], pa.string()),
                schema.ERROR_KIND: pa.array([None if k is None else str(k) for k in kinds], pa.string()),
            }
        )
        return heatmaps_to_box_rows(table, self.all_boxes) if self.postprocess else table


def _nullable_ints(values: Iterable[Any]) -> list[int | None]:
    out: list[int | None] = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        else:
            out.append(int(v))
    return out


def heatmaps_to_box_rows(batch: pa.Table, all_boxes: bool = False) -> pa.Table:
    """Heatmap rows (from :class:`LocalizeBatch`) → full prediction rows + the internal index column.

    Per image, :func:`coloc_core.predict.locate` (what ``Predictor.predict`` runs too): the stored
    heatmap → SPEC §6 score map at 224 → the single largest-contour box at τ → original pixel
    coordinates (``coloc_core.boxes.boxes_to_original``) and ``box_score``; with ``all_boxes`` also
    every region's box and score into the ``boxes`` column (null otherwise).
    """
    rows = batch.to_pydict()
    n = batch.num_rows
    coords: list[list[float | None]] = [[None] * n for _ in range(4)]
    scores: list[float | None] = [None] * n
    every: list[list[dict[str, float]] | None] = [None] * n
    errors = list(rows[schema.ERROR])
    kinds = list(rows.get(schema.ERROR_KIND) or [None] * n)
    for i in range(n):
        heat = decode_heatmap(rows[schema.HEATMAP][i], rows[schema.HEATMAP_H][i], rows[schema.HEATMAP_W][i])
        if heat is None or errors[i] is not None:
            continue
        width, height = rows[schema.WIDTH][i], rows[schema.HEIGHT][i]
        if not width or not height:
            errors[i] = f"{rows[schema.PATH][i]}: unknown image size"
            kinds[i] = schema.KIND_DECODE  # the decode gave no size (defensive: it always does)
            continue
        loc = locate(heat, float(rows[schema.THRESHOLD][i]), (int(width), int(height)), all_boxes=all_boxes)
        for c in range(4):
            coords[c][i] = float(loc.box[c])
        scores[i] = float(loc.score)
        if loc.boxes is not None and loc.scores is not None:
            every[i] = schema.box_entries(loc.boxes, loc.scores)
    columns = {name: rows[name] for name in schema.COLUMNS if name in rows}
    for name, values in zip(schema.BOX_COLUMNS, coords, strict=True):
        columns[name] = values
    columns[schema.SCORE] = scores
    columns[schema.ERROR] = errors
    columns[schema.ERROR_KIND] = kinds
    columns[schema.BOXES] = every
    table = schema.to_table(columns)
    return table.append_column(ingest.INDEX, batch.column(ingest.INDEX))


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
) -> dict[str, np.ndarray]:
    """Ingest rows → one row of feature statistics of the good images (DDT, RPS, self-training).

    Args:
        batch: ingest rows (``ingest.IMAGE`` uint8 images, ``ingest.ERROR``).
        model_uri: the frozen backbone's payload file (read once per worker process).
        num_threads: torch threads of the worker.
        head: ``(weight, bias, level)`` of a linear map: return its per-class moments
            (``coloc_core.localizer.class_statistics``) instead of the collection statistics.

    Returns:
        One row per key of ``coloc_core.localizer.STATISTICS`` (``feature_statistics``) or, with
        ``head``, of ``CLASS_STATISTICS``; summed on the driver; matrices are flattened ((1, C*C)).
        Plus :data:`FIT_ROWS`, the number of input rows (the driver's progress bar counts them).
    """
    import torch  # noqa: PLC0415

    from coloc_core.localizer import (  # noqa: PLC0415
        CLASS_STATISTICS,
        STATISTICS,
        class_statistics,
        feature_statistics,
    )
    from coloc_core.predict import feature_maps  # noqa: PLC0415

    localizer: Any = _FIT_LOCALIZERS.get(model_uri)
    if localizer is None:
        torch.set_num_threads(max(1, int(num_threads)))
        localizer = localizer_from_payload(read_model_payload(storage.read_bytes(model_uri)))
        _FIT_LOCALIZERS[model_uri] = localizer
    ok = np.array([e is None for e in batch[ingest.ERROR]], dtype=bool)
    with torch.inference_mode():
        if ok.any():
            feats = feature_maps(localizer, batch[ingest.IMAGE][ok])
        else:  # no good image in this batch: the statistics of no descriptor (all zero)
            feats = torch.zeros(0, int(localizer.channels), 1, 1)
        if head is None:
            stats, keys = feature_statistics(feats), STATISTICS
        else:
            weight, bias, level = head
            stats = class_statistics(feats, torch.tensor(weight, dtype=torch.float64), bias, level)
            keys = CLASS_STATISTICS
    out = {k: stats[k].numpy().reshape(1, -1) if stats[k].ndim else stats[k].numpy().reshape(1) for k in keys}
    out[FIT_ROWS] = np.array([len(ok)], dtype=np.int64)  # input rows of this batch: the driver's progress
    return out


# ---------------------------------------------------------------------------------------- planning


def _validate(cfg: LabelJobConfig) -> LabelJobConfig:
    # The same checks as the command line's, also for configs built in code; resolves method=auto.
    return check_label_config(cfg)


def list_inputs(cfg: LabelJobConfig, apply_limit: bool = True) -> pa.Table:
    """The images to label: sorted, de-duplicated paths (+ sizes where the dataset gives them).

    ``apply_limit=False`` lists them all, ignoring ``cfg.limit`` (a rerun caps its new images itself).
    """
    if cfg.format == "folder":
        paths = storage.list_images(cfg.images)
        if not paths:
            raise ingest.no_images_error(cfg.images)
        sizes: dict[str, tuple[int | None, int | None]] = {p: (None, None) for p in paths}
    else:
        records = ingest.read_records(cfg.format, cfg.images, cfg.split)
        sizes = {}
        for r in records:
            sizes.setdefault(r.path, (r.width, r.height))
    ordered = sorted(sizes)
    if apply_limit and cfg.limit > 0:
        ordered = ordered[: cfg.limit]
    if not ordered:
        raise FileNotFoundError(
            f"no images to label under {cfg.images} (format={cfg.format}, split={cfg.split})"
        )
    return pa.table(
        {
            "path": ordered,
            "width": [sizes[p][0] for p in ordered],
            "height": [sizes[p][1] for p in ordered],
        },
        schema=_INPUT_SCHEMA,
    )


def _write_parquet(uri: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    storage.write_bytes_atomic(uri, buffer.getvalue())


def _read_parquet(uri: str, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(io.BytesIO(storage.read_bytes(uri)), columns=columns)


def write_inputs(out: str, inputs: pa.Table) -> None:
    """Write the frozen input list to ``<out>/_inputs.arrow`` (Arrow IPC file, zstd), atomically."""
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_file(sink, inputs.schema, options=options) as writer:
        writer.write_table(inputs)
    storage.write_bytes_atomic(PredictionsFolder(out).inputs, sink.getvalue().to_pybytes())


def read_inputs(out: str) -> pa.Table:
    """The frozen input list of ``out``.

    A folder written before the inputs file left the ``*.parquet`` glob holds ``_inputs.parquet``:
    it is read, written again as ``_inputs.arrow`` and then removed, so the folder reads with a glob
    from then on (a crash in between leaves both, and the new one is read).

    Raises:
        FileNotFoundError: when neither file exists.
    """
    folder = PredictionsFolder(out)
    if storage.exists(folder.inputs):
        with pa.ipc.open_file(pa.BufferReader(storage.read_bytes(folder.inputs))) as reader:
            return reader.read_all()
    legacy = folder.legacy_inputs
    if not storage.exists(legacy):
        raise FileNotFoundError(
            f"{out} has no {INPUTS} (nor {LEGACY_INPUTS}): the labeling plan is incomplete"
        )
    inputs = _read_parquet(legacy)
    write_inputs(out, inputs)
    storage.remove(legacy)
    log.info("label: %s: moved the input list %s to %s (not a *.parquet file)", out, LEGACY_INPUTS, INPUTS)
    return inputs


def _baseline_spec(cfg: LabelJobConfig) -> dict[str, Any]:
    spec: dict[str, Any] = {"method": cfg.method, "backbone": None if cfg.method == "full" else cfg.backbone}
    # Recorded only when set, so that folders labelled before these options existed still match.
    for key in ("feature_layer", "stride16"):
        if getattr(cfg, key) != "auto":
            spec[key] = getattr(cfg, key)
    for key in ("image_size", "fit_size"):
        if getattr(cfg, key):
            spec[key] = getattr(cfg, key)
    return spec


def _mismatch(out: str, what: str, old: Any, new: Any) -> ValueError:
    return ValueError(
        f"{out} already holds predictions with {what}={old!r}, this run has {what}={new!r}: "
        "use a new output folder (or delete the old one) instead of mixing them"
    )


def _load_plan(cfg: LabelJobConfig, manifest: dict[str, Any]) -> LabelPlan:
    out = cfg.out
    folder = PredictionsFolder(out)
    if manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{folder.manifest}: unknown manifest version {manifest.get('version')}")
    for key in ("rows_per_file", "images", "format", "split", "limit"):
        if key in manifest and manifest[key] != getattr(cfg, key):
            raise _mismatch(out, key, manifest[key], getattr(cfg, key))
    if manifest.get("boxes", "one") != cfg.boxes:  # folders from before the option hold one box
        raise _mismatch(out, "boxes", manifest.get("boxes", "one"), cfg.boxes)
    if cfg.method == "model":
        payload = read_model_payload(storage.read_bytes(cfg.model))
        model_uri, model_id = cfg.model, str(payload["model_id"])
        stored_tau = float(payload["threshold"])
    else:
        if manifest.get("baseline") != _baseline_spec(cfg):
            raise _mismatch(out, "method", manifest.get("baseline") or "model", _baseline_spec(cfg))
        model_uri = folder.model_file
        payload = read_model_payload(storage.read_bytes(model_uri))
        model_id, stored_tau = str(payload["model_id"]), float(payload["threshold"])
    if model_id != manifest["model_id"]:
        raise _mismatch(out, "model id", manifest["model_id"], model_id)
    image_size = payload_input_size(payload)
    threshold = cfg.threshold if cfg.threshold >= 0 else stored_tau
    if not math.isclose(threshold, manifest["threshold"], abs_tol=1e-9):
        raise _mismatch(out, "threshold", manifest["threshold"], threshold)
    inputs = read_inputs(out)
    committed = int(manifest["num_images"])
    segments = _manifest_segments(manifest)
    if inputs.num_rows < committed or sum(segments) != committed:
        raise ValueError(
            f"{folder.inputs} has {inputs.num_rows} rows, the manifest says {committed} "
            f"(segments {segments}): the folder's plan is damaged; use a new output folder"
        )
    uncommitted = inputs.num_rows - committed
    if uncommitted:  # a rerun died between writing the inputs and the manifest (module docstring)
        log.warning(
            "label: %s: dropping %d uncommitted input rows of an interrupted rerun (listed again now)",
            out,
            uncommitted,
        )
        inputs = inputs.slice(0, committed)
    log.info(
        "label: resuming %s (%d images in %d listing(s), model %s, τ=%.3f)",
        out,
        inputs.num_rows,
        len(segments),
        model_id,
        threshold,
    )
    plan = LabelPlan(
        inputs, model_uri, model_id, threshold, cfg.rows_per_file, manifest, segments, image_size=image_size
    )
    return _extend_plan(cfg, plan, rewrite_inputs=uncommitted > 0)


def _manifest_segments(manifest: dict[str, Any]) -> list[int]:
    # Manifests written before reruns could add inputs hold one segment: the whole list.
    segments = manifest.get("segments")
    if segments is None:
        return [int(manifest["num_images"])]
    return [int(seg["images"]) for seg in segments]


def _segment_entry(images: int, first_shard: int) -> dict[str, Any]:
    return {"images": images, "first_shard": first_shard, "listed": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


MISSING_EXAMPLES = 5  # paths named in the warning (and the summary) about inputs no longer listed


def _extend_plan(cfg: LabelJobConfig, plan: LabelPlan, rewrite_inputs: bool = False) -> LabelPlan:
    """List the inputs again: append the new images to the plan (committed), report the missing ones.

    Order of the writes (crash-safe, module docstring): ``_SUCCESS`` removed, ``_inputs.arrow``
    (old rows + new rows), ``_manifest.json`` (the commit point).
    """
    out = cfg.out
    try:
        listed = list_inputs(cfg, apply_limit=False)
    except FileNotFoundError as err:  # the input is gone: every frozen image is missing; resume anyway
        log.warning("label: listing %s again found no images (%s)", cfg.images, err)
        listed = _INPUT_SCHEMA.empty_table()
    frozen_paths = plan.inputs.column("path").combine_chunks()
    listed_paths = listed.column("path").combine_chunks()
    new = listed.filter(pc.invert(pc.is_in(listed_paths, value_set=frozen_paths)))
    if cfg.limit > 0:
        new = new.slice(0, max(0, cfg.limit - plan.num_images))
    missing_mask = pc.invert(pc.is_in(frozen_paths, value_set=listed_paths))
    missing = plan.inputs.filter(missing_mask).column("path").to_pylist()
    if missing:
        log.warning(
            "label: %d of the %d images labelled in %s are no longer listed under %s (e.g. %s); "
            "their rows stay in the table",
            len(missing),
            plan.num_images,
            out,
            cfg.images,
            ", ".join(missing[:MISSING_EXAMPLES]),
        )
    plan.missing = missing
    if new.num_rows and len(missing) == plan.num_images:
        # Not one labelled path is listed any more, yet others are: most likely the same images listed
        # under other names (another URI form); appending them would label them twice.
        raise ValueError(
            f"{out}: none of its {plan.num_images} labelled images is listed under {cfg.images} any more, "
            f"but {new.num_rows} others are (e.g. {new.column('path')[0].as_py()}): not adding them to "
            "this folder; use a new output folder"
        )
    if new.num_rows == 0:
        if rewrite_inputs:  # drop the uncommitted rows from the file too (the manifest is unchanged)
            write_inputs(out, plan.inputs)
        return plan
    inputs = pa.concat_tables([plan.inputs, new.select(plan.inputs.column_names).cast(plan.inputs.schema)])
    segments = [*(plan.segments or []), new.num_rows]
    manifest = dict(plan.manifest)
    manifest["segments"] = [
        *manifest.get("segments", [_segment_entry(plan.num_images, 0)]),
        _segment_entry(new.num_rows, plan.num_shards),
    ]
    extended = LabelPlan(
        inputs,
        plan.model_uri,
        plan.model_id,
        plan.threshold,
        plan.rows_per_file,
        manifest,
        segments,
        images_added=new.num_rows,
        missing=missing,
        image_size=plan.image_size,
    )
    manifest.update(
        num_images=extended.num_images,
        num_shards=extended.num_shards,
        updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    log.info(
        "label: %d new images under %s since the last listing: shards %d..%d",
        new.num_rows,
        cfg.images,
        plan.num_shards,
        extended.num_shards - 1,
    )
    folder = PredictionsFolder(out)
    folder.remove_success()  # the folder is incomplete from the commit on
    write_inputs(out, inputs)
    folder.write_manifest(manifest)
    return extended


def _new_plan(cfg: LabelJobConfig) -> LabelPlan:
    out = cfg.out
    inputs = list_inputs(cfg)
    log.info("label: %d images under %s", inputs.num_rows, cfg.images)
    write_inputs(out, inputs)
    if cfg.method == "model":
        payload = read_model_payload(storage.read_bytes(cfg.model))
        model_uri = cfg.model
    else:
        payload = fit_baseline_model(cfg, inputs)
        model_uri = PredictionsFolder(out).model_file
        buffer = io.BytesIO()
        import torch  # noqa: PLC0415

        torch.save(payload, buffer)
        storage.write_bytes_atomic(model_uri, buffer.getvalue())
    model_id = str(payload["model_id"])
    threshold = cfg.threshold if cfg.threshold >= 0 else float(payload["threshold"])
    manifest = {
        "version": MANIFEST_VERSION,
        "model_id": model_id,
        "model_kind": payload_kind(payload),
        "model_uri": model_uri,
        "baseline": None if cfg.method == "model" else _baseline_spec(cfg),
        "threshold": threshold,
        "rows_per_file": cfg.rows_per_file,
        "num_images": inputs.num_rows,
        "num_shards": math.ceil(inputs.num_rows / cfg.rows_per_file),
        "segments": [_segment_entry(inputs.num_rows, 0)],
        "images": cfg.images,
        "format": cfg.format,
        "split": cfg.split,
        "limit": cfg.limit,
        "boxes": cfg.boxes,
        "schema": [f"{f.name}:{f.type}" for f in schema.PREDICTIONS_SCHEMA],
        "schema_version": schema.SCHEMA_VERSION,
        "config": dump(cfg),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    PredictionsFolder(out).write_manifest(manifest)
    return LabelPlan(
        inputs,
        model_uri,
        model_id,
        threshold,
        cfg.rows_per_file,
        manifest,
        image_size=payload_input_size(payload),
    )


def plan_labeling(cfg: LabelJobConfig) -> LabelPlan:
    """The plan of ``cfg.out``: the frozen one when a manifest exists, else a new one.

    A frozen plan is checked against ``cfg`` and extended with the images listed since
    (:func:`_extend_plan`).
    """
    cfg = _validate(cfg)
    folder = PredictionsFolder(cfg.out)
    if folder.has_manifest():
        return _load_plan(cfg, folder.read_manifest())
    if part_files(cfg.out):
        raise ValueError(
            f"{cfg.out} holds part files but no {MANIFEST}: it was not written by this labeling stage "
            "(or its manifest was deleted); use a new output folder"
        )
    return _new_plan(cfg)


# ----------------------------------------------------------------------------------------- DDT fit


def fit_baseline_model(cfg: LabelJobConfig, inputs: pa.Table, weights: str | None = "auto") -> dict[str, Any]:
    """The model file payload of ``cfg.method`` (full, caam, ddt, rps, selftrain), fitted on ``inputs``.

    ``weights``: the backbone's weights source ("auto", a file or URI; "none"/None = random init).
    The fitted kinds run Ray Data passes over ``inputs`` (:func:`fit_statistics`), with ``cfg.out`` as
    scratch space for the frozen backbone.
    """
    if weights is not None and weights.lower() == "none":
        weights = None
    meta: dict[str, Any] = {"created_by": "pipelines.label", "images": cfg.images}
    layer, dilate = baseline_backbone_options(cfg)
    options: dict[str, Any] = {
        "backbone": cfg.backbone,
        "feature_layer": layer,
        "dilate": dilate,
        "input_size": cfg.image_size or DEFAULT_INPUT_SIZES[cfg.method],
    }
    if cfg.method in ("full", "caam"):
        return baseline_payload(cfg.method, weights=weights, meta=meta, **options)
    # The fit passes read the collection at the (smaller) fit side; the model labels at input_size.
    fit_size = cfg.fit_size or DEFAULT_FIT_SIZE
    # DDT / RPS: the backbone is frozen in a file first so every statistics task uses the very same
    # weights (and layer).
    caam = baseline_payload("caam", weights=weights, **options)
    options["fit_size"] = fit_size
    backbone_uri = PredictionsFolder(cfg.out).backbone_file
    buffer = io.BytesIO()
    import torch  # noqa: PLC0415

    torch.save(caam, buffer)
    storage.write_bytes_atomic(backbone_uri, buffer.getvalue())
    sample = _ddt_sample(inputs)
    passes = 1 + (SELFTRAIN_ROUNDS if cfg.method == "selftrain" else 0)
    what = f"{passes} passes over {sample.num_rows} images" if passes > 1 else f"{sample.num_rows} images"
    # One bar for the whole fit (every pass): fit_statistics counts each batch's images on it.
    with console.progress(f"fit {cfg.method.upper()} ({what})", total=passes * sample.num_rows):
        stats = fit_statistics(backbone_uri, sample, cfg, size=fit_size)
        if cfg.method == "selftrain":

            def class_pass(weight: Any, bias: float, level: float) -> dict[str, Any]:
                head = ([float(v) for v in weight], float(bias), float(level))
                return fit_statistics(backbone_uri, sample, cfg, head=head, size=fit_size)

            weight, bias, square, rounds = fit_selftrain(stats, class_pass)
    meta.update(fit_images=int(sample.num_rows), fit_descriptors=int(stats["count"]))
    backbone_state = {k[len("backbone.") :]: v for k, v in caam["state_dict"].items()}
    if cfg.method == "ddt":
        mean, vector = ddt_from_statistics(stats)
        return baseline_payload(
            "ddt", backbone_state=backbone_state, ddt_mean=mean, ddt_vector=vector, meta=meta, **options
        )
    if cfg.method == "selftrain":
        meta.update(selftrain_rounds=rounds)
        return baseline_payload(
            "selftrain",
            backbone_state=backbone_state,
            head_weight=weight,
            head_bias=bias,
            head_quadratic=square,
            meta=meta,
            **options,
        )
    vector = rps_from_statistics(
        stats["sum_gap"], int(stats["images"]), stats["sum_unit"], int(stats["count"])
    )
    return baseline_payload("rps", backbone_state=backbone_state, rps_vector=vector, meta=meta, **options)


def baseline_backbone_options(cfg: LabelJobConfig) -> tuple[str, bool | None]:
    """The (feature layer, dilate) of a training-free method, resolving ``auto``.

    ``auto``: DDT and RPS read the last block before the head (``pre_head``) of a stride-16 network
    that is not dilated, where the backbone has one (EfficientNet-Lite0): the best setting measured on
    raccoon and confirmed on kangaroo (docs/RESULTS.md); CAAM keeps the head output of the dilated
    network (its own best); elsewhere the backbone's own output and default.
    """
    from coloc_core.backbones import build_backbone  # noqa: PLC0415

    fitted = cfg.method in FITTED
    layer = cfg.feature_layer
    if layer == "auto":
        probe = build_backbone(cfg.backbone, weights=None)
        layer = "pre_head" if fitted and "pre_head" in probe.feature_layers else "output"
    if cfg.stride16 == "auto":
        dilate = False if fitted and cfg.backbone == "efficientnet_lite0" else None
    else:
        dilate = cfg.stride16 == "dilated"
    return layer, dilate


def _ddt_sample(inputs: pa.Table) -> pa.Table:
    n = inputs.num_rows
    if n <= DDT_FIT_IMAGES:
        return inputs
    picks = np.unique(np.linspace(0, n - 1, DDT_FIT_IMAGES).round().astype(np.int64))
    return inputs.take(pa.array(picks))


def fit_statistics(
    backbone_uri: str,
    inputs: pa.Table,
    cfg: LabelJobConfig,
    head: tuple[list[float], float, float] | None = None,
    *,
    size: int,
) -> dict[str, Any]:
    """The summed feature statistics of ``inputs`` (Ray Data, CPU tasks) as float64 tensors.

    Keys: ``coloc_core.localizer.STATISTICS`` (``sum_xxT`` reshaped to (C, C)); with ``head``
    (``(weight, bias, level)``, a self-training round), ``CLASS_STATISTICS`` (``*_xxT`` (C, C)).
    ``size``: the side every image is resized to (the input size of the model being fitted).

    Raises:
        ValueError: when no image of ``inputs`` could be decoded.
    """
    import torch  # noqa: PLC0415

    from coloc_core.localizer import CLASS_STATISTICS, STATISTICS  # noqa: PLC0415

    ds = _decoded(inputs, np.arange(inputs.num_rows), cfg, size)
    moments = ds.map_batches(
        descriptor_moments_batch,
        num_cpus=cfg.actor_cpus,
        batch_size=DDT_FIT_BATCH,
        batch_format="numpy",
        fn_kwargs={"model_uri": backbone_uri, "num_threads": max(1, math.ceil(cfg.actor_cpus)), "head": head},
    )
    keys = STATISTICS if head is None else CLASS_STATISTICS
    sums: dict[str, np.ndarray] = {}
    for batch in moments.iter_batches(batch_format="numpy", batch_size=None):
        console.advance(int(batch[FIT_ROWS].sum()))  # the fit's bar (fit_baseline_model)
        for key in keys:
            part = batch[key].sum(axis=0)
            sums[key] = part if key not in sums else sums[key] + part
    if not sums or (head is None and int(sums["count"]) < 2):
        raise ValueError(f"{cfg.method.upper()}: no decodable image to fit the feature statistics on")
    channels = sums["sum_x" if head is None else "fg_x"].shape[0]
    out = {k: torch.from_numpy(np.asarray(v)) for k, v in sums.items()}
    for key in keys:
        if key.endswith("xxT"):
            out[key] = out[key].reshape(channels, channels)
    if head is None:
        log.info(
            "label: %s fitted on %d images at %d×%d (%d descriptors, %d channels)",
            cfg.method.upper(),
            inputs.num_rows,
            size,
            size,
            int(sums["count"]),
            channels,
        )
    else:
        log.info(
            "label: self-training round: %d foreground and %d background pixels",
            int(sums["fg_count"]),
            int(sums["bg_count"]),
        )
    return out


# ------------------------------------------------------------------------------------------ shards


def _valid_part(uri: str, expected_rows: int) -> bool:
    """Whether the part file at ``uri`` is complete: footer readable, schema and row count right.

    Raises:
        storage.StorageUnavailableError: when storage cannot be reached (transient faults retried):
            that says nothing about the file, which must not be taken for a torn one and deleted.
    """
    fs, path = storage.filesystem_for(uri, own_retries=False)

    def footer() -> Any:
        with fs.open(path, "rb") as f:
            return pq.read_metadata(f)

    try:
        meta = storage.retry_transient(footer, f"reading the footer of {uri}")
        schema.check_schema(meta.schema.to_arrow_schema())
    except storage.StorageUnavailableError:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable part is redone, and said so
        log.warning("label: %s is not a readable predictions file (%s); it will be redone", uri, err)
        return False
    if meta.num_rows != expected_rows:
        log.warning(
            "label: %s has %d rows, expected %d; it will be redone", uri, meta.num_rows, expected_rows
        )
        return False
    return True


def finished_shards(plan: LabelPlan, out: str) -> set[int]:
    """Shards whose part file exists and is valid; invalid or stray part files are deleted."""
    done: set[int] = set()
    for uri, name in PredictionsFolder(out).top_files():
        if is_part_temp(name):  # a temp file of a killed local write
            storage.remove(uri)
            continue
        shard = shard_of(name)
        if shard is None:
            continue
        if shard < plan.num_shards and _valid_part(uri, plan.shard_size(shard)):
            done.add(shard)
        else:
            storage.remove(uri)
    return done


def _decoded(inputs: pa.Table, indices: np.ndarray, cfg: LabelJobConfig, size: int) -> Any:
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
    return ray.data.from_arrow(blocks).map_batches(
        ingest.decode_batch,
        batch_format="pyarrow",
        batch_size=None,
        num_cpus=cfg.decode_cpus,
        fn_kwargs={"size": int(size)},
        udf_modifying_row_count=False,
    )


class _ShardWriter:
    """Driver side: collects streamed rows per shard and writes each complete shard once, atomically."""

    def __init__(self, plan: LabelPlan, out: str, pending: list[int]) -> None:
        self.plan, self.out = plan, out
        self.folder = PredictionsFolder(out)
        self.open: dict[int, list[pa.Table]] = {}
        self.counts: dict[int, int] = {}
        self.pending = set(pending)
        self.total_pending = len(pending)
        self.written = 0
        self.rows_written = 0
        self.errors = 0
        self.start = time.monotonic()

    def add(self, batch: pa.Table) -> list[int]:
        shards = self.plan.shard_of(batch.column(ingest.INDEX).to_numpy())
        done = []
        for shard in np.unique(shards):
            shard = int(shard)
            if shard not in self.pending:
                raise RuntimeError(f"label: got rows of shard {shard}, which is not pending")
            part = batch.filter(pa.array(shards == shard))
            self.open.setdefault(shard, []).append(part)
            self.counts[shard] = self.counts.get(shard, 0) + part.num_rows
            if self.counts[shard] > self.plan.shard_size(shard):
                raise RuntimeError(f"label: shard {shard} got {self.counts[shard]} rows, more than its size")
            if self.counts[shard] == self.plan.shard_size(shard):
                self._write(shard)
                done.append(shard)
        return done

    def _write(self, shard: int) -> None:
        table = pa.concat_tables(self.open.pop(shard))
        table = table.sort_by(ingest.INDEX).drop_columns([ingest.INDEX])
        table = table.select(self.plan.schema.names).cast(self.plan.schema)
        table = schema.with_file_metadata(table, self.plan.model_id, self.plan.schema_version)
        _write_parquet(self.folder.part(shard), table)
        self.pending.discard(shard)
        errors = table.num_rows - table.column(schema.ERROR).null_count
        self.written += 1
        self.rows_written += table.num_rows
        self.errors += errors
        elapsed = max(time.monotonic() - self.start, 1e-9)
        log.info(
            "label: wrote %s (%d rows, %d errors) | shards %d/%d this run | images %d/%d this run "
            "| %.1f images/s",
            part_name(shard),
            table.num_rows,
            errors,
            self.written,
            self.total_pending,
            self.rows_written,
            sum(self.plan.shard_size(s) for s in self.pending) + self.rows_written,
            self.rows_written / elapsed,
        )

    def check_complete(self) -> None:
        if self.pending:
            missing = sorted(self.pending)
            got = {s: self.counts.get(s, 0) for s in missing[:5]}
            raise RuntimeError(
                f"label: {len(missing)} shards incomplete after the stream ended (rows got: {got})"
            )


UNKNOWN_KIND = "unknown"  # errors_by_kind's key for error rows without a kind (files before schema 3)


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


def _table_totals(out: str, plan: LabelPlan) -> tuple[int, dict[str, int]]:
    """(rows, error rows by ``error_kind``) over all part files, reading only those two columns."""
    rows = 0
    by_kind: dict[str, int] = {}
    folder = PredictionsFolder(out)
    for shard in range(plan.num_shards):
        data = pa.BufferReader(storage.read_bytes(folder.part(shard)))
        table = schema.read_table(data, columns=[schema.ERROR, schema.ERROR_KIND])
        rows += table.num_rows
        erred = table.filter(pc.is_valid(table.column(schema.ERROR)))
        for kind in erred.column(schema.ERROR_KIND).to_pylist():
            key = UNKNOWN_KIND if kind is None else str(kind)
            by_kind[key] = by_kind.get(key, 0) + 1
    return rows, dict(sorted(by_kind.items()))


# ------------------------------------------------------------------------------------------- run


def run_labeling(cfg: LabelJobConfig, on_shard_written: Any = None) -> LabelSummary:
    """Label every image of ``cfg.images`` into the predictions table at ``cfg.out`` (resumable).

    Args:
        cfg: the job config (see :class:`pipelines.config.LabelJobConfig`).
        on_shard_written: optional ``callable(shard_index)`` called after each part file is written
            (progress hooks; tests use it to interrupt a run).

    Returns:
        The summary: totals of the whole folder (``images``, ``errors``, ``shards``) and what this run
        did; also written to ``<out>/_SUCCESS`` as JSON when this run wrote a part file or the folder
        had no ``_SUCCESS`` yet.

    Raises:
        ValueError: on a bad config, or an output folder labelled with another model / τ / rows_per_file.
    """
    import ray.data  # noqa: PLC0415

    cfg = _validate(cfg)
    start = time.monotonic()
    storage.makedirs(cfg.out)
    plan = plan_labeling(cfg)
    done = finished_shards(plan, cfg.out)
    pending = [s for s in range(plan.num_shards) if s not in done]
    log.info(
        "label: %d images in %d shards of %d; %d shards already written, %d to do; model %s, τ=%.3f",
        plan.num_images,
        plan.num_shards,
        plan.rows_per_file,
        len(done),
        len(pending),
        plan.model_id,
        plan.threshold,
    )
    writer = _ShardWriter(plan, cfg.out, pending)
    folder = writer.folder
    if pending:
        folder.remove_success()
        indices = np.concatenate([plan.shard_rows(s) for s in pending])
        ds = _decoded(plan.inputs, indices, cfg, plan.image_size).map_batches(
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
                "postprocess": not cfg.use_gpu,
                "all_boxes": plan.all_boxes,
            },
            udf_modifying_row_count=False,
        )
        if cfg.use_gpu:  # boxes on CPU tasks, so the GPU actors only run the network
            ds = ds.map_batches(
                heatmaps_to_box_rows,
                batch_format="pyarrow",
                batch_size=None,
                num_cpus=cfg.decode_cpus,
                fn_kwargs={"all_boxes": plan.all_boxes},
                udf_modifying_row_count=False,
            )
        todo = int(sum(plan.shard_size(s) for s in pending))
        name = cfg.out.rstrip("/").rsplit("/", 1)[-1]
        try:
            with console.progress(f"label {name}", total=todo) as bar:
                for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                    bar.update(batch.num_rows)
                    for shard in writer.add(batch):
                        if on_shard_written is not None:
                            on_shard_written(shard)
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
    rows, errors_by_kind = _table_totals(cfg.out, plan)
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
