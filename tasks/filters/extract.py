"""Step 2 of the chain: turn a page's HTML into its main text.

Two extractors, chosen by `ExtractionSettings.extractor`:
- resiliparse (default), `extract_plain_text` with its main-content heuristics. On the Article
  Extraction Benchmark (181 real news pages) it scores a token F1 of 0.94 at ~3 ms a page.
- trafilatura, as FineWeb ran it: `favor_precision`, no comments. F1 0.965, but ~28 ms a page.
Both leave out link targets, image alt texts, form fields and <noscript> content: none of them is
prose. Resiliparse also drops comment sections and post metadata (bylines, dates, tags), which
lifted its F1 from 0.915 to 0.94; trafilatura keeps tables, which lifted its F1 from 0.955 to
0.965. Trafilatura's `deduplicate` is off because it remembers text across documents, which would
make a page's text depend on which pages the same process saw before it.

Each document gets `timeout_seconds`, enforced with SIGALRM, which only the main thread can
receive; Spark's Python workers run tasks there, and elsewhere extraction runs without a limit
(counted as `no_time_limit`). The alarm interrupts Python code (all of trafilatura's own work) at
once; C code (lxml's and resiliparse's parsers) only when it returns, so the page is still dropped
as `extraction_timeout`, just later. The one C-side blow-up we found is defused before it starts:
see `_resiliparse`.

The HTML is released (`doc.html = None`) whatever the outcome: it is the bulk of a record.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import trafilatura
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.html import HTMLTree

from infra.settings import ExtractionSettings
from tasks.pipeline import Document, Step

log = logging.getLogger(__name__)

# CSS for "a <div> inside 255 other <div>s". Resiliparse's main-content heuristics take time
# quadratic in <div> nesting depth (3,000 levels: 0.3 s, 10,000: 12 s), in C that SIGALRM cannot
# interrupt. Real pages nest divs < 50 deep; the check costs ~0.15 ms a page.
_DEEP_DIVS = " ".join(["div"] * 256)


class _ExtractionTimeout(BaseException):
    """Raised by the alarm handler. A BaseException, so that the `except Exception` blocks inside
    trafilatura do not swallow it and carry on."""


def _raise_timeout(signum, frame) -> None:
    raise _ExtractionTimeout


@contextmanager
def _time_limit(seconds: float) -> Iterator[bool]:
    """Raise _ExtractionTimeout in the block after `seconds`; yield whether a limit is in force.

    An alarm someone else had set (pytest-timeout uses one) is put back afterwards, less the
    time spent here.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous_handler = signal.signal(signal.SIGALRM, _raise_timeout)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield True
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            signal.signal(signal.SIGALRM, signal.SIG_DFL if previous_handler is None else previous_handler)
            if previous_delay:
                remaining = max(previous_delay - (time.monotonic() - started), 1e-6)
                signal.setitimer(signal.ITIMER_REAL, remaining, previous_interval)


def _resiliparse(html: str, counts: Counter | None) -> str:
    tree = HTMLTree.parse(html)
    # Pages with absurdly deep <div> nesting are extracted whole, without the heuristics, which
    # stays linear in their size (see _DEEP_DIVS).
    main_content = tree.document is None or tree.document.query_selector(_DEEP_DIVS) is None
    if not main_content and counts is not None:
        counts["deep_divs_whole_page"] += 1
    return extract_plain_text(
        tree, main_content=main_content, preserve_formatting=True, list_bullets=True,
        alt_texts=False, links=False, form_fields=False, noscript=False, comments=False, post_meta=False,
    )


def _trafilatura(html: str, counts: Counter | None) -> str:
    text = trafilatura.extract(
        html, favor_precision=True, include_comments=False, include_tables=True,
        include_links=False, include_images=False, deduplicate=False,
    )
    return text or ""


_EXTRACTORS = {"resiliparse": _resiliparse, "trafilatura": _trafilatura}


class Extractor(Step):
    name = "extract"

    def __init__(self, settings: ExtractionSettings | None = None) -> None:
        self.settings = settings or ExtractionSettings()
        self._extract = _EXTRACTORS[self.settings.extractor]

    def apply(self, doc: Document, counts: Counter | None = None) -> str | None:
        html, doc.html = doc.html, None
        if not html:
            return "empty_text"
        try:
            with _time_limit(self.settings.timeout_seconds) as limited:
                text = self._extract(html, counts)
        except _ExtractionTimeout:
            return "extraction_timeout"
        except Exception as error:  # noqa: BLE001 - a page the extractor cannot handle is dropped
            log.debug("extraction failed on %s: %r", doc.url, error)
            return "extraction_failed"
        if not limited and counts is not None:
            counts["no_time_limit"] += 1
        text = text.strip()
        if len(text) < self.settings.min_text_chars:
            return "empty_text"
        doc.text = text
        return None
