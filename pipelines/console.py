"""What a run prints for a person: a header, one progress bar per long stage, per-epoch lines, a summary.

Every job (``coloc train``, ``coloc label``, ``coloc demo``, ...) calls :func:`setup` first. By default
(quiet) the console shows:

- our own log records at :data:`NOTICE` (the lines meant for a person: stage titles, per-epoch
  metrics, final results) and every warning and error, without timestamps;
- one progress bar per long stage (:func:`progress`): counts, images/s and ETA. On a terminal it is a
  ``tqdm`` bar; when stderr is not a terminal (a pipe, CI, a ``ray job`` log) it is a plain line
  every :data:`LINE_INTERVAL_S` seconds and one when the stage ends, never carriage-return updates;
- and none of Ray's own output: the per-10-second Ray Data progress blocks, the "Starting execution"
  and execution-plan lines, Ray Train's controller messages, the INFO/WARNING lines of Ray's loggers
  and the workers' output that is not ours (:func:`configure_ray`). Ray still writes all of it to
  its session's log folder (``/tmp/ray/session_latest/logs`` on a local cluster).

``--verbose`` (:func:`pipelines.config.split_verbose`) brings back today's full output: our INFO
records with timestamps (the resolved config, every part file written, ...), Ray's progress blocks,
its log lines and every worker line; our progress bars then print plain lines.

Human-facing text goes to stderr; a job's machine-readable result (the JSON summary of ``coloc
label``, ...) stays on stdout. Without :func:`setup` (library use, tests) nothing here prints:
:func:`progress` is silent and logging is left to the caller.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

# Between INFO and WARNING: the records a person should see by default (shown without --verbose).
NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")

# The loggers of this project (its packages and the job scripts).
OWN_LOGGERS = ("pipelines", "coloc_core", "jobs")
# How our warning messages start ("storage: ... retrying"): the tag of a bare worker line that is ours.
OWN_TAGS = ("storage: ", "label: ", "ingest: ", "export: ", "selftrain: ", "train: ", "evaluate: ")
# Non-terminal progress: one plain line at most this often (seconds), and one at the end.
LINE_INTERVAL_S = float(os.environ.get("COLOC_PROGRESS_INTERVAL_S", "60"))
# The format of our records in --verbose mode and in Ray workers (the driver recognises it).
VERBOSE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# A forwarded worker line in VERBOSE_FORMAT: level, logger, message.
_WORKER_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (?P<level>[A-Z]+) (?P<name>[\w.]+): (?P<message>.*)$"
)


@dataclass
class _State:
    configured: bool = False
    verbose: bool = False
    bars: list[Progress] = field(default_factory=list)
    handler: logging.Handler | None = None
    ray_announced: bool = False  # the "ray: N CPUs; ..." line is written once per run


_state = _State()


def is_verbose() -> bool:
    """Whether the run was started with ``--verbose`` (False when :func:`setup` was never called)."""
    return _state.verbose


def is_configured() -> bool:
    """Whether a job entry point called :func:`setup` in this process."""
    return _state.configured


def _stream() -> IO[str]:
    return sys.stderr


def write(text: str) -> None:
    """Print a line for the person (stderr) without breaking a progress bar on screen."""
    bar = next((b for b in reversed(_state.bars) if b._tqdm is not None), None)
    if bar is not None:
        bar._tqdm.write(text, file=_stream())
    else:
        stream = _stream()
        stream.write(text + "\n")
        stream.flush()


def _own(name: str) -> bool:
    return name.split(".", 1)[0] in OWN_LOGGERS or name == "__main__"


class _ConsoleHandler(logging.Handler):
    """Root handler: every record in --verbose mode; ours at NOTICE and anything at WARNING+ otherwise."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.verbose_formatter = logging.Formatter(VERBOSE_FORMAT)

    def filter(self, record: logging.LogRecord) -> bool:
        if _state.verbose:
            return True
        if record.levelno >= logging.WARNING:
            return True
        return record.levelno >= NOTICE and _own(record.name)

    def format(self, record: logging.LogRecord) -> str:
        if _state.verbose:
            return self.verbose_formatter.format(record)
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.verbose_formatter.formatException(record.exc_info)
        if record.levelno == NOTICE:
            return message
        return f"{record.levelname} {record.name}: {message}"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            write(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup(verbose: bool = False) -> None:
    """Configure this process's console for a job run (idempotent; call it before anything logs).

    Puts one console handler on the root logger (see the module docstring), in place of an earlier
    one or of ``logging.basicConfig``'s (other handlers, e.g. pytest's, stay) and, when Ray is
    already imported, applies :func:`configure_ray`. Imports neither Ray nor torch.
    """
    _state.configured = True
    _state.verbose = bool(verbose)
    root = logging.getLogger()
    for handler in list(root.handlers):  # ours from an earlier call, or logging.basicConfig's
        if isinstance(handler, _ConsoleHandler) or type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
    _state.handler = _ConsoleHandler()
    root.addHandler(_state.handler)
    root.setLevel(logging.INFO)
    if not verbose:
        # Python warnings raised inside Ray (deprecations, ...) are Ray's internals too.
        warnings.filterwarnings("ignore", module=r"ray(\.|$)")
    if "ray" in sys.modules:
        configure_ray()


def note(logger: logging.Logger, message: str, *args: Any) -> None:
    """Log ``message`` at :data:`NOTICE`: shown by default (the lines a person reads)."""
    logger.log(NOTICE, message, *args)


def header(title: str, fields: Mapping[str, Any]) -> None:
    """The first lines of a run: the job and its inputs and outputs (``name: value`` per line)."""
    write(title)
    for key, value in fields.items():
        if value not in (None, ""):
            write(f"  {key}: {value}")


# ---------------------------------------------------------------------------------------------- Ray


def ray_init(**kwargs: Any) -> None:
    """``ray.init(**kwargs)`` unless Ray is already up (a submitted job, a test session), quiet or not.

    The first call of a configured run writes one line: the cluster's size and where Ray's logs are.

    Without ``address`` the address comes from the environment (``RAY_ADDRESS``) as with ``ray.init()``.
    """
    import ray  # noqa: PLC0415

    configure_ray()
    if not ray.is_initialized():
        if _state.configured and not _state.verbose:
            kwargs.setdefault("logging_level", logging.ERROR)  # e.g. the token-authentication notice
        ray.init(**kwargs)
    configure_ray()
    if _state.configured and not _state.ray_announced:
        _state.ray_announced = True
        resources = ray.cluster_resources()
        size = f"{int(resources.get('CPU', 0))} CPUs"
        if resources.get("GPU"):
            size += f", {int(resources['GPU'])} GPUs"
        logs = ray_logs_folder()
        hidden = "" if _state.verbose else "its own output is hidden (--verbose shows it); "
        write(f"  ray: {size}; {hidden}{'logs in ' + logs if logs else ''}".rstrip("; "))


def ray_logs_folder() -> str | None:
    """The session log folder of the Ray this driver is connected to (None when unknown)."""
    try:
        import ray  # noqa: PLC0415

        node = ray._private.worker._global_node  # noqa: SLF001 - no public accessor
        if node is None:
            return None
        return os.path.join(node.get_session_dir_path(), "logs")
    except Exception:  # noqa: BLE001 - only informative
        return None


def configure_ray() -> None:
    """Apply the run's mode to Ray in this driver process (call again after ``ray.init``).

    Quiet: Ray's console handlers ("ray", "ray.data") show errors only (Ray Data's log file still
    gets everything), Ray Data's progress output and execution-start lines are off, and the lines
    forwarded from the workers are filtered: our own records at NOTICE or above (per-epoch metrics
    from the training worker, warnings of our code) are printed as ours, the raylet's and the
    autoscaler's lines (out-of-memory kills, nodes added) pass as Ray prints them, every other
    worker line (Ray Train's controller, Ray Data's split coordinator, placement-group cleaners,
    deprecation warnings, ``tqdm_ray`` updates) is dropped. Verbose: Ray's defaults.
    """
    if not _state.configured:
        return
    for name in ("ray", "ray.data", "ray.train"):
        for handler in logging.getLogger(name).handlers:
            if not _ray_console_handler(handler):
                continue  # Ray's log files keep everything; handlers that are not Ray's are not ours to touch
            if not _state.verbose:
                handler.setLevel(logging.ERROR)
            else:  # Ray's own levels: Ray Data's console shows INFO, the others everything
                handler.setLevel(logging.INFO if name == "ray.data" else logging.NOTSET)
    try:
        from ray.data import DataContext  # noqa: PLC0415

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = _state.verbose
        ctx.print_on_execution_start = _state.verbose
    except Exception:  # noqa: BLE001 - a Ray without Ray Data: nothing to quiet there
        pass
    _filter_worker_lines()


def _ray_console_handler(handler: logging.Handler) -> bool:
    """Whether ``handler`` is one of Ray's own console handlers (``ray._private.log.PlainRayHandler``, ...).

    Only those get their level changed. Ray's loggers do not propagate, so others put their handlers on
    them too: pytest attaches its capture handlers (the same objects as on the root logger, where
    ``caplog`` reads) to every non-propagating logger, and an application may add its own. Setting
    those to ERROR would silence every record below it in the whole process, not just Ray's.
    """
    if isinstance(handler, logging.FileHandler) or type(handler).__name__ == "SessionFileHandler":
        return False
    module = type(handler).__module__ or ""
    return module == "ray" or module.startswith("ray.")


def _filter_worker_lines() -> None:
    """Wrap Ray's printer of forwarded worker lines (installed by ``ray.init(log_to_driver=True)``)."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher  # noqa: PLC0415
    except Exception:  # noqa: BLE001 - another Ray layout: leave its output alone
        return
    with dispatcher._lock:  # noqa: SLF001
        handlers = list(dispatcher.handlers)
        for i, (name, handle) in enumerate(handlers):
            if name == "ray_print_logs" and not getattr(handle, "_coloc_filter", False):
                handlers[i] = (name, _WorkerLineFilter(handle))
        dispatcher.handlers = handlers


class _WorkerLineFilter:
    """The quiet mode's view of the workers' output (see :func:`configure_ray`)."""

    _coloc_filter = True

    def __init__(self, printer: Any) -> None:
        self.printer = printer

    def __call__(self, data: dict[str, Any]) -> None:
        if _state.verbose:
            self.printer(data)
            return
        if data.get("pid") in ("raylet", "autoscaler"):
            self.printer(data)
            return
        for line in data.get("lines", []):
            shown = own_worker_line(line)
            if shown is not None:
                write(shown)


def own_worker_line(line: str) -> str | None:
    """A forwarded worker line as the quiet console shows it, or None when it is not shown.

    Shown: a record of our loggers (:data:`OWN_LOGGERS`, in :data:`VERBOSE_FORMAT`) at NOTICE or above,
    and a bare line that starts with one of :data:`OWN_TAGS` (a warning of ours printed by Python's
    last-resort handler in a worker whose loggers we did not configure).
    """
    match = _WORKER_LINE.match(line.strip())
    if match is None:
        # Our warnings in a worker whose loggers have no handler (Python's last resort prints the bare
        # message), e.g. a storage retry in a decode task: they start with our module's tag.
        return f"WARNING {line.strip()}" if line.startswith(OWN_TAGS) else None
    if not _own(match["name"]):
        return None
    level = logging.getLevelName(match["level"])
    if not isinstance(level, int) or level < NOTICE:
        return None
    if level == NOTICE:
        return match["message"]
    return f"{match['level']} {match['name']}: {match['message']}"


def worker_logging(level: int = logging.INFO) -> None:
    """In a Ray worker: our loggers write :data:`VERBOSE_FORMAT` lines to stderr (forwarded to the driver)."""
    for name in ("pipelines", "coloc_core"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(VERBOSE_FORMAT))
            logger.addHandler(handler)
            logger.propagate = False
        logger.setLevel(level)


# ----------------------------------------------------------------------------------------- progress


def _terminal_columns() -> int:
    try:
        return os.get_terminal_size(_stream().fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class Progress:
    """One stage's progress: a tqdm bar on a terminal, plain lines elsewhere, nothing without setup.

    Args:
        desc: what is counted, e.g. ``"label"``.
        total: how many units the stage has (None: unknown).
        unit: the unit's name (plural), e.g. ``"images"``.
    """

    def __init__(self, desc: str, total: int | None, unit: str = "images") -> None:
        self.desc, self.total, self.unit = desc, total, unit
        self.count = 0
        self.start = time.monotonic()
        self._last_line = self.start
        self._tqdm: Any = None
        self._closed = False
        self.mode = "off"
        if _state.configured:
            # A terminal that reports no size (a bare pty) would hide a tqdm bar: plain lines there.
            terminal = _stream().isatty() and _terminal_columns() > 0
            self.mode = "bar" if (not _state.verbose and terminal) else "lines"
        if self.mode == "bar":
            from tqdm import tqdm  # noqa: PLC0415

            self._tqdm = tqdm(
                total=total,
                desc=desc,
                unit=" " + unit.rstrip("s") if unit.endswith("s") else unit,
                file=_stream(),
                dynamic_ncols=True,
                mininterval=0.5,
                smoothing=0.1,
            )

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        self.count += n
        if self._tqdm is not None:
            self._tqdm.update(n)
        elif self.mode == "lines":
            now = time.monotonic()
            if now - self._last_line >= LINE_INTERVAL_S and (self.total is None or self.count < self.total):
                self._last_line = now
                write(self.line(now))

    def line(self, now: float | None = None) -> str:
        """The plain-text state: ``desc: n/total images (x images/s, ETA mm:ss)``."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.start, 1e-9)
        rate = self.count / elapsed
        of = f"/{self.total}" if self.total is not None else ""
        text = f"{self.desc}: {self.count}{of} {self.unit} ({rate:.1f} {self.unit}/s"
        if self.total is not None and 0 < self.count < self.total and rate > 0:
            text += f", ETA {_duration((self.total - self.count) / rate)}"
        return text + ")"

    def close(self) -> None:
        """End the stage: the bar stays on screen at its final state; in line mode one last line."""
        if self._closed:
            return
        self._closed = True
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.mode == "lines":
            elapsed = time.monotonic() - self.start
            rate = self.count / max(elapsed, 1e-9)
            of = f"/{self.total}" if self.total is not None else ""
            took = _duration(elapsed)
            write(f"{self.desc}: {self.count}{of} {self.unit} in {took} ({rate:.1f} {self.unit}/s)")


@contextmanager
def progress(desc: str, total: int | None, unit: str = "images") -> Iterator[Progress]:
    """A :class:`Progress` for a ``with`` block; :func:`advance` inside it counts on the innermost one."""
    bar = Progress(desc, total, unit)
    _state.bars.append(bar)
    try:
        yield bar
    finally:
        _state.bars.remove(bar)
        bar.close()


def set_total(total: int) -> None:
    """Set the total of the innermost open :func:`progress` once it is known (nothing when none is open)."""
    if _state.bars:
        bar = _state.bars[-1]
        bar.total = int(total)
        if bar._tqdm is not None:
            bar._tqdm.total = int(total)
            bar._tqdm.refresh()


def advance(n: int) -> None:
    """Count ``n`` units on the innermost open :func:`progress` (nothing when none is open)."""
    if _state.bars:
        _state.bars[-1].update(n)


def start(argv: list[str]) -> list[str] | None:
    """A job's first step: take ``--verbose`` out of ``argv`` and :func:`setup` the console.

    Returns:
        The other arguments, or None after logging ``bad arguments: ...`` (``--verbose=<not a boolean>``;
        the job then exits 2).
    """
    from pipelines.config import split_verbose  # noqa: PLC0415

    try:
        verbose, rest = split_verbose(list(argv))
    except ValueError as err:
        setup(False)
        logging.getLogger("jobs").error("bad arguments: %s", err)
        return None
    setup(verbose)
    return rest
