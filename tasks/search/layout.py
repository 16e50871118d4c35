"""How a search index is stored, local or on S3, and how a finished build is committed.

    <index>/index.json              the manifest and commit marker, written last
    <index>/<build>/meta.json ...   tantivy's files of that build; <build> is their content hash

The manifest names the build folder, every file with its size and sha256, the number of
documents, the library version, and the input it was built from (the docs stage and its
fingerprint). A reader goes through the manifest only, so it sees either the old build or the
new one, never a mix; the build folder's name doubles as the key of the local download cache.
By default an index sits next to the docs it indexes, in `<stage>/search-index/`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from infra.storage import Storage, join

MANIFEST = "index.json"
DEFAULT_FOLDER = "search-index"
FORMAT = "crawl2chat-search-index"
BUILD_NAME = re.compile(r"^[0-9a-f]{16}$")


class SearchIndexError(ValueError):
    """An index that cannot be opened or built; the message is one line."""


def default_index_uri(docs_stage: str) -> str:
    return join(docs_stage.rstrip("/"), DEFAULT_FOLDER)


def read_manifest(storage: Storage, index_uri: str) -> dict[str, Any] | None:
    """The committed manifest of an index, or None when there is none (yet)."""
    uri = join(index_uri, MANIFEST)
    if not storage.exists(uri):
        return None
    manifest = json.loads(storage.read_text(uri))
    if manifest.get("format") != FORMAT:
        raise SearchIndexError(f"{uri} is not a crawl2chat search index manifest")
    return manifest


def find_index(storage: Storage, uri: str) -> tuple[str, dict[str, Any]]:
    """The index at `uri`, or the one in its default place when `uri` is a docs stage."""
    for candidate in (uri.rstrip("/"), default_index_uri(uri)):
        manifest = read_manifest(storage, candidate)
        if manifest is not None:
            return candidate, manifest
    raise SearchIndexError(f"no search index at {uri} (build one with: crawl2chat index build --input <docs stage>)")
