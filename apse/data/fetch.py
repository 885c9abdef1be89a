"""Downloading a data set: exactly its manifest's files, each verified, atomically, resumably.

:func:`fetch` brings a folder to the state its :class:`~apse.data.sources.DataSource` describes:

- files already there with the right SHA-256 are kept (a second run fetches nothing); files with
  other bytes are moved aside into ``.apse-download/rejected/`` and fetched again;
- the missing ones are downloaded by a bounded pool of threads, each into
  ``.apse-download/partial/`` and renamed to its final name only once its size and SHA-256 match,
  so a loader never sees half a file and a killed run leaves nothing a later run could mistake for
  data (the partial folder is emptied when the next run starts);
- network errors, HTTP 5xx/408/429 and bodies that end early are retried with exponential back-off;
  HTTP 404 and other 4xx are not (the file is not on the server); bytes whose hash does not match
  are kept aside in ``.apse-download/rejected/`` and never used;
- while a run is unfinished the folder holds ``.apse-download/INCOMPLETE``, which
  :func:`apse.data.locate_dataset` refuses, so an interrupted download is not read as a smaller
  data set; the label file, ``SHA256SUMS`` and a README are written last.

Errors end the run with a :class:`FetchError` that names the files and says what to do; its
``exit_code`` is what ``python -m apse data get`` exits with (:data:`EXIT_CODES`).
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import os
import random
import shutil
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from apse.data.locate import default_data_root
from apse.data.sources import (DEFAULT_BASE_URL, INCOMPLETE, WORK_DIR, DataSource, FileEntry,
                               get_source, sha256_file)
from apse.io import atomic_write, atomic_write_text
from apse.progress import progress_bar

__all__ = ["BASE_URL_ENV", "EXIT_CODES", "DestinationError", "DownloadError", "FetchError",
           "FetchResult", "VerificationError", "base_url", "fetch", "get"]

#: The environment variable naming a mirror laid out as ``{owner}/{repo}/{commit}/{path}``.
BASE_URL_ENV = "APSE_DATA_BASE_URL"
_CHUNK = 1 << 16
_USER_AGENT = "apse-data/0.1 (+python urllib)"


class FetchError(Exception):
    """A download that could not finish; ``exit_code`` is the command's exit status."""

    exit_code = 1


class DestinationError(FetchError):
    """The destination cannot take the files: not writable, or not enough space."""

    exit_code = 2


class DownloadError(FetchError):
    """Files that could not be fetched after the retries (offline, HTTP errors, cut bodies)."""

    exit_code = 3


class VerificationError(FetchError):
    """Files whose bytes do not match the manifest (kept aside, not used)."""

    exit_code = 4


#: ``python -m apse data`` exit statuses (also printed by ``--help``).
EXIT_CODES = {
    0: "every file is there and verified",
    2: "usage or destination error (unknown set, not writable, no space)",
    3: "download failed after the retries (offline, HTTP 404/5xx, connection cut)",
    4: "verification failed (a hash mismatch; the bytes are kept aside)",
    130: "interrupted (Ctrl-C); run the same command again to resume",
}


def base_url(explicit: str | None = None) -> str:
    """The server to fetch from: ``explicit``, else ``$APSE_DATA_BASE_URL``, else GitHub's raw host."""
    return (explicit or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")


@dataclass
class FetchResult:
    """What a :func:`fetch` did: files downloaded, files already there, and where the set is."""

    source: str
    root: Path
    fetched: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        text = (f"{self.source}: {len(self.fetched) + len(self.present)} files verified in "
                f"{self.root} ({len(self.fetched)} fetched, {len(self.present)} already there")
        if self.replaced:
            text += f", {len(self.replaced)} with other bytes replaced"
        return text + f") in {self.seconds:.1f} s"


class _Permanent(Exception):
    """A failure that a retry cannot mend (HTTP 4xx, a hash mismatch)."""


class _Unreachable(Exception):
    """The server could not be reached at all (no connection): the whole run stops."""


class _NoSpace(Exception):
    pass


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot connect ({exc.reason})"
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed after {len(exc.partial)} bytes of the body"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _is_no_space(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


class _Downloader:
    """One :func:`fetch` call's state, shared by its worker threads."""

    def __init__(self, source: DataSource, root: Path, url: str, retries: int, backoff: float,
                 timeout: float):
        self.source, self.root, self.url = source, root, url
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.work = root / WORK_DIR
        self.partial = self.work / "partial"
        self.rejected = self.work / "rejected"
        self.stop = threading.Event()

    def reject(self, tmp: Path, entry: FileEntry) -> Path:
        """Keep bytes that failed verification out of the data set, under ``rejected/``."""
        kept = self.rejected / entry.path
        kept.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, kept)
        return kept

    def _get(self, entry: FileEntry, tmp: Path) -> tuple[int, str, int | None]:
        """One attempt: stream the file into ``tmp``; (bytes, sha256, Content-Length)."""
        request = urllib.request.Request(self.source.url(entry, self.url),
                                         headers={"User-Agent": _USER_AGENT})
        digest, n = hashlib.sha256(), 0
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            length = response.headers.get("Content-Length")
            with open(tmp, "wb") as f:
                while not self.stop.is_set():
                    block = response.read(_CHUNK)
                    if not block:
                        break
                    f.write(block)
                    digest.update(block)
                    n += len(block)
        return n, digest.hexdigest(), int(length) if length and length.isdigit() else None

    def one(self, entry: FileEntry) -> str:
        """Fetch ``entry`` with retries; returns its path, or raises with the reason."""
        tmp = self.partial / entry.path.replace("/", "__")
        last = "not attempted"
        for attempt in range(self.retries + 1):
            if self.stop.is_set():
                raise _Permanent("cancelled: the run stopped")
            if attempt:
                delay = self.backoff * 2 ** (attempt - 1) * (0.5 + random.random())
                if self.stop.wait(delay):
                    raise _Permanent("cancelled: the run stopped")
            try:
                n, digest, length = self._get(entry, tmp)
            except urllib.error.HTTPError as exc:
                last = _reason(exc)
                if exc.code < 500 and exc.code not in (408, 429):
                    raise _Permanent(last) from None
                continue
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, OSError) and _is_no_space(exc.reason):
                    raise _NoSpace(str(exc.reason)) from None
                last = _reason(exc)
                if attempt == self.retries:
                    raise _Unreachable(last) from None
                continue
            except OSError as exc:
                if _is_no_space(exc):
                    raise _NoSpace(f"{exc.strerror} writing {tmp}") from None
                last = _reason(exc)  # reset, timeout, a body cut short (IncompleteRead)
                continue
            except http.client.HTTPException as exc:
                last = _reason(exc)
                continue
            if self.stop.is_set():
                raise _Permanent("cancelled: the run stopped")
            if length is not None and n < length:
                last = f"truncated body: {n} of {length} bytes"
                continue
            if n != entry.size or digest != entry.sha256:
                kept = self.reject(tmp, entry)
                raise _Permanent(f"SHA-256 mismatch ({n} bytes, sha256 {digest[:12]}..., expected "
                                 f"{entry.size} bytes, {entry.sha256[:12]}...); the bytes are "
                                 f"kept aside at {kept}")
            final = self.root / entry.path
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            return entry.path
        raise _Permanent(f"{last} (after {self.retries + 1} attempts)")


def _prepare(root: Path, work: Path) -> None:
    """Create the destination and the work folder, mark the run unfinished, empty old partials."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        work.mkdir(exist_ok=True)
        atomic_write_text(f"download started {time.strftime('%Y-%m-%d %H:%M:%S')}, pid "
                          f"{os.getpid()}\n", work / INCOMPLETE)
    except OSError as exc:
        if _is_no_space(exc):
            raise DestinationError(f"no space left in {root}: {exc.strerror}") from None
        raise DestinationError(f"cannot write to {root}: {exc.strerror or exc} (choose a writable "
                               f"folder with --dest or $APSE_DATA)") from None
    shutil.rmtree(work / "partial", ignore_errors=True)
    (work / "partial").mkdir()


def _write_extras(source: DataSource, root: Path) -> None:
    """The label file, SHA256SUMS and README: last, once every image is in place."""
    if source.labels is not None:
        atomic_write(root / source.label_file, lambda tmp: tmp.write_bytes(source.labels))
    atomic_write_text(source.sha256sums(), root / "SHA256SUMS")
    atomic_write_text(source.readme(), root / "README.md")


def _listing(failures: list[tuple[str, str]], limit: int = 5) -> str:
    lines = [f"  {path}: {why}" for path, why in failures[:limit]]
    if len(failures) > limit:
        lines.append(f"  ... and {len(failures) - limit} more")
    return "\n".join(lines)


def fetch(source: DataSource, root: str | os.PathLike, *, url: str | None = None, jobs: int = 8,
          retries: int = 4, backoff: float = 0.5, timeout: float = 30.0, progress: bool = True,
          out: TextIO | None = None) -> FetchResult:
    """Make ``root`` hold exactly the verified files of ``source``; see the module docstring.

    ``url`` is the server (default :func:`base_url`); ``jobs`` downloads run at once; a failed
    download is tried ``retries`` more times, waiting about ``backoff`` x 1, 2, 4, ... seconds.
    The licence note is printed to ``out`` (default standard output) before anything is fetched.
    Raises :class:`DestinationError`, :class:`DownloadError` or :class:`VerificationError`.
    """
    if jobs < 1 or retries < 0:
        raise ValueError(f"jobs must be >= 1 and retries >= 0, got jobs={jobs}, retries={retries}")
    out = sys.stdout if out is None else out
    t0 = time.time()
    root = Path(root).expanduser()
    loader = _Downloader(source, root, base_url(url), retries, backoff, timeout)
    print(f"{source.name}: {source.title}\n" + textwrap.fill(source.licence, 79), file=out,
          flush=True)
    _prepare(root, loader.work)
    result = FetchResult(source.name, root)
    todo: list[FileEntry] = []
    for entry in source.files:
        path = root / entry.path
        if path.is_file():
            if path.stat().st_size == entry.size and sha256_file(path) == entry.sha256:
                result.present.append(entry.path)
                continue
            loader.reject(path, entry)
            result.replaced.append(entry.path)
        todo.append(entry)
    need = sum(e.size for e in todo)
    free = shutil.disk_usage(root).free
    if need > free:
        raise DestinationError(f"not enough space in {root}: {source.name} needs "
                               f"{need / 1e6:.0f} MB more, {free / 1e6:.0f} MB are free")
    failures: list[tuple[str, str]] = []
    unreachable: str | None = None
    # A bar on a terminal; elsewhere no bar, and the caller's summary line is the set's one line.
    bar = progress_bar(desc=source.name, total=len(source.files), unit="file", enabled=progress,
                       line=False)
    bar.update(len(result.present))
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="apse-fetch")
    try:
        futures = {pool.submit(loader.one, e): e for e in todo}
        for future in as_completed(futures):
            entry = futures[future]
            try:
                result.fetched.append(future.result())
            except _NoSpace as exc:
                loader.stop.set()
                raise DestinationError(f"no space left in {root} while writing {entry.path} "
                                       f"({exc})") from None
            except _Unreachable as exc:
                loader.stop.set()  # offline: no point in trying the other files
                unreachable = unreachable or f"{entry.path}: {exc}"
            except _Permanent as exc:
                if not str(exc).startswith("cancelled"):
                    failures.append((entry.path, str(exc)))
            bar.update(1)
            bar.set_postfix(fetched=len(result.fetched), refresh=False)
    except BaseException:
        loader.stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown(wait=True)
    result.seconds = time.time() - t0
    if unreachable:
        raise DownloadError(
            f"{source.name}: cannot reach {loader.url} (offline?): {unreachable}. Nothing else "
            f"was tried; {len(result.fetched) + len(result.present)} of {len(source.files)} files "
            f"are in place. Run the same command again when online, or pass --base-url / set "
            f"${BASE_URL_ENV} to a mirror.")
    if failures:
        kind = (VerificationError if any("mismatch" in why for _, why in failures)
                else DownloadError)
        raise kind(f"{source.name}: {len(failures)} of {len(source.files)} files failed "
                   f"({len(result.fetched) + len(result.present)} in place; run the same "
                   f"command again to retry only these):\n{_listing(failures)}")
    _write_extras(source, root)
    (loader.work / INCOMPLETE).unlink()
    shutil.rmtree(loader.partial, ignore_errors=True)
    if not loader.rejected.exists():  # rejected bytes stay for the user to look at
        shutil.rmtree(loader.work, ignore_errors=True)
    return result


def get(name: str, dest: str | os.PathLike | None = None, **options) -> Path:
    """Fetch the data set ``name`` (``fi-subset``, ``twitter1``, ``flickrldl``) and return its folder.

    It lands in ``dest/name``; ``dest`` defaults to where :func:`apse.data.locate_dataset` looks
    first (``$APSE_DATA``, else ``<repo>/data`` in a checkout, else ``~/.local/share/apse``).
    ``options`` go to :func:`fetch` (``url``, ``jobs``, ``retries``, ``progress``). A second call
    checks the files and fetches nothing.
    """
    source = get_source(name)
    root = Path(dest).expanduser() if dest is not None else default_data_root()
    return fetch(source, root / source.name, **options).root
