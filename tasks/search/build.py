"""Build the search index of a docs stage: `build_index(docs_stage, output)`.

Every document of the stage's `docs/` parts (tasks/formats/docs.py) with non-empty text goes in,
in part order. The index is written by tantivy into a local work folder, then published in the
layout of layout.py: files first (a local folder is renamed into place, an S3 copy streams the
files up), the manifest last, then the folders of earlier builds are removed.

A build is idempotent: the manifest records the input's fingerprint (every docs part's name,
size and Parquet footer, which holds its row counts, byte offsets and column statistics, plus
the schema version and the settings that shape the index), and a rebuild over the same input
does nothing. A changed input, or a crash before the manifest, means a full rebuild: the
documents are indexed in one pass (tantivy indexes tens of MB of text a second per core), so
there is no partial work worth resuming, and readers keep the previous build until then.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import pyarrow.fs as pafs
import tantivy
import xxhash

from infra.settings import SearchSettings
from infra.storage import Storage, StorageError, is_s3, join
from tasks.formats.docs import list_doc_files, read_batches
from tasks.search.layout import BUILD_NAME, FORMAT, MANIFEST, default_index_uri, read_manifest
from tasks.search.schema import SCHEMA_VERSION, build_schema, register_analyzer, title_of

log = logging.getLogger(__name__)
LOCK_FILES = (".tantivy-meta.lock", ".tantivy-writer.lock")
COLUMNS = ["id", "url", "text", "language"]


def input_fingerprint(storage: Storage, docs_stage: str, files: list[str], settings: SearchSettings) -> str:
    """A hash of what the index is built from: the parts' names, sizes and Parquet footers."""
    digest = xxhash.xxh64()
    digest.update(f"schema={SCHEMA_VERSION};title_chars={settings.title_chars};".encode())
    for uri in files:
        with storage.open_input(uri) as handle:
            size = handle.size()
            handle.seek(size - 8)
            tail = handle.read(8)
            footer_length = int.from_bytes(tail[:4], "little")
            handle.seek(size - 8 - footer_length)
            footer = handle.read(footer_length)
        digest.update(f"{uri[len(docs_stage):]}:{size}:".encode())
        digest.update(footer)
    return digest.hexdigest()


def build_index(
    docs_stage: str, output: str | None = None, settings: SearchSettings | None = None, storage: Storage | None = None
) -> dict[str, Any]:
    """Index the docs stage into `output` (default `<stage>/search-index`); return a report."""
    settings = settings or SearchSettings()
    storage = storage or Storage()
    output = (output or default_index_uri(docs_stage)).rstrip("/")
    started = time.perf_counter()
    files = list_doc_files(storage, docs_stage)
    if not files:
        raise StorageError(f"no document Parquet files under {docs_stage}")
    fingerprint = input_fingerprint(storage, docs_stage, files, settings)
    manifest = read_manifest(storage, output)
    if manifest and manifest["input"]["fingerprint"] == fingerprint:
        log.info("search index %s is up to date with %s", output, docs_stage)
        return _report(manifest, output, time.perf_counter() - started, up_to_date=True)
    storage.check_writable(output)

    work = join(output, f"_building-{uuid.uuid4().hex[:12]}") if not is_s3(output) else tempfile.mkdtemp(prefix="crawl2chat-index-")
    try:
        os.makedirs(work, exist_ok=True)
        counts = _index_documents(storage, files, work, settings)
        for name in LOCK_FILES:
            if os.path.exists(os.path.join(work, name)):
                os.remove(os.path.join(work, name))
        entries = {name: _describe(os.path.join(work, name)) for name in sorted(os.listdir(work))}
        build = hashlib.sha256("".join(f"{name}:{entry['sha256']};" for name, entry in entries.items()).encode()).hexdigest()[:16]
        _publish(storage, work, join(output, build))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    manifest = {
        "format": FORMAT,
        "version": 1,
        "library": f"tantivy {_tantivy_version()}",
        "build": build,
        "files": entries,
        "documents": counts["documents"],
        "skipped_empty": counts["skipped_empty"],
        "input": {"uri": docs_stage, "parts": len(files), "fingerprint": fingerprint},
        "settings": {"schema_version": SCHEMA_VERSION, "title_chars": settings.title_chars},
        "build_seconds": round(time.perf_counter() - started, 3),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    storage.write_text(join(output, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True))
    _remove_other_builds(storage, output, build)
    log.info("search index %s: %d documents, build %s", output, counts["documents"], build)
    return _report(manifest, output, time.perf_counter() - started, up_to_date=False)


def _index_documents(storage: Storage, files: list[str], work: str, settings: SearchSettings) -> dict[str, int]:
    index = tantivy.Index(build_schema(), path=work, reuse=False)
    register_analyzer(index)
    writer = index.writer(heap_size=settings.writer_memory_mb * 1024 * 1024, num_threads=settings.writer_threads)
    counts = {"documents": 0, "skipped_empty": 0}
    for uri in files:
        for batch in read_batches(storage, uri, columns=COLUMNS):
            for row in batch.to_pylist():
                text = row["text"] or ""
                if not text.strip():
                    counts["skipped_empty"] += 1
                    continue
                writer.add_document(
                    tantivy.Document(
                        id=row["id"] or "", url=row["url"] or "", title=title_of(text, settings.title_chars), text=text,
                        language=row["language"] or "",
                    )
                )
                counts["documents"] += 1
    writer.commit()
    writer.wait_merging_threads()
    return counts


def _describe(path: str) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"size": os.path.getsize(path), "sha256": digest.hexdigest()}


def _publish(storage: Storage, work: str, target: str) -> None:
    """Put the built files at `target`: a rename for a local index, a streamed copy to S3."""
    if not is_s3(target):
        if os.path.isdir(target):  # the very same build already there
            return
        os.replace(work, target)
        return
    filesystem, path = storage.resolve(target)
    pafs.copy_files(work, path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=filesystem)


def _remove_other_builds(storage: Storage, output: str, build: str) -> None:
    if not is_s3(output):
        for name in os.listdir(output):
            if (BUILD_NAME.match(name) and name != build) or name.startswith("_building-"):
                shutil.rmtree(os.path.join(output, name), ignore_errors=True)
        return
    for entry in storage.list(output):
        first = entry.uri[len(output) + 1 :].split("/", 1)[0]
        if BUILD_NAME.match(first) and first != build:
            storage.delete(entry.uri)


def _tantivy_version() -> str:
    from importlib.metadata import version

    return version("tantivy")


def _report(manifest: dict[str, Any], output: str, seconds: float, up_to_date: bool) -> dict[str, Any]:
    return {
        "output": output,
        "build": manifest["build"],
        "documents": manifest["documents"],
        "skipped_empty": manifest["skipped_empty"],
        "parts": manifest["input"]["parts"],
        "bytes": sum(entry["size"] for entry in manifest["files"].values()),
        "seconds": round(seconds, 3),
        "up_to_date": up_to_date,
    }
