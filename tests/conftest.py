"""Fixtures shared by every test directory (markers are registered in pyproject.toml)."""

from __future__ import annotations

import os
import random
import sys
import time
import warnings

import numpy as np
import pytest

DEFAULT_SEED = 1234

# Before anything imports Ray: a Ray driver that cannot reach its GCS for this long ends the whole test
# process with exit code 1 and no report (Ray's default is 60 s; see tests/ray/conftest.py).
os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", "3600")

# The level-set kernel of MaxBoxAccV2 (coloc_core/_level_sets.py) is numba code compiled on its first
# call (cached on disk, invalidated whenever its source changes). A cold compile takes from seconds to
# minutes on a loaded machine; paid inside a test it counts against that test's timeout.
LEVEL_SETS_MODULE = "coloc_core._level_sets"


def warm_level_sets() -> float | None:
    """Compile (or load from numba's cache) the level-set kernel with one tiny call; returns the seconds.

    None when numba is not installed (the metric then uses OpenCV and there is nothing to compile).
    """
    from coloc_core import _level_sets

    if not _level_sets.available():
        return None
    started = time.perf_counter()
    u8 = np.zeros((6, 6), np.uint8)
    u8[1:4, 1:4] = 200
    u8[2, 2] = 0  # a hole: both sweeps run
    # The same argument types as coloc_core.boxes' call: (H, W) uint8 and (G, 4) int64, contiguous.
    _level_sets.best_iou_per_level(u8, np.array([[1, 1, 3, 3]], np.int64))
    return time.perf_counter() - started


def pytest_collection_finish(session: pytest.Session) -> None:
    """Warm the level-set kernel once per session, after collection and before the first test.

    Only when a collected test module imported it (through ``coloc_core.boxes``: metrics, evaluation,
    labeling), so a session of other tests does not pay for numba. Outside every test, so no test's
    timeout includes the compile; a failure here is a warning, and the tests report the real error.
    """
    if session.config.option.collectonly or not session.items or LEVEL_SETS_MODULE not in sys.modules:
        return
    try:
        seconds = warm_level_sets()
    except Exception as err:  # noqa: BLE001 - the kernel's own tests fail with the details
        warnings.warn(f"warming {LEVEL_SETS_MODULE} failed: {type(err).__name__}: {err}", stacklevel=1)
        return
    if seconds is not None and seconds > 5.0:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"{LEVEL_SETS_MODULE}: compiled in {seconds:.0f} s (numba; cached on disk)")


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
