"""The exported model file: one ``torch.save`` payload that the labeling stage loads.

Payload (a plain dict, loadable with ``torch.load(..., weights_only=True)``)::

    {
        "format": "coloc-model/1",
        "config": to_dict(ColocConfig),      # the resolved method config
        "state_dict": {...},                 # ColocNet weights (no "module." prefix)
        "model_id": "3f9a…",                 # sha256 of the weights, first 16 hex digits
        "threshold": 0.2,                    # τ for boxes (calibrated or the config default)
        "meta": {...},                       # free-form: epoch, metrics, dataset, created
    }

File I/O is done by the caller (``pipelines/storage.py`` opens local paths and ``s3://`` URIs); here
everything goes through binary file objects, so coloc_core stays free of storage libraries.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from typing import IO, Any

import torch
from torch import nn

from coloc_core.config import ColocConfig, from_dict, to_dict, validate
from coloc_core.errors import InvalidInputError
from coloc_core.model import ColocNet, build_model

FORMAT = "coloc-model/1"
# The end of every "not a coloc model file" error: where a user's model files come from.
_WHAT_WRITES = (
    "model files are what `coloc train` (model.pt) and `coloc label --method=...` (_model.pt) write"
)


def method_config_dict(cfg: ColocConfig) -> dict[str, Any]:
    """The method part of a (possibly larger, job-level) config as plain dicts."""
    names = {f.name for f in dataclasses.fields(ColocConfig)}
    return {k: v for k, v in to_dict(cfg).items() if k in names}


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under DDP / ``torch.compile`` wrappers."""
    inner = getattr(model, "module", model)
    return getattr(inner, "_orig_mod", inner)


def model_id(state_dict: dict[str, torch.Tensor]) -> str:
    """A content hash of the weights (16 hex digits), so mixed runs can be told apart."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(
            tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16 else tensor.float().numpy().tobytes()
        )
    return digest.hexdigest()[:16]


def model_payload(
    model: nn.Module, cfg: ColocConfig, threshold: float | None = None, meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Build the exported-model payload of a trained ColocNet."""
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    return {
        "format": FORMAT,
        "config": method_config_dict(cfg),
        "state_dict": state,
        "model_id": model_id(state),
        "threshold": float(cfg.boxes.threshold if threshold is None else threshold),
        "meta": dict(meta or {}),
    }


def save_model_file(fileobj: IO[bytes], payload: dict[str, Any]) -> None:
    """Write a payload from :func:`model_payload` to a binary file object."""
    if payload.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} payload")
    torch.save(payload, fileobj)


def read_model_payload(fileobj: IO[bytes] | bytes, source: str | None = None) -> dict[str, Any]:
    """Read and check a model file (bytes or binary file object); ``source`` names it in errors.

    Raises:
        InvalidInputError: (a ``ValueError``) when the file is not a coloc model file: not something
            ``torch.load`` reads (a text file, an image, a file cut short), or a ``torch.save`` file of
            something else (a torchvision state dict, say).
        OSError: reading a file object failed.
    """
    what = source or "the file"
    buffer = io.BytesIO(fileobj) if isinstance(fileobj, (bytes, bytearray)) else fileobj
    try:
        payload = torch.load(buffer, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as err:  # noqa: BLE001 - torch.load's many ways of saying "not a torch.save file"
        # torch's own text is no help here (a byte offset, or advice to load the file unsafely)
        raise InvalidInputError(
            f"{what} is not a coloc model file: torch.load cannot read it ({type(err).__name__}); "
            + _WHAT_WRITES
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = f"format {payload.get('format')!r}" if isinstance(payload, dict) else type(payload).__name__
        raise InvalidInputError(
            f"{what} is not a coloc model file (expected format {FORMAT!r}, found {found}); {_WHAT_WRITES}"
        )
    return payload


def model_from_payload(payload: dict[str, Any]) -> tuple[ColocNet, ColocConfig]:
    """Rebuild the trained ColocNet (eval mode, CPU) and its config from a payload."""
    cfg = validate(from_dict(ColocConfig, payload["config"]))
    model = build_model(cfg, weights=False)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, cfg
