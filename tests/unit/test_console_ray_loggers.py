"""A job's console setup in a process where Ray is imported leaves handlers that are not Ray's alone.

Ray's loggers ("ray", "ray.data") do not propagate, so pytest attaches its capture handlers (the same
objects ``caplog`` reads on the root logger) to them too. :func:`pipelines.console.configure_ray` once set
every console handler there to ERROR, pytest's included: after any test had imported Ray, a job's
``main()`` called in the test process (``jobs.export.main``, ...) silenced every INFO record of the rest
of that test, so the export tests (now ``tests/unit/test_export_job.py``) failed when run after
``tests/ray/test_label_outage.py``. No cluster here: importing Ray and Ray Data is enough.
"""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest

from jobs.export import main as export_main
from pipelines import console, storage
from pipelines.predictions import MANIFEST
from tests.ray import labeling_data as data

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture
def ray_imported():
    """Ray and Ray Data imported (their loggers configured) before the test's call phase starts."""
    import ray  # noqa: F401
    import ray.data  # noqa: F401


@pytest.fixture
def fresh_console(monkeypatch, ray_imported):
    """A console state of the test's own; root handlers, root level and Ray's handler levels restored."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    ray_levels = {
        handler: handler.level for name in ("ray", "ray.data") for handler in logging.getLogger(name).handlers
    }
    monkeypatch.setattr(console, "_state", console._State())
    monkeypatch.setattr(console, "_stream", lambda: io.StringIO())
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for handler, handler_level in ray_levels.items():
        handler.setLevel(handler_level)


@pytest.mark.parametrize("verbose", [False, True])
def test_setup_keeps_other_handlers_on_rays_loggers_at_their_level(fresh_console, caplog, verbose):
    ray_logger = logging.getLogger("ray")
    assert not ray_logger.propagate  # why pytest (or anyone) puts its own handlers there
    added = caplog.handler not in ray_logger.handlers  # pytest puts it there itself (non-propagating)
    if added:
        ray_logger.addHandler(caplog.handler)
    try:
        caplog.set_level(logging.INFO, logger="pipelines.export")
        console.setup(verbose=verbose)  # what every job's main() does first; Ray is imported: configure_ray
        assert caplog.handler.level == logging.INFO
        logging.getLogger("pipelines.export").info("export: --top_k=2 dropped 1 boxes")
        assert "--top_k=2 dropped 1 boxes" in caplog.text
        # Ray's own console handlers are still quieted (quiet mode) or left at Ray's levels (verbose).
        ray_handlers = [h for h in ray_logger.handlers if type(h).__module__.startswith("ray.")]
        ray_handlers = [h for h in ray_handlers if not isinstance(h, logging.FileHandler)]
        # (after a Ray session in this process Ray may have none left here; then nothing to check)
        assert all(h.level == (logging.NOTSET if verbose else logging.ERROR) for h in ray_handlers)
    finally:
        if added:
            ray_logger.removeHandler(caplog.handler)


def test_export_main_after_ray_is_imported_still_logs_to_caplog(fresh_console, tmp_path, caplog):
    """The symptom: an export's "dropped" line reaches ``caplog`` after Ray was imported in the process."""
    heat = np.zeros((7, 7), np.uint8)
    heat[2:5, 2:5] = 255
    root = "s3://bucket/photos"
    items = [
        (f"{root}/one.jpg", 200, 100, heat, (10.0, 20.0, 109.0, 59.0), 0.7),
        (f"{root}/two.jpg", 64, 48, heat, (0.0, 0.0, 63.0, 47.0), 0.1),
    ]
    pred = str(tmp_path / "pred")
    data.write_parts(pred, data.prediction_rows(items, model="m1"), rows_per_file=2)
    storage.write_text_atomic(storage.join(pred, MANIFEST), json.dumps({"images": root}))
    caplog.set_level(logging.INFO, logger="pipelines.export")
    out = str(tmp_path / "coco.json")
    args = [f"--predictions={pred}", f"--out={out}", "--category=raccoon", "--to=coco", "--top_k=1"]
    assert export_main(args) == 0
    assert "--top_k=1 dropped 1 boxes" in caplog.text
