"""Open a search index, local or on S3, and query it: `SearchIndex.open(uri).search(query, k)`.

A local index is opened where it lies. An index on S3 is downloaded first into the cache folder
(`search.cache_dir`), under its build's content hash, and checked against the manifest's sizes
and sha256 before it is used; a later open of the same build finds it there, and a new build
gets a new folder. Tantivy memory-maps the files, so an open index costs little memory.

A query is plain text: characters that are neither letters, digits nor spaces are taken as
spaces and the text is lowercased, so nothing a model or user types is read as tantivy query
syntax (AND, field:, quotes, -). The words are OR-ed and ranked by BM25 over the text.
Each hit carries a snippet: the passage of the text where the query's terms cluster, from
tantivy's snippet generator, whitespace collapsed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs
import tantivy

from infra.settings import SearchSettings
from infra.storage import Storage, is_s3, join
from tasks.search.layout import SearchIndexError, find_index
from tasks.search.schema import SEARCHED_FIELDS, register_analyzer

NOT_A_WORD = re.compile(r"[^\w\s]|_")


@dataclass(frozen=True)
class Hit:
    url: str
    title: str
    snippet: str
    score: float
    doc_id: str
    language: str = ""


class SearchIndex:
    def __init__(self, index: tantivy.Index, manifest: dict[str, Any], settings: SearchSettings, uri: str) -> None:
        self._index = index
        self._searcher = index.searcher()
        self.manifest = manifest
        self.settings = settings
        self.uri = uri

    @classmethod
    def open(cls, uri: str, storage: Storage | None = None, settings: SearchSettings | None = None) -> SearchIndex:
        """The index at `uri` (or in `<uri>/search-index` when `uri` is its docs stage)."""
        storage = storage or Storage()
        settings = settings or SearchSettings()
        uri, manifest = find_index(storage, uri)
        build_uri = join(uri, manifest["build"])
        path = _cached_copy(storage, build_uri, manifest, settings.cache_dir) if is_s3(uri) else build_uri
        if not os.path.isfile(os.path.join(path, "meta.json")):
            raise SearchIndexError(f"search index {uri} names build {manifest['build']}, which is missing")
        index = tantivy.Index.open(path)
        register_analyzer(index)
        return cls(index, manifest, settings, uri)

    @property
    def num_docs(self) -> int:
        return self._searcher.num_docs

    def search(self, query: str, k: int | None = None) -> list[Hit]:
        """The `k` best documents for `query` by BM25 (default `search.top_k`), best first."""
        text = " ".join(NOT_A_WORD.sub(" ", query).lower().split())
        if not text:
            return []
        parsed = self._index.parse_query(text, SEARCHED_FIELDS)
        found = self._searcher.search(parsed, k or self.settings.top_k).hits
        if not found:
            return []
        snippets = tantivy.SnippetGenerator.create(self._searcher, parsed, self._index.schema, "text")
        snippets.set_max_num_chars(self.settings.snippet_chars)
        hits = []
        for score, address in found:
            doc = self._searcher.doc(address)
            body = doc["text"][0]
            snippet = snippets.snippet_from_doc(doc).fragment() or body[: self.settings.snippet_chars]
            hits.append(
                Hit(
                    url=doc["url"][0], title=doc["title"][0], snippet=" ".join(snippet.split()), score=float(score),
                    doc_id=doc["id"][0], language=doc["language"][0],
                )
            )
        return hits


def _cached_copy(storage: Storage, build_uri: str, manifest: dict[str, Any], cache_dir: str) -> str:
    """A verified local copy of one build of an S3 index, downloaded once per build."""
    target = os.path.join(os.path.abspath(cache_dir), manifest["build"])
    if os.path.isdir(target):
        return target
    partial = f"{target}.part-{uuid.uuid4().hex[:8]}"
    filesystem, path = storage.resolve(build_uri)
    try:
        os.makedirs(partial)
        pafs.copy_files(path, partial, source_filesystem=filesystem, destination_filesystem=pafs.LocalFileSystem())
        for name, entry in manifest["files"].items():
            local = os.path.join(partial, name)
            if not os.path.isfile(local) or os.path.getsize(local) != entry["size"] or _sha256(local) != entry["sha256"]:
                raise SearchIndexError(f"search index {build_uri}: {name} is missing or differs from its manifest")
        try:
            os.replace(partial, target)
        except OSError:  # another process put the same build there first
            if not os.path.isdir(target):
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
