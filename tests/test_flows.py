"""The Prefect flows and the CLI, driven the way a user drives them.

The flow test runs the real crawl-to-tokens flow under Prefect's test harness (a real temporary
Prefect server on SQLite), on a generated crawl, with output on the real SeaweedFS server, and
then reads back what the Prefect UI would show: the flow run's state and its funnel artifacts.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import http.server
import json
import random
import subprocess
import sys
import threading

import pytest

from flows.cli import main, parse_overrides
from model.data import TokenStream
from infra.storage import Storage, join
from tasks.samples.crawl import generate_sample_crawl
from tasks.samples.text import TOPICS, EnglishWriter
from tests.conftest import seaweed_in_environment

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


async def _artifacts_of_latest_run(flow_name: str) -> tuple[str, dict[str, object]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter, ArtifactFilterFlowRunId, FlowFilter, FlowFilterName, FlowRunFilter, TaskRunFilter,
    )
    from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort

    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])), sort=FlowRunSort.START_TIME_DESC, limit=1
        )
        run = runs[0]
        # (every argument given: this server rejects the client's nulls for the optional ones)
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])),
            flow_run_filter=FlowRunFilter(), task_run_filter=TaskRunFilter(), sort=ArtifactSort.CREATED_DESC, limit=100,
        )
        return run.state_name, {artifact.key: artifact.data for artifact in artifacts}


@pytest.mark.spark
@pytest.mark.s3
def test_crawl_to_tokens_flow_on_seaweedfs(prefect_server, spark, seaweed, s3_prefix, tmp_path, monkeypatch):
    """The default run (`crawl2chat run`: the built-in sample crawl, default settings), with its
    output on object storage."""
    from flows.crawl_to_tokens import crawl_to_tokens, sample_inputs

    seaweed_in_environment(monkeypatch, seaweed)  # credentials never travel as flow parameters
    overrides = {"storage": {"max_attempts": 3, "backoff_seconds": 0.05}, "spark": {"master": "local[2]"}}
    output = join(s3_prefix, "run")
    result = crawl_to_tokens(output=output, inputs=sample_inputs(tmp_path / "crawl"), overrides=overrides)

    filtered, deduped, tokens = result["filter"], result["dedup"], result["tokenize"]
    assert filtered["totals"]["docs_out"] == deduped["documents_in"]
    assert deduped["documents_out"] < deduped["documents_in"]  # the crawl plants exact and near duplicates
    assert deduped["exact_duplicates"] > 0 and deduped["near_duplicates"] > 0
    assert not tokens["failed"]
    splits = tokens["splits"]
    assert sum(split["docs"] for split in splits.values()) == deduped["documents_out"]

    # The tokenizer learnt from this small corpus: trained on most of it (the vocabulary stops
    # where the text runs out of pairs, and says so), and it compresses English prose.
    training = tokens["tokenizer_training"]
    assert training["train_docs"] >= 0.85 * deduped["documents_out"] and training["heldout_docs"] > 0
    assert training["vocab_size_requested"] == 32_768 and 1_000 < training["vocab_size"] < 32_768
    assert training["bytes_per_token"] >= 3.0  # on the held-out pages of the run
    # A small run still gets a validation split.
    assert splits["val"]["docs"] > 0 and splits["val"]["tokens"] > 0

    # What the training half will read: the manifest's shards, from object storage.
    storage = Storage(seaweed)
    stream = TokenStream(join(output, "tokens"), split="train", storage=storage)
    tokenizer = stream.load_tokenizer()
    first = next(stream.documents())
    assert first[0] == tokenizer.bos_id and len(tokenizer.decode(first[1:].tolist())) > 200
    prose = "\n\n".join(EnglishWriter(TOPICS[0], random.Random(12345)).paragraphs(6))  # a page it never saw
    assert len(prose.encode()) / len(tokenizer.encode(prose)) >= 3.0
    val = list(TokenStream(join(output, "tokens"), split="val", storage=storage).documents())
    assert val and all(doc[0] == tokenizer.bos_id for doc in val)

    state, artifacts = asyncio.run(_artifacts_of_latest_run("crawl-to-tokens"))
    sub_state, sub_artifacts = asyncio.run(_artifacts_of_latest_run("crawl-to-docs"))  # the filtering subflow
    assert state == sub_state == "Completed"
    artifacts.update(sub_artifacts)
    assert {"filter-funnel", "filter-summary", "dedup-funnel", "tokenize-summary"} <= set(artifacts)
    assert "url_filter" in str(artifacts["filter-funnel"]) and "near_dedup" in str(artifacts["dedup-funnel"])


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.mark.spark
def test_cli_filter_the_latest_snapshot_over_http(prefect_server, spark, tmp_path, capsys):
    """`crawl2chat filter --snapshot latest` against a local stand-in for Common Crawl's servers:
    the newest crawl in collinfo.json is found, its warc.paths.gz read, its WARCs streamed."""
    snapshot = "CC-MAIN-2024-51"
    root = tmp_path / "commoncrawl"
    crawl = generate_sample_crawl(root / "crawl-data" / snapshot / "segments", num_warcs=3, pages_per_warc=20, seed=5)
    listing = "\n".join(path.relative_to(root).as_posix() for path in crawl.warc_paths) + "\n"
    (root / "crawl-data" / snapshot / "warc.paths.gz").write_bytes(gzip.compress(listing.encode()))
    crawls = [{"id": "CC-MAIN-2024-46", "name": "November 2024"}, {"id": snapshot, "name": "December 2024"}]
    (root / "collinfo.json").write_text(json.dumps(crawls))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        argv = ["filter", "--snapshot", "latest", "--max-warcs", "2", "--output", str(tmp_path / "out"),
                "--set", f"input.commoncrawl_base_url={base_url}", "--set", f"input.collinfo_url={base_url}/collinfo.json"]
        assert main(argv) == 0
        assert "== filter" in capsys.readouterr().out
        (root / "collinfo.json").write_text("[]")
        assert main(argv) == 2 and "lists no CC-MAIN snapshot" in capsys.readouterr().err
    finally:
        server.shutdown()
    stats = json.loads((tmp_path / "out" / snapshot / "filtered" / "stats.json").read_text())
    assert stats["inputs"] == stats["inputs_done"] == 2
    assert stats["totals"]["docs_out"] > 10


def test_cli_errors_are_one_line(tmp_path, capsys):
    cases = [
        (["filter", "--input", str(tmp_path / "none" / "*.warc.gz"), "--output", str(tmp_path / "o")], "no WARC files match"),
        (["filter", "--input", str(tmp_path / "missing.warc.gz"), "--output", str(tmp_path / "o")], "input not found"),
        (["run", "--snapshot", "CC-MAIN-24", "--output", str(tmp_path / "o")], "invalid snapshot id"),
        (["run", "--config", str(tmp_path / "absent.yaml"), "--output", str(tmp_path / "o")], "config file not found"),
        (["run", "--set", "spark.masterr=local", "--input", str(tmp_path), "--output", str(tmp_path / "o")], "masterr"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("crawl2chat: error:") and message in err and "\n" not in err, err


def test_serve_builds_a_scheduled_deployment():
    from flows.cli import build_parser
    from flows.commands.data import build_deployment

    args = build_parser().parse_args(
        ["serve", "--cron", "0 6 * * 1", "--snapshot", "latest", "--max-warcs", "50", "--output", "s3://bucket/cc",
         "--set", "dedup.per_snapshot=true"]
    )
    deployment = build_deployment(args)
    assert deployment.name == "crawl-to-tokens" and deployment.flow_name == "crawl-to-tokens"
    assert [schedule.schedule.cron for schedule in deployment.schedules] == ["0 6 * * 1"]
    assert deployment.parameters["snapshot"] == "latest" and deployment.parameters["max_warcs"] == 50
    assert deployment.parameters["overrides"] == {"dedup": {"per_snapshot": True}}


def test_overrides_parse_json_values():
    assert parse_overrides(['filter.language.languages=["en","de"]', "spark.master=local[4]", "dedup.num_bands=7"]) == {
        "filter": {"language": {"languages": ["en", "de"]}},
        "spark": {"master": "local[4]"},
        "dedup": {"num_bands": 7},
    }


def test_console_script_is_installed():
    """`crawl2chat --help` works as an installed command, not only as a module."""
    out = subprocess.run([sys.executable, "-m", "flows.cli", "--help"], capture_output=True, text=True, check=True)
    assert "crawl-to" not in out.stderr and "run" in out.stdout and "tokenize" in out.stdout
