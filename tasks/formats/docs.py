"""The document Parquet format every stage hands to the next, and how to read and write it.

A stage's output directory (local or s3://) looks like this:

    <output>/docs/part-<unit>.parquet      documents that passed, zstd, sized row groups
    <output>/dropped/part-<unit>.parquet   optional: dropped documents with step and reason
    <output>/_progress/<unit>.json         one per finished unit of work (the resume marker)
    <output>/stats.json                    the merged funnel, written when the stage ends

A "unit" is one input file (a WARC for filtering, a docs part for dedup and tokenizing), so a
rerun after a crash redoes only the units without a progress marker, and overwrites, never
duplicates, their output files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from infra.storage import Storage, join
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


def list_doc_files(storage: Storage, stage_output: str) -> list[str]:
    """The Parquet parts of a stage's docs/ directory (or of a directory of parts given directly)."""
    nested = [entry.uri for entry in storage.list(join(stage_output, DOCS_DIR), suffix=".parquet")]
    if nested:
        return nested
    return [entry.uri for entry in storage.list(stage_output, suffix=".parquet")]


def read_batches(
    storage: Storage, uri: str, columns: list[str] | None = None, batch_rows: int = 1_000
) -> Iterator[pa.RecordBatch]:
    """Stream a Parquet file's rows in record batches without loading it whole."""
    with storage.open_input(uri) as handle:
        yield from pq.ParquetFile(handle).iter_batches(batch_size=batch_rows, columns=columns)
