"""Evaluate a predictions table against ground truth: CorLoc, MaxBoxAccV2, score ranking, picture sheet.

Inputs: a predictions folder written by :mod:`pipelines.label` (local or ``s3://``) and the ground truth
of any dataset reader (``cub``, ``cars``, ``aircraft``, ``dogs``, ``boxes_csv``; ``coloc_core.datasets``).
Rows are joined by image path (scheme and ``./`` ignored), so label and evaluate the same root.

How each number is computed (SPEC §6, the wsolevaluation protocol):

- Everything is measured at 224×224 from the **stored heatmaps**: score map = bicubic upsampling +
  min-max (``coloc_core.boxes.scoremap_from_attention``), GT boxes scaled to 224 with truncation
  (``resize_boxes``, from the image's decoded size).
- CorLoc@δ (δ ∈ {0.3, 0.5, 0.7}) and their mean: the single largest-contour box at the table's τ
  (SPEC §6, the paper's protocol), over ALL ground-truth images: an image without a usable
  prediction (error row, or not in the table) counts as a miss.
- ``box_corloc@δ``: the same count for the table's own boxes, the labels users get (each image's
  ``x0..y1`` in original pixels against its GT boxes, IoU with inclusive pixels). With ``coloc label
  --pick=largest`` they are the boxes of CorLoc@δ mapped back to the image (equal up to rounding);
  with the default ``--pick=score`` an image whose best-scored region is not its largest one has
  another box (``coloc_core.predict.PICKS``). ``mean_iou`` is these boxes' mean IoU.
- MaxBoxAccV2: best τ per δ of multi-contour boxes (``coloc_core.metrics.MaxBoxAccAccumulator``); the
  same misses count. Both come from ``coloc_core.metrics.LocalizationAccumulator``, training's evaluation
  core too (misses: ``add_misses``).
- Score ranking: Spearman ρ between the stored ``score`` and the IoU of the table's box (best over
  the image's GT boxes, original pixels: the box the score belongs to), and CorLoc@0.5 of the
  top-scored half vs the bottom half and their gap (images with a prediction
  only), each with an approximate 95% interval (:func:`spearman_interval`, :func:`gap_interval`): a
  few hundred labelled images pin ρ down to about ±0.13.
- What filtering by score keeps (:func:`kept_by_score`): for the best-scored 10 / 25 / 50 / 75 / 90 /
  100% of those images, the share whose box is correct at IoU 0.5 and the lowest score kept, so a user
  picks ``coloc export --top_fraction`` (or ``--min_score``) for a collection from a labelled sample.
- Box recall and precision at IoU 0.5 (``box_recall@0.5``, ``box_precision@0.5``), for images with
  several objects: the stored boxes in original pixels (every box of a ``boxes=all`` table, else the
  single box) matched one-to-one to the GT boxes by decreasing score
  (``coloc_core.boxes.match_boxes``, IoU with inclusive pixels); recall = matched GT boxes / all GT
  boxes (those of images without a usable prediction count as missed), precision = matched boxes /
  boxes predicted on GT images; ``boxes_per_image`` = boxes predicted per GT image with a prediction.
  A ``boxes=all`` table also gets ``single_box_recall@0.5`` / ``single_box_precision@0.5``, the same
  numbers for its single box, so one evaluation shows what the extra boxes add.

Part files are evaluated in parallel Ray tasks (one per file, partial counts merged on the driver, as
``coloc_core.metrics`` is designed for); without an initialised Ray it runs in-process.

Outputs in ``out`` (default ``<predictions>/_eval``; the ``_`` keeps Parquet readers of the table away):
``metrics.json``, ``metrics.md`` (a Markdown table) and ``sheet.png`` (drawn by :mod:`pipelines.render`:
a title line and a colour legend, then tiles with heatmap overlay, predicted box green, GT red, each
captioned with its file name, IoU and score; the ``sheet_images`` best and worst images by IoU, or by
score without GT, ``sheet_columns`` tiles per line).

Calibration (:func:`calibrate_threshold`): τ maximising CorLoc@0.5 on a labelled subset, from the
heatmaps (so it does not depend on the τ the table was labelled with); :func:`write_calibrated_model`
writes a new model file with that ``threshold``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import posixpath
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from coloc_core.box_score import TYPICAL_BOX_IMAGES, box_size_statistics, evenly_spread, scoremap_box_area
from coloc_core.boxes import SCOREMAP_SIZE, iou_matrix, match_boxes, resize_boxes, scoremap_from_attention
from coloc_core.checkpoint import read_model_payload, save_model_file
from coloc_core.config import CALIBRATION_CURVE_INTERVAL
from coloc_core.errors import InvalidInputError
from coloc_core.heatmap import dequantize_heatmap
from coloc_core.metrics import LocalizationAccumulator, MaxBoxAccAccumulator
from pipelines import ingest, schema, storage
from pipelines.config import EvaluateJobConfig
from pipelines.export.common import count_of_fraction
from pipelines.predictions import PredictionsFolder, decode_heatmap_row, require_part_files
from pipelines.render import picture_sheet, sheet_title

log = logging.getLogger(__name__)

_COLUMNS = [
    schema.PATH,
    schema.WIDTH,
    schema.HEIGHT,
    schema.SCORE,
    schema.THRESHOLD,
    schema.HEATMAP,
    schema.HEATMAP_H,
    schema.HEATMAP_W,
    schema.ERROR,
    *schema.BOX_COLUMNS,
    schema.BOXES,
]
BOX_MATCH_IOU = 0.5  # IoU of a match for box recall / precision


def path_key(path: str, cwd: str | None = None) -> str:
    """Join key of an image path: scheme and ``./`` segments removed, a relative local path made absolute.

    A table labelled from ``--images photos`` and ground truth read from ``--gt /data/photos`` (or the
    other way round) then meet. ``cwd``: the folder a relative path is relative to (default: this
    process's; a Ray task gets the driver's, its own differs).
    """
    bare = storage.strip_scheme(path)
    if not storage.is_s3(path) and not posixpath.isabs(bare):
        bare = posixpath.join(cwd if cwd is not None else os.getcwd(), bare)
    return posixpath.normpath(bare)


@dataclass
class GroundTruth:
    """GT boxes per image (original pixel coordinates), keyed by :func:`path_key`."""

    boxes: dict[str, list[tuple[float, float, float, float]]]
    paths: dict[str, str]  # key -> path as listed by the reader

    @property
    def num_images(self) -> int:
        """Images with at least one box."""
        return len(self.boxes)


def read_ground_truth(root: str, fmt: str = "boxes_csv", split: str = "test", limit: int = 0) -> GroundTruth:
    """GT boxes of a data set (any ``coloc_core.datasets`` reader, local or ``s3://``).

    Images without a box are dropped.
    """
    records = ingest.read_records(fmt, root, split)
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    paths: dict[str, str] = {}
    for rec in sorted(records, key=lambda r: r.path):
        if not rec.boxes:
            continue
        key = path_key(rec.path)
        boxes.setdefault(key, []).extend(tuple(float(v) for v in b) for b in rec.boxes)  # type: ignore[misc]
        paths[key] = rec.path
        if limit and len(boxes) >= limit:
            break
    if not boxes:
        raise InvalidInputError(f"no ground-truth boxes in {root} (format={fmt}, split={split})")
    return GroundTruth(boxes, paths)


@dataclass
class PartResult:
    """What one part file contributes: partial metric counts and per-image IoU/score."""

    metrics: dict[str, Any] | None = None  # LocalizationAccumulator.state_dict(); None: no GT image
    keys: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    ious: list[float] = field(default_factory=list)  # nan without GT
    scores: list[float] = field(default_factory=list)
    thresholds: set[float] = field(default_factory=set)
    errors: int = 0
    gt_errors: int = 0  # error rows that have GT (misses)
    rows: int = 0
    # Box matching at BOX_MATCH_IOU on GT images with a prediction: per kind ("boxes": the table's
    # boxes, "single": the single box) [GT boxes, matched GT, predicted boxes, matched predictions].
    matches: dict[str, list[int]] = field(default_factory=dict)
    multi_box: bool = False  # the part holds a boxes=all column


def _row_boxes(row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (N, 4), scores (N,)) of a row in original pixels: ``boxes`` when set, else the single box."""
    entries = row.get(schema.BOXES)
    if entries is not None:
        boxes = np.array([[e[c] for c in schema.BOX_COLUMNS] for e in entries], dtype=np.float64).reshape(
            -1, 4
        )
        return boxes, np.array([e[schema.SCORE_FIELD] for e in entries], dtype=np.float64)
    return _single_box(row)


def _single_box(row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    if row[schema.X0] is None:
        return np.zeros((0, 4)), np.zeros(0)
    box = np.array([[row[c] for c in schema.BOX_COLUMNS]], dtype=np.float64)
    return box, np.array([0.0 if row[schema.SCORE] is None else row[schema.SCORE]], dtype=np.float64)


def _count_matches(counts: list[int], boxes: np.ndarray, scores: np.ndarray, gt: np.ndarray) -> None:
    pred_hit, gt_hit = match_boxes(boxes, scores, gt, BOX_MATCH_IOU)
    counts[0] += len(gt)
    counts[1] += int(gt_hit.sum())
    counts[2] += len(boxes)
    counts[3] += int(pred_hit.sum())


def _table_scoremap(row: dict[str, Any]) -> np.ndarray | None:
    heat = decode_heatmap_row(row)
    if heat is None:
        return None
    return scoremap_from_attention(dequantize_heatmap(heat), SCOREMAP_SIZE)


def evaluate_part(
    uri: str,
    gt_boxes: dict[str, list[tuple[float, float, float, float]]] | None,
    iou_thresholds: Sequence[float],
    cam_curve_interval: float,
    threshold: float | None,
    cwd: str | None = None,
) -> PartResult:
    """Metrics of one part file (runs inside a Ray task, or in-process; ``cwd``: see :func:`path_key`)."""
    table = schema.read_table(io.BytesIO(storage.read_bytes(uri)), columns=_COLUMNS)
    result = PartResult(rows=table.num_rows)
    result.multi_box = table.column(schema.BOXES).null_count < table.num_rows
    result.matches = {"boxes": [0, 0, 0, 0], "single": [0, 0, 0, 0]}
    acc: LocalizationAccumulator | None = None  # made at the first GT row, with its τ
    for row in table.to_pylist():
        key = path_key(row[schema.PATH], cwd)
        gt = None if gt_boxes is None else gt_boxes.get(key)
        if row[schema.ERROR] is not None:
            result.errors += 1
            result.gt_errors += gt is not None
            continue
        stored_tau = round(float(row[schema.THRESHOLD]), 6)  # float32 in the table
        tau = stored_tau if threshold is None else float(threshold)
        result.thresholds.add(stored_tau)
        iou = math.nan
        if gt is not None:
            if acc is None:
                acc = LocalizationAccumulator(iou_thresholds, tau, cam_curve_interval, multi_contour=True)
            scoremap = _table_scoremap(row)
            assert scoremap is not None
            gt224 = resize_boxes(np.asarray(gt), (row[schema.HEIGHT], row[schema.WIDTH]), SCOREMAP_SIZE)
            acc.update(scoremap, gt224)
            gt_array = np.asarray(gt, dtype=np.float64)
            single = _single_box(row)
            iou = float(iou_matrix(single[0], gt_array).max()) if len(single[0]) and len(gt_array) else 0.0
            _count_matches(result.matches["boxes"], *_row_boxes(row), gt_array)
            _count_matches(result.matches["single"], *single, gt_array)
        result.keys.append(key)
        result.paths.append(row[schema.PATH])
        result.ious.append(iou)
        result.scores.append(float(row[schema.SCORE]))
    result.metrics = acc.state_dict() if acc is not None else None
    return result


def _run_parts(
    uris: list[str], gt: GroundTruth | None, deltas: Sequence[float], interval: float, threshold: float | None
) -> list[PartResult]:
    gt_boxes = None if gt is None else gt.boxes
    try:
        import ray  # noqa: PLC0415

        use_ray = ray.is_initialized() and len(uris) > 1
    except ImportError:  # pragma: no cover - ray is a dependency
        use_ray = False
    if not use_ray:
        return [evaluate_part(u, gt_boxes, deltas, interval, threshold) for u in uris]
    task = ray.remote(num_cpus=0.5)(evaluate_part)
    gt_ref = ray.put(gt_boxes)
    cwd = os.getcwd()  # the driver's: relative paths in a table are relative to it, not to the worker's
    # Ray's stub types a remote function by its first parameters only; evaluate_part takes six.
    return ray.get([task.remote(u, gt_ref, tuple(deltas), interval, threshold, cwd) for u in uris])  # type: ignore[call-arg]


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    from scipy.stats import spearmanr  # noqa: PLC0415

    return float(spearmanr(x, y).statistic)


#: z of the two-sided 95% intervals of the score ranking (the normal quantile at 0.975).
Z95 = 1.959964


def spearman_interval(rho: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Approximate 95% interval of a Spearman ρ measured on ``n`` images (nan, nan when n < 4).

    Fisher's z = atanh ρ with the variance of Bonett and Wright (2000) for Spearman's ρ,
    (1 + ρ²/2) / (n − 3). It says how far the ranking measured on a labelled sample can be from the
    collection's: at n = 200 a ρ of 0.30 spans about 0.17-0.42.
    """
    if n < 4 or not math.isfinite(rho):
        return math.nan, math.nan
    rho = min(max(rho, -1.0), 1.0)
    if abs(rho) == 1.0:
        return rho, rho
    half = z * math.sqrt((1.0 + rho * rho / 2.0) / (n - 3))
    centre = math.atanh(rho)
    return math.tanh(centre - half), math.tanh(centre + half)


def gap_interval(hits_a: int, n_a: int, hits_b: int, n_b: int, z: float = Z95) -> tuple[float, float]:
    """Approximate 95% interval of the difference of two hit rates, in points (nan, nan if a group is empty).

    Agresti and Caffo's (2000) interval: one hit and one miss added to each group, then the normal
    interval of the difference, clipped to [−100, 100]; it stays sensible at rates of 0 or 100%.
    """
    if n_a < 1 or n_b < 1:
        return math.nan, math.nan
    p_a, p_b = (hits_a + 1.0) / (n_a + 2.0), (hits_b + 1.0) / (n_b + 2.0)
    half = z * math.sqrt(p_a * (1.0 - p_a) / (n_a + 2.0) + p_b * (1.0 - p_b) / (n_b + 2.0))
    low, high = (p_a - p_b - half) * 100.0, (p_a - p_b + half) * 100.0
    return max(low, -100.0), min(high, 100.0)


def score_ranking(scores: np.ndarray, ious: np.ndarray, delta: float = 0.5) -> dict[str, float]:
    """Does the score rank boxes by quality? Spearman ρ(score, IoU) and CorLoc@δ per score half.

    Each comes with an approximate 95% interval (``*_ci95_low`` / ``*_ci95_high``:
    :func:`spearman_interval`; the top − bottom half gap ``corloc@δ_half_gap``: :func:`gap_interval`),
    since the images with ground truth are usually a small sample of the collection.

    Args:
        scores: the stored score of each image with a prediction and GT. Shape: (N,).
        ious: its IoU (best over its GT boxes). Shape: (N,).
        delta: IoU threshold of the half-split CorLoc.
    """
    n = len(scores)
    if n == 0:
        return {}
    order = np.argsort(-scores, kind="stable")
    top, bottom = order[: (n + 1) // 2], order[(n + 1) // 2 :]
    hit = ious >= delta
    rho = _spearman(scores, ious)
    rho_low, rho_high = spearman_interval(rho, n)
    top_rate = float(hit[top].mean() * 100.0)
    bottom_rate = float(hit[bottom].mean() * 100.0) if len(bottom) else math.nan
    gap_low, gap_high = gap_interval(int(hit[top].sum()), len(top), int(hit[bottom].sum()), len(bottom))
    return {
        "spearman_score_iou": rho,
        "spearman_score_iou_ci95_low": rho_low,
        "spearman_score_iou_ci95_high": rho_high,
        f"corloc@{delta:g}_top_half_by_score": top_rate,
        f"corloc@{delta:g}_bottom_half_by_score": bottom_rate,
        f"corloc@{delta:g}_half_gap": top_rate - bottom_rate if len(bottom) else math.nan,
        f"corloc@{delta:g}_half_gap_ci95_low": gap_low,
        f"corloc@{delta:g}_half_gap_ci95_high": gap_high,
    }


#: The shares of the images, best score first, that :func:`kept_by_score` reports on: what ``coloc
#: export --top_fraction`` with each share would keep.
KEPT_SHARES = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def _percent(share: float) -> str:
    """A share as the percentage its keys carry: 0.25 → ``"25"``, 0.125 → ``"12.5"``."""
    return f"{100.0 * share:g}"


def kept_by_score(
    scores: np.ndarray, ious: np.ndarray, delta: float = 0.5, shares: Sequence[float] = KEPT_SHARES
) -> dict[str, float]:
    """What filtering by the score keeps: CorLoc@δ of the best-scored share of the images.

    For each share q, the ⌈q·N⌉ best-scored images (ties: table order, as ``coloc export
    --top_fraction`` keeps them): ``corloc@δ_top_<pct>pct_by_score``, the share of them whose box is
    correct, and ``score_cut_top_<pct>pct``, the lowest score among them (the ``--min_score`` that
    keeps about that share of a collection scored alike).

    Args:
        scores: the stored score of each image with a prediction and GT. Shape: (N,).
        ious: its IoU (best over its GT boxes). Shape: (N,).
        delta: IoU threshold of a correct box.
        shares: the shares q, each in (0, 1].
    """
    n = len(scores)
    if n == 0:
        return {}
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hit = np.asarray(ious, dtype=np.float64)[order] >= delta
    ranked = np.asarray(scores, dtype=np.float64)[order]
    out: dict[str, float] = {}
    for share in shares:
        k = max(1, count_of_fraction(share, n))
        pct = _percent(share)
        out[f"corloc@{delta:g}_top_{pct}pct_by_score"] = float(hit[:k].mean() * 100.0)
        out[f"score_cut_top_{pct}pct"] = float(ranked[k - 1])
    return out


@dataclass
class EvaluationResult:
    """Metrics and where they were written."""

    metrics: dict[str, float]
    out: str
    files: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


def run_evaluation(cfg: EvaluateJobConfig) -> EvaluationResult:
    """Evaluate ``cfg.predictions`` (and draw the picture sheet); see the module docstring.

    Args:
        cfg: the evaluation job (:class:`pipelines.config.EvaluateJobConfig`): ``predictions`` (local
            or ``s3://``); ``gt`` the data set root with boxes (``""`` = no ground truth: the sheet is
            ranked by score only), read with ``format`` (``coloc_core.datasets.DATASET_KINDS``) at
            ``split``; ``out`` (``""`` = ``<predictions>/_eval``); ``iou_thresholds`` the δ values of
            CorLoc and MaxBoxAcc; ``cam_curve_interval`` MaxBoxAcc's τ grid spacing; ``threshold`` τ
            for CorLoc (negative = the τ stored in the table); ``sheet_images`` images in each group
            of the picture sheet (the best, then the worst; 0 = no sheet); ``sheet_columns`` tiles per
            line of the sheet (a group wraps onto more lines; 0 = ``sheet_images``, one line per group).

    Raises:
        FileNotFoundError: no part files; ValueError: a table mixing several τ (and no ``threshold``).
    """
    predictions, gt_root, gt_format, split, out = cfg.predictions, cfg.gt, cfg.format, cfg.split, cfg.out
    iou_thresholds, cam_curve_interval = cfg.iou_thresholds, cfg.cam_curve_interval
    threshold = None if cfg.threshold < 0 else cfg.threshold
    sheet_images, sheet_columns = cfg.sheet_images, cfg.sheet_columns
    uris = require_part_files(predictions)
    gt = read_ground_truth(gt_root, gt_format, split) if gt_root else None
    deltas = tuple(float(d) for d in iou_thresholds)
    results = _run_parts(uris, gt, deltas, cam_curve_interval, threshold)

    taus = set().union(*(r.thresholds for r in results))
    if threshold is None and len(taus) > 1:
        raise InvalidInputError(
            f"{predictions} mixes thresholds {sorted(taus)}; pass --threshold (threshold=) to evaluate one τ"
        )
    tau = float(threshold if threshold is not None else (next(iter(taus)) if taus else 0.2))
    keys = [k for r in results for k in r.keys]
    paths = [p for r in results for p in r.paths]
    ious = np.array([v for r in results for v in r.ious], dtype=np.float64)
    scores = np.array([v for r in results for v in r.scores], dtype=np.float64)
    metrics: dict[str, float] = {
        "rows": float(sum(r.rows for r in results)),
        "error_rows": float(sum(r.errors for r in results)),
        "threshold": tau,
    }
    if gt is not None:
        seen = set(keys)
        erred = sum(r.gt_errors for r in results)
        if keys and not erred and seen.isdisjoint(gt.boxes):
            raise InvalidInputError(
                f"none of the {len(keys)} images of {predictions} is in the ground truth of {gt_root} "
                f"(format={gt_format}, split={split}): e.g. the table has {paths[0]!r}, the ground truth "
                f"{next(iter(gt.paths.values()))!r}; evaluate against the set that was labelled"
            )
        missing = sum(1 for k in gt.boxes if k not in seen) - erred
        acc = LocalizationAccumulator(deltas, tau, cam_curve_interval, multi_contour=True)
        for r in results:
            if r.metrics is not None:
                acc.merge(LocalizationAccumulator.from_state_dict(r.metrics))
        # GT images without a usable prediction count as wrong at every δ and τ
        acc.add_misses(erred + max(missing, 0))
        metrics.update(
            gt_images=float(gt.num_images),
            gt_images_with_error_row=float(erred),
            gt_images_not_in_table=float(max(missing, 0)),
            predictions_without_gt=float(sum(1 for k in keys if k not in gt.boxes)),
        )
        if acc.count:
            metrics.update(acc.compute())
        has = ~np.isnan(ious)
        for delta in deltas:  # the table's boxes; GT images without a usable prediction are misses
            metrics[f"box_corloc@{delta:g}"] = 100.0 * float((ious[has] >= delta).sum()) / gt.num_images
        metrics.update(_box_match_metrics(results, gt, seen))
        metrics.update(score_ranking(scores[has], ious[has]))
        metrics.update(kept_by_score(scores[has], ious[has]))
        metrics["mean_iou"] = float(ious[has].mean()) if has.any() else math.nan
    else:
        metrics["mean_score"] = float(scores.mean()) if len(scores) else math.nan

    out = out or PredictionsFolder(predictions).eval_dir
    storage.makedirs(out)
    files = []
    metrics_json = storage.join(out, "metrics.json")
    payload = {
        "predictions": predictions,
        "ground_truth": gt_root or None,
        "format": gt_format,
        "split": split,
        "metrics": metrics,
    }
    storage.write_text_atomic(metrics_json, json.dumps(_json_safe(payload), indent=2))
    files.append(metrics_json)
    metrics_md = storage.join(out, "metrics.md")
    storage.write_text_atomic(metrics_md, metrics_markdown(metrics, predictions, gt_root))
    files.append(metrics_md)
    if sheet_images > 0 and keys:
        rank = ious if gt is not None else scores
        valid = np.flatnonzero(~np.isnan(rank))
        if len(valid):
            order = valid[np.argsort(-rank[valid], kind="stable")]
            chosen = [paths[i] for i in order[:sheet_images]], [paths[i] for i in order[::-1][:sheet_images]]
            by = "IoU" if gt is not None else "score"
            drawn = {p for group in chosen for p in group}
            png = picture_sheet(
                uris,
                chosen,
                titles=(f"best by {by}", f"worst by {by}"),
                title=sheet_title(predictions, tau if taus or threshold is not None else None, len(keys), by),
                gt=None if gt is None else {p: gt.boxes.get(path_key(p), []) for p in drawn},
                ious=None if gt is None else {paths[i]: float(ious[i]) for i in valid if paths[i] in drawn},
                columns=sheet_columns or sheet_images,
            )
            sheet = storage.join(out, "sheet.png")
            storage.write_bytes_atomic(sheet, png)
            files.append(sheet)
    log.info("evaluate: %s", ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return EvaluationResult(metrics=metrics, out=out, files=files)


def _box_match_metrics(results: list[PartResult], gt: GroundTruth, seen: set[str]) -> dict[str, float]:
    """Box recall / precision at :data:`BOX_MATCH_IOU` (module docstring), merged over the parts."""
    total_gt = sum(len(boxes) for boxes in gt.boxes.values())
    with_prediction = sum(1 for k in gt.boxes if k in seen)
    multi = any(r.multi_box for r in results)
    out: dict[str, float] = {"gt_boxes": float(total_gt)}
    for kind, prefix in (("boxes", ""), ("single", "single_")):
        if kind == "single" and not multi:
            continue
        # [GT boxes of images with a prediction, matched GT, predicted, matched predicted]; recall is
        # over every GT box (an image without a usable prediction misses all of its boxes)
        _, gt_hit, predicted, pred_hit = (
            sum(r.matches.get(kind, [0] * 4)[i] for r in results) for i in range(4)
        )
        out[f"{prefix}box_recall@{BOX_MATCH_IOU:g}"] = 100.0 * gt_hit / total_gt if total_gt else math.nan
        out[f"{prefix}box_precision@{BOX_MATCH_IOU:g}"] = (
            100.0 * pred_hit / predicted if predicted else math.nan
        )
        out[f"{prefix}boxes_per_image"] = predicted / with_prediction if with_prediction else math.nan
    return out


def _json_safe(value: Any) -> Any:
    """NaN → null (strict JSON), recursively."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def metrics_markdown(metrics: dict[str, float], predictions: str, gt_root: str) -> str:
    """The metrics as a Markdown table."""
    lines = [
        f"# Evaluation of `{predictions}`",
        "",
        f"Ground truth: `{gt_root}`" if gt_root else "No ground truth: score statistics only.",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key, value in metrics.items():
        text = "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"
        lines.append(f"| {key} | {text} |")
    kept = [_percent(share) for share in KEPT_SHARES]
    kept = [pct for pct in kept if f"corloc@0.5_top_{pct}pct_by_score" in metrics]
    if kept:
        lines += [
            "",
            "## Keeping the best-scored boxes",
            "",
            "What `coloc export --top_fraction F` keeps, measured on these images: the share of the kept "
            "boxes that are correct (IoU ≥ 0.5), and the lowest score kept (a `--min_score` that keeps "
            "about as many).",
            "",
            "| kept (best score first) | correct | lowest score kept |",
            "|---|---|---|",
        ]
        for pct in kept:
            correct = metrics[f"corloc@0.5_top_{pct}pct_by_score"]
            lines.append(f"| {pct}% | {correct:.1f}% | {metrics[f'score_cut_top_{pct}pct']:.3f} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- calibration


@dataclass
class CalibrationResult:
    """τ maximising CorLoc@δ on a labelled subset.

    Attributes:
        threshold: the chosen τ: the middle one of the grid's τ that reach the maximum
            (:func:`middle_of_best`).
        corloc: CorLoc@δ at that τ, in percent (images with a prediction and GT).
        delta: δ.
        num_images: images used.
        curve: CorLoc@δ at every τ of the grid (percent).
        thresholds: the τ grid.
        box_sizes: the calibration images' typical box at the chosen τ (None without images).
        tied: the smallest and largest τ of the grid that reach the maximum too: a wide range says the
            labelled images pin τ down loosely (label more of them, or read the curve).
    """

    threshold: float
    corloc: float
    delta: float
    num_images: int
    curve: list[float]
    thresholds: list[float]
    box_sizes: dict[str, Any] | None = None
    tied: tuple[float, float] | None = None


def tied_at_best(curve: Sequence[float]) -> npt.NDArray[np.int64]:
    """The indices of the curve's points that reach its maximum (to 1e-9), increasing.

    Raises:
        ValueError: an empty curve or one that is not finite.
    """
    c = np.asarray(curve, dtype=np.float64).reshape(-1)
    if c.size == 0 or not np.isfinite(c).all():
        raise ValueError("the calibration curve must be non-empty and finite")
    return np.flatnonzero(c >= c.max() - 1e-9).astype(np.int64)


def middle_of_best(curve: Sequence[float]) -> int:
    """The index of the middle one of the curve's points that reach its maximum (:func:`tied_at_best`).

    With a few dozen labelled images CorLoc@δ moves in steps of several points, so many τ tie at the
    maximum. The smallest of them (the previous rule) sits at the edge of the run, where a τ slightly
    lower already loses images; the middle one is the farthest from both edges when the maximum is one
    run of τ, and always one that reaches it. For an even count it is the upper of the middle two.
    Measured against the smallest in docs/RESULTS.md (issue 10, "Objects that fill the frame").

    Raises:
        ValueError: an empty curve or one that is not finite.

    Shape:
        curve: (T,) values on an increasing τ grid.
    """
    reaching = tied_at_best(curve)
    return int(reaching[len(reaching) // 2])


def calibrate_threshold(
    predictions: str,
    gt_root: str,
    gt_format: str = "boxes_csv",
    split: str = "test",
    delta: float = 0.5,
    cam_curve_interval: float = CALIBRATION_CURVE_INTERVAL,
    limit: int = 0,
) -> CalibrationResult:
    """τ maximising CorLoc@``delta`` (single largest-contour box) from the stored heatmaps and GT.

    Args:
        predictions: predictions folder (any τ: the heatmaps do not depend on it).
        gt_root: root of the labelled subset (images without a prediction are ignored).
        gt_format: its reader.
        split: its split.
        delta: IoU threshold.
        cam_curve_interval: τ grid spacing.
        limit: use at most this many GT images (0 = all).
    """
    gt = read_ground_truth(gt_root, gt_format, split, limit=limit)
    acc = MaxBoxAccAccumulator((delta,), cam_curve_interval, multi_contour=False)
    heatmaps: list[np.ndarray] = []  # the images' stored heatmaps: their boxes at the chosen τ
    for uri in require_part_files(predictions):
        table = schema.read_table(io.BytesIO(storage.read_bytes(uri)), columns=_COLUMNS)
        for row in table.to_pylist():
            boxes = gt.boxes.get(path_key(row[schema.PATH]))
            heat = decode_heatmap_row(row) if boxes is not None else None
            if heat is None or boxes is None:
                continue
            gt224 = resize_boxes(np.asarray(boxes), (row[schema.HEIGHT], row[schema.WIDTH]), SCOREMAP_SIZE)
            acc.update(scoremap_from_attention(dequantize_heatmap(heat), SCOREMAP_SIZE), gt224)
            heatmaps.append(heat)
    if acc.count == 0:
        raise InvalidInputError(f"no image of {predictions} has ground truth in {gt_root}")
    curve = acc.accuracies()[0]
    best, reaching = middle_of_best(curve), tied_at_best(curve)
    tied = (float(acc.thresholds[reaching[0]]), float(acc.thresholds[reaching[-1]]))
    result = CalibrationResult(
        threshold=float(acc.thresholds[best]),
        corloc=float(curve[best]),
        delta=float(delta),
        num_images=int(acc.count),
        curve=[float(v) for v in curve],
        thresholds=[float(t) for t in acc.thresholds],
        box_sizes=_box_sizes_at(heatmaps, float(acc.thresholds[best])),
        tied=tied,
    )
    log.info(
        "calibrate: τ=%.3f gives CorLoc@%g=%.2f on %d images (τ %.3f-%.3f reach it too)",
        result.threshold,
        delta,
        result.corloc,
        acc.count,
        *tied,
    )
    return result


def _box_sizes_at(heatmaps: list[np.ndarray], threshold: float) -> dict[str, Any] | None:
    """The typical box (``coloc_core.box_score.box_size_statistics``) of stored heatmaps at τ.

    At most ``TYPICAL_BOX_IMAGES`` of them, spread evenly, as the fit measures it; None when there are
    none.
    """
    areas = [
        scoremap_box_area(scoremap_from_attention(dequantize_heatmap(heatmaps[i]), SCOREMAP_SIZE), threshold)
        for i in evenly_spread(len(heatmaps), TYPICAL_BOX_IMAGES)
    ]
    if not areas:
        return None
    return {**box_size_statistics(areas), "threshold": float(threshold)}


def write_calibrated_model(model_uri: str, out_uri: str, calibration: CalibrationResult) -> dict[str, Any]:
    """Write a copy of a model file with ``threshold`` set to the calibrated τ (atomic write).

    The weights, and so ``model_id``, are unchanged; ``meta["calibration"]`` records how τ was chosen.
    A model that stores its collection's typical box (``box_sizes``, measured at its old τ) gets the
    sizes of the calibration images' boxes at the new τ; their ``repeats`` (the repetition term's
    collection value, which needs the model's features, not stored in the predictions) are not
    measured again, so the calibrated model scores without that term.
    Labeling with the new file into an output labelled with the old τ is refused (a new folder is needed).

    Returns:
        The new payload.
    """
    payload = read_model_payload(storage.read_bytes(model_uri), model_uri)
    payload["threshold"] = float(calibration.threshold)
    if payload.get("box_sizes") is not None:
        payload["box_sizes"] = calibration.box_sizes
    meta = dict(payload.get("meta") or {})
    meta["calibration"] = {
        "threshold": calibration.threshold,
        "corloc": calibration.corloc,
        "delta": calibration.delta,
        "num_images": calibration.num_images,
        "tied": list(calibration.tied) if calibration.tied is not None else None,
        "source_model": model_uri,
    }
    payload["meta"] = meta
    with storage.atomic_write(out_uri, "wb") as fh:
        save_model_file(fh, payload)
    return payload
