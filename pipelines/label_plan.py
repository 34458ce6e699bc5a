"""The labeling stage's plan: the frozen shard layout of an output folder and its manifest.

Part of the labeling stage (:mod:`pipelines.label`, whose docstring describes the folder layout, the
segments of reruns and the crash-safe order of the writes): :class:`LabelPlan` (which input rows form
which shard), :func:`plan_labeling` (a new plan, or the frozen one checked against the config and
extended with the images listed since).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coloc_core.box_content import payload_box_contents
from coloc_core.box_score import payload_box_sizes
from coloc_core.checkpoint import read_model_payload
from coloc_core.errors import InvalidInputError
from coloc_core.localizer import payload_input_size, payload_kind
from pipelines import schema, storage
from pipelines.config import LabelJobConfig, check_label_config, crop_bottom_of, dump
from pipelines.label_fit import fit_baseline_model, write_model_file
from pipelines.label_inputs import INPUT_SCHEMA, list_inputs, read_inputs, write_inputs
from pipelines.predictions import MANIFEST, MANIFEST_VERSION, PredictionsFolder, part_files

# The labeling stage's one logger: every line of the stage (driver, plan, shards, fit) is logged as
# ``pipelines.label`` (what the console shows and the tests look for).
log = logging.getLogger("pipelines.label")

MISSING_EXAMPLES = 5  # paths named in the warning (and the summary) about inputs no longer listed
#: The pick of a folder whose manifest names none: folders from before the option hold the largest
#: contour's box.
PICK_BEFORE_OPTION = "largest"
#: Whether a folder whose manifest does not say compares each box's halves in its content term
#: (``coloc_core.box_content``): folders labelled before the halves scored whole boxes only.
CONTENT_HALVES_BEFORE_OPTION = False


@dataclass
class LabelPlan:
    """The frozen plan of an output folder (see :mod:`pipelines.label`).

    ``segments``: the image counts of the input list's segments, in order (the first listing, then
    each rerun's new images); each segment is cut into shards of ``rows_per_file`` starting at a new
    shard. ``None`` = one segment (the whole list).
    """

    inputs: pa.Table  # INPUT_SCHEMA, each segment sorted by path
    model_uri: str
    model_id: str
    threshold: float
    rows_per_file: int
    manifest: dict[str, Any]
    segments: list[int] | None = None
    images_added: int = 0  # this run's new images (the last segment), 0 when none
    missing: list[str] = field(default_factory=list)  # frozen inputs this run's listing lacks
    image_size: int = field(kw_only=True)  # side the images are resized to (the model's input size)
    # The model's typical box at τ (coloc_core.box_score.payload_box_sizes): a term of every score.
    box_sizes: dict[str, Any] | None = field(default=None, kw_only=True)
    # Whether the model stores its collection's box contents (coloc_core.box_content): then the
    # model actors compute the boxes and scores themselves, on every device (they need the images).
    content: bool = field(default=False, kw_only=True)

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
    def pick(self) -> str:
        """Which region's box is each image's (``pick``, recorded in the manifest).

        Folders from before the option hold the largest contour's.
        """
        return str(self.manifest.get("pick", PICK_BEFORE_OPTION))

    @property
    def content_halves(self) -> bool:
        """Whether the content term compares each box's halves (``content_halves`` in the manifest).

        Folders from before the halves keep scoring whole boxes only, so that a resumed folder's
        scores rank alike in its old and new part files (the model file may still turn them off).
        """
        return bool(self.manifest.get("content_halves", CONTENT_HALVES_BEFORE_OPTION))

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


def _baseline_spec(cfg: LabelJobConfig) -> dict[str, Any]:
    spec: dict[str, Any] = {"method": cfg.method, "backbone": None if cfg.method == "full" else cfg.backbone}
    # Recorded only when set, so that folders labelled before these options existed still match.
    for key in ("feature_layer", "stride16", "first_labels"):
        if getattr(cfg, key) != "auto":
            spec[key] = getattr(cfg, key)
    for key in ("image_size", "fit_size"):
        if getattr(cfg, key):
            spec[key] = getattr(cfg, key)
    return spec


def _mismatch(out: str, what: str, old: Any, new: Any) -> InvalidInputError:
    return InvalidInputError(
        f"{out} already holds predictions with {what}={old!r}, this run has {what}={new!r}: "
        "use a new output folder (or delete the old one) instead of mixing them"
    )


def _load_plan(cfg: LabelJobConfig, manifest: dict[str, Any]) -> LabelPlan:
    out = cfg.out
    folder = PredictionsFolder(out)
    if manifest.get("version") != MANIFEST_VERSION:
        raise InvalidInputError(f"{folder.manifest}: unknown manifest version {manifest.get('version')}")
    for key in ("rows_per_file", "images", "format", "split", "limit"):
        if key in manifest and manifest[key] != getattr(cfg, key):
            raise _mismatch(out, key, manifest[key], getattr(cfg, key))
    if manifest.get("boxes", "one") != cfg.boxes:  # folders from before the option hold one box
        raise _mismatch(out, "boxes", manifest.get("boxes", "one"), cfg.boxes)
    old_pick = manifest.get("pick", PICK_BEFORE_OPTION)
    if old_pick != cfg.pick:
        raise InvalidInputError(
            f"{_mismatch(out, 'pick', old_pick, cfg.pick)} (or pass --pick={old_pick} to finish it)"
        )
    crop_bottom = crop_bottom_of(cfg.crop_bottom, cfg.format)
    old_cut = manifest.get("crop_bottom", 0)  # folders from before the option: none
    if old_cut != crop_bottom:
        mismatch = _mismatch(out, "crop_bottom", old_cut, crop_bottom)
        raise InvalidInputError(f"{mismatch} (or pass --crop_bottom={old_cut} to finish it)")
    if cfg.halves == "off" and manifest.get("content_halves", CONTENT_HALVES_BEFORE_OPTION):
        raise InvalidInputError(
            f"{_mismatch(out, 'halves', 'auto', cfg.halves)} (or pass --halves=auto to finish it)"
        )
    if cfg.method == "model":
        payload = read_model(cfg.model)
        model_uri, model_id = cfg.model, str(payload["model_id"])
        stored_tau = float(payload["threshold"])
    else:
        if manifest.get("baseline") != _baseline_spec(cfg):
            raise _mismatch(out, "method", manifest.get("baseline") or "model", _baseline_spec(cfg))
        model_uri = folder.model_file
        payload = read_model(model_uri)
        model_id, stored_tau = str(payload["model_id"]), float(payload["threshold"])
    if model_id != manifest["model_id"]:
        raise _mismatch(out, "model id", manifest["model_id"], model_id)
    threshold = cfg.threshold if cfg.threshold >= 0 else stored_tau
    if not math.isclose(threshold, manifest["threshold"], abs_tol=1e-9):
        raise _mismatch(out, "threshold", manifest["threshold"], threshold)
    inputs = read_inputs(out)
    committed = int(manifest["num_images"])
    segments = _manifest_segments(manifest)
    if inputs.num_rows < committed or sum(segments) != committed:
        raise InvalidInputError(
            f"{folder.inputs} has {inputs.num_rows} rows, the manifest says {committed} "
            f"(segments {segments}): the folder's plan is damaged; use a new output folder"
        )
    uncommitted = inputs.num_rows - committed
    if uncommitted:  # a rerun died between writing the inputs and the manifest (pipelines.label)
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
    plan = _model_plan(payload, inputs, model_uri, threshold, cfg, manifest, segments)
    return _extend_plan(cfg, plan, rewrite_inputs=uncommitted > 0)


def _manifest_segments(manifest: dict[str, Any]) -> list[int]:
    # Manifests written before reruns could add inputs hold one segment: the whole list.
    segments = manifest.get("segments")
    if segments is None:
        return [int(manifest["num_images"])]
    return [int(seg["images"]) for seg in segments]


def _segment_entry(images: int, first_shard: int) -> dict[str, Any]:
    return {"images": images, "first_shard": first_shard, "listed": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _extend_plan(cfg: LabelJobConfig, plan: LabelPlan, rewrite_inputs: bool = False) -> LabelPlan:
    """List the inputs again: append the new images to the plan (committed), report the missing ones.

    Order of the writes (crash-safe, :mod:`pipelines.label`): ``_SUCCESS`` removed, ``_inputs.arrow``
    (old rows + new rows), ``_manifest.json`` (the commit point).
    """
    out = cfg.out
    try:
        listed = list_inputs(cfg, apply_limit=False)
    except FileNotFoundError as err:  # the input is gone: every frozen image is missing; resume anyway
        log.warning("label: listing %s again found no images (%s)", cfg.images, err)
        listed = INPUT_SCHEMA.empty_table()
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
        raise InvalidInputError(
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
        box_sizes=plan.box_sizes,
        content=plan.content,
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


def read_model(uri: str) -> dict[str, Any]:
    """The model file at ``uri``, checked as far as labeling needs before any image is labelled.

    Raises:
        InvalidInputError: naming ``uri``, when it is not a coloc model file, or one this version
            cannot label with (an unknown kind, malformed ``box_contents``, no model id or τ).
    """
    payload = read_model_payload(storage.read_bytes(uri), uri)
    try:
        payload_kind(payload)
        payload_box_contents(payload)
    except InvalidInputError as err:
        raise InvalidInputError(f"{uri}: {err}") from None
    for key, kind in (("model_id", str), ("threshold", float)):
        try:
            kind(payload[key])
        except (KeyError, TypeError, ValueError):
            raise InvalidInputError(f"{uri}: the model file has no usable {key!r}") from None
    return payload


def _new_plan(cfg: LabelJobConfig) -> LabelPlan:
    out = cfg.out
    inputs = list_inputs(cfg)
    log.info("label: %d images under %s", inputs.num_rows, cfg.images)
    write_inputs(out, inputs)
    if cfg.method == "model":
        payload = read_model(cfg.model)
        model_uri = cfg.model
    else:
        payload = fit_baseline_model(cfg, inputs)
        model_uri = PredictionsFolder(out).model_file
        write_model_file(model_uri, payload)
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
        "crop_bottom": crop_bottom_of(cfg.crop_bottom, cfg.format),
        "boxes": cfg.boxes,
        "pick": cfg.pick,
        "content_halves": cfg.halves != "off",
        "schema": [f"{f.name}:{f.type}" for f in schema.PREDICTIONS_SCHEMA],
        "schema_version": schema.SCHEMA_VERSION,
        "config": dump(cfg),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    PredictionsFolder(out).write_manifest(manifest)
    return _model_plan(payload, inputs, model_uri, threshold, cfg, manifest)


def _model_plan(
    payload: dict[str, Any],
    inputs: pa.Table,
    model_uri: str,
    threshold: float,
    cfg: LabelJobConfig,
    manifest: dict[str, Any],
    segments: list[int] | None = None,
) -> LabelPlan:
    """The plan of a model file: its id, input size and typical box come from its payload."""
    return LabelPlan(
        inputs,
        model_uri,
        str(payload["model_id"]),
        threshold,
        cfg.rows_per_file,
        manifest,
        segments,
        image_size=payload_input_size(payload),
        box_sizes=payload_box_sizes(payload, threshold),
        content=payload_box_contents(payload) is not None,
    )


def plan_labeling(cfg: LabelJobConfig) -> LabelPlan:
    """The plan of ``cfg.out``: the frozen one when a manifest exists, else a new one.

    A frozen plan is checked against ``cfg`` and extended with the images listed since
    (:func:`_extend_plan`).
    """
    # The command line's checks, for configs built in code too; resolves method=auto.
    cfg = check_label_config(cfg)
    folder = PredictionsFolder(cfg.out)
    if folder.has_manifest():
        return _load_plan(cfg, folder.read_manifest())
    if part_files(cfg.out):
        raise InvalidInputError(
            f"{cfg.out} holds part files but no {MANIFEST}: it was not written by this labeling stage "
            "(or its manifest was deleted); use a new output folder"
        )
    return _new_plan(cfg)
