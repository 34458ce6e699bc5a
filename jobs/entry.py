"""The one skeleton every job script runs: parse → check → header → Ray (if needed) → run → report.

A job script describes itself as a :class:`Job` and its ``main`` is ``JOB.main`` (``run_job(JOB, argv)``):

1. ``--verbose`` is taken out of the command line and the console is set up (:func:`console.start`);
2. ``Job.parse`` builds and checks the config (``--help`` / ``--version`` answer there, see
   :func:`pipelines.config.build_config`); a ``KeyError`` / ``ValueError`` is logged as
   ``bad arguments: ...`` and the job exits 2, before Ray or torch is imported;
3. ``Job.header`` gives the run's first lines (``coloc <version> · <title>`` and its fields); then
   the environment's ``COLOC_STORAGE_*`` retry settings are checked (a bad one is bad input, exit 2,
   before Ray starts);
4. Ray is started (or joined: ``RAY_ADDRESS`` of a submitted job) only when ``Job.needs_ray``; while
   it starts, a background thread imports ``Job.preload`` (torch and the stage's modules: about 3 s
   that would otherwise follow Ray's start; OpenCV is imported before the thread starts, on the main
   thread, since its import rewrites ``sys.path``: :data:`PRELOAD_FIRST`);
5. ``Job.run`` does the work, importing its heavy modules itself: :class:`Refused` → its message,
   exit 2 (a configuration to change); :class:`coloc_core.errors.InputError` (inputs that are not what
   the command expects: a dataset without its layout's files, a folder without images or part files,
   a table and a ground truth of different sets, a labels folder of another model or other options;
   also when a Ray task raised it) → ``bad input: ...``
   without a traceback, exit 2; any other exception → ``<Job.failed>`` with the traceback, exit 1;
   Ctrl-C → ``<name> interrupted``, exit 130 (as a shell reports a SIGINT);
6. ``Job.report`` shows the result; a mapping it returns is printed as JSON on stdout (the
   machine-readable summary; the person-facing lines go to stderr). Exit 0.

This module imports neither Ray nor torch: ``--help``, ``--version`` and bad command lines stay fast.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from coloc_core.errors import InputError
from pipelines import console
from pipelines.config import version_text

C = TypeVar("C")
R = TypeVar("R")

# Exit codes: success, a failed run, a bad command line (or a refused configuration, or bad input), Ctrl-C.
OK, FAILED, BAD_ARGUMENTS, INTERRUPTED = 0, 1, 2, 130


class Refused(Exception):
    """Raised by ``Job.run`` for a request that cannot be carried out as configured: logged, exit 2."""


@dataclass(frozen=True)
class Job(Generic[C, R]):
    """What one job script is, for :func:`run_job`.

    Attributes:
        name: the job's name; its logger is ``jobs.<name>``.
        parse: the arguments (without ``--verbose``) → a checked config; raises ``KeyError`` /
            ``ValueError`` on a bad command line.
        run: the config → the result; imports Ray-, torch- or pyarrow-heavy modules itself.
        failed: the error line logged (with the traceback) when ``run`` raises.
        header: the config → (title, fields) of the first lines; None = no header.
        report: (config, result) → None, or a mapping to print as JSON on stdout; None = nothing.
        needs_ray: start or join Ray before ``run``.
        ray_options: the config → keyword arguments of ``ray.init`` when no Ray is running to join
            (the demo's local cluster: its CPUs, no dashboard); None = Ray's defaults.
        preload: modules ``run`` will import, imported in a background thread while Ray starts.
    """

    name: str
    parse: Callable[[list[str]], C]
    run: Callable[[C], R]
    failed: str
    header: Callable[[C], tuple[str, Mapping[str, Any]]] | None = None
    report: Callable[[C, R], Mapping[str, Any] | None] | None = None
    needs_ray: bool = False
    ray_options: Callable[[C], Mapping[str, Any]] | None = None
    preload: tuple[str, ...] = ()

    def main(self, argv: list[str] | None = None) -> int:
        """The job script's ``main``: :func:`run_job` on ``argv`` (default ``sys.argv[1:]``)."""
        return run_job(self, argv)


def run_job(job: Job[C, R], argv: list[str] | None = None) -> int:
    """Run ``job`` on ``argv`` (default: ``sys.argv[1:]``) and return its exit code (see the module doc)."""
    args = console.start(sys.argv[1:] if argv is None else argv)  # --verbose, then the console
    if args is None:
        return BAD_ARGUMENTS
    log = logging.getLogger(f"jobs.{job.name}")
    try:
        cfg = job.parse(args)
    except (KeyError, ValueError) as err:
        log.error("bad arguments: %s", err)
        return BAD_ARGUMENTS
    if job.header is not None:
        title, fields = job.header(cfg)
        console.header(f"{version_text()} · {title}", fields)
    try:
        # The environment's storage retry settings are read by every storage call, in Ray's workers
        # too: a bad one is bad input now, not a failed task after Ray has started.
        from pipelines.storage import retry_settings

        retry_settings()
        if job.needs_ray:
            _preload(job.preload)
            # address from the job environment (RAY_ADDRESS) when submitted
            console.ray_init(**(job.ray_options(cfg) if job.ray_options is not None else {}))
        result = job.run(cfg)
    except Refused as err:
        log.error("%s", err)
        return BAD_ARGUMENTS
    except InputError as err:
        # A Ray task's error is also an instance of its cause, whose own message has no remote traceback.
        cause = getattr(err, "cause", None)
        log.error("bad input: %s", cause if isinstance(cause, InputError) else err)
        return BAD_ARGUMENTS
    except KeyboardInterrupt:
        log.error("%s interrupted", job.name)
        return INTERRUPTED
    except Exception:
        log.exception(job.failed)
        return FAILED
    summary = job.report(cfg, result) if job.report is not None else None
    if summary is not None:
        print(json.dumps(summary, indent=2, default=str))
    return OK


# Imported on the calling thread before the preload thread starts. OpenCV's import ends by setting
# ``sys.path`` back to the copy it took when it began (cv2/__init__.py), so an entry another thread
# adds in between is lost: ``import ray`` on the main thread adds the folder of Ray's own psutil and
# then imports psutil, which then failed with "No module named 'psutil'" in some runs of every job.
PRELOAD_FIRST = ("cv2",)


def _preload(modules: tuple[str, ...]) -> None:
    """Import ``modules`` in a daemon thread (an error is left for ``run``'s own import to raise).

    :data:`PRELOAD_FIRST` is imported here first, on the calling thread (about 0.1 s).
    """
    if modules:
        for name in PRELOAD_FIRST:
            importlib.import_module(name)

    def work() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001, S112 - run imports it again and reports the error
                continue

    if modules:
        threading.Thread(target=work, name="coloc-preload", daemon=True).start()
