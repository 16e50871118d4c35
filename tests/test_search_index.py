"""The search tool's index (tasks/search/): built from a real docs stage (the sample crawl through
the filter stage's own function) and from real news pages, BM25 search, snippets and results
text, multilingual terms, idempotent rebuilds, and the S3 round trip through the download cache."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter

import pytest

from flows.cli import main
from infra.settings import LanguageSettings, SearchSettings, load_settings
from infra.storage import Storage, join
from tasks.filters.langid import LanguageFilter
from tasks.formats.docs import docs_uri, documents_to_table, list_doc_files, unit_key, write_table
from tasks.jobs.filter import filter_warc
from tasks.pipeline import Document
from tasks.samples.crawl import generate_sample_crawl
from tasks.search.build import build_index
from tasks.search.index import Hit, SearchIndex
from tasks.search.layout import MANIFEST, SearchIndexError
from tasks.search.results import NO_RESULTS, format_results
from tests.conftest import REALDATA, needs_realdata


def real_pages() -> list[Document]:
    """The scrapinghub article-extraction benchmark's 181 real news pages (text and URL), with
    their language told by the pipeline's own fastText step."""
    truth = json.loads((REALDATA / "extraction_ref" / "scrapinghub_aeb" / "ground-truth.json").read_text())
    language = LanguageFilter(LanguageSettings(languages=[]))
    docs = []
    for key, page in sorted(truth.items()):
        doc = Document(id=key, url=page["url"], text=page["articleBody"])
        language.apply(doc)
        docs.append(doc)
    return docs


def write_stage(stage: str, parts: dict[str, list[Document]], storage: Storage | None = None) -> str:
    for unit, docs in parts.items():
        write_table(storage or Storage(), docs_uri(stage, unit), documents_to_table(docs), 50)
    return stage


@pytest.fixture(scope="module")
def crawl_stage(tmp_path_factory) -> str:
    """A docs stage made by the filter stage's per-WARC function from the sample crawl."""
    root = tmp_path_factory.mktemp("crawl")
    crawl = generate_sample_crawl(root / "warcs", num_warcs=1, pages_per_warc=40, seed=3)
    stage = str(root / "filtered")
    for path in crawl.warc_paths:
        filter_warc(str(path), unit_key(str(path)), stage, load_settings())
    return stage


@pytest.fixture(scope="module")
def pages_stage(tmp_path_factory) -> str:
    if not REALDATA.exists():
        pytest.skip("../shared/realdata is absent")
    docs = real_pages()
    return write_stage(str(tmp_path_factory.mktemp("pages") / "stage"), {"a": docs[:90], "b": docs[90:]})


def stage_rows(stage: str) -> list[dict]:
    import pyarrow.parquet as pq

    return [row for uri in list_doc_files(Storage(), stage) for row in pq.read_table(uri).to_pylist()]


def test_sample_crawl_documents_are_found_by_their_own_words(crawl_stage):
    report = build_index(crawl_stage)
    rows = stage_rows(crawl_stage)
    assert report["documents"] == len(rows) > 20 and report["output"] == join(crawl_stage, "search-index")
    index = SearchIndex.open(crawl_stage)  # the stage itself: the index is found next to it
    assert index.num_docs == len(rows)
    # Each page's rarest words in this crawl, as a query: that page is among the best hits, and
    # any page ranked above it has every one of those words too (the filter stage keeps the
    # sample crawl's planted duplicates; dedup would remove them).
    words = {row["id"]: set(re.findall(r"\w+", row["text"].lower())) for row in rows}
    document_frequency = Counter(word for page in words.values() for word in page)
    first = 0
    for row in rows:
        rarest = sorted(words[row["id"]], key=lambda word: (document_frequency[word], word))[:4]
        hits = index.search(" ".join(rarest), k=3)
        ranked = [hit.doc_id for hit in hits]
        assert row["id"] in ranked
        assert all(set(rarest) <= words[doc_id] for doc_id in ranked[: ranked.index(row["id"])])
        first += ranked[0] == row["id"]
        assert all(isinstance(hit, Hit) and hit.score > 0 for hit in hits)
        assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert first >= 0.6 * len(rows)


@needs_realdata
def test_real_pages_search_snippets_and_results_text(pages_stage):
    build_index(pages_stage)
    index = SearchIndex.open(pages_stage)
    hits = index.search("Sweden drops Assange rape investigation", k=3)
    assert "assange" in hits[0].url
    assert "Assange" in hits[0].snippet and len(hits[0].snippet) <= index.settings.snippet_chars + 2
    text = format_results(hits, 1200)
    assert len(text) <= 1200 and text.startswith(f"[1] {hits[0].title}\n{hits[0].url}\n")
    assert format_results(hits, 300).count("[") == 1 and len(format_results(hits, 300)) <= 300
    assert format_results([], 500) == NO_RESULTS
    # Query syntax is plain text: nothing here is an operator, a field or a broken phrase.
    for query in ['title:(Assange AND "', "-Sweden +NOT", "***", "   "]:
        assert isinstance(index.search(query), list)
    assert index.search("   ") == [] and index.search("***") == []
    # Every page's language came from fastText; the index keeps it per hit.
    assert hits[0].language == "en"


def test_words_of_every_script_are_searchable(tmp_path):
    docs = [
        Document(id="ja", url="https://ja.example/tower", text="東京タワーは1958年に完成した電波塔です。", language="ja"),
        Document(id="zh", url="https://zh.example/tea", text="绿茶含有丰富的抗氧化物质，对健康有益。", language="zh"),
        Document(id="ru", url="https://ru.example/tree", text="Новогодняя ёлка стоит на Красной площади.", language="ru"),
        Document(id="fr", url="https://fr.example/cafe", text="Le café de la gare ouvre à sept heures.", language="fr"),
        Document(id="de", url="https://de.example/zurich", text="Der Zürichsee liegt südlich von Zürich.", language="de"),
        Document(id="en", url="https://en.example/empty", text="   ", language="en"),
    ]
    stage = write_stage(str(tmp_path / "stage"), {"a": docs})
    report = build_index(stage)
    assert report["documents"] == 5 and report["skipped_empty"] == 1
    index = SearchIndex.open(stage)
    for query, expected in [("東京タワー", "ja"), ("抗氧化", "zh"), ("ёлка", "ru"), ("CAFE gare", "fr"), ("zurich", "de")]:
        hits = index.search(query, k=1)
        assert hits and hits[0].doc_id == expected, query
    assert index.search("東京タワー")[0].snippet.startswith("東京タワーは1958年に完成した電波塔")


def test_rebuilds_are_idempotent_and_changed_input_is_detected(tmp_path):
    first = [Document(id=f"d{i}", url=f"https://example.org/{i}", text=f"Page {i} about gardening and tomatoes number {i}.", language="en") for i in range(20)]
    stage = write_stage(str(tmp_path / "stage"), {"a": first})
    output = str(tmp_path / "index")
    built = build_index(stage, output)
    assert not built["up_to_date"]
    again = build_index(stage, output)
    assert again["up_to_date"] and {**again, "seconds": 0, "up_to_date": False} == {**built, "seconds": 0}
    # A crash mid-build leaves a work folder and no new manifest: the next build cleans it up.
    os.makedirs(os.path.join(output, "_building-crashed"))
    added = [Document(id="new", url="https://example.org/new", text="A page about zucchini harvests.", language="en")]
    write_stage(stage, {"b": added})
    rebuilt = build_index(stage, output)
    assert not rebuilt["up_to_date"] and rebuilt["build"] != built["build"] and rebuilt["documents"] == 21
    assert sorted(os.listdir(output)) == sorted([MANIFEST, rebuilt["build"]])
    assert SearchIndex.open(output).search("zucchini")[0].doc_id == "new"
    # Same number of rows, other text: the Parquet footer changes, so the index is rebuilt.
    write_stage(stage, {"b": [Document(id="new", url="https://example.org/new", text="A page about pumpkin harvests.", language="en")]})
    assert not build_index(stage, output)["up_to_date"]
    assert SearchIndex.open(output).search("pumpkin")[0].doc_id == "new"
    assert SearchIndex.open(output).search("zucchini") == []


def test_missing_index_and_empty_stage_are_one_line_errors(tmp_path):
    with pytest.raises(SearchIndexError, match="no search index at"):
        SearchIndex.open(str(tmp_path))
    from infra.storage import StorageError

    with pytest.raises(StorageError, match="no document Parquet files"):
        build_index(str(tmp_path))


@needs_realdata
def test_index_on_s3_is_downloaded_once_verified_and_searched(pages_stage, seaweed, s3_prefix, tmp_path):
    storage = Storage(seaweed)
    # The docs stage on S3 too, and the index in its default place next to it.
    stage = f"{s3_prefix}/stage"
    for uri in list_doc_files(Storage(), pages_stage):
        storage.write_bytes(f"{stage}/docs/{os.path.basename(uri)}", open(uri, "rb").read())
    report = build_index(stage, settings=SearchSettings(), storage=storage)
    assert report["output"] == f"{stage}/search-index" and report["documents"] == 181
    assert build_index(stage, storage=storage)["up_to_date"]
    settings = SearchSettings(cache_dir=str(tmp_path / "cache"))
    remote = SearchIndex.open(stage, storage, settings)
    build_index(pages_stage)
    local = SearchIndex.open(pages_stage)
    for query in ("Assange Sweden", "Stadia cloud gaming", "Titan geological map"):
        assert remote.search(query) == local.search(query)
    assert os.listdir(tmp_path / "cache") == [report["build"]]
    # Opened again, the build comes from the cache: it still opens with S3's files gone.
    for entry in storage.list(join(stage, "search-index", report["build"])):
        storage.delete(entry.uri)
    assert SearchIndex.open(stage, storage, settings).search("Assange Sweden") == local.search("Assange Sweden")
    # A damaged upload (one file's bytes changed) opened into a fresh cache: refused, not searched.
    cached = tmp_path / "cache" / report["build"]
    for name in report_files(stage, storage):
        data = (cached / name).read_bytes()
        storage.write_bytes(join(stage, "search-index", report["build"], name), data + b"x" if name.endswith(".store") else data)
    with pytest.raises(SearchIndexError, match="missing or differs from its manifest"):
        SearchIndex.open(stage, storage, SearchSettings(cache_dir=str(tmp_path / "other-cache")))
    assert not os.path.exists(tmp_path / "other-cache" / report["build"])


def report_files(stage: str, storage: Storage) -> list[str]:
    return list(json.loads(storage.read_text(join(stage, "search-index", MANIFEST)))["files"])


def test_cli_builds_and_searches(crawl_stage, tmp_path, capsys):
    output = str(tmp_path / "cli-index")
    assert main(["index", "build", "--input", crawl_stage, "--output", output]) == 0
    assert "documents" in capsys.readouterr().out
    assert main(["index", "build", "--input", crawl_stage, "--output", output]) == 0
    assert "up to date" in capsys.readouterr().out
    row = stage_rows(crawl_stage)[0]
    assert main(["index", "search", "--index", output, "--query", row["text"][:200], "-k", "2"]) == 0
    assert row["url"] in capsys.readouterr().out
    assert main(["index", "search", "--index", str(tmp_path / "nothing"), "--query", "x"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    shutil.rmtree(output)
