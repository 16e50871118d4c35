"""Build the crawl-to-documents chain of steps from the filter settings.

The order is FineWeb's: URL filter, text extraction, language ID, Gopher repetition, Gopher
quality, C4, FineWeb filters, then PII scrubbing of what survives. The quality steps judge each
document by the rules of the language the language step found (`filter.text` and each step's
`languages`); a step switched off for one language keeps that language's documents. A step switched off in the
settings is simply left out (extraction switched off keeps the decoded HTML as the text, for
inputs that are already plain text). The chain is built once per Python process and reused by
every task that runs there: loading the blocklist and the fastText model is the costly part.
"""

from __future__ import annotations

import functools

from infra.settings import FilterSettings
from tasks.filters.extract import Extractor
from tasks.filters.langid import LanguageFilter
from tasks.filters.pii import PiiScrubber
from tasks.pipeline import Step
from tasks.filters.quality.c4 import C4Filter
from tasks.filters.quality.fineweb import FineWebFilter
from tasks.filters.quality.gopher import GopherQualityFilter, GopherRepetitionFilter
from tasks.filters.url import UrlFilter


class KeepHtmlAsText(Step):
    """Stands in for extraction when it is switched off: the body is used as it is."""

    name = "extract"

    def apply(self, doc, counts=None):
        doc.text, doc.html = doc.html or "", None
        return None if doc.text else "empty_text"


def build_chain(settings: FilterSettings) -> list[Step]:
    quality = [settings.text]  # the quality steps also read how each language is written
    candidates: list[tuple[bool, type[Step], list[object]]] = [
        (settings.url.enabled, UrlFilter, [settings.url]),
        (settings.extraction.enabled, Extractor, [settings.extraction]),
        (settings.language.enabled, LanguageFilter, [settings.language]),
        (settings.gopher_repetition.enabled, GopherRepetitionFilter, [settings.gopher_repetition, *quality]),
        (settings.gopher_quality.enabled, GopherQualityFilter, [settings.gopher_quality, *quality]),
        (settings.c4.enabled, C4Filter, [settings.c4, *quality]),
        (settings.fineweb.enabled, FineWebFilter, [settings.fineweb, *quality]),
        (settings.pii.enabled, PiiScrubber, [settings.pii]),
    ]
    steps = [step_class(*sections) for enabled, step_class, sections in candidates if enabled]
    if not settings.extraction.enabled:
        steps.insert(1 if settings.url.enabled else 0, KeepHtmlAsText())
    return steps


@functools.lru_cache(maxsize=4)
def _cached_chain(settings_json: str) -> tuple[Step, ...]:
    return tuple(build_chain(FilterSettings.model_validate_json(settings_json)))


def chain_for(settings: FilterSettings) -> list[Step]:
    """The chain for `settings`, built at most once per process for the same settings."""
    return list(_cached_chain(settings.model_dump_json()))
