"""The first dedup pass: one Spark task per docs file turns every document into a sketch row.

A sketch row holds what the rest of dedup needs and nothing more (never the text): a numeric
key (file index << 32 | row number, which also locates the document for the final rewrite),
the id and snapshot, the raw length (for `keep="longest"`), the 128-bit hash of the normalised
text with its digits (exact dedup; null for a text that normalises to nothing), optionally of
the URL, and the MinHash band keys of the digit-folded form (near dedup; null below one shingle); the full signature only when pairs are
to be verified. Files are read inside the tasks through `infra.storage`, so the same code reads
local paths and s3://, and the driver sees no documents.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import xxhash
from pyspark.sql.pandas.types import from_arrow_schema

from infra.settings import DedupSettings, StorageSettings
from infra.storage import Storage
from tasks.dedup.minhash import MinHasher
from tasks.dedup.normalize import digits_folded, normalize_text, shingles
from tasks.formats.docs import read_batches

SKETCH_ARROW_SCHEMA = pa.schema(
    [
        ("key", pa.int64()),
        ("file", pa.int32()),
        ("row", pa.int32()),
        ("id", pa.string()),
        ("snapshot", pa.string()),
        ("length", pa.int32()),
        ("text_hash", pa.binary()),
        ("url_hash", pa.binary()),
        ("shingles", pa.int32()),
        ("char_shingles", pa.bool_()),
        ("bands", pa.list_(pa.int64())),
        ("signature", pa.list_(pa.int64())),
    ]
)
SKETCH_SCHEMA = from_arrow_schema(SKETCH_ARROW_SCHEMA)


def document_key(file_index: int, row: int) -> int:
    return (file_index << 32) | row


def sketch_file(
    storage: Storage, uri: str, file_index: int, settings: DedupSettings, hasher: MinHasher, with_signature: bool
) -> Iterator[pa.RecordBatch]:
    """Sketch rows of one docs file, a record batch per batch of documents read."""
    row = 0
    for batch in read_batches(storage, uri, columns=["id", "url", "text", "snapshot"]):
        columns = {name: [] for name in SKETCH_ARROW_SCHEMA.names}
        fields = (batch.column(name).to_pylist() for name in ("id", "url", "text", "snapshot"))
        for doc_id, url, text, snapshot in zip(*fields):
            text = text or ""
            normalized = normalize_text(text, fold_digits=False)  # exact dedup keeps the numbers
            grams, by_chars = shingles(digits_folded(normalized), settings.ngram_size)
            signature = hasher.signature(grams) if grams else None
            columns["key"].append(document_key(file_index, row))
            columns["file"].append(file_index)
            columns["row"].append(row)
            columns["id"].append(doc_id)
            columns["snapshot"].append(snapshot or "")
            columns["length"].append(len(text))
            # no hash, nothing to compare: empty documents and URLs are never "duplicates"
            columns["text_hash"].append(xxhash.xxh3_128_digest(normalized.encode("utf-8")) if normalized else None)
            columns["url_hash"].append(xxhash.xxh3_128_digest(url.encode("utf-8")) if settings.exact_urls and url else None)
            columns["shingles"].append(len(grams))
            columns["char_shingles"].append(by_chars)
            columns["bands"].append(None if signature is None else hasher.band_keys(signature))
            columns["signature"].append(signature.view(np.int64) if with_signature and signature is not None else None)
            row += 1
        yield pa.RecordBatch.from_pydict(columns, schema=SKETCH_ARROW_SCHEMA)


def sketch_documents(
    spark, files: list[str], storage_settings: StorageSettings, settings: DedupSettings, with_signature: bool
):
    """A DataFrame of sketch rows (SKETCH_SCHEMA) for every document of `files`, one task per file."""
    file_rows = spark.sparkContext.parallelize(list(enumerate(files)), numSlices=max(1, len(files)))

    def sketch_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        storage = Storage(storage_settings)
        hasher = MinHasher(settings.num_bands, settings.rows_per_band, settings.seed)
        for batch in batches:
            for file_index, uri in zip(batch.column("file").to_pylist(), batch.column("uri").to_pylist()):
                yield from sketch_file(storage, uri, file_index, settings, hasher, with_signature)

    return spark.createDataFrame(file_rows, "file int, uri string").mapInArrow(sketch_partition, SKETCH_SCHEMA)
