"""Where the WARC files come from: the user's paths, globs, s3:// prefixes, URLs or a Common Crawl snapshot.

`resolve_inputs` turns what was typed on the command line into a sorted list of WARC URIs (local
paths are made absolute so the same file is never listed twice); `snapshot_warc_urls` reads a
snapshot's `warc.paths.gz` from Common Crawl (or any mirror of its layout) and `list_snapshots`
the crawls of its collinfo.json; `open_warc` gives a forward-only binary stream for any of those
URIs, for `tasks.readers.warc.iter_warc_documents` to read.
HTTP downloads are streamed, never held whole; they are retried with exponential backoff and
jitter when the connection fails or the server says it is busy (Common Crawl answers 503 "Slow
Down" under load), and resumed with a Range request when the connection drops mid-file. A
download that cannot be resumed (the server ignores Range, or the retries run out) raises, so the
unit reading it fails and is redone; it is never taken for a damaged file.

Every problem the user can fix becomes an `InputError` whose message is one line naming it.

A URL can carry credentials: a presigned URL's query (`X-Amz-Signature=...`, a bearer token
until it expires) or user info (`https://user:password@host/`). The reader fetches with the
URL as given; everything stored or shown (documents' `warc_path`, progress markers, stats,
artifacts, log lines and error messages) uses `display_uri`, which drops both, and a unit's
identity is its display URI, so a re-signed URL resumes the same unit.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import http.client
import io
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import IO

import pyarrow.fs as pafs

from infra import retry
from infra.storage import Storage, StorageError, is_s3

log = logging.getLogger(__name__)

SNAPSHOT_ID = re.compile(r"CC-MAIN-(\d{4})-(\d{2})(?!\d)")
WARC_SUFFIXES = (".warc", ".warc.gz")
HTTP_ATTEMPTS = 4
RETRYABLE_HTTP_STATUS = frozenset({429, 500, 502, 503, 504})
USER_AGENT = "crawl2chat/0.1"


class InputError(ValueError):
    """Input the pipeline cannot use; the message is one line saying what and why."""


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def display_uri(uri: str) -> str:
    """`uri` as it may be stored and shown: an http(s) URL without its query, fragment and user
    info (where credentials ride); any other URI unchanged."""
    if not is_http(uri):
        return uri
    parts = urllib.parse.urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def snapshot_of(uri: str) -> str:
    """The Common Crawl snapshot id (CC-MAIN-YYYY-WW) named in a path or URL, else ""."""
    match = SNAPSHOT_ID.search(uri)
    return match.group(0) if match else ""


def check_snapshot_id(snapshot: str) -> str:
    """`snapshot` itself when it is a well-formed CC-MAIN-YYYY-WW id (ISO week 01-53)."""
    match = SNAPSHOT_ID.fullmatch(snapshot)
    if not match or not 1 <= int(match.group(2)) <= 53:
        raise InputError(f"invalid snapshot id {snapshot!r}: expected CC-MAIN-YYYY-WW, e.g. CC-MAIN-2024-51")
    return snapshot


# --- resolving ---------------------------------------------------------------------------------


def resolve_inputs(inputs: list[str], storage: Storage) -> list[str]:
    """WARC URIs for local paths, globs, directories, s3:// files/prefixes/globs and http(s) URLs."""
    uris: set[str] = set()
    for item in inputs:
        uris.update(_resolve_one(item, storage))
    return sorted(uris)


def _resolve_one(item: str, storage: Storage) -> list[str]:
    if is_http(item):
        return [item]
    uri = item
    if not is_s3(item):
        if "://" in item and not item.startswith("file://"):
            raise InputError(f"unsupported input {item}: use a local path, s3://bucket/prefix or an http(s) URL")
        uri = os.path.abspath(item.removeprefix("file://"))
    try:
        if any(char in uri for char in "*?["):
            return _only_warcs(storage.glob(uri), f"no WARC files match {item!r}")
        filesystem, path = storage.resolve(uri)
        kind = filesystem.get_file_info(path).type
        if kind == pafs.FileType.NotFound:
            raise InputError(f"input not found: {item}")
        if kind == pafs.FileType.File:
            return [uri]  # named explicitly: taken whatever its suffix
        return _only_warcs([entry.uri for entry in storage.list(uri)], f"no WARC files in {item}")
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001 - storage errors become one line for the user
        raise InputError(f"cannot list {item}: {_first_line(error)}") from error


def _only_warcs(uris: list[str], message_if_none: str) -> list[str]:
    warcs = [uri for uri in uris if uri.endswith(WARC_SUFFIXES)]
    if not warcs:
        raise InputError(message_if_none)
    return warcs


def list_snapshots(collinfo_url: str, timeout: float) -> list[str]:
    """Every snapshot id in Common Crawl's collinfo.json (a list of crawls), oldest first."""
    try:
        with _urlopen(collinfo_url, timeout) as response:
            crawls = json.loads(response.read().decode("utf-8"))
        ids = {crawl["id"] for crawl in crawls if SNAPSHOT_ID.fullmatch(str(crawl.get("id", "")))}
    except (OSError, ValueError, TypeError, AttributeError) as error:  # HTTP, JSON or shape errors
        raise InputError(f"cannot read the crawl list {collinfo_url}: {_first_line(error)}") from error
    if not ids:
        raise InputError(f"{collinfo_url} lists no CC-MAIN snapshot")
    return sorted(ids)  # CC-MAIN-YYYY-WW sorts chronologically


def latest_snapshot(collinfo_url: str, timeout: float) -> str:
    """The newest snapshot id in collinfo.json, so a scheduled run with `--snapshot latest`
    picks up each new crawl."""
    return list_snapshots(collinfo_url, timeout)[-1]


def snapshot_week(snapshot: str) -> dt.date:
    """The Monday of the ISO week a snapshot id names (CC-MAIN-2024-10: 2024-03-04), the date
    that `--from/--to` compare: a crawl is named for the week it started in."""
    match = SNAPSHOT_ID.fullmatch(check_snapshot_id(snapshot))
    return dt.date.fromisocalendar(int(match.group(1)), int(match.group(2)), 1)


def snapshot_warc_urls(snapshot: str, base_url: str, max_warcs: int | None, timeout: float) -> list[str]:
    """The first `max_warcs` (None: all) WARC URLs listed in a snapshot's warc.paths.gz."""
    check_snapshot_id(snapshot)
    base = base_url.rstrip("/")
    paths_url = f"{base}/crawl-data/{snapshot}/warc.paths.gz"
    try:
        with _urlopen(paths_url, timeout) as response:
            listing = gzip.decompress(response.read()).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as error:  # URLError and BadGzipFile are OSErrors
        raise InputError(f"cannot read {paths_url}: {_first_line(error)}") from error
    paths = [line.strip() for line in listing.splitlines() if line.strip()][:max_warcs]
    if not paths:
        raise InputError(f"{paths_url} lists no WARC files")
    return [f"{base}/{path}" for path in paths]


# --- opening -----------------------------------------------------------------------------------


def open_warc(uri: str, storage: Storage, timeout: float = 60, backoff_seconds: float = 1.0) -> IO[bytes]:
    """A forward-only binary stream of a local, s3:// or http(s):// WARC; the caller closes it."""
    try:
        if is_http(uri):
            return HttpStream(uri, timeout, backoff_seconds)
        return storage.open_stream(uri)
    except (OSError, StorageError) as error:
        raise InputError(f"cannot open {display_uri(uri)}: {_first_line(error)}") from error


class HttpStream(io.RawIOBase):
    """A streamed HTTP download that knows its position and picks up where it was cut off.

    FastWARC asks a Python stream for `tell()`, which an HTTP response cannot answer, hence the
    byte counter. A connection that drops mid-file (an error, or the body ending short of its
    Content-Length) is reopened with `Range: bytes=<position>-`, up to HTTP_ATTEMPTS times, so a
    1 GB Common Crawl WARC survives a reset without starting over. `If-Range` with the first
    answer's ETag (or Last-Modified) makes a file that changed meanwhile come back whole rather
    than spliced; that, like a server that ignores Range, is an error.
    """

    def __init__(self, url: str, timeout: float, backoff_seconds: float) -> None:
        super().__init__()
        self.url, self.timeout, self.backoff_seconds = url, timeout, backoff_seconds
        self.position = 0
        self.response = _urlopen(url, timeout, backoff_seconds)
        length = self.response.headers.get("Content-Length")
        self.size = int(length) if length and length.isdigit() else None
        self.validator = self.response.headers.get("ETag") or self.response.headers.get("Last-Modified")

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def read(self, size: int = -1) -> bytes:
        for attempt in range(1, HTTP_ATTEMPTS + 1):
            try:
                data = self.response.read(None if size < 0 else size)
                cut_short = not data and size != 0 and self.size is not None and self.position < self.size
                if not cut_short:
                    self.position += len(data)
                    return data
                problem: object = f"body ended at byte {self.position} of {self.size}"
            except (OSError, http.client.HTTPException) as error:
                problem = error
            if attempt == HTTP_ATTEMPTS:
                raise OSError(f"GET {display_uri(self.url)} failed at byte {self.position}: {problem}")
            delay = retry.backoff_seconds(attempt, self.backoff_seconds)
            log.warning("GET %s broke off (%s), resuming at byte %d in %.1fs", display_uri(self.url), problem, self.position, delay)
            time.sleep(delay)
            self._resume()
        raise AssertionError("unreachable")

    def _resume(self) -> None:
        self.response.close()
        self.response = _urlopen(self.url, self.timeout, self.backoff_seconds, self.position, self.validator)
        if self.position and self.response.status != 206:
            self.response.close()
            raise OSError(f"GET {display_uri(self.url)}: the server cannot resume at byte {self.position}")

    def close(self) -> None:
        if not self.closed:
            self.response.close()
        super().close()


def _urlopen(
    url: str, timeout: float, backoff_seconds: float = 1.0, start: int = 0, validator: str | None = None
) -> http.client.HTTPResponse:
    """urlopen with retries and doubling, jittered waits on connection failures and busy-server answers."""
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
        if validator:
            headers["If-Range"] = validator
    request = urllib.request.Request(url, headers=headers)
    for attempt in range(1, HTTP_ATTEMPTS + 1):
        try:
            return urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as error:
            error.close()
            if error.code not in RETRYABLE_HTTP_STATUS or attempt == HTTP_ATTEMPTS:
                raise
            problem = f"HTTP {error.code}"
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            if attempt == HTTP_ATTEMPTS:
                raise
            problem = _first_line(error)
        delay = retry.backoff_seconds(attempt, backoff_seconds)
        log.warning("GET %s failed (%s), retry %d/%d in %.1fs", display_uri(url), problem, attempt, HTTP_ATTEMPTS - 1, delay)
        time.sleep(delay)
    raise AssertionError("unreachable")


def _first_line(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
