"""The labeling stage's part files: prediction rows, finished shards and the driver's shard writer.

Part of the labeling stage (:mod:`pipelines.label`, whose docstring describes the exactly-once
layout): heatmap rows → box rows (:func:`heatmaps_to_box_rows`), the shards whose part file is
already written and valid (:func:`finished_shards`), the writer that collects streamed rows per shard
and writes each complete shard once, atomically (:class:`ShardWriter`), and the folder's totals.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from coloc_core.predict import DEFAULT_PICK, Cut, content_terms, cut_boxes, score_cut
from pipelines import ingest, schema, storage
from pipelines.predictions import PredictionsFolder, decode_heatmap, is_part_temp, part_name, shard_of

if TYPE_CHECKING:  # label_plan imports the fit, whose actors import this module
    from pipelines.label_plan import LabelPlan

# The labeling stage's one logger: every line of the stage (driver, plan, shards, fit) is logged as
# ``pipelines.label`` (what the console shows and the tests look for).
log = logging.getLogger("pipelines.label")

UNKNOWN_KIND = "unknown"  # errors_by_kind's key for error rows without a kind (files before schema 3)


def nullable_ints(values: Iterable[Any]) -> list[int | None]:
    """Python ints, None for None or NaN (a column of pandas-nullable ints, ``schema``'s Int32/Int16)."""
    out: list[int | None] = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        else:
            out.append(int(v))
    return out


def heatmaps_to_box_rows(
    batch: pa.Table,
    all_boxes: bool = False,
    box_sizes: dict[str, Any] | None = None,
    content: Callable[[list[int], list[np.ndarray]], Sequence[Any]] | None = None,
    pick: str = DEFAULT_PICK,
    features: Mapping[int, np.ndarray] | None = None,
) -> pa.Table:
    """Heatmap rows (from :class:`.label_actors.LocalizeBatch`) → full prediction rows + index column.

    Per image, what ``Predictor.predict`` runs too (:func:`coloc_core.predict.cut_boxes`, then
    :func:`coloc_core.predict.score_cut`): the stored heatmap → SPEC §6 score map at 224 → the image's
    box at τ (``pick``: the best-scored region's, or the single largest contour's) → original pixel
    coordinates (``coloc_core.boxes.boxes_to_original``) and ``box_score``; with ``all_boxes`` also
    every region's box and score into the ``boxes`` column (null otherwise). ``box_sizes``: the
    model's typical box (``LabelPlan.box_sizes``), a term of every score when given. ``content``:
    given the batch rows' indices and each one's boxes (``Cut.all_boxes``), their content terms (the
    actor's :class:`coloc_core.box_content.ContentScorer`, which needs the images); None = without the
    term. ``features``: the batch rows' model features ((C, h, w) on the heatmap's grid, by row index;
    the actor's forward pass), for the repetition term when ``box_sizes`` has ``repeats``; None =
    without it.
    """
    rows = batch.to_pydict()
    n = batch.num_rows
    coords: list[list[float | None]] = [[None] * n for _ in range(4)]
    scores: list[float | None] = [None] * n
    every: list[list[dict[str, float]] | None] = [None] * n
    errors = list(rows[schema.ERROR])
    kinds = list(rows.get(schema.ERROR_KIND) or [None] * n)
    cuts: dict[int, tuple[Cut, tuple[int, int]]] = {}
    for i in range(n):
        heat = decode_heatmap(rows[schema.HEATMAP][i], rows[schema.HEATMAP_H][i], rows[schema.HEATMAP_W][i])
        if heat is None or errors[i] is not None:
            continue
        width, height = rows[schema.WIDTH][i], rows[schema.HEIGHT][i]
        if not width or not height:
            errors[i] = f"{rows[schema.PATH][i]}: unknown image size"
            kinds[i] = schema.KIND_DECODE  # the decode gave no size (defensive: it always does)
            continue
        feats = None if features is None else features.get(i)
        cut = cut_boxes(heat, float(rows[schema.THRESHOLD][i]), all_boxes, pick, feats)
        cuts[i] = (cut, (int(width), int(height)))
    indices = list(cuts)
    terms: Sequence[Any] = [None] * len(indices)
    if content is not None and indices:
        encode = content  # the batch rows' positions among `indices` → the rows themselves

        def by_position(at: list[int], boxes: list[np.ndarray]) -> Sequence[Any]:
            return encode([indices[p] for p in at], boxes)

        taus = [float(rows[schema.THRESHOLD][i]) for i in indices]
        terms = content_terms([cuts[i][0] for i in indices], taus, box_sizes, by_position)
    for i, term in zip(indices, terms, strict=True):
        cut, wh = cuts[i]
        loc = score_cut(cut, float(rows[schema.THRESHOLD][i]), wh, box_sizes, term)
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


def _write_parquet(uri: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    storage.write_bytes_atomic(uri, buffer.getvalue())


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


class ShardWriter:
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

    def add(self, batch: pa.Table, on_written: Callable[[int], None] | None = None) -> list[int]:
        """Take streamed rows (with their ``index``); write every shard they complete; return those shards.

        ``on_written(shard)`` runs right after each part file is written, before the next one: a crash
        there (or a kill) leaves exactly the part files written up to that shard.

        Raises:
            RuntimeError: rows of a shard that is not pending, or more rows than a shard holds.
        """
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
                if on_written is not None:
                    on_written(shard)
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
        """After the stream ends: raise RuntimeError if any pending shard was not completed."""
        if self.pending:
            missing = sorted(self.pending)
            got = {s: self.counts.get(s, 0) for s in missing[:5]}
            raise RuntimeError(
                f"label: {len(missing)} shards incomplete after the stream ended (rows got: {got})"
            )


def table_totals(out: str, plan: LabelPlan) -> tuple[int, dict[str, int]]:
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
