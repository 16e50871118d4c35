"""`run_dedup` end to end on local Spark: planted near-duplicates, bad input, scope, keep rules,
verification, resume, the earlier-snapshot index on a real SeaweedFS server, and the duplicate
captures of a real WARC.

The planted corpus is the statistical test: pairs of known word-5-gram Jaccard s must be removed
at the rate 1-(1-s^8)^14 (evaluated at each pair's realised s) within sampling error, unrelated
documents (s < 0.3) almost never.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra.settings import DedupSettings, Settings
from infra.storage import Storage, StorageError, join
from tasks.dedup.index import read_index, run_tag
from tasks.dedup.minhash import collision_probability
from tasks.samples.dedup_corpus import DocumentFactory, write_corpus
from tasks.formats.docs import DOC_SCHEMA, STATS_FILE, docs_uri, list_doc_files, unit_key, write_table
from tasks.jobs.dedup import REMOVED_DIR, run_dedup
from tasks.jobs.units import StaleProgress

pytestmark = pytest.mark.spark

LEVELS = {0.9: 300, 0.8: 600, 0.7: 600, 0.6: 400, 0.5: 300, 0.2: 400}
SINGLES = 1_600


def _docs_table(rows: list[dict]) -> pa.Table:
    defaults = {
        "url": "", "text": "", "language": "en", "language_score": 1.0, "warc_path": "", "snapshot": "S1", "crawl_date": "",
    }
    return pa.Table.from_pylist([{**defaults, **row} for row in rows], schema=DOC_SCHEMA)


def _read_all(storage: Storage, stage: str, folder: str) -> pa.Table:
    tables = []
    for entry in storage.list(join(stage, folder), ".parquet"):
        with storage.open_input(entry.uri) as handle:
            tables.append(pq.read_table(handle))
    return pa.concat_tables(tables) if tables else pa.table({"id": pa.array([], pa.string())})


def _ids(table: pa.Table) -> list[str]:
    return table.column("id").to_pylist()


def _removed(output: str) -> dict[str, tuple[str, str]]:
    """removed id -> (reason, kept id), from <output>/removed/ (local outputs)."""
    table = _read_all(Storage(), output, REMOVED_DIR)
    if not table.num_rows:
        return {}
    return dict(zip(_ids(table), zip(table.column("reason").to_pylist(), table.column("kept_id").to_pylist())))


CJK = "数据处理流程包括去重过滤和分词每一步都可以单独测试并且记录统计结果以便检查质量和进度"
BAD_INPUT = [
    {"id": "bad-empty", "text": ""},
    {"id": "bad-none", "text": None},
    {"id": "bad-punct", "text": "!!! ... ???"},
    {"id": "bad-short", "text": "Only four words here."},
    {"id": "bad-short-copy", "text": "only four words HERE"},  # exact duplicate of the previous
    {"id": "bad-emoji", "text": "🙂🙂🙂 🎉🎉 👍"},
    {"id": "bad-cjk-a", "text": CJK + "。甲"},
    {"id": "bad-cjk-b", "text": CJK + "，乙"},  # a near-duplicate by character shingles (s = 0.95)
]


@pytest.fixture(scope="module")
def planted(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("planted")
    storage = Storage()
    factory = DocumentFactory(seed=21, median_words=120, sigma=0.3)
    num_docs = SINGLES + 2 * (sum(LEVELS.values()) + 100)
    corpus = write_corpus(storage, str(base / "in"), num_docs, near=LEVELS, exact=100, docs_per_file=2_500, factory=factory)
    write_table(storage, docs_uri(str(base / "in"), "bad"), _docs_table(BAD_INPUT), 100)
    stats = run_dedup(spark, str(base / "in"), str(base / "out"), Settings())
    return corpus, stats, str(base / "in"), str(base / "out")


def test_removal_rate_follows_the_lsh_curve(planted):
    corpus, _, _, output = planted
    removed = set(_removed(output))
    by_level = defaultdict(list)
    for pair in corpus.pairs:
        if not pair.exact:
            target = min(LEVELS, key=lambda level: abs(level - pair.similarity))
            by_level[target].append((pair, pair.original in removed or pair.copy in removed))
    report = {}
    for level, outcomes in by_level.items():
        observed = sum(hit for _, hit in outcomes) / len(outcomes)
        predicted = sum(collision_probability(pair.similarity, 14, 8) for pair, _ in outcomes) / len(outcomes)
        report[level] = (round(observed, 3), round(predicted, 3))
        sigma = math.sqrt(predicted * (1 - predicted) / len(outcomes))
        assert abs(observed - predicted) <= max(3 * sigma, 0.01), report
    assert report[0.8][0] == pytest.approx(0.92, abs=0.05) and report[0.7][0] == pytest.approx(0.56, abs=0.07), report
    # unrelated documents: the s=0.2 pairs and the independent singles
    assert report[0.2][0] < 0.005
    planted_ids = {pid for pair in corpus.pairs for pid in (pair.original, pair.copy)}
    singles_removed = len({doc for doc in removed if doc.startswith("doc-")} - planted_ids)
    assert singles_removed / SINGLES < 0.005


def test_exact_copies_and_accounting(planted):
    corpus, stats, _, output = planted
    storage = Storage()
    removed = _removed(output)
    exact_pairs = [pair for pair in corpus.pairs if pair.exact]
    for pair in exact_pairs:  # exactly one of each exact pair goes, the smaller id stays
        assert pair.original not in removed or pair.copy not in removed
        assert removed[max(pair.original, pair.copy)] == ("exact", min(pair.original, pair.copy))
    assert stats["exact_duplicates"] == len(exact_pairs) + 1  # + the short exact copy in BAD_INPUT
    out_ids = _ids(_read_all(storage, output, "docs"))
    assert len(out_ids) == len(set(out_ids)) == stats["documents_out"]
    assert stats["documents_in"] == corpus.num_docs + len(BAD_INPUT)
    assert stats["documents_out"] + len(removed) == stats["documents_in"]
    assert not set(out_ids) & set(removed)
    assert {kept for _, kept in removed.values()} <= set(out_ids)  # every cluster keeps its survivor
    assert stats["near_duplicates"] == sum(reason == "near" for reason, _ in removed.values())
    assert sum(stats["cluster_size_histogram"].values()) == stats["near_duplicate_clusters"] > 0
    assert stats["files"] == 4 and not stats["files_failed"]


def test_bad_input_is_counted_and_kept(planted):
    _, stats, _, output = planted
    out_ids = set(_ids(_read_all(Storage(), output, "docs")))
    removed = _removed(output)
    assert {"bad-empty", "bad-none", "bad-punct", "bad-short", "bad-emoji", "bad-cjk-a"} <= out_ids
    assert removed["bad-short-copy"] == ("exact", "bad-short")
    assert removed["bad-cjk-b"] == ("near", "bad-cjk-a")  # character shingles at work
    assert stats["empty"] == 4  # empty, None, punctuation only, emoji only: nothing left after normalising
    assert stats["too_short"] == 6  # those four and the two short ones
    assert stats["char_shingled"] == 2


def test_rerun_resumes_instead_of_redoing(spark, planted):
    _, stats, source, output = planted
    storage = Storage()
    timing = {"seconds", "wall_seconds", "files_resumed"}
    complete = run_dedup(spark, source, output, Settings())  # nothing to redo: plan and every file resume
    assert complete["files_resumed"] == 4 and complete["seconds"]["rewrite"] < stats["seconds"]["rewrite"]
    assert {k: v for k, v in complete.items() if k not in timing} == {k: v for k, v in stats.items() if k not in timing}
    # crash simulation: the final stats and one file's output and marker are gone
    victim = list_doc_files(storage, source)[1]
    unit = unit_key(victim)
    before = _read_all(storage, output, "docs").sort_by("id")
    for uri in (join(output, STATS_FILE), docs_uri(output, unit), join(output, "_progress", f"{unit}.json")):
        storage.delete(uri)
    again = run_dedup(spark, source, output, Settings())
    assert again["files_resumed"] == 3 and again["documents_out"] == stats["documents_out"]
    assert _read_all(storage, output, "docs").sort_by("id").equals(before)


def test_missing_input_is_one_clear_error(spark, tmp_path):
    with pytest.raises(StorageError, match="no document files"):
        run_dedup(spark, str(tmp_path / "nowhere"), str(tmp_path / "out"), Settings())


SCOPED = [
    # the same article in two snapshots, and a near copy with a longer tail
    {"id": "a1", "snapshot": "S1", "url": "https://a.example/1", "text": "{base}"},
    {"id": "a2", "snapshot": "S2", "url": "https://a.example/1", "text": "{base}"},
    {"id": "b1", "snapshot": "S1", "url": "https://b.example/x", "text": "{near}"},
    {"id": "b0", "snapshot": "S1", "url": "https://a.example/1", "text": "{other}"},  # same URL as a1
]


def _scoped_input(tmp_path) -> str:
    factory = DocumentFactory(seed=8, median_words=400, sigma=0.01)
    words = factory.words(0)
    texts = {
        "base": " ".join(words),
        "near": " ".join(factory.near_copy(words, 0.9, 1) + ["tail"] * 3),
        "other": " ".join(factory.words(2)[:100]),
    }
    rows = [{**row, "text": row["text"].format(**texts)} for row in SCOPED]
    write_table(Storage(), docs_uri(str(tmp_path / "in"), "scoped"), _docs_table(rows), 100)
    return str(tmp_path / "in")


def test_scope_keep_longest_and_urls(spark, tmp_path):
    source = _scoped_input(tmp_path)
    settings = Settings(dedup=DedupSettings(keep="longest", exact_urls=True))
    run_dedup(spark, source, str(tmp_path / "per_snapshot"), settings)
    # a2 is in another snapshot: untouched; b1 (longer) is kept over a1; b0 shares a1's URL
    assert _removed(str(tmp_path / "per_snapshot")) == {"a1": ("near", "b1"), "b0": ("duplicate_url", "a1")}


def test_global_scope_and_verification(spark, tmp_path):
    source = _scoped_input(tmp_path)
    settings = Settings(dedup=DedupSettings(verify_threshold=0.95, per_snapshot=False))
    stats = run_dedup(spark, source, str(tmp_path / "global"), settings)
    # across snapshots a2 is an exact copy of a1; b1 (s ~ 0.9) collides but fails verification
    assert _removed(str(tmp_path / "global")) == {"a2": ("exact", "a1")}
    assert stats["near_duplicates"] == 0


@pytest.mark.s3
def test_index_of_earlier_snapshots_on_seaweedfs(spark, seaweed, s3_prefix):
    storage = Storage(seaweed)
    factory = DocumentFactory(seed=12, median_words=200, sigma=0.2)
    old = [{"id": f"old-{i}", "snapshot": "S1", "text": " ".join(factory.words(i))} for i in range(5)]
    new = [
        {"id": "new-copy", "snapshot": "S2", "text": " ".join(factory.near_copy(factory.words(0), 0.95, 7))},
        {"id": "new-fresh", "snapshot": "S2", "text": " ".join(factory.words(50))},
    ]
    write_table(storage, docs_uri(join(s3_prefix, "old"), "p0"), _docs_table(old), 100)
    write_table(storage, docs_uri(join(s3_prefix, "new"), "p0"), _docs_table(new), 100)
    index_uri = join(s3_prefix, "index")
    settings = Settings(storage=seaweed, dedup=DedupSettings(index_uri=index_uri, update_index=True))

    first = run_dedup(spark, join(s3_prefix, "old"), join(s3_prefix, "old-out"), settings)
    assert first["documents_out"] == 5 and first["index_rows_written"] == 5 * 14
    # a replan of the same output would not see its own rows: nothing is a duplicate of itself
    assert read_index(spark, seaweed, index_uri, run_tag(join(s3_prefix, "old-out"))) is None

    second = run_dedup(spark, join(s3_prefix, "new"), join(s3_prefix, "new-out"), settings)
    assert second["index_duplicates"] == 1 and second["documents_out"] == 1
    assert _ids(_read_all(storage, join(s3_prefix, "new-out"), "docs")) == ["new-fresh"]
    [removed] = _read_all(storage, join(s3_prefix, "new-out"), REMOVED_DIR).to_pylist()  # with cluster_id
    assert removed["cluster_id"] < 0  # the indexed document's key
    expected = {"row": 0, "id": "new-copy", "cluster_id": removed["cluster_id"], "kept_id": "old-0", "reason": "near_index"}
    assert removed == expected


def test_duplicate_captures_in_a_real_warc(spark, realdata, tmp_path):
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    rows = []
    with open(realdata / "warc" / "dolma" / "sample-0001.warc.gz", "rb") as stream:
        for record in ArchiveIterator(stream, record_types=WarcRecordType.response):
            if "html" not in record.http_headers.get("Content-Type", ""):
                continue
            body = record.reader.read()
            text = extract_plain_text(bytes_to_str(body, detect_encoding(body)), main_content=True)
            url = record.headers.get("WARC-Target-URI").strip("<>")  # wget writes <...>
            rows.append({"id": record.record_id, "url": url, "text": text})
    allenai = [row["id"] for row in rows if row["url"] == "https://allenai.org/"]
    assert len(rows) == 15 and len(allenai) == 3
    write_table(Storage(), docs_uri(str(tmp_path / "in"), "dolma"), _docs_table(rows), 100)

    stats = run_dedup(spark, str(tmp_path / "in"), str(tmp_path / "out"), Settings())
    out = _read_all(Storage(), str(tmp_path / "out"), "docs")
    assert out.column("url").to_pylist().count("https://allenai.org/") == 1
    assert stats["documents_out"] == 13 and stats["exact_duplicates"] == 2


def test_numbers_make_near_not_exact_duplicates_and_marks_make_other_words(spark, tmp_path):
    """Issue 7, item 9: digits are folded for near dedup only, and Indic and Arabic marks stay."""
    article = " ".join(DocumentFactory(seed=21, median_words=150, sigma=0.1).words(0))
    rows = [
        {"id": "price-2023", "text": article + " Price 12.50 EUR, updated 2023-01-05."},
        {"id": "price-2024", "text": article + " Price 14.99 EUR, updated 2024-03-07."},  # only numbers differ
        {"id": "hi-book", "text": "यह किताब है"},  # "this is a book"
        {"id": "hi-scribe", "text": "यह कातिब है"},  # "this is a scribe": once an exact duplicate of the book
        {"id": "ar-asked", "text": "هو سأل"},  # "he asked"
        {"id": "ar-flowed", "text": "هو سال"},  # "it flowed"
    ]
    write_table(Storage(), docs_uri(str(tmp_path / "in"), "p0"), _docs_table(rows), 100)
    stats = run_dedup(spark, str(tmp_path / "in"), str(tmp_path / "out"), Settings())
    assert _removed(str(tmp_path / "out")) == {"price-2024": ("near", "price-2023")}
    assert stats["exact_duplicates"] == 0 and stats["documents_out"] == 5


def test_a_grown_input_is_replanned_and_a_changed_part_refused(spark, tmp_path):
    source = _scoped_input(tmp_path)
    output = str(tmp_path / "out")
    first = run_dedup(spark, source, output, Settings())
    # A new part (a WARC filtered since): the plan is redone over both, under a new build.
    factory = DocumentFactory(seed=30, median_words=200, sigma=0.1)
    write_table(Storage(), docs_uri(source, "later"), _docs_table([{"id": "late", "text": " ".join(factory.words(3))}]), 100)
    grown = run_dedup(spark, source, output, Settings())
    assert grown["documents_in"] == first["documents_in"] + 1 and grown["build"] != first["build"]
    assert grown["files"] == 2 and grown["files_redone"] == 1 and "late" in _ids(_read_all(Storage(), output, "docs"))
    # A part rewritten since the plan: refused, naming it, rather than applying a stale plan.
    write_table(Storage(), docs_uri(source, "later"), _docs_table([{"id": "late", "text": "other words now"}]), 100)
    with pytest.raises(StaleProgress, match=r"part-later\.parquet changed since dedup planned it \(size \d+ -> \d+\); use a fresh output, or --force"):
        run_dedup(spark, source, output, Settings())
    assert run_dedup(spark, source, output, Settings(), force=True)["documents_in"] == grown["documents_in"]
