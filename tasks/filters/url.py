"""The first step of the chain: drop pages whose URL marks them as adult (or other blocked) content.

This is the FineWeb / RefinedWeb URL filter. In the order the checks run, a URL is dropped when
- its registered domain (`bbc.co.uk` for `news.bbc.co.uk`) is on the block list: `blocked_domain`;
- its host or any parent host below the registered domain is: `blocked_host`;
- the URL itself is (scheme, `www.`, fragment and trailing '/' ignored): `blocked_url`;
- one of its tokens (the alphanumeric runs of the lowercased URL) is a banned word: `banned_word`;
- at least `soft_word_threshold` distinct soft banned words are among its tokens: `soft_banned_words`;
- a banned subword occurs in it once separators are removed: `banned_subword`.

Registered domains come from the `tld` package's bundled copy of the Public Suffix List (it never
downloads). The block list (see tasks/filters/blocklist.py) is loaded once per process and shared by every
UrlFilter built with the same path and categories; the step itself holds only its settings.
"""

from __future__ import annotations

import functools
from collections import Counter

from tld import get_fld

from infra.settings import UrlFilterSettings
from tasks.filters.blocklist import Blocklist, load_blocklist, squeeze, url_key, url_tokens
from tasks.pipeline import Document, Step


@functools.lru_cache(maxsize=4)
def shared_blocklist(path: str | None, categories: tuple[str, ...]) -> Blocklist:
    """`load_blocklist`, once per process for each (path, categories)."""
    return load_blocklist(path, categories)


def registered_domain(host: str) -> str:
    """The domain a registrant controls (`example.co.uk`); the host itself for IPs and unknown TLDs."""
    try:
        return get_fld(host, fix_protocol=True, fail_silently=True) or host
    except ValueError:  # hosts urlsplit rejects, e.g. a broken IPv6 literal
        return host


def parent_hosts(host: str, domain: str) -> list[str]:
    """The hosts between `domain` and `host`, nearest the domain first: a.b.x.com -> b.x.com, a.b.x.com."""
    labels = host[: -len(domain)].rstrip(".").split(".") if host != domain and host.endswith(domain) else []
    return [".".join(labels[i:] + [domain]) for i in range(len(labels) - 1, -1, -1)]


class UrlFilter(Step):
    name = "url_filter"

    def __init__(self, settings: UrlFilterSettings | None = None) -> None:
        self.settings = settings or UrlFilterSettings()
        self._list_key = (self.settings.blocklist_path, tuple(self.settings.categories))
        shared_blocklist(*self._list_key)  # fail now on a bad path, not once per document

    def apply(self, doc: Document, counts: Counter | None = None) -> str | None:
        return self.check(doc.url, counts)

    def check(self, url: str, counts: Counter | None = None) -> str | None:
        """The drop reason for `url`, or None to keep it."""
        host, key = url_key(url)
        if not host:  # nothing to judge a URL by; the later steps still see the page
            if counts is not None:
                counts["no_host"] += 1
            return None
        blocklist, settings = shared_blocklist(*self._list_key), self.settings
        domain = registered_domain(host)
        if domain in blocklist.domains:
            return "blocked_domain"
        if any(parent in blocklist.domains for parent in parent_hosts(host, domain)):
            return "blocked_host"
        if key in blocklist.urls:
            return "blocked_url"
        tokens = url_tokens(key)
        if settings.use_banned_words and not tokens.isdisjoint(blocklist.banned_words):
            return "banned_word"
        if settings.use_soft_banned_words and len(tokens & blocklist.soft_words) >= settings.soft_word_threshold:
            return "soft_banned_words"
        pattern = blocklist.subword_pattern
        if settings.use_banned_subwords and pattern is not None and pattern.search(squeeze(key)):
            return "banned_subword"
        return None
