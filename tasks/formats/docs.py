"""The document Parquet format every stage hands to the next, and how to read and write it.

A stage's output directory (local or s3://) looks like this:

    <output>/docs/part-<unit>.parquet      documents that passed, zstd, sized row groups
    <output>/dropped/part-<unit>.parquet   optional: dropped documents with step and reason
    <output>/_progress/<unit>.json         one per finished unit of work (the resume marker)
    <output>/_progress_index.json          all markers in one object, rewritten after each run
    <output>/_settings.json                the settings that shaped the stage's output
    <output>/_lease.json                   present while a run writes the output (infra/lease.py)
    <output>/stats.json                    the merged funnel, written when the stage ends

A "unit" is one input file (a WARC for filtering, a docs part for dedup and tokenizing), so a
rerun after a crash redoes only the units without a progress marker, and overwrites, never
duplicates, their output files (tasks/jobs/units.py). Parts are written a row group at a time
(`PartWriter`), so a unit's memory does not grow with its input.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from infra.storage import Storage, StorageError, join
from tasks.pipeline import Document

DOC_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("url", pa.string()),
        ("text", pa.string()),
        ("language", pa.string()),
        ("language_score", pa.float32()),
        ("warc_path", pa.string()),
        ("snapshot", pa.string()),
        ("crawl_date", pa.string()),
    ]
)
DROPPED_SCHEMA = DOC_SCHEMA.append(pa.field("step", pa.string())).append(pa.field("reason", pa.string()))

DOCS_DIR = "docs"
DROPPED_DIR = "dropped"
PROGRESS_DIR = "_progress"
PROGRESS_INDEX_FILE = "_progress_index.json"
SETTINGS_FILE = "_settings.json"
STATS_FILE = "stats.json"


def unit_key(uri: str) -> str:
    """A short, stable, filesystem-safe name for one input file: its stem plus a hash of the URI."""
    stem = uri.rstrip("/").rsplit("/", 1)[-1]
    stem = re.sub(r"(\.warc|\.arc|\.parquet|\.gz|\.lz4|\.zst)+$", "", stem)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:80]
    return f"{stem}-{xxhash.xxh64_hexdigest(uri.encode())[:10]}"


def docs_uri(output: str, unit: str) -> str:
    return join(output, DOCS_DIR, f"part-{unit}.parquet")


def dropped_uri(output: str, unit: str) -> str:
    return join(output, DROPPED_DIR, f"part-{unit}.parquet")


def documents_to_table(docs: Iterable[Document]) -> pa.Table:
    docs = list(docs)
    columns = {name: [getattr(doc, name) for doc in docs] for name in DOC_SCHEMA.names}
    return pa.Table.from_pydict(columns, schema=DOC_SCHEMA)


def dropped_to_table(dropped: Iterable[tuple[Document, str, str]]) -> pa.Table:
    dropped = list(dropped)
    columns = {name: [getattr(doc, name) for doc, _, _ in dropped] for name in DOC_SCHEMA.names}
    columns["step"] = [step for _, step, _ in dropped]
    columns["reason"] = [reason for _, _, reason in dropped]
    return pa.Table.from_pydict(columns, schema=DROPPED_SCHEMA)


def write_table(storage: Storage, uri: str, table: pa.Table, row_group_rows: int) -> None:
    """Write one Parquet file (zstd, row groups of `row_group_rows`) atomically."""
    with storage.open_output(uri) as out:
        pq.write_table(table, out, compression="zstd", row_group_size=max(1, row_group_rows))


class PartWriter:
    """Stream rows into one Parquet part, `row_group_rows` at a time, committed atomically.

        with PartWriter(storage, uri, DOC_SCHEMA, 2_000, documents_to_table) as part:
            for doc in docs:
                part.add(doc)

    Only one row group's rows are held at once; the file appears when the block ends without
    an error (Storage.open_output), never half-written.
    """

    def __init__(
        self, storage: Storage, uri: str, schema: pa.Schema, row_group_rows: int, to_table: Callable[[list], pa.Table]
    ) -> None:
        self.storage, self.uri, self.schema, self.to_table = storage, uri, schema, to_table
        self.row_group_rows = max(1, row_group_rows)
        self.pending: list[Any] = []
        self.rows = 0

    def __enter__(self) -> PartWriter:
        self._stack = ExitStack()
        out = self._stack.enter_context(self.storage.open_output(self.uri))
        self._writer = pq.ParquetWriter(out, self.schema, compression="zstd")
        return self

    def add(self, row: Any) -> None:
        self.pending.append(row)
        if len(self.pending) >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self._writer.write_table(self.to_table(self.pending), row_group_size=self.row_group_rows)
            self.rows += len(self.pending)
            self.pending = []

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is not None:  # the part is abandoned: its temporary file goes, unpublished
            with contextlib.suppress(Exception):
                self._writer.close()
            self._stack.__exit__(error_type, error, traceback)
            return
        try:
            self._flush()
            self._writer.close()
        except BaseException as failure:
            self._stack.__exit__(type(failure), failure, failure.__traceback__)
            raise
        self._stack.__exit__(None, None, None)  # publish


def list_doc_files(storage: Storage, stage_output: str) -> list[str]:
    """The Parquet parts of a stage's docs/ directory (or of a directory of parts given directly).

    A folder with no docs/ whose Parquet files sit in subfolders (a run root, holding filtered/,
    deduped/, dropped/ and token shards) is refused rather than read whole, which would mix stages.
    """
    nested = [entry.uri for entry in storage.list(join(stage_output, DOCS_DIR), suffix=".parquet")]
    if nested:
        return nested
    found = [entry.uri for entry in storage.list(stage_output, suffix=".parquet")]
    base = stage_output.rstrip("/")
    folders = sorted({uri[len(base) + 1 :].rsplit("/", 1)[0] for uri in found if "/" in uri[len(base) + 1 :]})
    if folders:
        shown = ", ".join(folders[:4]) + (f" and {len(folders) - 4} more" if len(folders) > 4 else "")
        raise StorageError(
            f"{stage_output} is not one documents stage: it has no {DOCS_DIR}/ folder and holds Parquet files in "
            f"{shown}; point --input at one stage (the folder holding {DOCS_DIR}/, e.g. {join(base, folders[0].split('/')[0])})"
        )
    return found


def read_stage_stats(storage: Storage, stage_output: str) -> dict[str, Any]:
    """A stage's stats.json, or {} when it has none (a folder of parts made some other way)."""
    uri = join(stage_output, STATS_FILE)
    return json.loads(storage.read_text(uri)) if storage.exists(uri) else {}


def read_batches(
    storage: Storage, uri: str, columns: list[str] | None = None, batch_rows: int = 1_000
) -> Iterator[pa.RecordBatch]:
    """Stream a Parquet file's rows in record batches without loading it whole."""
    with storage.open_input(uri) as handle:
        yield from pq.ParquetFile(handle).iter_batches(batch_size=batch_rows, columns=columns)
