"""tasks.samples.crawl: valid, reproducible WARCs whose planted kinds are what truth.json says they are."""

from __future__ import annotations

import ipaddress
import json
from collections import Counter

import pytest
from fastwarc.warc import ArchiveIterator, WarcRecordType
from resiliparse.extract.html2text import extract_plain_text

from tasks.readers.inputs import InputError
from tasks.pipeline import StepStats
from tasks.samples.crawl import BLOCKED_HOSTS, KINDS, generate_sample_crawl
from tasks.readers.warc import iter_warc_documents


@pytest.fixture(scope="module")
def crawl(tmp_path_factory):
    return generate_sample_crawl(tmp_path_factory.mktemp("crawl"))


@pytest.fixture(scope="module")
def docs(crawl):
    stats = StepStats()
    found = {}
    for path in crawl.warc_paths:
        with open(path, "rb") as stream:
            found.update((d.url, d) for d in iter_warc_documents(stream, str(path), "CC-MAIN-2024-51", stats))
    return found, stats


def extracted(doc) -> str:
    return extract_plain_text(doc.html, main_content=True)


def test_files_and_truth(crawl):
    assert [p.name for p in crawl.warc_paths] == [f"CC-MAIN-2024-51-sample-0000{i}.warc.gz" for i in (0, 1)]
    assert len(crawl.truth) == 120 and set(crawl.truth.values()) == set(KINDS)
    kinds = Counter(crawl.truth.values())
    assert kinds["clean"] > 120 // 2 - 5 and all(kinds[k] >= 1 for k in KINDS)
    saved = json.loads(crawl.truth_path.read_text())
    assert saved["kinds"] == crawl.truth and saved["duplicate_of"] == crawl.duplicate_of and saved["pii"] == crawl.pii
    assert set(crawl.languages.values()) == {"en", "de", "fr", "es", "ru", "ja"}


def test_fastwarc_reads_valid_records_with_correct_digests(crawl):
    for path in crawl.warc_paths:
        types = []
        with open(path, "rb") as stream:
            for record in ArchiveIterator(stream, parse_http=False):
                types.append(record.headers.get("WARC-Type"))
                if record.record_type != WarcRecordType.warcinfo:
                    assert record.verify_block_digest(), record.record_id
        assert types[0] == "warcinfo" and types[1:] == ["request", "response"] * 60


def test_each_record_is_its_own_gzip_member(crawl):
    data = crawl.warc_paths[0].read_bytes()
    assert data.count(b"\x1f\x8b\x08") >= 121  # warcinfo + 60 requests + 60 responses


def test_warc_reader_sees_the_planted_kinds(crawl, docs):
    found, stats = docs
    kinds = Counter(crawl.truth.values())
    assert stats.docs_in == 120
    assert dict(stats.dropped) == {"not_200": kinds["not_found"] + kinds["redirect"], "not_html": kinds["non_html"]}
    assert {crawl.truth[url] for url in found} == set(KINDS) - {"not_found", "redirect", "non_html"}


def test_same_seed_same_bytes_other_seed_other_bytes(crawl, tmp_path):
    again = generate_sample_crawl(tmp_path / "again")
    for ours, theirs in zip(crawl.warc_paths, again.warc_paths, strict=True):
        assert ours.read_bytes() == theirs.read_bytes()
    assert crawl.truth_path.read_bytes() == again.truth_path.read_bytes()
    other = generate_sample_crawl(tmp_path / "other", seed=1)
    assert other.warc_paths[0].read_bytes() != crawl.warc_paths[0].read_bytes()


def test_clean_english_pages_have_prose_after_extraction(crawl, docs):
    found, _ = docs
    clean = [doc for url, doc in found.items() if crawl.truth[url] == "clean"]
    assert len(clean) >= 50
    for doc in clean:
        text = extracted(doc)
        lines = [line for line in text.splitlines() if line.strip()]
        assert len(text.split()) >= 50
        assert sum(line.endswith(".") for line in lines) >= 5
        assert "{" not in text and "cookies" not in text and "Popular posts" not in text


def test_short_spam_and_code_pages_show_their_flaw(crawl, docs):
    found, _ = docs
    for url, doc in found.items():
        kind, text = crawl.truth[url], extracted(doc)
        if kind == "short":
            assert len(text.split()) < 30
        elif kind == "spam":
            lines = [line for line in text.splitlines() if line.strip()]
            assert Counter(lines).most_common(1)[0][1] >= 10
        elif kind == "code_page":
            assert "{" in text
        elif kind == "boilerplate_only":
            assert len(text.split()) < 20


def test_duplicates(crawl, docs):
    found, _ = docs
    assert {crawl.truth[url] for url in crawl.duplicate_of} == {"exact_duplicate", "near_duplicate"}
    for url, original in crawl.duplicate_of.items():
        assert crawl.truth[original] == "clean" and url != original
        ours, theirs = extracted(found[url]).split(), extracted(found[original]).split()
        if crawl.truth[url] == "exact_duplicate":
            assert found[url].html == found[original].html
        else:
            changed = sum(a != b for a, b in zip(ours, theirs, strict=True))
            assert 0.03 <= changed / len(ours) <= 0.07


def test_pii_is_planted_with_private_addresses_to_keep(crawl, docs):
    found, _ = docs
    assert set(crawl.pii) == {url for url, kind in crawl.truth.items() if kind == "pii"}
    for url, planted in crawl.pii.items():
        text = extracted(found[url])
        assert all(item in text for values in planted.values() for item in values)
        assert all("@" in email for email in planted["emails"])
        assert all(ipaddress.ip_address(ip).is_global for ip in planted["public_ips"])
        assert all(ipaddress.ip_address(ip).is_private for ip in planted["private_ips"])
        assert {ipaddress.ip_address(ip).version for ip in planted["public_ips"]} == {4, 6}


def test_blocked_urls(crawl):
    blocked = [url for url, kind in crawl.truth.items() if kind == "blocked_url"]
    assert blocked and all(any(host in url for host in BLOCKED_HOSTS) or "porn" in url for url in blocked)
    clean_urls = [url for url, kind in crawl.truth.items() if kind == "clean"]
    assert not any(word in url for url in clean_urls for word in ("porn", "xxx", "casino"))


def test_non_english_pages_decode_from_their_charsets(crawl, docs):
    found, _ = docs
    by_language = {crawl.languages[url]: doc for url, doc in found.items() if crawl.truth[url] == "non_english"}
    assert "Дачные заметки" in by_language["ru"].html  # windows-1251, declared in the HTTP header
    assert "日々の手帖" in by_language["ja"].html  # Shift_JIS, declared only in <meta charset>
    assert "Über uns" in by_language["de"].html and "À propos" in by_language["fr"].html


def test_tiny_crawl_and_bad_snapshot(tmp_path):
    small = generate_sample_crawl(tmp_path, num_warcs=1, pages_per_warc=5, seed=7, snapshot="CC-MAIN-2023-06")
    assert len(small.truth) == 5 and small.warc_paths[0].name == "CC-MAIN-2023-06-sample-00000.warc.gz"
    with pytest.raises(InputError, match="invalid snapshot id"):
        generate_sample_crawl(tmp_path, snapshot="2024-51")
