"""The session's Ray start-up (tests/ray/conftest.py): a slow start gets a longer wait and one more try.

No Ray cluster is started here: ``start_ray`` is driven with stand-ins for ``ray.init``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.ray.conftest import RAY_START_TIMEOUT_S, _patient, start_ray

pytestmark = [pytest.mark.timeout(120)]

TIMED_OUT = "The current node timed out during startup. This could happen because ..."


def test_a_failed_start_is_cleaned_up_and_tried_once_more():
    spawned: list[subprocess.Popen[bytes]] = []
    calls: list[str] = []

    def init() -> str:
        calls.append("init")
        if len(calls) == 1:  # the first start leaves a process behind, like a raylet that never registered
            spawned.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]))
            raise Exception(TIMED_OUT)
        return "context"

    with pytest.warns(UserWarning, match="Ray did not start \\(try 1 of 2\\).*timed out during startup"):
        assert start_ray(init, lambda: calls.append("shutdown")) == "context"
    assert calls == ["init", "shutdown", "init"]
    assert spawned[0].wait(timeout=30) is not None  # ended by the retry, not left running


def test_when_every_try_fails_the_last_error_is_raised():
    calls: list[str] = []

    def init() -> str:
        calls.append("init")
        raise RuntimeError(f"{TIMED_OUT} (try {calls.count('init')})")

    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match=r"\(try 2\)"):
        start_ray(init, lambda: calls.append("shutdown"))
    assert calls == ["init", "shutdown", "init"]


def test_each_try_waits_longer_than_rays_30_s_and_restores_everything():
    import ray._private.services as services

    original = services.get_node
    seen: dict[str, object] = {}

    def init() -> str:
        seen["env"] = os.environ.get("RAY_gcs_server_port_wait_time_s")
        seen["patched"] = services.get_node is not original
        return "context"

    assert RAY_START_TIMEOUT_S > 30
    assert start_ray(init, lambda: None) == "context"
    assert seen == {"env": str(RAY_START_TIMEOUT_S), "patched": True}
    assert services.get_node is original


def test_the_node_lookup_retries_until_the_node_registers():
    answers = [RuntimeError("not registered"), RuntimeError("not registered"), {"node_id": "n1"}]

    def get_node(gcs_address: str, node_id: str) -> dict[str, str]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert _patient(get_node, timeout_s=10, interval_s=0.01)("addr", "n1") == {"node_id": "n1"}

    def never_registers(gcs_address: str, node_id: str) -> dict[str, str]:
        raise RuntimeError("never registered")

    with pytest.raises(RuntimeError, match="never registered"):
        _patient(never_registers, timeout_s=0.05, interval_s=0.01)("addr", "n1")
