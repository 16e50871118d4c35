"""The index of already-published documents' LSH band keys, kept on object storage.

A backfill or a new crawl is deduplicated against earlier snapshots by reading this index:
an indexed document takes part in the candidate groups like any other, always wins (it is
already published), and every new document connected to it is removed. With `update_index`, a
run adds the band keys of the documents it kept.

Layout: <index_uri>/bands/run-<tag>/part-<n>.parquet, one folder per run, the tag a hash of
the run's output location. A rerun of the same output replaces its own folder and, when reading,
ignores it, so a run never finds itself in the index. Indexed documents get negative keys,
below every key of the current run, which is what makes them the roots of their components.
Files are read and written inside Spark tasks through `infra.storage`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from pyspark import TaskContext
from pyspark.sql.pandas.types import from_arrow_schema

from infra.settings import StorageSettings
from infra.storage import Storage, join

INDEX_ARROW_SCHEMA = pa.schema(
    [("band", pa.int32()), ("band_key", pa.int64()), ("key", pa.int64()), ("id", pa.string()), ("snapshot", pa.string())]
)
INDEX_SCHEMA = from_arrow_schema(INDEX_ARROW_SCHEMA)
_MAX_ROWS_PER_FILE = 2_000_000


def run_tag(output_uri: str) -> str:
    return xxhash.xxh3_64_hexdigest(output_uri.rstrip("/").encode("utf-8"))


def index_key(doc_id: str) -> int:
    """A negative 64-bit key for an indexed document (below every key of a run)."""
    return -(xxhash.xxh3_64_intdigest(doc_id.encode("utf-8")) >> 1) - 1


def _run_folder(index_uri: str, tag: str) -> str:
    return join(index_uri, "bands", f"run-{tag}")


def read_index(spark, storage_settings: StorageSettings, index_uri: str, own_tag: str):
    """The index rows (INDEX_SCHEMA) of every run but this one, or None if there are none."""
    own = _run_folder(index_uri, own_tag) + "/"
    listed = Storage(storage_settings).list(join(index_uri, "bands"), ".parquet")
    files = [entry.uri for entry in listed if not entry.uri.startswith(own)]
    if not files:
        return None

    def read_files(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        storage = Storage(storage_settings)
        for batch in batches:
            for uri in batch.column("uri").to_pylist():
                with storage.open_input(uri) as handle:
                    yield from pq.ParquetFile(handle).iter_batches(batch_size=65_536)

    uris = spark.sparkContext.parallelize([(uri,) for uri in files], numSlices=len(files))
    return spark.createDataFrame(uris, "uri string").mapInArrow(read_files, INDEX_SCHEMA)


def write_index(kept_bands, storage_settings: StorageSettings, index_uri: str, tag: str, expected_rows: int) -> int:
    """Add this run's (band, band_key, id, snapshot) rows to the index; returns the rows written."""
    storage = Storage(storage_settings)
    folder = _run_folder(index_uri, tag)
    for stale in storage.list(folder, ".parquet"):  # from an interrupted earlier attempt
        storage.delete(stale.uri)

    def write_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        batches = list(batches)
        table = pa.Table.from_batches(batches) if batches else pa.table({})
        if table.num_rows:
            rows = table.select(["band", "band_key", "id", "snapshot"])
            keys = pa.array([index_key(doc_id) for doc_id in rows.column("id").to_pylist()], pa.int64())
            rows = rows.add_column(2, "key", keys).cast(INDEX_ARROW_SCHEMA)
            uri = join(folder, f"part-{TaskContext.get().partitionId():05d}.parquet")
            with Storage(storage_settings).open_output(uri) as out:
                pq.write_table(rows, out, compression="zstd")
        yield pa.RecordBatch.from_pydict({"rows": [table.num_rows]}, schema=pa.schema([("rows", pa.int64())]))

    partitions = max(1, -(-expected_rows // _MAX_ROWS_PER_FILE))
    written = kept_bands.repartition(partitions, "band_key").mapInArrow(write_partition, "rows long")
    return int(written.agg({"rows": "sum"}).first()[0] or 0)
