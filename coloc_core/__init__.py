"""coloc: self-supervised co-localization with Contrastive Attention Maps (Ki et al., ICCV 2021).

Importing the package is cheap (no torch): ``coloc --version`` and every job's ``--help`` read
:data:`__version__` from here before anything heavy is imported. The one-call API,
``from coloc_core import Predictor`` (:mod:`coloc_core.predict`), is imported on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Prediction", "Predictor", "__version__", "load"]


def __getattr__(name: str) -> Any:
    # ``from coloc_core import Predictor`` imports torch on first use only (PEP 562), so that
    # ``import coloc_core`` stays cheap for the command line.
    if name in ("Prediction", "Predictor", "load"):
        from coloc_core import predict  # noqa: PLC0415

        return getattr(predict, name)
    raise AttributeError(f"module 'coloc_core' has no attribute {name!r}")
