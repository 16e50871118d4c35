"""A small, realistic, deterministic crawl to run the whole pipeline on without touching the internet.

`generate_sample_crawl` writes gzipped WARC/1.1 files the way Common Crawl does (one gzip member
per record: a warcinfo record, then a request and a response per URL, with digests) plus a
`truth.json` naming what was planted at each URL, so tests can check the funnel against ground
truth. Page kinds:

    clean             an English article on a hobby site, with nav, sidebar, footer and cookie banner
    spam              keyword stuffing and repeated lines (should fail Gopher repetition)
    short             an article of one sentence (too few words)
    boilerplate_only  an archive page of menus and link lists, no prose
    blocked_url       a clean article on a host or path a URL blocklist rejects (see BLOCKED_HOSTS)
    exact_duplicate   byte-identical HTML of a clean page under another URL
    near_duplicate    a clean page with about 5% of its words changed, in two clusters
    pii               a clean page with e-mails and public IPv4/IPv6 addresses (scrub) and private ones (keep)
    non_english       German, French, Spanish, Russian (windows-1251) or Japanese (Shift_JIS, <meta> only)
    code_page         a tutorial with JavaScript in <pre> blocks (contains '{')
    non_html          an image/png response
    not_found         an HTTP 404 page
    redirect          an HTTP 301 to a clean page

All text comes from a small hand-written grammar per language (tasks/samples/text.py), so every clean English
page is fresh prose with stop words and full sentences, and passes the Gopher, C4 and FineWeb
filters after main-content extraction. Same seed, same bytes.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import html
import ipaddress
import itertools
import json
import random
import re
import struct
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tasks.readers.inputs import SNAPSHOT_ID, check_snapshot_id
from tasks.samples.text import (
    AUTHORS, ENGLISH_CHROME, ENGLISH_SUBHEADINGS, LANGUAGES, REPLACEMENT_WORDS, TOPICS, EnglishWriter, LanguagePack,
    Topic, capitalize, foreign_paragraphs,
)

KINDS = (
    "clean", "spam", "short", "boilerplate_only", "blocked_url", "exact_duplicate", "near_duplicate",
    "pii", "non_english", "code_page", "non_html", "not_found", "redirect",
)
# Hosts the shipped default URL blocklist must contain (blocked_url pages also use banned words).
BLOCKED_HOSTS = ("porn-example-tube.com", "xxx-casino-example.net")
# Share of all pages per planted kind; the rest are clean. Every kind appears at least once.
KIND_SHARES = {
    "spam": 0.05, "short": 0.04, "boilerplate_only": 0.04, "blocked_url": 0.04, "exact_duplicate": 0.05,
    "near_duplicate": 0.05, "pii": 0.05, "non_english": 0.07, "code_page": 0.03, "non_html": 0.03,
    "not_found": 0.02, "redirect": 0.02,
}


@dataclass
class SampleCrawl:
    """What `generate_sample_crawl` wrote, and the ground truth about every response URL."""

    warc_paths: list[Path]
    truth_path: Path
    truth: dict[str, str]  # url -> kind (one of KINDS)
    languages: dict[str, str] = field(default_factory=dict)  # url -> ISO 639-1, for HTML pages
    duplicate_of: dict[str, str] = field(default_factory=dict)  # duplicate url -> original url
    pii: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # url -> emails/public_ips/private_ips


# --- HTML ------------------------------------------------------------------------------------------


@dataclass
class Page:
    """One planted URL before it is written: what the server answered and what it is."""

    url: str
    kind: str
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    extra_headers: tuple[tuple[str, str], ...] = ()
    language: str | None = None
    duplicate_of: str | None = None
    pii: dict[str, list[str]] | None = None


def _page_html(
    *, lang: str, site: str, chrome: dict[str, str], title: str, author: str, date: str, body_html: str,
    popular: list[str], meta_charset: str = "utf-8",
) -> str:
    """A full page: head, header with nav, the article, a sidebar, a footer and a cookie banner."""
    e = html.escape
    nav = "".join(
        f'<li><a href="/{"" if i == 0 else f"section-{i}/"}">{e(item)}</a></li>'
        for i, item in enumerate(chrome["nav"].split("|"))
    )
    popular_items = "".join(f'<li><a href="/posts/{i}/">{e(item)}</a></li>' for i, item in enumerate(popular))
    byline = f'<p class="byline">{e(chrome["by"])} {e(author)}, <span class="date">{e(date)}</span></p>'
    return f"""<!DOCTYPE html>
<html lang="{lang}">
<head>
<meta charset="{meta_charset}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} | {e(site)}</title>
<link rel="stylesheet" href="/static/css/main.css">
<script>window.dataLayer = window.dataLayer || []; function gtag(){{dataLayer.push(arguments);}}</script>
</head>
<body class="post-template">
<header class="site-header">
<a class="logo" href="/">{e(site)}</a>
<nav class="main-nav" aria-label="Main"><ul>{nav}</ul></nav>
<form class="search" action="/search"><input type="search" name="q"></form>
</header>
<main class="content">
<article class="post">
<h1 class="post-title">{e(title)}</h1>
{byline}
{body_html}
</article>
<aside class="sidebar">
<section class="widget"><h3>{e(chrome["popular"])}</h3><ul>{popular_items}</ul></section>
<section class="widget newsletter"><h3>{e(chrome["newsletter"])}</h3><p>{e(chrome["newsletter_text"])}</p>
<form action="/subscribe"><input type="email" name="email"><button>{e(chrome["subscribe"])}</button></form></section>
</aside>
</main>
<footer class="site-footer">
<ul class="footer-links"><li><a href="/privacy/">{e(chrome["privacy"])}</a></li>
<li><a href="/terms/">{e(chrome["terms"])}</a></li></ul>
<p class="copyright">© 2024 {e(site)}. {e(chrome["rights"])}</p>
</footer>
<div class="cookie-banner" id="cookie-consent"><p>{e(chrome["cookies"])}</p><button>{e(chrome["accept"])}</button></div>
</body>
</html>
"""


def _paragraphs_html(paragraphs: list[str], subheading: str | None = None) -> str:
    parts = [f"<p>{html.escape(p)}</p>" for p in paragraphs]
    if subheading and len(parts) > 3:
        parts.insert(3, f"<h2>{html.escape(subheading)}</h2>")
    return "\n".join(parts)


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


# --- Page kinds ------------------------------------------------------------------------------------


class _PageMaker:
    """Builds one Page per kind from a seeded random generator."""

    def __init__(self, rng: random.Random, date: str) -> None:
        self.rng, self.date = rng, date
        self.serial = 0

    def _url(self, host: str, title: str) -> str:
        self.serial += 1
        return f"https://{host}/{2024 - self.serial % 3}/{self.serial % 12 + 1:02d}/{_slug(title)}-{self.serial}/"

    def _english(self, paragraphs: int | None = None) -> tuple[Topic, str, list[str]]:
        topic = self.rng.choice(TOPICS)
        writer = EnglishWriter(topic, self.rng)
        count = paragraphs if paragraphs is not None else self.rng.randint(6, 7)
        return topic, writer.title(), writer.paragraphs(count)

    def _english_html(self, topic: Topic, title: str, body_html: str) -> str:
        popular = [EnglishWriter(topic, self.rng).title() for _ in range(4)]
        return _page_html(
            lang="en", site=topic.site, chrome=ENGLISH_CHROME, title=title, author=self.rng.choice(AUTHORS),
            date=self.date, body_html=body_html, popular=popular,
        )

    def article(self, kind: str = "clean", host: str | None = None) -> Page:
        topic, title, paragraphs = self._english()
        body = _paragraphs_html(paragraphs, self.rng.choice(ENGLISH_SUBHEADINGS))
        page_html = self._english_html(topic, title, body)
        return Page(self._url(host or topic.host, title), kind, body=page_html.encode(), language="en")

    def clean(self) -> Page:
        return self.article()

    def blocked_url(self) -> Page:
        host = self.rng.choice(BLOCKED_HOSTS + ("www.weekend-video-example.com",))
        page = self.article("blocked_url", host)
        if not host.startswith(BLOCKED_HOSTS):  # an innocent host: the banned word is in the path
            page.url = page.url.replace(f"https://{host}/", f"https://{host}/free-porn-xxx/")
        return page

    def spam(self) -> Page:
        product = self.rng.choice(("replica watches", "diet pills", "payday loans", "designer sneakers"))
        title = f"Cheap {product.title()} Best Price Online"
        line = f"Buy cheap {product} online, best {product} price, free shipping, order {product} now."
        stuffing = ", ".join(f"{adj} {product}" for adj in ("cheap", "best", "discount", "top", "buy", "sale") * 4)
        paragraphs = [f"Welcome to the best shop for {product} on the internet."] + [line] * 14 + [stuffing]
        topic = self.rng.choice(TOPICS)
        page_html = self._english_html(topic, title, _paragraphs_html(paragraphs))
        return Page(self._url(f"best-{_slug(product)}-deals.com", title), "spam", body=page_html.encode(),
                    language="en")

    def short(self) -> Page:
        topic = self.rng.choice(TOPICS)
        title = self.rng.choice(("Photos from the spring fair", "Opening hours", "Thank you"))
        body = _paragraphs_html([f"The photos from {self.rng.choice(topic.places)} are now online."])
        return Page(self._url(topic.host, title), "short", body=self._english_html(topic, title, body).encode(),
                    language="en")

    def boilerplate_only(self) -> Page:
        topic = self.rng.choice(TOPICS)
        links = "".join(
            f'<li><a href="/posts/{i}/">{html.escape(EnglishWriter(topic, self.rng).title())}</a></li>'
            for i in range(12)
        )
        pager = '<nav class="pagination"><a href="?page=1">Previous</a> <a href="?page=2">1</a> ' \
                '<a href="?page=3">2</a> <a href="?page=4">Next</a></nav>'
        body = f'<ul class="archive-list">{links}</ul>{pager}'
        title = f"Archive: page {self.rng.randint(2, 40)}"
        return Page(self._url(topic.host, title), "boilerplate_only",
                    body=self._english_html(topic, title, body).encode(), language="en")

    def pii(self) -> Page:
        topic, title, paragraphs = self._english()
        first, second = self.rng.sample(("jane.doe", "k.mueller", "events", "t.okafor", "membership"), 2)
        emails = [f"{first}@{topic.host}", f"{second}@mailbox-example.net"]
        public = [self._public_ip(4), self._public_ip(6)]
        private = [f"10.{self.rng.randint(0, 255)}.{self.rng.randint(0, 255)}.{self.rng.randint(1, 254)}",
                   f"192.168.{self.rng.randint(0, 255)}.{self.rng.randint(1, 254)}"]
        paragraphs.insert(2, (
            f"For questions about the next meeting, write to {emails[0]} or to our coordinator at {emails[1]}. "
            f"The photo archive is hosted on our server at {public[0]}, and a mirror answers at {public[1]}. "
            f"Inside the club house, the shared printer sits at {private[0]} and the router at {private[1]}."
        ))
        page_html = self._english_html(topic, title, _paragraphs_html(paragraphs))
        return Page(self._url(topic.host, title), "pii", body=page_html.encode(), language="en",
                    pii={"emails": emails, "public_ips": public, "private_ips": private})

    def _public_ip(self, version: int) -> str:
        while True:
            if version == 4:
                address = ipaddress.IPv4Address(self.rng.getrandbits(32))
            else:  # inside 2000::/3, the globally routed unicast space
                address = ipaddress.IPv6Address((0x2 << 125) | self.rng.getrandbits(125))
            if address.is_global and not address.is_multicast:
                return str(address)

    def code_page(self) -> Page:
        topic, _, paragraphs = self._english(paragraphs=4)
        title = "Building a Small Route Planner for " + topic.site
        code = (
            "function totalDistance(route) {\n  let sum = 0;\n  for (const leg of route.legs) {\n"
            "    sum += leg.km;\n  }\n  return sum;\n}\n"
            "document.querySelector('#planner').addEventListener('click', () => {\n"
            "  console.log(totalDistance({ legs: [{ km: 12 }, { km: 8 }] }));\n});"
        )
        body = "\n".join([
            _paragraphs_html(paragraphs[:2]),
            "<p>Paste the JavaScript below into the page and call it with an object such as "
            "{ legs: [] } to check that it works.</p>",
            f"<pre><code class=\"language-javascript\">{html.escape(code)}</code></pre>",
            _paragraphs_html(paragraphs[2:]),
        ])
        return Page(self._url(topic.host, title), "code_page", body=self._english_html(topic, title, body).encode(),
                    language="en")

    def non_english(self, pack: LanguagePack) -> Page:
        title = self.rng.choice(pack.titles)
        paragraphs = foreign_paragraphs(pack, self.rng, self.rng.randint(4, 5))
        popular = self.rng.sample(pack.titles, 3)
        meta_charset = "Shift_JIS" if pack.charset == "shift_jis" else pack.charset
        page_html = _page_html(
            lang=pack.code, site=pack.site, chrome=pack.chrome, title=title, author=pack.chrome["author"],
            date=self.date, body_html=_paragraphs_html(paragraphs), popular=popular, meta_charset=meta_charset,
        )
        body = page_html.encode(pack.charset, errors="xmlcharrefreplace")
        content_type = f"text/html; charset={pack.charset}" if pack.charset_in_header else "text/html"
        self.serial += 1
        url = f"https://{pack.host}/blog/{self.serial}.html"
        return Page(url, "non_english", body=body, content_type=content_type, language=pack.code)

    def non_html(self) -> Page:
        topic = self.rng.choice(TOPICS)
        self.serial += 1
        return Page(f"https://{topic.host}/images/photo-{self.serial}.png", "non_html",
                    body=_tiny_png(self.rng), content_type="image/png")

    def not_found(self) -> Page:
        topic = self.rng.choice(TOPICS)
        body = _paragraphs_html(["Sorry, the page you were looking for does not exist."])
        page_html = self._english_html(topic, "Page not found", body)
        self.serial += 1
        return Page(f"https://{topic.host}/old-page-{self.serial}.html", "not_found", status=404,
                    body=page_html.encode())

    def redirect(self, target: str) -> Page:
        self.serial += 1
        body = f'<html><body>Moved to <a href="{html.escape(target)}">here</a>.</body></html>'.encode()
        return Page(f"{target.rstrip('/')}-old-{self.serial}", "redirect", status=301, body=body,
                    extra_headers=(("Location", target),))

    def exact_duplicate(self, original: Page) -> Page:
        self.serial += 1
        path = urlsplit(original.url).path
        return Page(f"https://news-digest-example.com/syndicated/{self.serial}{path}", "exact_duplicate",
                    body=original.body, language="en", duplicate_of=original.url)

    def near_duplicate(self, original: Page) -> Page:
        text = original.body.decode()
        start, end = text.index("<h1"), text.index("</article>")
        changed = _change_words(text[start:end], self.rng, fraction=0.05)
        self.serial += 1
        url = original.url.rstrip("/") + f"-updated-{self.serial}/"
        return Page(url, "near_duplicate", body=(text[:start] + changed + text[end:]).encode(), language="en",
                    duplicate_of=original.url)


def _change_words(fragment: str, rng: random.Random, fraction: float) -> str:
    """Replace about `fraction` of the words of the <p> texts in `fragment`, in two runs of adjacent words."""
    paragraphs = re.findall(r"<p>(.*?)</p>", fragment)
    words = [(i, j) for i, p in enumerate(paragraphs) for j in range(len(p.split(" ")))]
    run = max(1, round(len(words) * fraction / 2))
    split_words = [p.split(" ") for p in paragraphs]
    for start in rng.sample(range(len(words) - run), 2):
        for i, j in words[start : start + run]:
            token = split_words[i][j]
            core = token.rstrip(".,?!;:")
            replacement = rng.choice(REPLACEMENT_WORDS)
            split_words[i][j] = (capitalize(replacement) if core[:1].isupper() else replacement) + token[len(core):]
    for old, new in zip(paragraphs, split_words, strict=True):
        fragment = fragment.replace(f"<p>{old}</p>", f"<p>{' '.join(new)}</p>", 1)
    return fragment


def _tiny_png(rng: random.Random) -> bytes:
    """A valid 8x8 RGB PNG of random colour noise."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rng.getrandbits(8) for _ in range(8 * 3)) for _ in range(8))
    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _plan_pages(total: int, rng: random.Random, date: str) -> list[Page]:
    """All pages of the crawl: planted kinds first (each at least once), clean pages for the rest."""
    maker = _PageMaker(rng, date)
    planted = list(KIND_SHARES)  # one of each first, so small crawls still see every kind
    planted += [kind for kind, share in KIND_SHARES.items() for _ in range(max(0, round(total * share) - 1))]
    planted = planted[: total // 2]
    clean = [maker.clean() for _ in range(total - len(planted))]
    pages = list(clean)
    languages = itertools.cycle(LANGUAGES)
    for kind in planted:
        if kind == "non_english":
            pages.append(maker.non_english(next(languages)))
        elif kind in ("exact_duplicate", "near_duplicate"):
            pages.append(getattr(maker, kind)(rng.choice(clean)))
        elif kind == "redirect":
            pages.append(maker.redirect(rng.choice(clean).url))
        else:
            pages.append(getattr(maker, kind)())
    rng.shuffle(pages)
    return pages


# --- WARC writing ----------------------------------------------------------------------------------


def warc_record(warc_type: str, headers: list[tuple[str, str]], block: bytes) -> bytes:
    """One WARC/1.1 record (uncompressed): the version line, `headers`, Content-Length, the block."""
    lines = [f"WARC/1.1\r\nWARC-Type: {warc_type}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers]
    lines.append(f"Content-Length: {len(block)}\r\n\r\n")
    return "".join(lines).encode() + block + b"\r\n\r\n"


def http_response(status: int, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """An HTTP/1.1 response as a WARC response record stores it."""
    reasons = {200: "OK", 301: "Moved Permanently", 404: "Not Found"}
    head = f"HTTP/1.1 {status} {reasons.get(status, 'Unknown')}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    return head.encode("latin-1") + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


def _digest(data: bytes) -> str:
    return "sha1:" + base64.b32encode(hashlib.sha1(data).digest()).decode()


def _warc_date(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_warc(path: Path, pages: list[Page], rng: random.Random, start: dt.datetime) -> None:
    new_id = lambda: f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}>"  # noqa: E731 - seeded
    info_id = new_id()
    info = f"software: crawl2chat sample crawl\r\nformat: WARC File Format 1.1\r\nisPartOf: {path.name}\r\n"
    members = [warc_record("warcinfo", [
        ("WARC-Date", _warc_date(start)), ("WARC-Filename", path.name), ("WARC-Record-ID", info_id),
        ("Content-Type", "application/warc-fields"),
    ], info.encode())]
    moment = start
    for page in pages:
        moment += dt.timedelta(seconds=rng.randint(1, 90))
        parts = urlsplit(page.url)
        request = (f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
                   f"Host: {parts.netloc}\r\nUser-Agent: crawl2chat-sample/1.0\r\n"
                   f"Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8\r\n\r\n").encode()
        response = http_response(page.status, [
            ("Date", moment.strftime("%a, %d %b %Y %H:%M:%S GMT")), ("Server", "nginx"),
            ("Content-Type", page.content_type), *page.extra_headers,
        ], page.body)
        request_id, response_id = new_id(), new_id()
        address = f"198.51.100.{rng.randint(1, 254)}"
        common = [("WARC-Date", _warc_date(moment)), ("WARC-Warcinfo-ID", info_id), ("WARC-IP-Address", address),
                  ("WARC-Target-URI", page.url)]
        members.append(warc_record("request", [
            ("WARC-Record-ID", request_id), *common, ("Content-Type", "application/http; msgtype=request"),
            ("WARC-Block-Digest", _digest(request)),
        ], request))
        members.append(warc_record("response", [
            ("WARC-Record-ID", response_id), *common, ("WARC-Concurrent-To", request_id),
            ("Content-Type", "application/http; msgtype=response"), ("WARC-Payload-Digest", _digest(page.body)),
            ("WARC-Block-Digest", _digest(response)),
            ("WARC-Identified-Payload-Type", page.content_type.split(";")[0]),
        ], response))
    # One gzip member per record, as Common Crawl writes them; mtime=0 keeps the bytes reproducible.
    _write_if_changed(path, b"".join(gzip.compress(member, compresslevel=6, mtime=0) for member in members))


def _write_if_changed(path: Path, data: bytes) -> None:
    # The same crawl generated again leaves its files untouched: a rerun of `crawl2chat run` then
    # sees the inputs its progress markers were made from (same size and mtime), not new ones.
    if not (path.exists() and path.read_bytes() == data):
        path.write_bytes(data)


def _snapshot_start(snapshot: str) -> dt.datetime:
    year, week = map(int, SNAPSHOT_ID.fullmatch(check_snapshot_id(snapshot)).groups())
    return dt.datetime.combine(dt.date.fromisocalendar(year, week, 1), dt.time(), dt.UTC)


def generate_sample_crawl(
    output_dir: str | Path,
    num_warcs: int = 2,
    pages_per_warc: int = 60,
    seed: int = 0,
    snapshot: str = "CC-MAIN-2024-51",
) -> SampleCrawl:
    """Write `num_warcs` WARC files of `pages_per_warc` responses each, and truth.json, into `output_dir`.

    Every planted kind appears at least once when there are at least 24 pages in all.
    """
    if num_warcs < 1 or pages_per_warc < 1:
        raise ValueError("num_warcs and pages_per_warc must be at least 1")
    start = _snapshot_start(snapshot)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    pages = _plan_pages(num_warcs * pages_per_warc, rng, start.date().isoformat())
    warc_paths = []
    for index in range(num_warcs):
        path = output / f"{snapshot}-sample-{index:05d}.warc.gz"
        _write_warc(path, pages[index * pages_per_warc : (index + 1) * pages_per_warc], rng,
                    start + dt.timedelta(hours=index))
        warc_paths.append(path)
    crawl = SampleCrawl(
        warc_paths=warc_paths,
        truth_path=output / "truth.json",
        truth={page.url: page.kind for page in pages},
        languages={page.url: page.language for page in pages if page.language},
        duplicate_of={page.url: page.duplicate_of for page in pages if page.duplicate_of},
        pii={page.url: page.pii for page in pages if page.pii},
    )
    truth = {"snapshot": snapshot, "kinds": crawl.truth, "languages": crawl.languages,
             "duplicate_of": crawl.duplicate_of, "pii": crawl.pii}
    _write_if_changed(crawl.truth_path, (json.dumps(truth, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode())
    return crawl
