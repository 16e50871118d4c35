"""tasks.readers.warc against real WARCs (Common Crawl, wget, ClueWeb, warcio's broken ones) and crafted records.

Known answers: the document and drop counts of every file in realdata/warc, damaged streams that
keep what precedes the damage, and charsets decoded from header, <meta> or detection.
"""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import io
import zlib
from collections import Counter
from pathlib import Path

import pytest

from tasks.pipeline import StepStats
from tasks.samples.crawl import http_response, warc_record
from tasks.readers.warc import WarcReadError, iter_warc_documents

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
WARCS = REALDATA / "warc"
needs_realdata = pytest.mark.skipif(not REALDATA.exists(), reason="../shared/realdata is absent")


def read(data: bytes, **kwargs) -> tuple[list, StepStats]:
    stats = StepStats()
    docs = list(iter_warc_documents(io.BytesIO(data), "mem.warc.gz", "CC-MAIN-2024-51", stats, **kwargs))
    return docs, stats


def read_file(path: Path) -> tuple[list, StepStats]:
    return read(path.read_bytes())


def balanced(stats: StepStats) -> bool:
    return stats.docs_in == stats.docs_out + sum(stats.dropped.values())


# file -> (documents, dropped, non-response records); measured once with FastWARC 2.0 and checked by hand
KNOWN = {
    "realpages.warc.gz": (377, {}, 1),
    "dolma/sample-0000.warc.gz": (22, {}, 26),
    "dolma/sample-0001.warc.gz": (15, {}, 19),
    "ia-web-commons/IAH-urls-wget.warc.gz": (2, {"not_200": 9, "not_html": 5}, 20),
    "ia-web-commons/html-lang-attribute.warc": (5, {}, 0),
    "ia-web-commons/text-extraction-test.warc": (1, {"not_html": 1}, 2),
    "jwarc/cc.warc.gz": (1, {}, 0),
    "resiliparse/block-sized-records.warc": (0, {}, 3),
    "resiliparse/block-sized-records.warc.gz": (0, {}, 3),
    "resiliparse/block-sized-records.warc.lz4": (0, {}, 3),
    "resiliparse/clipped.warc.gz": (0, {"truncated_or_corrupt_file": 1}, 0),
    "resiliparse/clueweb-quirk.warc.gz": (29, {}, 1),
    "resiliparse/warcfile.warc": (16, {}, 34),
    "resiliparse/warcfile.warc.gz": (16, {}, 34),
    "resiliparse/warcfile.warc.lz4": (16, {}, 34),
    "warcio/bad.arc": (0, {"no_warc_records": 1}, 0),
    "warcio/example-bad-non-chunked.warc.gz": (1, {}, 5),
    "warcio/example-bad.warc.gz.bad": (1, {"not_200": 1}, 4),
    "warcio/example-digest.warc": (0, {}, 4),
    "warcio/example-iana.org-chunked.warc": (1, {}, 2),
    "warcio/example-resource.warc.gz": (0, {}, 3),
    "warcio/example-space-in-target-uri.warc.gz": (0, {}, 2),
    "warcio/example-space-in-url.arc": (0, {"no_warc_records": 1}, 0),
    "warcio/example-trunc.warc": (1, {}, 3),
    "warcio/example-wget-bad-target-uri.warc.gz": (1, {}, 5),
    "warcio/example-wrong-chunks.warc.gz": (1, {}, 1),
    "warcio/example.arc": (0, {"no_warc_records": 1}, 0),
    "warcio/example.arc.gz": (0, {"no_warc_records": 1}, 0),
    "warcio/example.warc": (1, {}, 5),
    "warcio/example.warc.gz": (1, {}, 5),
    "warcio/post-test.warc.gz": (0, {"not_html": 3}, 3),
    "whirlwind/whirlwind.warc.gz": (1, {}, 3),
    "whirlwind/whirlwind.warc.wat.gz": (0, {}, 2),
    "whirlwind/whirlwind.warc.wet.gz": (0, {}, 2),
}


@needs_realdata
def test_every_real_warc_is_listed():
    on_disk = {str(path.relative_to(WARCS)) for path in WARCS.rglob("*") if path.is_file()}
    assert on_disk == set(KNOWN)


@needs_realdata
@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_counts(name):
    documents, dropped, non_response = KNOWN[name]
    docs, stats = read_file(WARCS / name)
    assert len(docs) == stats.docs_out == documents
    assert dict(stats.dropped) == dropped
    assert stats.counts["non_response_records"] == non_response
    assert balanced(stats)


@needs_realdata
def test_realpages_documents_are_complete():
    docs, _ = read_file(WARCS / "realpages.warc.gz")
    assert len({doc.id for doc in docs}) == 377
    for doc in docs:
        assert doc.url.startswith(("http://", "https://")) and "<" not in doc.url
        assert doc.html and "\x00" not in doc.html
        assert doc.snapshot == "CC-MAIN-2024-51" and doc.warc_path == "mem.warc.gz"
        assert len(doc.id) == 36 and not doc.id.startswith("<")
        dt.datetime.fromisoformat(doc.crawl_date)


@needs_realdata
def test_common_crawl_record_fields():
    docs, _ = read_file(WARCS / "whirlwind/whirlwind.warc.gz")
    (doc,) = docs
    assert doc.url == "https://an.wikipedia.org/wiki/Escopete"
    assert doc.crawl_date == "2024-05-18T01:58:10+00:00"
    assert "Escopete" in doc.html


@needs_realdata
def test_wget_angle_bracket_uris_are_unwrapped():
    docs, _ = read_file(WARCS / "dolma/sample-0001.warc.gz")
    assert docs[0].url == "https://creativecommons.org/"


@needs_realdata
def test_lz4_reads_like_plain():
    plain, _ = read_file(WARCS / "resiliparse/warcfile.warc")
    lz4, _ = read_file(WARCS / "resiliparse/warcfile.warc.lz4")
    assert [(d.id, d.html) for d in lz4] == [(d.id, d.html) for d in plain]


@needs_realdata
def test_real_non_utf8_pages_decode():
    by_url = {doc.url: doc.html for doc in read_file(WARCS / "resiliparse/warcfile.warc.gz")[0]}
    assert "О компании - Стратегия пожарной безопасности" in by_url["http://01spb.ru/company/"]  # windows-1251 header
    gbk_page = by_url["http://0615235.com/02mjqjo%7Bibotij2.btq?odmbtt=106&tdmbtt=121"]  # gb2312 in <meta> only
    assert "上海聚一行工艺礼品有限公司" in gbk_page
    clueweb, _ = read_file(WARCS / "resiliparse/clueweb-quirk.warc.gz")  # EUC-JP, LF-only HTTP headers
    assert "ヘッドポーター HEADPORTER 吉田かばん" in clueweb[0].html
    assert clueweb[0].crawl_date == ""  # its WARC-Date "2008-10-294T05:21:46-0700" is no date


@needs_realdata
def test_content_encoding_and_chunking_are_undone():
    (gzipped,), _ = read_file(WARCS / "warcio/example.warc.gz")  # Content-Encoding: gzip
    (chunked,), _ = read_file(WARCS / "warcio/example-iana.org-chunked.warc")
    assert gzipped.html.startswith("<!doctype html>") and "Example Domain" in gzipped.html
    assert chunked.html.startswith("<!doctype html>") and chunked.html.rstrip().endswith("</html>")


# --- damaged files ---------------------------------------------------------------------------


@needs_realdata
@pytest.mark.parametrize("damage", ["truncate", "flip_byte"])
def test_damage_keeps_what_precedes_it(damage):
    data = (WARCS / "realpages.warc.gz").read_bytes()
    intact, _ = read(data)
    middle = len(data) // 2
    if damage == "truncate":
        docs, stats = read(data[:middle])
    else:
        docs, stats = read(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    assert 100 < len(docs) < 377
    assert [d.id for d in docs] == [d.id for d in intact[: len(docs)]]
    assert docs[-1].html == intact[len(docs) - 1].html
    assert dict(stats.dropped) == {"truncated_or_corrupt_file": 1}
    assert balanced(stats)


@needs_realdata
def test_a_broken_stream_is_a_read_error_not_damage():
    """A connection that drops mid-file is not damage in the bytes: the reader yields what it
    read, then raises (the unit fails and is redone) instead of counting a corrupt file."""
    data = (WARCS / "realpages.warc.gz").read_bytes()
    intact, _ = read(data)
    stats, docs = StepStats(), []
    with pytest.raises(WarcReadError, match=r"^reading net\.warc\.gz failed at byte \d+: connection reset by peer$"):
        for doc in iter_warc_documents(ResettingStream(data, len(data) // 2), "net.warc.gz", "", stats):
            docs.append(doc)
    assert 100 < len(docs) < 377 and [d.id for d in docs] == [d.id for d in intact[: len(docs)]]
    assert not stats.dropped


class ResettingStream(io.RawIOBase):
    """A byte stream whose connection drops after `fail_at` bytes, as a network read would."""

    def __init__(self, data: bytes, fail_at: int) -> None:
        self.data, self.fail_at, self.pos = data, fail_at, 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:  # FastWARC asks where a Python stream is
        return self.pos

    def read(self, size: int = -1) -> bytes:
        if self.pos >= self.fail_at:
            raise ConnectionResetError("connection reset by peer")
        size = self.fail_at - self.pos if size < 0 else min(size, self.fail_at - self.pos)
        chunk = self.data[self.pos : self.pos + size]
        self.pos += len(chunk)
        return chunk


@needs_realdata
def test_garbage_between_plain_records_is_skipped():
    data = (WARCS / "resiliparse/warcfile.warc").read_bytes()
    docs, stats = read(data[: len(data) // 2] + b"garbage\r\n" * 10 + data[len(data) // 2 :])
    assert len(docs) == 16 and balanced(stats)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, this is not a WARC file\n" * 20, gzip.compress(b"plain text\n" * 50)],
    ids=["empty", "text", "gzipped_text"],
)
def test_files_without_records_are_counted(data):
    docs, stats = read(data)
    assert docs == [] and dict(stats.dropped) == {"no_warc_records": 1} and balanced(stats)


def test_unsupported_compression_is_a_counted_skip():
    docs, stats = read(bz2.compress(one_response(b"<html><p>hello</p></html>")))
    assert docs == [] and dict(stats.dropped) == {"no_warc_records": 1}


# --- crafted records -------------------------------------------------------------------------


def one_response(body: bytes, content_type: str = "text/html", status: int = 200,
                 http_headers: list[tuple[str, str]] | None = None, warc_headers: list[tuple[str, str]] | None = None,
                 ) -> bytes:
    headers = [("Content-Type", content_type)] if content_type else []
    block = http_response(status, headers + (http_headers or []), body)
    if warc_headers is None:
        warc_headers = [("WARC-Record-ID", "<urn:uuid:0b7e5a8e-4a37-4c5e-9b8f-2f0b6a1c2d3e>"),
                        ("WARC-Date", "2024-12-16T10:20:30Z"), ("WARC-Target-URI", "https://example.org/page")]
    return warc_record("response", warc_headers + [("Content-Type", "application/http; msgtype=response")], block)


RUSSIAN = "<html><body><p>Съешь же ещё этих мягких французских булок, да выпей чаю. Широкая электрификация " \
          "южных губерний даст мощный толчок подъёму сельского хозяйства.</p></body></html>"
JAPANESE = "<html><head><meta charset=\"Shift_JIS\"></head><body><p>吾輩は猫である。名前はまだ無い。</p></body></html>"


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (RUSSIAN.encode("cp1251"), "text/html; charset=windows-1251", "французских булок"),  # header
        (JAPANESE.encode("shift_jis"), "text/html", "吾輩は猫である"),  # <meta charset> only
        (RUSSIAN.encode("cp1251"), "text/html", "французских булок"),  # nothing declared: detected
        ("<p>Un café crème, s'il vous plaît.</p>".encode("cp1252"), "text/html; charset=utf-8", "café"),  # lies
        ("<p>naïve</p>".encode(), "Text/HTML; Charset=\"UTF-8\"", "naïve"),
        ("<p>naïve</p>".encode(), "text/html; charset=x-no-such-charset", "naïve"),  # unknown name
        ("\ufeff<p>naïve</p>".encode(), "text/html", "<p>naïve</p>"),  # BOM stripped
        ("<p>naïve</p>".encode("latin-1"), "application/xhtml+xml; charset=iso-8859-1", "naïve"),
    ],
    ids=["cp1251_header", "sjis_meta", "cp1251_detected", "lying_header", "quoted", "unknown_charset", "bom", "xhtml"],
)
def test_decoding(body, content_type, expected):
    docs, stats = read(one_response(body, content_type))
    assert stats.docs_out == 1
    assert expected in docs[0].html
    if expected.startswith("<p>"):
        assert docs[0].html.startswith(expected)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (one_response(b"<html>gone</html>", status=404), "not_200"),
        (one_response(b"<html>moved</html>", status=301, http_headers=[("Location", "/x")]), "not_200"),
        (one_response(b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"), "not_html"),
        (one_response(b"<html></html>", content_type=""), "not_html"),
        (one_response(b"  \r\n "), "empty_body"),
        (one_response(b"<html>\x00\x01\x02\x03</html>"), "binary_body"),
        (one_response(b"<html>" + b"a" * 5000 + b"</html>"), "too_large"),
        (one_response(gzip.compress(b"<p>" + b"a" * 50_000), http_headers=[("Content-Encoding", "gzip")]), "too_large"),
        (warc_record("response", [("Content-Type", "application/http")], b"this is no HTTP at all"), "malformed_http"),
    ],
    ids=["404", "301", "png", "no_type", "blank", "nul_bytes", "large", "gzip_bomb", "no_http"],
)
def test_drop_reasons(record, reason):
    docs, stats = read(record, max_record_bytes=4096)
    assert docs == [] and dict(stats.dropped) == {reason: 1} and stats.docs_in == 1


def test_non_response_records_are_counted_not_documents():
    records = [
        warc_record("warcinfo", [("Content-Type", "application/warc-fields")], b"software: test\r\n"),
        warc_record("request", [("Content-Type", "application/http; msgtype=request")], b"GET / HTTP/1.1\r\n\r\n"),
        one_response(b"<html><p>hi</p></html>"),
        warc_record("metadata", [("Content-Type", "application/warc-fields")], b"fetchTimeMs: 12\r\n"),
    ]
    docs, stats = read(b"".join(gzip.compress(r) for r in records))
    assert len(docs) == 1 and stats.docs_in == 1 and stats.counts["non_response_records"] == 3


def test_document_fields_and_encodings_undone():
    body = b"<html><p>" + b"squeezed " * 200 + b"</p></html>"
    compressed = zlib.compress(body)  # a "deflate" body in zlib framing
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(compressed), compressed)
    encodings = [("Content-Encoding", "deflate"), ("Transfer-Encoding", "chunked")]
    docs, _ = read(one_response(chunked, http_headers=encodings))
    (doc,) = docs
    assert doc.html == body.decode()
    assert doc.id == "0b7e5a8e-4a37-4c5e-9b8f-2f0b6a1c2d3e"
    assert doc.url == "https://example.org/page"
    assert doc.crawl_date == "2024-12-16T10:20:30+00:00"
    assert (doc.snapshot, doc.warc_path, doc.text) == ("CC-MAIN-2024-51", "mem.warc.gz", "")


def test_missing_record_id_gets_a_stable_positional_id():
    record = one_response(b"<html>x</html>", warc_headers=[("WARC-Target-URI", "https://example.org/")])
    first, _ = read(record + record)
    again, _ = read(record + record)
    assert [d.id for d in first] == [d.id for d in again]
    assert first[0].id != first[1].id and len(first[0].id) == 32
    assert first[0].crawl_date == ""


def test_drop_reason_counts_add_up_over_a_mixed_file():
    records = [one_response(b"<html>ok</html>"), one_response(b"", status=404), one_response(b"\x00", "image/gif"),
               one_response(b"<html>ok again</html>")]
    docs, stats = read(b"".join(gzip.compress(r) for r in records))
    assert [d.html for d in docs] == ["<html>ok</html>", "<html>ok again</html>"]
    assert stats.dropped == Counter({"not_200": 1, "not_html": 1}) and balanced(stats)
