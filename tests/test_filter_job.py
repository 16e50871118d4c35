"""The crawl-to-documents Spark job end to end: real Spark (local[2]), real SeaweedFS, real WARCs."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest

from infra.settings import load_settings
from infra.storage import Storage, join
from tasks.formats.docs import DOC_SCHEMA, DROPPED_SCHEMA, PROGRESS_DIR, list_doc_files
from tasks.jobs.filter import run_filter
from tasks.samples.crawl import generate_sample_crawl

pytestmark = [pytest.mark.spark, pytest.mark.slow]

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def read_docs(storage: Storage, output: str) -> list[dict]:
    rows = []
    for uri in list_doc_files(storage, output):
        with storage.open_input(uri) as handle:
            table = pq.read_table(handle)
        assert table.schema.equals(DOC_SCHEMA)
        rows.extend(table.to_pylist())
    return rows


def assert_funnel_consistent(stats: dict) -> None:
    """Every document a step receives is either passed on or dropped with a reason."""
    previous_out = None
    for name, step in stats["steps"].items():
        assert step["docs_in"] == step["docs_out"] + sum(step["dropped"].values()), name
        if previous_out is not None:
            assert step["docs_in"] == previous_out, name
        previous_out = step["docs_out"]
    assert stats["totals"]["docs_out"] == previous_out


@pytest.fixture(scope="module")
def sample_crawl(tmp_path_factory):
    return generate_sample_crawl(tmp_path_factory.mktemp("crawl"), num_warcs=2, pages_per_warc=60, seed=7)


def test_sample_crawl_to_seaweedfs(spark, seaweed, s3_prefix, sample_crawl):
    settings = load_settings(overrides={"storage": seaweed.model_dump(), "filter": {"keep_dropped": True}})
    storage = Storage(settings.storage)
    # Inputs on S3 too: upload the WARCs, then point the job at the prefix.
    for path in sample_crawl.warc_paths:
        storage.write_bytes(join(s3_prefix, "crawl", path.name), path.read_bytes())
    from tasks.readers.inputs import resolve_inputs

    inputs = resolve_inputs([join(s3_prefix, "crawl")], storage)
    output = join(s3_prefix, "filtered")
    stats = run_filter(spark, inputs, output, settings)

    assert stats["inputs_done"] == 2 and not stats["inputs_failed"]
    assert json.loads(storage.read_text(join(output, "stats.json"))) == stats
    assert_funnel_consistent(stats)
    docs = read_docs(storage, output)
    assert len(docs) == stats["totals"]["docs_out"] > 0
    truth = sample_crawl.truth
    kept_kinds = {truth[doc["url"]] for doc in docs}
    # What the chain must remove never comes out; clean English pages do.
    assert not kept_kinds & {"spam", "short", "boilerplate_only", "blocked_url", "non_english", "code_page"}
    clean = [url for url, kind in truth.items() if kind == "clean"]
    kept_urls = {doc["url"] for doc in docs}
    assert sum(url in kept_urls for url in clean) >= 0.9 * len(clean)
    for doc in docs:
        assert doc["language"] == "en" and doc["language_score"] >= 0.65
        assert doc["snapshot"] == "CC-MAIN-2024-51" and doc["crawl_date"].startswith("20")
        assert doc["warc_path"] in inputs
        assert set(EMAIL.findall(doc["text"])) <= {"email@example.com"}
    pii_docs = [doc for doc in docs if truth[doc["url"]] == "pii"]
    assert pii_docs and all("192.0.2.1" in doc["text"] or "2001:db8::1" in doc["text"] for doc in pii_docs)
    assert stats["steps"]["pii"]["counts"].get("emails", 0) > 0
    # Dropped documents are kept for inspection, each with the step and reason that dropped it.
    dropped = []
    for entry in storage.list(join(output, "dropped"), suffix=".parquet"):
        with storage.open_input(entry.uri) as handle:
            table = pq.read_table(handle)
        assert table.schema.equals(DROPPED_SCHEMA)
        dropped.extend(table.to_pylist())
    # (records the WARC reader skipped, such as images and 404s, are counted but are not documents)
    read_skips = sum(stats["steps"]["read_warc"]["dropped"].values())
    assert len(dropped) == stats["totals"]["dropped"] - read_skips
    assert {"url_filter", "gopher_repetition", "gopher_quality"} <= {row["step"] for row in dropped}


def test_rerun_resumes_without_duplicates(spark, tmp_path, sample_crawl):
    settings = load_settings()
    storage = Storage(settings.storage)
    inputs = [str(path) for path in sample_crawl.warc_paths]
    output = str(tmp_path / "out")
    first = run_filter(spark, inputs, output, settings)
    # Simulate a crash that lost one unit: its marker and output are gone.
    markers = storage.list(join(output, PROGRESS_DIR))
    storage.delete(markers[0].uri)
    second = run_filter(spark, inputs, output, settings)
    assert second["inputs_resumed"] == 1 and second["inputs_done"] == 2
    assert second["totals"] == first["totals"] and second["steps"].keys() == first["steps"].keys()
    assert len(list_doc_files(storage, output)) == 2
    assert len(read_docs(storage, output)) == first["totals"]["docs_out"]


def test_real_warcs_never_crash(spark, tmp_path, realdata):
    """Every real WARC of ../shared, malformed ones included: counted skips, never a crash."""
    settings = load_settings(overrides={"filter": {"language": {"languages": ["en", "de", "fr", "es"]}}})
    inputs = sorted(str(p) for p in (realdata / "warc").rglob("*") if p.is_file() and ".warc" in p.name and not p.name.endswith((".wat.gz", ".wet.gz")))
    stats = run_filter(spark, inputs, str(tmp_path / "out"), settings)
    assert not stats["inputs_failed"], stats["inputs_failed"]
    assert_funnel_consistent(stats)
    read = stats["steps"]["read_warc"]["dropped"]
    assert read.get("truncated_or_corrupt_file", 0) >= 1  # clipped.warc.gz
    assert stats["totals"]["docs_out"] >= 100  # realpages alone has hundreds of real English pages


def test_unwritable_output_is_one_line(spark, seaweed, sample_crawl):
    bad = load_settings(overrides={"storage": {**seaweed.model_dump(), "secret_access_key": "wrong", "max_attempts": 1}})
    from infra.storage import StorageError

    with pytest.raises(StorageError, match=r"^cannot write to s3://crawl2chat-test/x"):
        run_filter(spark, [str(sample_crawl.warc_paths[0])], "s3://crawl2chat-test/x", bad)
