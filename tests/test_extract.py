"""The extraction step (tasks/extract.py): quality on real pages, drop reasons, the time limit."""

from __future__ import annotations

import gzip
import json
import re
import signal
import threading
import time
from collections import Counter

import pytest

from infra.settings import ExtractionSettings
from tasks.filters.extract import Extractor
from tasks.pipeline import Document
from tests.conftest import REALDATA, needs_realdata

PAGE = """<!doctype html><html><head><title>Tides</title><script>var tracking = 1;</script>
<style>p { color: red }</style></head><body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/about">About us</a></li></ul></nav>
<article><h1>Why the sea has tides</h1>
<p>The Moon pulls on the oceans a little harder on the side of the Earth that faces it, and the
water there bulges towards it. A second bulge forms on the far side, where the pull is weakest.</p>
<p>As the Earth turns, every coast passes through both bulges, so most places see two high tides
and two low tides a day, about twelve hours and twenty-five minutes apart.</p>
<p>The Sun adds its own, smaller pull. When Sun and Moon line up, the tides are highest of all.</p>
</article>
<footer>Copyright 2024 Coastal Notes. All rights reserved. Privacy policy.</footer>
</body></html>"""


def _extract(html, counts=None, **settings) -> tuple[str | None, Document]:
    doc = Document(id="1", url="https://coastal-notes-example.org/tides", html=html)
    return Extractor(ExtractionSettings(**settings)).apply(doc, counts), doc


@pytest.mark.parametrize("extractor", ["resiliparse", "trafilatura"])
def test_main_text_without_boilerplate(extractor):
    reason, doc = _extract(PAGE, extractor=extractor)
    assert reason is None and doc.html is None
    assert "The Moon pulls on the oceans" in doc.text and "highest of all." in doc.text
    for boilerplate in ("tracking", "color: red", "About us", "All rights reserved"):
        assert boilerplate not in doc.text
    assert doc.text == doc.text.strip()


@pytest.mark.parametrize("extractor", ["resiliparse", "trafilatura"])
@pytest.mark.parametrize("html", [None, "", "<html><body>   </body></html>", "<html><script>x()</script></html>"])
def test_nothing_to_extract(extractor, html):
    # The limit is wall time, and this case is not about it: late in a full suite (a 1.2 GB
    # test process, trafilatura's lazy set-up on its first page) two calls here passed the 1 s
    # default and came back as extraction_timeout. The time limit has tests of its own below.
    reason, doc = _extract(html, extractor=extractor, timeout_seconds=30)
    assert reason == "empty_text" and doc.text == "" and doc.html is None


def test_min_text_chars():
    assert _extract(PAGE, min_text_chars=10)[0] is None
    assert _extract(PAGE, min_text_chars=100_000)[0] == "empty_text"


def test_extractor_errors_become_a_drop_reason():
    reason, doc = _extract(b"<p>bytes, not text</p>")  # resiliparse accepts only str
    assert reason == "extraction_failed" and doc.html is None


def _tokens(text: str) -> Counter:
    return Counter(re.findall(r"\w+", text.lower()))


def token_f1(predicted: str, reference: str) -> float:
    """Bag-of-words F1, as the Article Extraction Benchmark scores extractors."""
    predicted_tokens, reference_tokens = _tokens(predicted), _tokens(reference)
    common = sum((predicted_tokens & reference_tokens).values())
    if not common:
        return 0.0
    precision, recall = common / sum(predicted_tokens.values()), common / sum(reference_tokens.values())
    return 2 * precision * recall / (precision + recall)


@needs_realdata
@pytest.mark.parametrize(
    # Measured mean F1 over these 50 pages: resiliparse 0.942, trafilatura 0.972 (all 181: 0.937, 0.965).
    ("extractor", "floor"), [("resiliparse", 0.92), ("trafilatura", 0.95)]
)
def test_quality_on_real_news_pages(extractor, floor):
    bench = REALDATA / "extraction_ref" / "scrapinghub_aeb"
    truth = json.loads((bench / "ground-truth.json").read_text())
    step = Extractor(ExtractionSettings(extractor=extractor, timeout_seconds=10))
    scores, seconds = [], 0.0
    for page_id in sorted(truth)[:50]:
        html = gzip.decompress((bench / "html" / f"{page_id}.html.gz").read_bytes()).decode("utf-8", "replace")
        doc = Document(id=page_id, url=truth[page_id]["url"], html=html)
        started = time.perf_counter()
        reason = step.apply(doc)
        seconds += time.perf_counter() - started
        assert reason is None, page_id
        scores.append(token_f1(doc.text, truth[page_id]["articleBody"]))
    mean = sum(scores) / len(scores)
    milliseconds = 1000 * seconds / len(scores)
    print(f"\n{extractor}: mean token F1 {mean:.3f} over {len(scores)} pages, {milliseconds:.1f} ms/page")
    assert mean >= floor


def _nested(levels: int) -> str:
    return "<html><body>" + "<div><span>word " * levels + "</span></div>" * levels + "</body></html>"


def _long(paragraphs: int) -> str:
    return "<html><body>" + "<div><p>One more sentence of a very long page.</p></div>" * paragraphs + "</body></html>"


def test_deeply_nested_divs_do_not_stall_resiliparse():
    # 20,000 nested divs take resiliparse's main-content heuristics ~40 s; whole-page extraction
    # of the same page takes milliseconds.
    html = _nested(20_000)
    counts = Counter()
    started = time.perf_counter()
    reason, doc = _extract(html, counts, timeout_seconds=30)
    assert reason is None and doc.text.count("word") == 20_000
    assert counts["deep_divs_whole_page"] == 1
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    ("extractor", "make_page"),
    [
        ("resiliparse", lambda: _nested(100_000)),  # 2.6 MB, 100,000 levels deep
        ("trafilatura", lambda: _long(60_000)),  # 3.5 MB: ~10 s of trafilatura's Python code
    ],
)
def test_pathological_pages_time_out(extractor, make_page):
    html = make_page()
    started = time.perf_counter()
    reason, doc = _extract(html, extractor=extractor, timeout_seconds=0.05)
    assert reason == "extraction_timeout" and doc.text == "" and doc.html is None
    assert time.perf_counter() - started < 3


def test_an_alarm_set_by_someone_else_survives():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        assert _extract(PAGE, timeout_seconds=5)[0] is None
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < remaining <= 0.5
        time.sleep(remaining + 0.1)
        assert fired == [signal.SIGALRM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_outside_the_main_thread_runs_without_a_limit():
    results = []
    counts = Counter()
    thread = threading.Thread(target=lambda: results.append(_extract(PAGE, counts)))
    thread.start()
    thread.join()
    (reason, doc), = results
    assert reason is None and "tides" in doc.text and counts["no_time_limit"] == 1
