"""Fixtures shared by every test directory (markers are registered in pyproject.toml)."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

DEFAULT_SEED = 1234

# Before anything imports Ray: a Ray driver that cannot reach its GCS for this long ends the whole test
# process with exit code 1 and no report (Ray's default is 60 s; see tests/ray/conftest.py).
os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", "3600")


@pytest.fixture
def seed() -> int:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and CUDA) per test; returns the seed."""
    random.seed(DEFAULT_SEED)
    np.random.seed(DEFAULT_SEED)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency, but keep the fixture light
        pass
    else:
        torch.manual_seed(DEFAULT_SEED)
    return DEFAULT_SEED
