"""One way to open any URI: a local path, ``file://`` or ``s3://`` (AWS or any S3-compatible store).

URIs keep their form everywhere: what goes in as ``s3://bucket/key`` comes back as ``s3://bucket/key``
(fsspec lists S3 objects as ``bucket/key``; :func:`to_uri` puts the scheme back), ``file:///x`` stays a
``file://`` URI and a plain path stays a plain path.

S3 endpoint: an explicit ``endpoint_url`` argument wins, then ``AWS_ENDPOINT_URL_S3``, then
``AWS_ENDPOINT_URL`` (the AWS SDKs' own variables), else AWS. Credentials and region come from the usual
AWS chain (environment, config files, instance profile). Ray tasks that touch S3 read the environment of
their worker process, so set these variables before ``ray.init`` (or in ``runtime_env``), or pass
``endpoint_url`` down explicitly.

Atomic writes (:func:`atomic_write`, :func:`write_bytes_atomic`) never leave a half-written file that
looks complete:

- local: the bytes go to a hidden temporary file in the destination folder, are flushed and fsync'ed,
  then ``os.replace`` moves it over the destination (atomic on POSIX within one filesystem); on an
  exception the temporary file is deleted and the destination is untouched.
- S3: an object becomes visible only when its upload completes (a single PUT, or the completion call of a
  multipart upload), and is then complete. So the bytes are staged locally (in memory up to
  ``_SPOOL_BYTES``, then in a temporary file) and uploaded in one go only after the writer's block
  finished without an exception; a failing writer uploads nothing. The one upload of the whole object
  is idempotent, so its transient faults are retried like reads (:func:`retry_transient`). We do not
  write to a temporary key and copy it: S3 has no rename, a copy is not more atomic than the PUT
  itself, and it doubles the traffic.
  (s3fs aborts a multipart upload that fails; one that is killed mid-way stays invisible and is cleaned up
  by the bucket's lifecycle rule for incomplete multipart uploads.)

Transient faults (:func:`retry_transient`): reads (:func:`read_bytes`, :func:`read_text`, listings,
:func:`exists`, :func:`copy_dir_from`) and object-store uploads (:func:`atomic_write`) retry the
failures that say nothing about the file, only about the way to it: a refused, reset or closed
connection, a connection or read timeout, an endpoint that cannot be reached, throttling (``SlowDown``,
HTTP 429) and HTTP 5xx (:func:`is_transient` decides, on the exception and its ``__cause__`` chain).
They wait ``COLOC_STORAGE_BACKOFF_S`` seconds (default 2) and double it after each failed attempt, up to
``COLOC_STORAGE_BACKOFF_MAX_S`` (default 16), for ``COLOC_STORAGE_ATTEMPTS`` attempts in all (default 5:
waits of 2, 4, 8 and 16 s, about 30 s); the variables are read at each call, so set them in the workers'
environment too. When every attempt fails, :class:`StorageUnavailableError` is raised ("storage
unreachable: ..."): the caller fails rather than taking the file for a bad one. Permanent errors
(missing: ``FileNotFoundError``, no access: ``PermissionError``, any other) are raised at once,
unchanged. The S3 filesystem used for these reads has s3fs's and botocore's own retries turned off (and
a 10 s connect timeout), so that the bound above is the whole wait.

A folder of several files (a checkpoint) is not atomic as a whole: copy it with :func:`copy_dir_to`, which
writes each file atomically, and write a completion marker last (``marker=``); readers trust a folder only
when its marker exists.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import posixpath
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar
from urllib.parse import urlparse

import fsspec

from coloc_core.datasets import IMAGE_EXTENSIONS as _DATASET_IMAGE_EXTENSIONS
from coloc_core.errors import InvalidInputError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = tuple(sorted(_DATASET_IMAGE_EXTENSIONS))
# Other image formats a folder may hold: listed like images, so each gets a row. PIL decodes some of them
# (depending on its build); the others become error rows ("cannot identify image file"), never a silent
# omission.
OTHER_IMAGE_EXTENSIONS = (".avif", ".dng", ".heic", ".heif", ".ico", ".jfif", ".jp2", ".jxl", ".psd", ".svg")
# Staged S3 uploads stay in memory up to this size, then spill to a local temporary file.
_SPOOL_BYTES = 64 * 1024 * 1024
# Retries of transient read failures (module docstring); each can be overridden by its variable.
ATTEMPTS_ENV, BACKOFF_ENV, BACKOFF_MAX_ENV = (
    "COLOC_STORAGE_ATTEMPTS",
    "COLOC_STORAGE_BACKOFF_S",
    "COLOC_STORAGE_BACKOFF_MAX_S",
)
DEFAULT_ATTEMPTS = 5
DEFAULT_BACKOFF_S = 2.0
DEFAULT_BACKOFF_MAX_S = 16.0
# S3 error codes that mean "try again later", whatever the HTTP status says.
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "ProvisionedThroughputExceededException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "503",
        "500",
    }
)
T = TypeVar("T")


class StorageUnavailableError(ConnectionError):
    """Storage could not be reached: a transient failure persisted through every retry.

    Not a fact about the file: the job must fail (and be rerun once storage is back), never record the
    file as bad.
    """


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    # a setting of the environment the command was given: bad input, reported in one line
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInputError(f"{name}={raw!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise InvalidInputError(f"{name}={raw!r} must be a finite number >= 0")
    return value


def retry_settings() -> tuple[int, float, float]:
    """``(attempts, first backoff s, largest backoff s)`` from the environment (module docstring)."""
    attempts = max(1, int(_env_number(ATTEMPTS_ENV, DEFAULT_ATTEMPTS)))
    backoff = _env_number(BACKOFF_ENV, DEFAULT_BACKOFF_S)
    backoff_max = _env_number(BACKOFF_MAX_ENV, DEFAULT_BACKOFF_MAX_S)
    return attempts, backoff, max(backoff, backoff_max)


def _client_error_transient(err: BaseException) -> bool | None:
    """Whether an answer of the server (a botocore ``ClientError``) is worth retrying; None for no answer.

    True for throttling and 5xx; False for any other answer (the server answered about the file).
    """
    response = getattr(err, "response", None)
    if not isinstance(response, dict):
        return None
    error = response.get("Error") or {}
    code = str(error.get("Code", ""))
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    if code in _TRANSIENT_CODES:
        return True
    if isinstance(status, int):
        return status >= 500 or status in (408, 429)
    return False


def _transient_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    with contextlib.suppress(ImportError):
        import botocore.exceptions as bce  # noqa: PLC0415

        # EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError are botocore ConnectionErrors;
        # ReadTimeoutError, ConnectionClosedError, ResponseStreamingError are HTTPClientErrors.
        types += [bce.ConnectionError, bce.HTTPClientError, bce.IncompleteReadError]
    with contextlib.suppress(ImportError):
        import aiohttp  # noqa: PLC0415

        types += [aiohttp.ClientConnectionError, aiohttp.ClientPayloadError]
    with contextlib.suppress(ImportError):
        from fsspec.exceptions import FSTimeoutError  # noqa: PLC0415

        types.append(FSTimeoutError)
    import http.client  # noqa: PLC0415

    types += [http.client.IncompleteRead, http.client.RemoteDisconnected]
    return tuple(types)


_TRANSIENT_TYPES: tuple[type[BaseException], ...] | None = None


def is_transient(err: BaseException) -> bool:
    """True when ``err`` is a storage fault worth retrying: no connection, timeout, throttling, HTTP 5xx.

    False for what a retry cannot change: the file is missing (``FileNotFoundError``, S3 ``NoSuchKey``,
    404), not readable (``PermissionError``, 403), not a file, or its bytes are bad (decode errors), and
    for :class:`StorageUnavailableError` (already retried). The exception is looked at first, then its
    ``__cause__`` chain (s3fs raises ``OSError(EIO)`` with the botocore error as its cause).
    """
    global _TRANSIENT_TYPES  # noqa: PLW0603 - computed once (optional imports)
    if _TRANSIENT_TYPES is None:
        _TRANSIENT_TYPES = _transient_types()
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageUnavailableError):
            return False
        if isinstance(current, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
            return False
        answered = _client_error_transient(current)
        if answered is not None:
            return answered
        if isinstance(current, _TRANSIENT_TYPES):
            return True
        current = current.__cause__
    return False


def retry_transient(fn: Callable[[], T], what: str) -> T:
    """``fn()``, retried with bounded exponential backoff while it fails with a transient error.

    Args:
        fn: the operation (it must be safe to repeat, e.g. a read).
        what: what it does, for the messages (``"reading s3://b/k.jpg"``).

    Raises:
        StorageUnavailableError: a transient error on every attempt (its cause is the last one).
        Any permanent error of ``fn`` at once, unchanged.
    """
    attempts, backoff, backoff_max = retry_settings()
    start = time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as err:
            if not is_transient(err):
                raise
            last = err
            if attempt == attempts:
                break
            delay = min(backoff * 2 ** (attempt - 1), backoff_max) * random.uniform(0.8, 1.0)  # noqa: S311
            log.warning(
                "storage: %s failed (attempt %d of %d: %s: %s); retrying in %.1f s",
                what,
                attempt,
                attempts,
                type(err).__name__,
                err,
                delay,
            )
            time.sleep(delay)
    raise StorageUnavailableError(
        f"storage unreachable: {what} failed {attempts} times over {time.monotonic() - start:.1f} s "
        f"(last error: {type(last).__name__}: {last}); not a fault of the file: rerun once storage is "
        f"reachable (retries: {ATTEMPTS_ENV}, {BACKOFF_ENV}, {BACKOFF_MAX_ENV})"
    ) from last


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def scheme_of(uri: str) -> str:
    """``"s3"``, ``"file"`` (for ``file://`` URIs *and* plain paths), or another fsspec protocol."""
    if "://" not in uri:
        return "file"
    scheme = uri.split("://", 1)[0].lower()
    return "s3" if scheme in ("s3", "s3a", "s3n") else scheme


def is_s3(uri: str) -> bool:
    """True for ``s3://`` (and ``s3a://``/``s3n://``) URIs."""
    return scheme_of(uri) == "s3"


def strip_scheme(uri: str) -> str:
    """The path a filesystem of :func:`filesystem_for` expects: ``bucket/key`` or a local path."""
    if "://" not in uri:
        return uri
    rest = uri.split("://", 1)[1]
    return rest if is_s3(uri) else rest or "/"


def to_uri(listed: str, like: str) -> str:
    """Give a path as a filesystem lists it the form of ``like`` (keeps ``s3://`` and ``file://``).

    ``to_uri("bucket/a/b.jpg", like="s3://bucket/a")`` is ``"s3://bucket/a/b.jpg"``;
    ``to_uri("/data/x.jpg", like="file:///data")`` is ``"file:///data/x.jpg"``; a plain ``like`` keeps
    the plain path. A ``listed`` value that already has a scheme is returned as is.
    """
    if "://" in listed:
        return listed
    if "://" not in like:
        return listed
    scheme = like.split("://", 1)[0]
    if scheme_of(like) == "file":
        return f"file://{listed if listed.startswith('/') else '/' + listed}"
    return f"{scheme}://{listed.lstrip('/')}"


def join(uri: str, *parts: str) -> str:
    """``uri`` and relative parts joined by ``/``; the scheme and the form of ``uri`` are kept.

    ``join("s3://b/runs", "exp", "model.pt") == "s3://b/runs/exp/model.pt"``. Empty parts are skipped.
    """
    rels = [p.strip("/") for p in parts if p and p.strip("/")]
    if not rels:
        return uri
    if not uri:
        return "/".join(rels)
    return (uri if uri.endswith("/") else uri + "/") + "/".join(rels)


def absolute_uri(uri: str) -> str:
    """A local path as an absolute plain path (Ray Train's storage path needs one); ``s3://`` unchanged.

    ``file://`` is stripped; a trailing ``/`` of an ``s3://`` URI is dropped.
    """
    if is_s3(uri):
        return uri.rstrip("/")
    return os.path.abspath(strip_scheme(uri))


def s3_endpoint(endpoint_url: str | None = None) -> str | None:
    """The S3 endpoint to use: the argument, else ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``."""
    return endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def filesystem_for(
    uri: str, endpoint_url: str | None = None, *, own_retries: bool = True
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``uri`` and the path inside it (scheme removed).

    Args:
        uri: local path, ``file://`` URI or ``s3://bucket/key``.
        endpoint_url: S3-compatible endpoint (e.g. ``http://127.0.0.1:9000``); None = from the environment
            (see :func:`s3_endpoint`), else AWS.
        own_retries: False = an S3 filesystem without s3fs's and botocore's own retries (one attempt per
            call), for callers that retry with :func:`retry_transient`.

    Returns:
        ``(fs, path)``; for S3 an ``s3fs.S3FileSystem`` (listing cache off, so objects written by other
        processes are seen at once) and ``bucket/key``.
    """
    scheme = scheme_of(uri)
    if scheme == "file":
        return fsspec.filesystem("file"), os.path.abspath(strip_scheme(uri)) if uri else uri
    if scheme == "s3":
        import s3fs  # noqa: PLC0415 (only needed for S3)

        endpoint = s3_endpoint(endpoint_url)
        client_kwargs: dict[str, Any] = {}
        if endpoint:
            client_kwargs["endpoint_url"] = endpoint
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            client_kwargs["region_name"] = region
        if own_retries:
            fs = s3fs.S3FileSystem(client_kwargs=client_kwargs, use_listings_cache=False)
        else:
            fs = s3fs.S3FileSystem(
                client_kwargs=client_kwargs,
                use_listings_cache=False,
                # A connection that takes 10 s is a failed attempt (botocore waits 60 s by default).
                config_kwargs={"retries": {"max_attempts": 1, "mode": "standard"}, "connect_timeout": 10},
            )
            fs.retries = 1  # s3fs's own retry loop (a class attribute; the instance is ours by its kwargs)
        return fs, strip_scheme(uri)
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def pyarrow_filesystem_for(uri: str, endpoint_url: str | None = None) -> tuple[Any, str]:
    """A ``pyarrow.fs.FileSystem`` and the path inside it, honouring the same S3 endpoint rules.

    For ``RunConfig(storage_filesystem=...)`` of Ray Train and ``write_parquet(filesystem=...)``: pyarrow's
    own S3 client does not read ``AWS_ENDPOINT_URL`` in every version, so pass it explicitly.
    """
    import pyarrow.fs as pafs  # noqa: PLC0415

    if is_s3(uri):
        kwargs: dict[str, Any] = {}
        endpoint = s3_endpoint(endpoint_url)
        if endpoint:
            parsed = urlparse(endpoint)
            kwargs["endpoint_override"] = parsed.netloc or parsed.path
            kwargs["scheme"] = parsed.scheme or "https"
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region"] = region
        return pafs.S3FileSystem(**kwargs), strip_scheme(uri)
    return pafs.LocalFileSystem(), os.path.abspath(strip_scheme(uri))


def exists(uri: str, endpoint_url: str | None = None) -> bool:
    """True when a file or folder (for S3: an object or a non-empty prefix) exists at ``uri``."""
    fs, path = filesystem_for(uri, endpoint_url, own_retries=False)
    return retry_transient(lambda: bool(fs.exists(path)), f"looking up {uri}")


def read_bytes(uri: str, endpoint_url: str | None = None) -> bytes:
    """The whole content of one file (one GET on S3), transient faults retried (module docstring).

    Raises:
        FileNotFoundError: when it does not exist; PermissionError when it cannot be read.
        StorageUnavailableError: when storage stayed unreachable through every retry.
    """
    fs, path = filesystem_for(uri, endpoint_url, own_retries=False)

    def read() -> bytes:
        if scheme_of(uri) == "file":
            with fs.open(path, "rb") as f:
                return bytes(f.read())
        return bytes(fs.cat_file(path))

    return retry_transient(read, f"reading {uri}")


def read_text(uri: str, endpoint_url: str | None = None) -> str:
    """The content of one UTF-8 text file."""
    return read_bytes(uri, endpoint_url).decode("utf-8")


def makedirs(uri: str, endpoint_url: str | None = None) -> None:
    """Create a local folder and its parents; nothing to do on S3 (prefixes need no creation)."""
    if scheme_of(uri) == "file":
        os.makedirs(strip_scheme(uri), exist_ok=True)


def list_files(uri: str, endpoint_url: str | None = None) -> list[str]:
    """Every file under ``uri`` recursively, sorted, as full URIs in the form of ``uri``.

    A missing folder gives ``[]``.
    """
    fs, path = filesystem_for(uri, endpoint_url, own_retries=False)
    try:
        found = retry_transient(lambda: fs.find(path), f"listing {uri}")
    except FileNotFoundError:
        return []
    base = path.rstrip("/")
    out = []
    for item in found:
        rel = item[len(base) :].lstrip("/") if item.startswith(base) else None
        if rel is None:  # defensive: a filesystem that lists in another form
            out.append(to_uri(item, uri))
        else:
            out.append(join(uri, rel))
    return sorted(out)


def list_images(
    uri: str,
    extensions: Iterable[str] = IMAGE_EXTENSIONS + OTHER_IMAGE_EXTENSIONS,
    endpoint_url: str | None = None,
) -> list[str]:
    """Image files under ``uri`` recursively (case-insensitive extension match), sorted, as full URIs.

    Hidden files and folders (a path part starting with ``.``) are skipped, as in
    ``coloc_core.datasets.read_image_folder``. A missing or image-less folder gives ``[]``. Nothing else
    is dropped silently: one log line counts the files skipped for their extension (by extension) and
    names the folders named like an image (``photo.jpg/``), whose files are listed like any others.
    """
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    fs, path = filesystem_for(uri, endpoint_url, own_retries=False)
    try:
        found = retry_transient(lambda: fs.find(path, withdirs=True, detail=True), f"listing {uri}")
    except FileNotFoundError:
        return []
    base = path.rstrip("/")
    prefix = uri.rstrip("/")
    images: list[str] = []
    skipped: dict[str, int] = {}
    image_named_folders: list[str] = []
    for item, info in found.items():
        rel = item[len(base) :].lstrip("/") if item.startswith(base) else None
        full = to_uri(item, uri) if rel is None else join(uri, rel)
        rel = full[len(prefix) :].lstrip("/")
        if not rel or any(part.startswith(".") for part in rel.split("/")):
            continue
        is_dir = info.get("type") == "directory"
        if full.lower().endswith(exts):
            (image_named_folders if is_dir else images).append(full)
        elif not is_dir:
            ext = posixpath.splitext(rel)[1].lower() or "(none)"
            skipped[ext] = skipped.get(ext, 0) + 1
    if skipped or image_named_folders:
        counts = ", ".join(f"{n} {ext}" for ext, n in sorted(skipped.items()))
        folders = sorted(image_named_folders)
        log.warning(
            "listing %s: skipped %d files that are not images (%s); %d folders named like an image "
            "(not images; their files are listed)%s",
            uri,
            sum(skipped.values()),
            counts or "none",
            len(folders),
            f": {', '.join(folders[:5])}{' ...' if len(folders) > 5 else ''}" if folders else "",
        )
    return sorted(images)


def remove(uri: str, recursive: bool = False, endpoint_url: str | None = None) -> None:
    """Delete a file (or a folder/prefix with ``recursive``); a missing path is not an error."""
    fs, path = filesystem_for(uri, endpoint_url)
    try:
        fs.rm(path, recursive=recursive)
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def atomic_write(uri: str, mode: str = "wb", endpoint_url: str | None = None) -> Iterator[IO[Any]]:
    """Write a file so that readers see either the old content (or nothing) or the complete new file.

    ``with atomic_write("s3://b/k.json", "w") as f: f.write(text)``. See the module docstring for how
    each storage makes it atomic. An exception inside the block leaves the destination untouched.

    Args:
        uri: destination file (local path, ``file://`` or ``s3://``).
        mode: ``"wb"`` (bytes) or ``"w"`` (UTF-8 text).
        endpoint_url: S3 endpoint override.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    if scheme_of(uri) == "file":
        with _atomic_write_local(strip_scheme(uri)) as raw:
            if mode == "w":
                text = _text(raw)
                yield text
                text.flush()
                text.detach()
            else:
                yield raw
        return
    fs, path = filesystem_for(uri, endpoint_url)
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as staged:
        if mode == "w":
            text = _text(staged)
            yield text
            text.flush()
            text.detach()
        else:
            yield staged
        # Only reached when the block raised nothing: upload the complete bytes in one go. One upload
        # of the whole object is idempotent, so a transient fault is retried like a read.
        staged.flush()
        size = staged.tell()
        staged.seek(0)
        if size <= _SPOOL_BYTES:
            data = staged.read()
            retry_transient(lambda: fs.pipe_file(path, data), f"writing {uri}")
        else:
            with tempfile.NamedTemporaryFile(delete=True) as spill:
                _copy_stream(staged, spill)
                spill.flush()
                retry_transient(lambda: fs.put_file(spill.name, path), f"writing {uri}")


def _text(raw: IO[bytes]) -> io.TextIOWrapper:
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")  # type: ignore[type-var]


def _copy_stream(src: IO[bytes], dst: IO[bytes], chunk: int = 8 * 1024 * 1024) -> None:
    while block := src.read(chunk):
        dst.write(block)


@contextlib.contextmanager
def _atomic_write_local(path: str) -> Iterator[IO[bytes]]:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        # mkstemp creates the file 0600; give the final file the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(uri: str, data: bytes, endpoint_url: str | None = None) -> None:
    """Write ``data`` to ``uri`` atomically (see :func:`atomic_write`)."""
    with atomic_write(uri, "wb", endpoint_url) as f:
        f.write(data)


def write_text_atomic(uri: str, text: str, endpoint_url: str | None = None) -> None:
    """Write UTF-8 ``text`` to ``uri`` atomically."""
    write_bytes_atomic(uri, text.encode("utf-8"), endpoint_url)


def copy_dir_to(
    local_dir: str, uri: str, *, marker: str | None = None, endpoint_url: str | None = None
) -> list[str]:
    """Copy a local folder (recursively) to ``uri``: every file atomically, the marker file last.

    Args:
        local_dir: source folder on the local disk.
        uri: destination folder (local path, ``file://`` or ``s3://``).
        marker: name of an empty file written after everything else (e.g. ``"_COMPLETE"``) so readers
            can tell a complete copy from an interrupted one; None = no marker.
        endpoint_url: S3 endpoint override.

    Returns:
        The destination URIs written, in write order (the marker last).
    """
    written = []
    for dirpath, _dirnames, filenames in sorted(os.walk(local_dir)):
        rel_dir = os.path.relpath(dirpath, local_dir).replace(os.sep, "/")
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if marker is not None and rel == marker:
                continue
            dest = join(uri, rel)
            with (
                open(os.path.join(dirpath, name), "rb") as src,
                atomic_write(dest, "wb", endpoint_url) as dst,
            ):
                _copy_stream(src, dst)
            written.append(dest)
    if marker is not None:
        dest = join(uri, marker)
        write_bytes_atomic(dest, b"", endpoint_url)
        written.append(dest)
    return written


def copy_dir_from(uri: str, local_dir: str, endpoint_url: str | None = None) -> list[str]:
    """Download every file under ``uri`` into ``local_dir`` (same relative layout); returns local paths.

    Raises:
        FileNotFoundError: when nothing exists under ``uri``.
    """
    files = list_files(uri, endpoint_url)
    if not files:
        raise FileNotFoundError(f"no files under {uri}")
    prefix = uri.rstrip("/")
    out = []
    for src in files:
        rel = src[len(prefix) :].lstrip("/")
        dest = os.path.join(local_dir, *rel.split("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        fs, path = filesystem_for(src, endpoint_url, own_retries=False)
        retry_transient(functools.partial(fs.get_file, path, dest), f"downloading {src}")
        out.append(dest)
    return out


def relative_path(uri: str, root: str) -> str:
    """The part of ``uri`` below ``root`` (both in any form; schemes and leading slashes ignored)."""

    def bare(u: str) -> str:
        return posixpath.normpath(strip_scheme(u)).strip("/")

    b_uri, b_root = bare(uri), bare(root)
    if b_uri == b_root:
        return ""
    if not b_uri.startswith(b_root + "/"):
        raise ValueError(f"{uri} is not under {root}")
    return b_uri[len(b_root) + 1 :]
