"""``coloc train --method=selftrain`` (the default): self-train a head on the training images.

No gradient steps and no Ray Train: the head is fitted from streamed statistics of the frozen
backbone's features (``coloc_core.fits.fit_selftrain``), with the very Ray Data passes that
``coloc label --method=selftrain`` runs over the collection it labels (``pipelines.label_fit``): one
pass for the DDT moments that give the first pseudo-masks, then one pass per round for the per-class
moments of the discriminant (Fisher's linear one, then a quadratic one in the last round). The
result is one model file of kind ``selftrain``, written where a CAML run exports its model
(``run.export`` or ``<storage_path>/<name>/model.pt``); ``coloc label --model`` reads it like any
other model file.

The images are those of ``dataset.train_split`` (capped at ``dataset.limit`` and, for the fit, at
``pipelines.label_fit.DDT_FIT_IMAGES`` spread evenly over the split); no box is read. Reading,
decoding and the passes use ``run.cpus_per_worker`` / ``run.decode_cpus`` CPUs per task. Every rerun
fits again (a few passes over at most 2,000 images) and replaces the model file.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

from coloc_core.checkpoint import save_model_file
from pipelines import storage
from pipelines.config import LabelJobConfig, TrainJobConfig, dump, resolve_train_config
from pipelines.label_fit import fit_baseline_model
from pipelines.label_inputs import list_inputs
from pipelines.train import MODEL_FILE, TrainResult

log = logging.getLogger(__name__)


def selftrain_label_config(cfg: TrainJobConfig, run_uri: str) -> LabelJobConfig:
    """The labeling-stage options the fit runs with: the train split, the run folder as scratch space."""
    return LabelJobConfig(
        method="selftrain",
        backbone=cfg.model.backbone,
        images=cfg.dataset.root,
        format=cfg.dataset.format,
        split=cfg.dataset.train_split,
        out=run_uri,
        limit=cfg.dataset.limit,
        crop_bottom=cfg.dataset.crop_bottom,
        actor_cpus=cfg.run.cpus_per_worker,
        decode_cpus=cfg.run.decode_cpus,
        image_size=cfg.image_size,
        fit_size=cfg.fit_size,
        first_labels=cfg.first_labels,
    )


def run_selftrain(cfg: TrainJobConfig) -> TrainResult:
    """Fit the self-trained head on the train split and export it as the run's model file.

    Needs a running Ray (as :func:`pipelines.train.run_training`).

    Raises:
        ValueError: on an invalid config, or when no training image can be decoded.
        FileNotFoundError: when the train split lists no image.
    """
    cfg = resolve_train_config(cfg)
    log.info("training config (resolved):\n%s", dump(cfg))
    run = cfg.run
    run_uri = storage.join(storage.absolute_uri(run.storage_path), run.name)
    label_cfg = selftrain_label_config(cfg, run_uri)
    inputs = list_inputs(label_cfg)
    log.info(
        "self-training %s on %d %s images of %s (no boxes read); run folder %s",
        run.name,
        inputs.num_rows,
        cfg.dataset.train_split,
        cfg.dataset.root,
        run_uri,
    )
    started = time.monotonic()
    payload = fit_baseline_model(label_cfg, inputs, weights=cfg.model.weights)
    rounds = payload["meta"].get("selftrain_rounds", [])
    payload["meta"].update(
        run=run.name,
        dataset={"root": cfg.dataset.root, "format": cfg.dataset.format, "split": cfg.dataset.train_split},
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    model_uri = run.export or storage.join(run_uri, MODEL_FILE)
    with storage.atomic_write(model_uri, "wb") as fh:
        save_model_file(fh, payload)
    metrics: dict[str, Any] = {
        "fit_images": int(payload["meta"].get("fit_images", 0)),
        "rounds": len(rounds),
        "foreground_share": (
            rounds[-1]["foreground"] / max(1, rounds[-1]["foreground"] + rounds[-1]["background"])
            if rounds
            else 0.0
        ),
        "seconds": round(time.monotonic() - started, 1),
    }
    log.info(
        "self-trained head (%d rounds on %d images, %.1f s) exported to %s; label with "
        "coloc label --model %s, then coloc evaluate",
        metrics["rounds"],
        metrics["fit_images"],
        metrics["seconds"],
        model_uri,
        model_uri,
    )
    return TrainResult(
        metrics=metrics, checkpoint_path=None, model_path=model_uri, history=[metrics], run_path=run_uri
    )
