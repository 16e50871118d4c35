"""The URL filter step (tasks/url_filter.py): known-answer URLs per drop reason, and the real UT1 list."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from infra.settings import UrlFilterSettings
from tasks.filters.blocklist import import_blocklist
from tasks.pipeline import Document, Funnel, run_chain
from tasks.filters.url import UrlFilter, parent_hosts, registered_domain
from tests.conftest import REALDATA, needs_realdata

CLEAN_URLS = [
    "https://en.wikipedia.org/wiki/Cat",
    "https://www.essex.ac.uk/departments/history",  # 'sex' inside a word is no soft word
    "https://www.bbc.co.uk/news/uk-england-sussex-12345678",
    "https://github.com/huggingface/datatrove/blob/main/README.md",
    "https://www.free-hosting-example.org/",
    "https://free-hosting-example.org/galleries/public",
    "https://kitchen-table-stories.com/2023/05/hot-soup-for-cold-days-12/",  # one soft word only
]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://porn-example-tube.com/video/1", "blocked_domain"),
        ("https://cdn.porn-example-tube.com/x.jpg", "blocked_domain"),  # any subdomain of it
        ("http://WWW.XXX-CASINO-EXAMPLE.NET", "blocked_domain"),
        ("https://shop.strip-club-example.co.uk/", "blocked_domain"),  # registered domain under co.uk
        ("https://adult.free-hosting-example.org/", "blocked_host"),
        ("https://a.adult.free-hosting-example.org/p", "blocked_host"),
        ("http://free-hosting-example.org/galleries/private/", "blocked_url"),
        ("https://www.free-hosting-example.org/galleries/private#top", "blocked_url"),
        ("https://www.weekend-video-example.com/free-porn-xxx/2024/01/x-1/", "banned_word"),
        ("https://example.com/watch?v=1&tag=nsfw", "banned_word"),
        ("https://example.com/hot-naked-girls", "soft_banned_words"),
        ("https://adult-dating.example.com/", "soft_banned_words"),
        ("https://example.com/freepornvideos", "banned_subword"),
        ("https://mycamgirlsite.example.net/", "banned_subword"),
    ]
    + [(url, None) for url in CLEAN_URLS],
)
def test_known_answers(url, reason):
    assert UrlFilter().check(url) == reason


def test_registered_domain_and_parent_hosts():
    assert registered_domain("news.bbc.co.uk") == "bbc.co.uk"
    assert registered_domain("a.b.example.com.au") == "example.com.au"
    assert registered_domain("127.0.0.1") == "127.0.0.1"
    assert registered_domain("intranet") == "intranet"
    assert parent_hosts("a.b.example.com", "example.com") == ["b.example.com", "a.b.example.com"]
    assert parent_hosts("example.com", "example.com") == []


@pytest.mark.parametrize(
    ("settings", "url", "reason"),
    [
        ({"use_banned_words": False}, "https://example.com/nsfw/pictures", None),
        ({"use_banned_subwords": False}, "https://example.com/freepornvideos", None),
        ({"use_soft_banned_words": False}, "https://example.com/hot-naked-girls", None),
        ({"soft_word_threshold": 3}, "https://example.com/hot-naked-girls", "soft_banned_words"),
        ({"soft_word_threshold": 4}, "https://example.com/hot-naked-girls", None),
        ({"categories": ["gambling"]}, "https://casino-bonus-example.com/", "blocked_domain"),
        ({"categories": ["gambling"]}, "https://hot-cams-example.com/", None),
        ({"categories": ["adult", "gambling"]}, "https://betting-tips-example.co.uk/a", "blocked_domain"),
    ],
)
def test_settings(settings, url, reason):
    assert UrlFilter(UrlFilterSettings(**settings)).check(url) == reason


def test_bad_urls_are_kept_and_counted():
    counts = Counter()
    step = UrlFilter()
    for url in ["", "   ", "http://", "http://[::1/x", "not a url at all", "mailto:someone@example.com"]:
        assert step.check(url, counts) is None
    assert counts["no_host"] == 4  # all but the last two, whose "hosts" simply match nothing


def test_runs_as_a_step_in_a_chain():
    docs = [Document(id=str(i), url=url) for i, url in enumerate(CLEAN_URLS + ["https://porn-example-tube.com/"])]
    funnel = Funnel()
    kept = list(run_chain([UrlFilter()], docs, funnel))
    assert [doc.url for doc in kept] == CLEAN_URLS
    assert funnel["url_filter"].dropped == Counter({"blocked_domain": 1})


def test_a_missing_blocklist_fails_at_construction(tmp_path):
    with pytest.raises(FileNotFoundError):
        UrlFilter(UrlFilterSettings(blocklist_path=str(tmp_path / "nowhere")))


@pytest.fixture(scope="module")
def ut1_full(tmp_path_factory):
    """datatrove's UT1-derived list (4.6 M domains), imported once for this module."""
    if not REALDATA.exists():
        pytest.skip("../shared/realdata is absent")
    dest = tmp_path_factory.mktemp("ut1")
    summary = import_blocklist(str(REALDATA / "blocklist/datatrove/url_filterblacklistsv0_3_0.tar.gz"), str(dest))
    print(f"\nimported {summary['lists']} in {summary['seconds']} s")
    return dest


@needs_realdata
@pytest.mark.slow
def test_real_ut1_list(ut1_full):
    started = time.perf_counter()
    step = UrlFilter(UrlFilterSettings(blocklist_path=str(ut1_full)))
    load_seconds = time.perf_counter() - started
    assert load_seconds < 1.0  # memory-mapped: no parsing at load time
    assert step.check("https://0-1sex.com/") == "blocked_domain"
    assert step.check("https://videos.0-1sex.com/latest") == "blocked_domain"
    assert step.check("http://141jav.com/tag/Slut") == "blocked_url"  # listed in the archive's `urls`
    for url in CLEAN_URLS:
        assert step.check(url) is None, url

    urls = CLEAN_URLS * 300
    started = time.perf_counter()
    assert not any(step.check(url) for url in urls)
    per_second = len(urls) / (time.perf_counter() - started)
    print(f"UT1 load {load_seconds * 1000:.1f} ms; {per_second:,.0f} clean URLs/s")
