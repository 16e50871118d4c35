"""Turn a WARC stream into Documents: HTTP 200 HTML responses, decoded to text, everything else counted.

This is the first thing every crawl file goes through. FastWARC does the record parsing (gzip,
LZ4, zstd or plain, detected from the bytes); this module decides which records become
Documents and turns their bodies into `str`:

- only `response` records count as documents in (`stats.docs_in`); other record types (request,
  metadata, warcinfo, revisit, ...) are tallied in `stats.counts["non_response_records"]`;
- a response is kept when it is HTTP 200 with an HTML content type and a readable body; otherwise
  it is dropped with one of: not_200, not_html, too_large, empty_body, binary_body, undecodable,
  malformed_http;
- bodies are un-chunked and un-gzipped here (not by FastWARC, which aborts the whole file when a
  server lied about its Content-Encoding, as ClueWeb records do), then decoded with the charset
  from the HTTP header, else a <meta> charset, else UTF-8, else a uchardet guess.

Damaged files never crash the caller: a read error, a record cut short (its Content-Length runs
past the end of the file, whatever its type), FastWARC stopping before the end of the stream (it
ends at an empty gzip member) or a panic inside FastWARC ends that file, counted once as
`truncated_or_corrupt_file`, after yielding every document that preceded the damage; a
file without a single WARC record (an ARC file, a bzip2'd WARC, random bytes) counts as
`no_warc_records`. bench/fuzz_warc.py holds the reader to this on 10,000+ damaged files. Each such file-level drop also counts one document in, so that
`docs_in == docs_out + sum(dropped)` always holds.

A failure of the stream itself is not damage and is never counted: a download that broke off
and could not be resumed, or a storage read that kept failing, raises `WarcReadError`, so the
unit fails, gets no progress marker, and a rerun reads the whole file again.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import re
import zlib
from collections.abc import Iterator
from typing import IO

from fastwarc.stream_io import BrotliReader, ChunkedReader
from fastwarc.warc import ArchiveIterator, WarcRecord, WarcRecordType
from resiliparse.parse.encoding import bytes_to_str, detect_encoding, map_encoding_to_html5

from tasks.pipeline import Document, StepStats

log = logging.getLogger(__name__)

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
META_SNIFF_BYTES = 2048  # how far into the body a <meta charset> is looked for
# Both `<meta charset="x">` and `<meta http-equiv="Content-Type" content="text/html; charset=x">`.
META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""", re.IGNORECASE)


class _Skip(Exception):
    """A response record that does not become a Document; `args[0]` is the drop reason."""


class _Damaged(Exception):
    """The record in hand is cut short or unreadable: the rest of the file cannot be trusted."""


class WarcReadError(OSError):
    """The stream under the WARC failed (network, storage): the file was not read to its end."""


def iter_warc_documents(
    stream: IO[bytes],
    warc_path: str,
    snapshot: str,
    stats: StepStats,
    max_record_bytes: int = 10 * 1024 * 1024,
) -> Iterator[Document]:
    """Yield a Document per HTTP 200 HTML response in the WARC `stream`; count everything in `stats`.

    `stream` needs only `read(size)`: a file, a pyarrow stream or an HTTP response (`open_warc`).
    """
    # quirks_mode: accept the LF-only header lines that old crawlers (ClueWeb, wget) wrote, and
    # resynchronise after garbage between records of an uncompressed WARC.
    positioned = _Positioned(stream)
    records = iter(ArchiveIterator(positioned, parse_http=True, quirks_mode=True, auto_decode="none"))
    seen_records = False
    while True:
        try:
            record = next(records)
        except StopIteration:
            positioned.raise_if_failed(warc_path)
            break
        except BaseException as error:  # noqa: BLE001 - FastWARC or the stream gave up mid-file
            if not _is_reader_error(error):
                raise
            positioned.raise_if_failed(warc_path)
            stats.docs_in += 1  # the unreadable rest of the file is the dropped "document"
            _count_damage(stats, warc_path, error)
            return
        seen_records = True
        html = None
        if record.record_type != WarcRecordType.response:
            stats.counts["non_response_records"] += 1
        else:
            stats.docs_in += 1
            try:
                html = _response_html(record, max_record_bytes)
            except _Skip as skip:
                stats.dropped[skip.args[0]] += 1
            except (OSError, _Damaged) as error:  # a body that cannot be read ends the file
                positioned.raise_if_failed(warc_path)
                _count_damage(stats, warc_path, error)
                return
        try:
            _read_to_end(record)
        except (OSError, _Damaged) as error:  # the file ends inside this record: the rest is lost
            positioned.raise_if_failed(warc_path)
            stats.docs_in += 1
            _count_damage(stats, warc_path, error)
            return
        if html is None:
            continue
        stats.docs_out += 1
        yield Document(
            id=_record_id(record, warc_path),
            # wget writes WARC/1.1's draft form `<http://...>`; the brackets are not part of the URL.
            url=record.headers.get("WARC-Target-URI", "").strip().removeprefix("<").removesuffix(">"),
            html=html,
            warc_path=warc_path,
            snapshot=snapshot,
            crawl_date=record.record_date.isoformat() if record.record_date else "",
        )
    if not seen_records:
        log.warning("no WARC records in %s (not a WARC file, or an unsupported compression)", warc_path)
        stats.docs_in += 1
        stats.dropped["no_warc_records"] += 1
    elif positioned.read_after_end(warc_path):  # FastWARC ended early (an empty gzip member ends its stream)
        stats.docs_in += 1
        _count_damage(stats, warc_path, _Damaged(f"no record readable after byte {positioned.tell() - 1}"))


def _read_to_end(record: WarcRecord) -> None:
    """Consume what the caller left of `record`; raise _Damaged when the file ends before its
    Content-Length does (FastWARC itself would skip to the end of the file without a word)."""
    left = record.content_length - record.reader.tell()
    if left > 0 and record.reader.consume() < left:
        raise _Damaged(f"record cut short: {left} bytes declared, fewer left in the file")


def _is_reader_error(error: BaseException) -> bool:
    """An Exception, or a Rust panic inside FastWARC: some damage (an LZ4 frame whose checksum
    fails where a record starts) panics there, which pyo3 raises as `PanicException`, a
    BaseException that `except Exception` lets through (and that would kill the Spark task)."""
    return isinstance(error, Exception) or type(error).__name__ == "PanicException"


class _Positioned:
    """A forward-only stream plus the `tell()` FastWARC asks of every Python stream.

    pyarrow's input streams and HTTP responses cannot tell, and FastWARC aborts the process
    (a Rust panic, not an exception) when asked to read one directly. It also remembers a read
    that raised, which is how a broken stream is told apart from damaged bytes.
    """

    __slots__ = ("_read", "_position", "failure")

    def __init__(self, stream: IO[bytes]) -> None:
        self._read, self._position = stream.read, 0
        self.failure: Exception | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._read(size)
        except Exception as error:
            self.failure = error
            raise
        self._position += len(data)
        return data

    def tell(self) -> int:
        return self._position

    def read_after_end(self, warc_path: str) -> bytes:
        """A byte past where FastWARC stopped, if there is one; a failing stream raises WarcReadError."""
        try:
            return self.read(1)
        except Exception:  # noqa: BLE001 - remembered in `failure`, raised as what it is
            self.raise_if_failed(warc_path)
            raise

    def raise_if_failed(self, warc_path: str) -> None:
        if self.failure is not None:
            first_line = (str(self.failure).splitlines() or [type(self.failure).__name__])[0]
            raise WarcReadError(f"reading {warc_path} failed at byte {self._position}: {first_line}") from self.failure


def _count_damage(stats: StepStats, warc_path: str, error: Exception) -> None:
    log.warning("stopped reading damaged WARC %s: %s", warc_path, error)
    stats.dropped["truncated_or_corrupt_file"] += 1


def _response_html(record: WarcRecord, max_record_bytes: int) -> str:
    """The decoded HTML of a response record, or raise _Skip(reason) / _Damaged."""
    http = record.http_headers
    if http is None or http.status_code is None:
        raise _Skip("malformed_http")
    if http.status_code != 200:
        raise _Skip("not_200")
    mime, header_charset = _parse_content_type(
        http.get("Content-Type") or record.headers.get("WARC-Identified-Payload-Type", "")
    )
    if mime not in HTML_TYPES:
        raise _Skip("not_html")
    expected = record.content_length
    if expected > max_record_bytes:
        raise _Skip("too_large")
    body = record.reader.read(expected)
    if len(body) < expected:
        raise _Damaged(f"record body cut short at {len(body)} of {expected} bytes")
    body = _undo_http_encodings(
        body, http.get("Transfer-Encoding", ""), http.get("Content-Encoding", ""), max_record_bytes
    )
    if not body or body.isspace():
        raise _Skip("empty_body")
    if b"\x00" in body:
        raise _Skip("binary_body")
    return _decode(body, header_charset)


def _parse_content_type(value: str) -> tuple[str, str | None]:
    """('text/html', 'utf-8') from 'Text/HTML; charset="UTF-8"'; the charset is None when absent."""
    mime, _, params = value.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip("\"'") or None
    return mime.strip().lower(), charset


def _undo_http_encodings(body: bytes, transfer_encoding: str, content_encoding: str, max_bytes: int) -> bytes:
    """Un-chunk and decompress a stored HTTP body; keep the bytes as stored where that fails.

    Servers and archivers both get these headers wrong (ClueWeb stored plain HTML under
    `Content-Encoding: gzip`), so a failed decode means "it was not encoded", not "drop it".
    A body that inflates beyond `max_bytes` is dropped as too_large (a decompression bomb).
    """
    if "chunked" in transfer_encoding.lower():
        with contextlib.suppress(OSError):
            body = ChunkedReader(io.BytesIO(body)).read() or body
    encoding = content_encoding.strip().lower()
    try:
        if encoding in ("gzip", "x-gzip", "deflate"):
            inflater = zlib.decompressobj(47)  # 47 = 32 + 15: a gzip or a zlib header, auto-detected
            inflated = inflater.decompress(body, max_bytes)
            if inflater.unconsumed_tail:
                raise _Skip("too_large")
            return inflated
        if encoding == "br":
            inflated = BrotliReader(io.BytesIO(body)).read(max_bytes + 1)
            if len(inflated) > max_bytes:
                raise _Skip("too_large")
            return inflated
    except (zlib.error, OSError):
        pass
    return body


def _decode(body: bytes, header_charset: str | None) -> str:
    """Declared charset (HTTP header, then <meta>), else UTF-8; on failure a uchardet guess, lossy."""
    declared = _known_encoding(header_charset) or _meta_charset(body)
    try:
        return bytes_to_str(body, declared or "utf-8", errors="strict", fallback_encodings=())
    except (UnicodeError, LookupError):
        pass
    try:
        guessed = detect_encoding(body)
        return bytes_to_str(body, guessed, errors="replace")
    except (UnicodeError, LookupError) as error:
        raise _Skip("undecodable") from error


def _meta_charset(body: bytes) -> str | None:
    match = META_CHARSET.search(body, 0, META_SNIFF_BYTES)
    return _known_encoding(match.group(1).decode("ascii")) if match else None


def _known_encoding(name: str | None) -> str | None:
    """The WHATWG (browser) reading of a charset label, as a Python codec; None when unknown."""
    return map_encoding_to_html5(name, fallback_utf8=False) if name else None


def _record_id(record: WarcRecord, warc_path: str) -> str:
    record_id = record.record_id or ""
    if record_id:
        return record_id.removeprefix("<").removesuffix(">").removeprefix("urn:uuid:")
    # No WARC-Record-ID: the position in the file is what identifies the record.
    return hashlib.blake2b(f"{warc_path}@{record.stream_pos}".encode(), digest_size=16).hexdigest()
