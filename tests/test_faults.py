"""The fault suite: the data flow under the faults a real crawl meets, driven as a user drives it.

- SIGKILL of a real `crawl2chat run --data-only` process (its whole process group: driver, JVM, workers)
  mid-run, then a rerun: the output equals a clean run's, file for file (content checksums of
  every docs part, removal list, shard and the manifest); nothing duplicated, nothing missing.
- A real SeaweedFS server restarted while token shards are being written: the run completes,
  and its manifest lists exactly the shards on the store, every one readable.
- The same restart under an S3 WARC read: the reader resumes at the byte it reached.
- A real HTTP server that breaks every connection at 40% of the WARC and ignores Range: the
  unit fails (exit 1, the flow run Failed, the file listed; nothing counted as corrupt, nothing
  marked done), `--allow-partial` goes on and the manifest says what it lacks, and once the
  server recovers a plain rerun redoes the unit with every record present, then dedup and
  tokenize over the grown input.
- A second run on an output that a live run holds is refused in one line.

Prefect runs on a temporary local server (its test harness); runs in a subprocess talk to it.
RELIABILITY.md points at these tests, row by row.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows.cli import main
from infra.seaweed import SeaweedServer, free_port
from infra.settings import Settings, ShardSettings, StorageSettings, TokenizerSettings, load_settings
from infra.storage import Storage, join
from model.shards import Manifest
from model.tokenizer import BpeTokenizer
from tasks.formats.docs import docs_uri, documents_to_table, list_doc_files, write_table
from tasks.jobs.filter import run_filter
from tasks.jobs.tokenize import run_tokenize
from tasks.pipeline import Document, StepStats
from tasks.readers.inputs import open_warc
from tasks.readers.warc import iter_warc_documents
from tasks.samples.crawl import generate_sample_crawl
from tests.conftest import REALDATA, needs_realdata
from tests.test_tokenizer import synthetic_corpus

pytestmark = [pytest.mark.slow, pytest.mark.spark]

ROOT = Path(__file__).resolve().parents[1]
RUN_SETTINGS = [
    "--set", "tokenizer.vocab_size=1000", "--set", "shards.shard_tokens=3000", "--set", "spark.master=local[2]",
    "--set", "spark.shuffle_partitions=2",
    # A partial run keeps only the sample WARC's 17 documents (36 KB): enough for these 1,000 tokens.
    "--set", "tokenizer.min_train_bytes=10000",
]


@pytest.fixture(scope="module")
def prefect_api():
    """A temporary Prefect server; yields its API URL, for runs in subprocesses."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield PREFECT_API_URL.value()


def start_cli(argv: list[str], prefect_api: str, log_path: Path) -> subprocess.Popen:
    """`crawl2chat ...` as its own process group (so a SIGKILL takes the JVM and workers too)."""
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *argv], cwd=ROOT, env=env, start_new_session=True,
        stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
    )


def wait_for(condition, process: subprocess.Popen | None = None, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run ended (code {process.returncode}) before the moment the test waits for")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def error_lines(capsys) -> list[str]:
    """The CLI's own error lines (stderr also carries Prefect's run log)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("crawl2chat: error:")]


async def _latest_flow_run_state(flow_name: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])), sort=FlowRunSort.START_TIME_DESC, limit=1
        )
        return runs[0].state_name


# --- what an output holds ----------------------------------------------------------------------

# Files whose content holds timings, mtimes or paths of the run itself, not the data.
RUN_RECORDS = {"stats.json", "tokenizer_report.json", "_dedup_plan.json", "_progress_index.json"}


def table_digest(path: Path) -> str:
    rows = pq.read_table(path).to_pylist()
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()


def output_checksums(root: Path) -> dict[str, str]:
    """relative path -> content checksum for every committed file of a run's output."""
    sums = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if path.name in RUN_RECORDS or "/_progress/" in f"/{relative}" or relative.startswith("sample-crawl/"):
            continue
        if path.suffix == ".parquet":
            sums[relative] = table_digest(path)
        elif path.name == "manifest.json":
            manifest = json.loads(path.read_text())
            manifest.pop("created_at")
            sums[relative] = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
        else:
            sums[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return sums


def doc_ids(storage: Storage, stage: str) -> list[str]:
    return [i for uri in list_doc_files(storage, stage) for i in pq.read_table(uri, columns=["id"]).column("id").to_pylist()]


# --- SIGKILL mid-run ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crawl(tmp_path_factory):
    return generate_sample_crawl(tmp_path_factory.mktemp("crawl"), num_warcs=3, pages_per_warc=25, seed=11)


@pytest.fixture(scope="module")
def run_path(tmp_path_factory) -> Path:
    """Where both the clean run and the killed one write: unit names hash their input paths,
    and the inputs of dedup and tokenize lie inside the output, so the paths must be the same."""
    return tmp_path_factory.mktemp("kill") / "run"


def run_argv(crawl, output: Path) -> list[str]:
    return ["run", "--data-only", *(f"--input={p}" for p in crawl.warc_paths), "--output", str(output), *RUN_SETTINGS]


@pytest.fixture(scope="module")
def clean_run(prefect_api, spark, crawl, run_path) -> tuple[dict[str, str], dict[str, int]]:
    """The checksums and document counts of an uninterrupted run (its output is then removed)."""
    assert main(run_argv(crawl, run_path)) == 0
    storage = Storage()
    counts = {stage: len(doc_ids(storage, str(run_path / stage))) for stage in ("filtered", "deduped")}
    sums = output_checksums(run_path)
    shutil.rmtree(run_path)
    return sums, counts


KILL_POINTS = {
    # after the first WARC is filtered, with others still being read
    "filter": lambda out: len(list((out / "filtered" / "_progress").glob("*.json"))) >= 1,
    # as the first token shard lands
    "tokenize": lambda out: any((out / "tokens" / "train").glob("*.parquet")),
}


@pytest.mark.parametrize("moment", sorted(KILL_POINTS))
def test_sigkill_mid_run_then_rerun_equals_a_clean_run(prefect_api, spark, crawl, clean_run, run_path, tmp_path, moment):
    clean_sums, clean_counts = clean_run
    if run_path.exists():
        shutil.rmtree(run_path)
    argv = run_argv(crawl, run_path)
    process = start_cli(argv, prefect_api, tmp_path / "killed.log")
    try:
        wait_for(lambda: KILL_POINTS[moment](run_path), process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert (run_path / "_lease.json").exists()  # the killed run never released its lease

    assert main(argv) == 0  # the lease of a process that is gone is taken over at once
    assert output_checksums(run_path) == clean_sums
    storage = Storage()
    for stage in ("filtered", "deduped"):
        ids = doc_ids(storage, str(run_path / stage))
        assert len(ids) == len(set(ids)) == clean_counts[stage]
    assert not list(run_path.rglob("*.tmp-*")) and not list(run_path.rglob("_lease.json"))


# --- SeaweedFS restarts ------------------------------------------------------------------------


class RestartableSeaweed:
    """A SeaweedFS server of this module's own (restarting the session's would disturb others)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir, self.port = data_dir, free_port()
        self.access_key, self.secret_key = "crawl2chat-faults", uuid.uuid4().hex
        self.server = self._new().start()

    def _new(self) -> SeaweedServer:
        return SeaweedServer(self.data_dir, s3_port=self.port, access_key_id=self.access_key, secret_access_key=self.secret_key)

    def settings(self, **overrides) -> StorageSettings:
        return StorageSettings(
            endpoint_url=self.server.endpoint_url, region="us-east-1", access_key_id=self.access_key,
            secret_access_key=self.secret_key, max_attempts=8, backoff_seconds=0.3, **overrides,
        )

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server = self._new().start()


@pytest.fixture(scope="module")
def own_seaweed(tmp_path_factory):
    weed = RestartableSeaweed(tmp_path_factory.mktemp("seaweed-restarts"))
    yield weed
    weed.stop()


def test_seaweedfs_restart_during_shard_writes_completes_with_a_consistent_manifest(spark, own_seaweed, tmp_path):
    storage = Storage(own_seaweed.settings())
    prefix = f"s3://faults/{uuid.uuid4().hex[:8]}"
    storage.ensure_bucket(prefix)
    stage, output = str(tmp_path / "docs"), join(prefix, "tokens")
    texts: dict[str, str] = {}
    for part in range(4):
        corpus = synthetic_corpus(150, seed=part)
        docs = [Document(id=f"p{part}-{i}", url=f"https://example.com/{part}/{i}", text=text) for i, text in enumerate(corpus)]
        write_table(Storage(), docs_uri(stage, f"p{part}"), documents_to_table(docs), 16)
        texts.update({doc.id: doc.text for doc in docs})
    tokenizer_uri = str(tmp_path / "tokenizer.json")
    BpeTokenizer.train(list(texts.values())[:200], vocab_size=400).save(tokenizer_uri)
    settings = Settings(
        storage=own_seaweed.settings(),
        shards=ShardSettings(shard_tokens=1_500, row_group_docs=8, val_fraction=0.1),
        tokenizer=TokenizerSettings(vocab_size=400),
    )
    outcome: dict = {}
    job = threading.Thread(target=lambda: outcome.update(report=run_tokenize(spark, stage, output, settings, tokenizer_uri)))
    job.start()
    wait_for(lambda: bool(storage.list(join(output, "train"), ".parquet")), timeout=300)
    written_before = len(storage.list(output, ".parquet"))
    own_seaweed.stop()  # the store goes away with shards still to write ...
    time.sleep(1.0)
    own_seaweed.start()  # ... and comes back (same data, same port)
    job.join(timeout=400)
    report = outcome["report"]
    assert report["failed"] == {} and report["quarantined"] == {}

    manifest = Manifest.read(storage, output)
    listed = sorted(shard.path for info in manifest.splits.values() for shard in info.shards)
    stored = sorted(entry.uri[len(output) + 1 :] for entry in storage.list(output, ".parquet"))
    assert listed == stored and len(stored) > written_before  # shards were written across the restart
    seen: dict[str, str] = {}
    tokenizer = BpeTokenizer.load(tokenizer_uri)
    for split, info in manifest.splits.items():
        for shard in info.shards:
            with storage.open_input(join(output, shard.path)) as handle:
                table = pq.read_table(handle)
            assert table.num_rows == shard.n_docs and sum(table.column("n_tokens").to_pylist()) == shard.n_tokens
            for doc_id, tokens in zip(table.column("id").to_pylist(), table.column("tokens").to_pylist()):
                assert doc_id not in seen
                seen[doc_id] = tokenizer.decode(tokens[1:])
    assert seen == texts  # every document once, unchanged


@needs_realdata
def test_an_s3_warc_read_resumes_across_a_seaweedfs_restart(own_seaweed, caplog):
    data = (REALDATA / "warc" / "realpages.warc.gz").read_bytes()
    uri = f"s3://faults/{uuid.uuid4().hex[:8]}/realpages.warc.gz"
    storage = Storage(own_seaweed.settings(read_block_bytes=256 * 1024))
    storage.ensure_bucket(uri)
    storage.write_bytes(uri, data)
    local_stats, s3_stats = StepStats(), StepStats()
    with open(REALDATA / "warc" / "realpages.warc.gz", "rb") as stream:
        expected = [(doc.id, doc.html) for doc in iter_warc_documents(stream, "x", "", local_stats)]
    docs = []
    with open_warc(uri, storage) as stream:
        for doc in iter_warc_documents(stream, uri, "", s3_stats):
            if not docs:  # the store restarts under the reader, 40 blocks before the end
                own_seaweed.stop()
                threading.Timer(3.0, own_seaweed.start).start()  # longer than the SDK's own retries
            docs.append((doc.id, doc.html))
    assert docs == expected and s3_stats.dropped == local_stats.dropped == {}
    assert any("broke off at byte" in record.getMessage() for record in caplog.records)  # it did resume


# --- an HTTP server that breaks connections ----------------------------------------------------


class FlakyWarcServer:
    """Serves real WARCs over real HTTP (stdlib http.server in a thread) in one of three moods:
    'ok'; 'break': every answer is cut at 40% of the file and Range is ignored; 'slow': the body
    trickles out until `release` is set, then comes at full speed."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.mood, self.release = files, "ok", threading.Event()
        self.requests = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                data = owner.files.get(self.path.lstrip("/"))
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)  # never 206: Range is not honoured
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if owner.mood == "break":
                    self.wfile.write(data[: int(len(data) * 0.4)])
                    self.close_connection = True
                    return
                if owner.mood == "slow":  # 5 KB/s (never long silent: no read timeout) until released
                    position = 0
                    while position < len(data):
                        step = 64 * 1024 if owner.release.is_set() else 1024
                        self.wfile.write(data[position : position + step])
                        position += step
                        owner.release.wait(0.2)
                    return
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def warc_server(realdata):
    server = FlakyWarcServer({"realpages.warc.gz": (realdata / "warc" / "realpages.warc.gz").read_bytes()})
    yield server
    server.close()


def docs_by_id(storage: Storage, stage: str) -> dict[str, str]:
    rows = {}
    for uri in list_doc_files(storage, stage):
        table = pq.read_table(uri, columns=["id", "text", "warc_path"])
        rows.update({row["id"]: (row["text"], row["warc_path"]) for row in table.to_pylist()})
    return rows


def test_connections_broken_mid_warc_fail_the_unit_until_a_rerun_redoes_it(
    prefect_api, spark, warc_server, crawl, realdata, tmp_path, capsys
):
    url = warc_server.url("realpages.warc.gz")
    local_warc = str(crawl.warc_paths[0])
    output = tmp_path / "run"
    argv = ["run", "--data-only", "--input", url, "--input", local_warc, "--output", str(output), *RUN_SETTINGS]
    storage = Storage()
    warc_server.mood = "break"

    # 1. The read breaks off and cannot resume: the unit fails, the command exits 1 naming it,
    #    the flow run is Failed, and nothing goes on to dedup. Nothing is counted as corrupt.
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert f"crawl2chat: error: filter: 1 unit(s) failed: {url}: WarcReadError: reading {url} failed at byte" in error
    assert "cannot resume" in error and f"failed: {url}: " in error
    assert asyncio.run(_latest_flow_run_state("crawl-to-tokens")) == "Failed"
    filtered = json.loads((output / "filtered" / "stats.json").read_text())
    assert list(filtered["inputs_failed"]) == [url] and filtered["inputs_done"] == 1
    assert "truncated_or_corrupt_file" not in filtered["steps"]["read_warc"]["dropped"]
    assert len(list_doc_files(storage, str(output / "filtered"))) == 1  # no part, no marker for the URL
    assert not (output / "deduped").exists()

    # 2. --allow-partial goes on; every stage and the manifest record what they lack.
    assert main([*argv, "--allow-partial"]) == 0
    manifest = Manifest.read(storage, str(output / "tokens"))
    assert list(manifest.incomplete) == [url] and "WarcReadError" in manifest.incomplete[url]
    assert list(json.loads((output / "deduped" / "stats.json").read_text())["incomplete"]) == [url]
    partial_docs = manifest.splits["train"].n_docs + manifest.splits["val"].n_docs

    # 3. The server recovers: a plain rerun redoes the unit, with every record of the WARC, and
    #    redoes dedup and tokenize over the grown input.
    warc_server.mood = "ok"
    assert main(argv) == 0
    expected = run_filter(spark, [str(realdata / "warc" / "realpages.warc.gz")], str(tmp_path / "local"), load_settings())
    from_url = {doc_id: text for doc_id, (text, path) in docs_by_id(storage, str(output / "filtered")).items() if path == url}
    from_file = {doc_id: text for doc_id, (text, _) in docs_by_id(storage, str(tmp_path / "local")).items()}
    assert from_url == from_file and len(from_url) == expected["totals"]["docs_out"] > 150
    deduped = json.loads((output / "deduped" / "stats.json").read_text())
    assert deduped["incomplete"] == {} and deduped["files"] == 2 and deduped["files_redone"] == 1
    manifest = Manifest.read(storage, str(output / "tokens"))
    assert manifest.incomplete == {}
    assert manifest.splits["train"].n_docs + manifest.splits["val"].n_docs == deduped["documents_out"] > partial_docs

    # 4. The same output under other settings is refused in one line (exit 2).
    assert main([*argv, "--set", "filter.gopher_quality.min_doc_words=40"]) == 2
    assert error_lines(capsys) == [
        f"crawl2chat: error: {output}/filtered was made with other settings "
        "(filter.gopher_quality.min_doc_words: 50 -> 40); use a fresh output, or --force to redo it"
    ]


# --- a second run on the same output -----------------------------------------------------------


def test_a_second_run_on_the_same_output_is_refused(prefect_api, spark, warc_server, tmp_path, capsys):
    warc_server.mood = "slow"  # keeps the first run busy (and its lease held) until released
    output = tmp_path / "out"
    argv = ["filter", "--input", warc_server.url("realpages.warc.gz"), "--output", str(output), "--set", "spark.master=local[1]"]
    first = start_cli(argv, prefect_api, tmp_path / "first.log")
    try:
        wait_for(lambda: (output / "filtered" / "_lease.json").exists() and warc_server.requests > 0, first)
        assert main(argv) == 2
        [error] = error_lines(capsys)
        assert error.startswith(f"crawl2chat: error: {output}/filtered is in use by another run (owner ")
        assert f":{first.pid}, filter, lease until " in error
    finally:
        warc_server.release.set()
    assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()[-3000:]
    assert json.loads((output / "filtered" / "stats.json").read_text())["inputs_done"] == 1
