"""The labeling stage's training-free models: the payload of a baseline method, fitted where it must be.

Part of the labeling stage (:mod:`pipelines.label`): CAAM and the full map need no fit; DDT, RPS and
self-training are fitted on feature statistics of a sample of the collection, summed over Ray Data
passes (:func:`fit_statistics`, whose tasks run :func:`pipelines.label_actors.descriptor_moments_batch`),
and then measure the fitted model's typical box (its size and its content) on at most
``coloc_core.box_score.TYPICAL_BOX_IMAGES`` of those images (:func:`typical_box`, two terms of every
box score).
``coloc train --method=selftrain`` (:mod:`pipelines.selftrain`) runs the same fit.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pyarrow as pa

from coloc_core.box_score import TYPICAL_BOX_IMAGES, evenly_spread
from coloc_core.errors import InvalidInputError
from coloc_core.fits import SELFTRAIN_ROUNDS, ddt_from_statistics, fit_selftrain, rps_from_statistics
from coloc_core.localizer import DEFAULT_FIT_SIZE, DEFAULT_INPUT_SIZES, baseline_payload
from pipelines import console, storage
from pipelines.config import LabelJobConfig
from pipelines.label_actors import FIT_ROWS, box_areas_batch, decoded_images, descriptor_moments_batch
from pipelines.predictions import PredictionsFolder

# The labeling stage's one logger: every line of the stage (driver, plan, shards, fit) is logged as
# ``pipelines.label`` (what the console shows and the tests look for).
log = logging.getLogger("pipelines.label")

# Methods fitted on collection statistics before labeling (one streamed pass over a sample).
FITTED = ("ddt", "rps", "selftrain")
#: The backbone whose DDT labels the first self-training round of a head fitted on another
#: EfficientNet-Lite (``coloc_core.fits.fit_selftrain``, ``seeded``): DDT localizes better on Lite0's
#: features than on Lite2's, and on a small collection Lite2's own first component can miss the object
#: altogether (docs/RESULTS.md, issue 10).
SELFTRAIN_SEED_BACKBONE = "efficientnet_lite0"
# DDT / RPS are fitted on at most this many images, spread evenly over the sorted collection.
DDT_FIT_IMAGES = 2000
# Images per call of a fit pass: small batches run faster on CPU (the self-trained head's fit and
# labeling of raccoon took 149.5 s at 16 against 171.9 s at 64, the same model and boxes;
# docs/BENCHMARKS.md).
DDT_FIT_BATCH = 16


def fit_baseline_model(cfg: LabelJobConfig, inputs: pa.Table, weights: str | None = "auto") -> dict[str, Any]:
    """The model file payload of ``cfg.method`` (full, caam, ddt, rps, selftrain), fitted on ``inputs``.

    ``weights``: the backbone's weights source ("auto", a file or URI; "none"/None = random init).
    The fitted kinds run Ray Data passes over ``inputs`` (:func:`fit_statistics`, then
    :func:`typical_box`, whose results are the payload's ``box_sizes`` and ``box_contents``), with
    ``cfg.out`` as scratch
    space for the frozen backbone and the fitted model.
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
    write_model_file(backbone_uri, caam)
    seed_uri = _seed_backbone(cfg, options) if cfg.method == "selftrain" else None
    sample = _ddt_sample(inputs)
    sized = typical_box_images(sample.num_rows)
    passes = 1 + (SELFTRAIN_ROUNDS if cfg.method == "selftrain" else 0)
    images = f"{sample.num_rows} image{'s' if sample.num_rows != 1 else ''}"
    what = f"{passes} passes over {images}" if passes > 1 else images
    what += f", box sizes on {sized}"
    # One bar for the whole fit (every pass): fit_statistics counts each batch's images on it.
    total = passes * sample.num_rows + sized
    with console.progress(f"fit {cfg.method.upper()} ({what})", total=total):
        stats = fit_statistics(seed_uri or backbone_uri, sample, cfg, size=fit_size)
        if cfg.method == "selftrain":

            def class_pass(weight: Any, bias: float, level: float, seed: bool = False) -> dict[str, Any]:
                head = ([float(v) for v in weight], float(bias), float(level))
                return fit_statistics(
                    backbone_uri, sample, cfg, head=head, size=fit_size, seed_uri=seed_uri if seed else None
                )

            weight, bias, square, rounds = fit_selftrain(stats, class_pass, seeded=seed_uri is not None)
            meta.update(first_labels=cfg.first_labels)
            if seed_uri is not None:
                meta.update(selftrain_seed=f"ddt on {SELFTRAIN_SEED_BACKBONE} pre_head")
        meta.update(fit_images=int(sample.num_rows), fit_descriptors=int(stats["count"]))
        backbone_state = {k[len("backbone.") :]: v for k, v in caam["state_dict"].items()}
        if cfg.method == "ddt":
            mean, vector = ddt_from_statistics(stats)
            payload = baseline_payload(
                "ddt", backbone_state=backbone_state, ddt_mean=mean, ddt_vector=vector, meta=meta, **options
            )
        elif cfg.method == "selftrain":
            meta.update(selftrain_rounds=rounds)
            payload = baseline_payload(
                "selftrain",
                backbone_state=backbone_state,
                head_weight=weight,
                head_bias=bias,
                head_quadratic=square,
                meta=meta,
                **options,
            )
        else:
            vector = rps_from_statistics(
                stats["sum_gap"], int(stats["images"]), stats["sum_unit"], int(stats["count"])
            )
            payload = baseline_payload(
                "rps", backbone_state=backbone_state, rps_vector=vector, meta=meta, **options
            )
        payload["box_sizes"], payload["box_contents"] = typical_box(payload, sample, cfg)
    return payload


def typical_box_images(num_rows: int) -> int:
    """How many of ``num_rows`` images :func:`typical_box` reads (for a progress bar's total)."""
    return min(num_rows, TYPICAL_BOX_IMAGES)


def typical_box(
    payload: dict[str, Any], inputs: pa.Table, cfg: LabelJobConfig
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The model's typical box on ``inputs``: its size, its content and how much its parts repeat.

    At most ``TYPICAL_BOX_IMAGES`` of them, spread evenly; one Ray Data pass at the model's input
    size and τ (:func:`pipelines.label_actors.box_areas_batch`: the very boxes the labeling stage
    cuts), over the model written to ``<out>/_fit_model.pt``.

    Returns:
        (``coloc_core.box_score.box_size_statistics`` with the τ they were measured at and, for a
        model with features, ``repeats`` (``coloc_core.box_score.repeat_statistic``),
        ``coloc_core.box_content.box_content_statistics``): the payload's ``box_sizes`` and
        ``box_contents``; (None, None) (scores without those terms) when no image of the sample gave
        a box.
    """
    from coloc_core.box_content import box_content_statistics  # noqa: PLC0415
    from coloc_core.box_score import box_size_statistics, repeat_statistic  # noqa: PLC0415
    from coloc_core.localizer import payload_input_size  # noqa: PLC0415

    sample = _spread_sample(inputs, TYPICAL_BOX_IMAGES)
    uri = PredictionsFolder(cfg.out).fitted_file
    write_model_file(uri, payload)
    ds = decoded_images(sample, np.arange(sample.num_rows), cfg, payload_input_size(payload))
    areas = ds.map_batches(
        box_areas_batch,
        num_cpus=cfg.actor_cpus,
        batch_size=DDT_FIT_BATCH,
        batch_format="numpy",
        fn_kwargs={
            "model_uri": uri,
            "model_id": str(payload["model_id"]),
            "threshold": float(payload["threshold"]),
            "num_threads": max(1, math.ceil(cfg.actor_cpus)),
        },
    )
    values: list[float] = []
    descriptors: list[np.ndarray] = []
    repeats: list[float] = []
    for batch in areas.iter_batches(batch_format="numpy", batch_size=None):
        console.advance(len(batch["area"]))
        for area, descriptor, repeat in zip(batch["area"], batch["descriptor"], batch["repeat"], strict=True):
            if np.isfinite(area):
                values.append(float(area))
                if descriptor.size and np.isfinite(descriptor).all():
                    descriptors.append(descriptor)
                if np.isfinite(repeat):
                    repeats.append(float(repeat))
    if not values:
        log.warning(
            "label: no box on the %d sample images: scores leave out the typicality and content terms",
            sample.num_rows,
        )
        return None, None
    sizes: dict[str, Any] = {**box_size_statistics(values), "threshold": float(payload["threshold"])}
    if repeats:  # the fitted labelers (features at hand); not CAML
        sizes["repeats"] = repeat_statistic(repeats)
    contents = box_content_statistics(np.stack(descriptors)) if descriptors else None
    log.info(
        "label: typical box on %d images: %.0f%% of the image (median), spread ×%.2f; content: "
        "cosine with the mean crop %.3f ± %.3f; repeats %s",
        sizes["images"],
        100 * math.exp(float(sizes["median"])),
        math.exp(float(sizes["spread"])),
        float("nan") if contents is None else contents["cos_mean"],
        float("nan") if contents is None else contents["cos_spread"],
        "n/a" if "repeats" not in sizes else f"{sizes['repeats']:.3f}",
    )
    return sizes, contents


def write_model_file(uri: str, payload: dict[str, Any]) -> None:
    """Write a model payload (the fit's frozen backbones, the fitted model) to ``uri`` atomically."""
    from coloc_core.checkpoint import save_model_file  # noqa: PLC0415

    with storage.atomic_write(uri, "wb") as fh:
        save_model_file(fh, payload)


def _seed_backbone(cfg: LabelJobConfig, options: dict[str, Any]) -> str | None:
    """The seed backbone's file of a self-training fit (written to ``cfg.out``), or None.

    A head on an EfficientNet-Lite other than :data:`SELFTRAIN_SEED_BACKBONE`, read at its
    ``pre_head`` at plain stride 16 (the default), is seeded by that backbone's DDT at the same side
    and stride, so both feature maps cover the same pixels; any other head, and every head with
    ``first_labels=own``, seeds itself.
    """
    backbone = str(options["backbone"])
    if (
        cfg.first_labels == "own"
        or backbone == SELFTRAIN_SEED_BACKBONE
        or not backbone.startswith("efficientnet_lite")
        or options["feature_layer"] != "pre_head"
        or options["dilate"] is not False
    ):
        return None
    keys = ("feature_layer", "dilate", "input_size")
    seed = baseline_payload(
        "caam", weights="auto", backbone=SELFTRAIN_SEED_BACKBONE, **{k: options[k] for k in keys}
    )
    uri = PredictionsFolder(cfg.out).seed_backbone_file
    write_model_file(uri, seed)
    return uri


def baseline_backbone_options(cfg: LabelJobConfig) -> tuple[str, bool | None]:
    """The (feature layer, dilate) of a training-free method, resolving ``auto``.

    ``auto``: DDT and RPS read the last block before the head (``pre_head``) of a stride-16 network
    that is not dilated, where the backbone has one (EfficientNet-Lite0 and -Lite2): the best setting
    measured on raccoon and confirmed on kangaroo (docs/RESULTS.md); CAAM keeps the head output of the dilated
    network (its own best); elsewhere the backbone's own output and default.
    """
    from coloc_core.backbones import build_backbone  # noqa: PLC0415

    fitted = cfg.method in FITTED
    layer = cfg.feature_layer
    if layer == "auto":
        probe = build_backbone(cfg.backbone, weights=None)
        layer = "pre_head" if fitted and "pre_head" in probe.feature_layers else "output"
    if cfg.stride16 == "auto":
        dilate = False if fitted and cfg.backbone.startswith("efficientnet_lite") else None
    else:
        dilate = cfg.stride16 == "dilated"
    return layer, dilate


def _ddt_sample(inputs: pa.Table) -> pa.Table:
    return _spread_sample(inputs, DDT_FIT_IMAGES)


def _spread_sample(inputs: pa.Table, limit: int) -> pa.Table:
    """At most ``limit`` rows of ``inputs``, spread evenly over them (all of them when fewer)."""
    if inputs.num_rows <= limit:
        return inputs
    return inputs.take(pa.array(evenly_spread(inputs.num_rows, limit)))


def fit_statistics(
    backbone_uri: str,
    inputs: pa.Table,
    cfg: LabelJobConfig,
    head: tuple[list[float], float, float] | None = None,
    *,
    size: int,
    seed_uri: str | None = None,
) -> dict[str, Any]:
    """The summed feature statistics of ``inputs`` (Ray Data, CPU tasks) as float64 tensors.

    Keys: ``coloc_core.fits.STATISTICS`` (``sum_xxT`` reshaped to (C, C)); with ``head``
    (``(weight, bias, level)``, a self-training round), ``CLASS_STATISTICS`` (``*_xxT`` (C, C)), and
    with ``seed_uri`` (the head labels the pixels with that backbone's features: the seeded first
    round) also ``sum_x``, ``sum_xxT`` and ``count`` of ``backbone_uri``'s features.
    ``size``: the side every image is resized to (the input size of the model being fitted).

    Raises:
        ValueError: when no image of ``inputs`` could be decoded.
    """
    import torch  # noqa: PLC0415

    from coloc_core.fits import CLASS_STATISTICS, STATISTICS  # noqa: PLC0415

    ds = decoded_images(inputs, np.arange(inputs.num_rows), cfg, size)
    moments = ds.map_batches(
        descriptor_moments_batch,
        num_cpus=cfg.actor_cpus,
        batch_size=DDT_FIT_BATCH,
        batch_format="numpy",
        fn_kwargs={
            "model_uri": backbone_uri,
            "num_threads": max(1, math.ceil(cfg.actor_cpus)),
            "head": head,
            "seed_uri": seed_uri,
        },
    )
    keys: tuple[str, ...] = STATISTICS if head is None else CLASS_STATISTICS
    if head is not None and seed_uri is not None:
        keys = (*CLASS_STATISTICS, "sum_x", "sum_xxT", "count")
    sums: dict[str, np.ndarray] = {}
    for batch in moments.iter_batches(batch_format="numpy", batch_size=None):
        console.advance(int(batch[FIT_ROWS].sum()))  # the fit's bar (fit_baseline_model)
        for key in keys:
            part = batch[key].sum(axis=0)
            sums[key] = part if key not in sums else sums[key] + part
    if not sums or (head is None and int(sums["count"]) < 2):
        raise InvalidInputError(f"{cfg.method.upper()}: no decodable image to fit the feature statistics on")
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
