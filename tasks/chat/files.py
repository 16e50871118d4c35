"""Rows of a chat or preference data file: JSON Lines, a JSON array or Parquet, local or s3://.

`resolve_data_files` turns what a user typed (files, globs, directories, s3:// prefixes) into
data file URIs; `read_rows` yields each file's rows as dicts. The layout is told from the bytes,
not the name: gzip is unpacked, `PAR1` is Parquet, a leading `[` a JSON array, anything else
JSON Lines. A line that is not JSON, or a row that is not an object, is yielded as a
`BadRow` with its reason, so the caller counts it instead of losing it. `write_jsonl` writes
rows back as JSON Lines (what every importer reads).
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from infra.storage import Storage
from tasks.chat.errors import ChatDataError

DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".json", ".json.gz", ".parquet")


@dataclass(frozen=True)
class BadRow:
    """A row that could not be read, with the reason it is counted under."""

    reason: str


def resolve_data_files(specs: Iterable[str], storage: Storage) -> list[str]:
    """Data file URIs for files, globs, directories and s3:// prefixes, in the order given."""
    uris: list[str] = []
    for spec in specs:
        if any(char in spec for char in "*?["):
            found = storage.glob(spec)
        elif _is_file(storage, spec):
            found = [spec]
        else:
            found = [entry.uri for entry in storage.list(spec) if entry.uri.endswith(DATA_SUFFIXES)]
        if not found:
            raise ChatDataError(f"no data files at {spec} (expected a file or a folder of {', '.join(DATA_SUFFIXES)})")
        uris.extend(found)
    return list(dict.fromkeys(uris))


def _is_file(storage: Storage, uri: str) -> bool:
    filesystem, path = storage.resolve(uri)
    return filesystem.get_file_info(path).type == pafs.FileType.File


def read_rows(storage: Storage, uri: str) -> Iterator[dict[str, Any] | BadRow]:
    """Every row of one data file, as a dict or a BadRow."""
    data = storage.read_bytes(uri)
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise ChatDataError(f"{uri}: not a readable gzip file: {error}") from error
    if data[:4] == b"PAR1":
        yield from _parquet_rows(uri, data)
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ChatDataError(f"{uri}: not UTF-8 text, JSON or Parquet ({error.reason} at byte {error.start})") from error
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise ChatDataError(f"{uri}: not valid JSON: {error.msg} at line {error.lineno}") from error
        yield from (_as_row(row) for row in rows)
        return
    if text.lstrip().startswith("{") and _is_one_object(text):
        raise ChatDataError(f"{uri}: one JSON object, not rows (expected JSON Lines, a JSON array or Parquet)")
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            yield BadRow("invalid_json")
            continue
        yield _as_row(row)


def _is_one_object(text: str) -> bool:
    """A pretty-printed JSON object spread over lines (a config file, not data)."""
    first_line = text.lstrip().split("\n", 1)[0]
    try:
        json.loads(first_line)
        return False
    except json.JSONDecodeError:
        pass
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def _as_row(row: Any) -> dict[str, Any] | BadRow:
    return row if isinstance(row, dict) else BadRow("not_an_object")


def _parquet_rows(uri: str, data: bytes) -> Iterator[dict[str, Any]]:
    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a broken file
        raise ChatDataError(f"{uri}: not a readable Parquet file: {str(error).splitlines()[0]}") from error
    for batch in parquet.iter_batches(batch_size=1_000):
        yield from batch.to_pylist()


def write_jsonl(storage: Storage, uri: str, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSON Lines (UTF-8, one object a line), atomically; return how many."""
    count = 0
    with storage.open_output(uri) as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
            count += 1
    return count
