"""Settings of the search tool: building the full-text index over documents and querying it."""

from __future__ import annotations

from pydantic import Field

from infra.settings.base import Section


class SearchSettings(Section):
    """The BM25 index the chat engine's search tool queries (tasks/search/)."""

    # Where an index stored on S3 is downloaded to be opened, one folder per index build.
    cache_dir: str = ".crawl2chat/search-cache"
    writer_memory_mb: int = Field(default=256, ge=16)  # tantivy's indexing buffer, split over its threads
    writer_threads: int = Field(default=0, ge=0)  # 0: tantivy picks (one per core, at most 8)
    title_chars: int = Field(default=120, ge=16)  # a hit's title: the first line of its text, cut here
    snippet_chars: int = Field(default=320, ge=40)  # the passage of a hit shown to the model
    top_k: int = Field(default=3, ge=1)  # hits the engine puts back per search call
    result_chars: int = Field(default=1200, ge=100)  # all of one call's results, formatted
