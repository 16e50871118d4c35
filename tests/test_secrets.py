"""Secrets and exposure, tried the way a user would: credentials never reach a flow parameter, a
log, an artifact, an exception, a stats file or Prefect's database; presigned URLs lose their
signature wherever they are stored; every service the project starts listens on loopback.

The data flow runs for real (Prefect test harness, local Spark, the SeaweedFS server with auth
on); afterwards everything the run wrote is searched for the test server's secret, byte for
byte: the output tree on S3, Prefect's SQLite database file itself (flow and task runs, states,
logs, artifacts, events, blocks), what Prefect's API returns, the captured logs and output, and
the exception of a run that failed on a wrong secret.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import logging
import threading
import traceback
import uuid
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from flows.credentials import CredentialsInParameters, run_settings
from infra.settings import StorageSettings
from infra.storage import Storage, join
from tasks.samples.crawl import generate_sample_crawl
from tests.conftest import seaweed_in_environment

pytestmark = [pytest.mark.slow]

SMALL = {"spark": {"master": "local[2]"}, "tokenizer": {"vocab_size": 1_000}}


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def prefect_database() -> list[Path]:
    """The harness's SQLite database and its write-ahead log: everything Prefect stored."""
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    path = Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split("///", 1)[1])
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


def prefect_api_records() -> str:
    """What Prefect's API hands any UI user: runs (parameters, states), logs, artifacts, events."""
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)
    with get_client(sync_client=True) as client:
        records = [
            *(run.model_dump(mode="json") for run in client.read_flow_runs()),
            *(run.model_dump(mode="json") for run in client.read_task_runs()),
            *(log.model_dump(mode="json") for log in client.read_logs()),
            *(artifact.model_dump(mode="json") for artifact in client.read_artifacts()),
        ]
        page = client.read_events(limit=50)  # the server's most per page
        while page is not None:
            records.extend(event.model_dump(mode="json") for event in page.events)
            page = client.read_events_page(page.next_page) if page.next_page else None
    return json.dumps(records)


@contextlib.contextmanager
def every_log_line():
    """Every log record of this process, formatted as a console would print it (tracebacks
    included), from the root logger and Prefect's own loggers (which do not propagate)."""
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    loggers = [logging.getLogger(), logging.getLogger("prefect")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(handler)
            logger.setLevel(level)


def leaks(secret: str, named_blobs: dict[str, bytes]) -> list[str]:
    return [name for name, blob in named_blobs.items() if secret.encode() in blob]


def everything_under(storage: Storage, root: str) -> dict[str, bytes]:
    return {entry.uri: storage.read_bytes(entry.uri) for entry in storage.list(root)}


def local_tree(root: Path) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for path in root.rglob("*") if path.is_file()}


# --- settings --------------------------------------------------------------------------------


def test_secret_settings_never_show_their_value(monkeypatch):
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_SESSION_TOKEN", f"token-{secret}")
    settings = run_settings()
    storage = settings.storage
    assert storage.secret_access_key.get_secret_value() == secret and storage.session_token is not None
    for shown in (repr(settings), str(storage), settings.model_dump_json(), json.dumps(storage.model_dump(mode="json"))):
        assert secret not in shown
    with pytest.raises(ValueError) as invalid:  # a validation error quotes its input: masked
        StorageSettings(secret_access_key=secret, max_attempts="many")
    assert secret not in str(invalid.value)


@pytest.mark.parametrize("field", ["secret_access_key", "access_key_id", "session_token"])
def test_credentials_in_flow_parameters_are_refused(field):
    with pytest.raises(CredentialsInParameters, match=f"storage.{field} is a credential") as refused:
        run_settings(overrides={"storage": {field: "x" * 20}})
    assert "\n" not in str(refused.value) and "x" * 20 not in str(refused.value)
    # everything else about storage is fine to set in parameters
    assert run_settings(overrides={"storage": {"endpoint_url": "http://127.0.0.1:1", "max_attempts": 2}}).storage.max_attempts == 2


def test_display_uri_drops_what_carries_credentials():
    from tasks.readers.inputs import display_uri

    signed = "https://user:pw@bucket.s3.amazonaws.com:443/crawl/a.warc.gz?X-Amz-Signature=abc&X-Amz-Credential=k#frag"
    assert display_uri(signed) == "https://bucket.s3.amazonaws.com:443/crawl/a.warc.gz"
    for unchanged in ("s3://bucket/a.warc.gz", "/data/crawl/a.warc.gz", "https://data.commoncrawl.org/crawl-data/x.warc.gz"):
        assert display_uri(unchanged) == unchanged


def test_cli_refuses_a_credential_before_prefect_sees_it(tmp_path, capsys):
    secret = f"cli-{uuid.uuid4().hex}"
    for argv in (
        ["filter", "--input", str(tmp_path), "--output", str(tmp_path / "o"), "--set", f"storage.secret_access_key={secret}"],
        ["dedup", "--input", str(tmp_path), "--output", str(tmp_path / "o"), "--set", f"storage.access_key_id={secret}"],
        ["serve", "--output", "s3://bucket/cc", "--set", f"storage.secret_access_key={secret}"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("crawl2chat: error: storage.") and "is a credential" in err and "\n" not in err
        assert secret not in err
    assert not (tmp_path / "o").exists()


# --- the data flow, searched for its secret --------------------------------------------------


@pytest.mark.spark
@pytest.mark.s3
def test_no_secret_in_anything_a_data_flow_run_wrote(prefect_server, spark, seaweed, s3_prefix, tmp_path, monkeypatch):
    from flows.crawl_to_tokens import crawl_to_docs, crawl_to_tokens

    secret = seaweed.secret_access_key.get_secret_value()
    crawl = generate_sample_crawl(tmp_path / "crawl", num_warcs=2, pages_per_warc=40, seed=11)
    inputs = [str(path) for path in crawl.warc_paths]
    seaweed_in_environment(monkeypatch, seaweed)
    output = join(s3_prefix, "run")
    with every_log_line() as log_lines:
        result = crawl_to_tokens(output=output, inputs=inputs, overrides=SMALL)
    assert result["tokenize"]["splits"] and not result["filter"]["inputs_failed"]

    # A failing run: a wrong secret of its own, which must not show up in the error either.
    wrong = f"wrong-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    with every_log_line() as failed_log_lines, pytest.raises(Exception) as failed:
        crawl_to_docs(output=join(s3_prefix, "denied"), inputs=inputs, overrides={**SMALL, "storage": {"max_attempts": 1}})
    error_text = "".join(traceback.format_exception(failed.value))
    assert "cannot write to" in error_text  # it did fail on the credential

    blobs = {
        **everything_under(Storage(seaweed), output),
        **local_tree(tmp_path),
        **{str(path): path.read_bytes() for path in prefect_database()},
        "prefect API records": prefect_api_records().encode(),
        "log lines of the run": log_lines.getvalue().encode(),
        "log lines of the failed run": failed_log_lines.getvalue().encode(),
        "exception of the failed run": error_text.encode(),
    }
    assert any(name.endswith("stats.json") for name in blobs) and any("manifest" in name for name in blobs)
    assert "filter funnel" in log_lines.getvalue() and "cannot write to" in failed_log_lines.getvalue()
    assert leaks(secret, blobs) == [] and leaks(wrong, blobs) == []
    assert b"crawl-to-tokens" in b"".join(Path(p).read_bytes() for p in map(str, prefect_database()))  # the runs are there


@pytest.mark.spark
@pytest.mark.s3
def test_credentials_from_a_prefect_secret_block(prefect_server, spark, seaweed, s3_prefix, tmp_path, monkeypatch):
    from prefect.blocks.system import Secret

    from flows.crawl_to_tokens import crawl_to_docs

    secret = seaweed.secret_access_key.get_secret_value()
    block = f"s3-credentials-{uuid.uuid4().hex[:8]}"
    Secret(value={"access_key_id": seaweed.access_key_id, "secret_access_key": secret}).save(block)
    monkeypatch.setenv("AWS_ENDPOINT_URL", seaweed.endpoint_url)  # no credential in the environment
    crawl = generate_sample_crawl(tmp_path / "crawl", num_warcs=1, pages_per_warc=20, seed=12)
    output = join(s3_prefix, "from-block")
    stats = crawl_to_docs(output=output, inputs=[str(p) for p in crawl.warc_paths],
                          overrides={**SMALL, "storage": {"secret_block": block}})
    assert stats["inputs_done"] == 1 and stats["totals"]["docs_out"] > 0
    blobs = {**everything_under(Storage(seaweed), output), "prefect API records": prefect_api_records().encode(),
             **{str(path): path.read_bytes() for path in prefect_database()}}
    assert leaks(secret, blobs) == []  # Prefect keeps block values encrypted; nothing else holds it
    with pytest.raises(ValueError, match="no Prefect Secret block named"):
        run_settings(overrides={"storage": {"secret_block": "no-such-block"}})


# --- presigned URLs --------------------------------------------------------------------------


class SignedHandler(http.server.BaseHTTPRequestHandler):
    """Serves files under `root` only to URLs that carry `signature`; breaks the first transfer
    halfway (so the reader logs a resume) and honours Range."""

    root: Path
    signature: str
    broken: set

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if f"X-Amz-Signature={self.signature}" not in query:
            self.send_error(403, "Signature required")
            return
        data = (self.root / path.lstrip("/")).read_bytes()
        start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-")) if self.headers["Range"] else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if path not in self.broken:
            self.broken.add(path)
            self.wfile.write(data[start : start + len(data) // 2])
            return
        self.wfile.write(data[start:])

    def log_message(self, *args) -> None:
        pass


@pytest.mark.spark
def test_presigned_url_signatures_are_never_stored(spark, tmp_path, caplog):
    from tasks.jobs.filter import run_filter
    from tasks.pipeline import StepStats
    from tasks.readers.inputs import display_uri, open_warc
    from tasks.readers.warc import iter_warc_documents

    caplog.set_level(logging.DEBUG)
    crawl = generate_sample_crawl(tmp_path / "served", num_warcs=1, pages_per_warc=20, seed=13)
    signature, wrong = uuid.uuid4().hex, uuid.uuid4().hex
    handler = type("Handler", (SignedHandler,), {"root": crawl.warc_paths[0].parent, "signature": signature, "broken": set()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/{crawl.warc_paths[0].name}"
    url = f"{base}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=KEY%2F20240101&X-Amz-Signature={signature}"
    output = tmp_path / "out"
    try:
        # In this process, where its log lines can be read: the first transfer breaks and resumes.
        stats = StepStats()
        with open_warc(url, Storage(), backoff_seconds=0.01) as stream:
            assert len(list(iter_warc_documents(stream, display_uri(url), "", stats))) > 0
        assert any("resuming at byte" in record.getMessage() for record in caplog.records)
        settings = run_settings(overrides={"spark": {"master": "local[2]"}})
        filtered = run_filter(spark, [url], str(output), settings)
        # Signed again (as a scheduler does each day): the same unit, resumed, not redone.
        again = run_filter(spark, [url.replace(signature, "0" * 32)], str(output), settings)
        denied = run_filter(spark, [url.replace(signature, wrong)], str(tmp_path / "denied"), settings)
    finally:
        server.shutdown()
    assert filtered["inputs_done"] == 1 and filtered["totals"]["docs_out"] > 0, filtered
    assert again["inputs_resumed"] == 1
    assert list(denied["inputs_failed"]) == [base] and "403" in denied["inputs_failed"][base]
    parts = [pq.read_table(path) for path in (output / "docs").glob("*.parquet")]
    assert {path for table in parts for path in table.column("warc_path").to_pylist()} == {base}
    blobs = {**local_tree(output), **local_tree(tmp_path / "denied"), "logs": "\n".join(r.getMessage() for r in caplog.records).encode(),
             "file names": " ".join(str(p) for p in tmp_path.rglob("*")).encode()}
    assert leaks(signature, blobs) == [] and leaks(wrong, blobs) == [] and leaks("X-Amz", blobs) == []


# --- listening sockets -----------------------------------------------------------------------


@pytest.mark.spark
@pytest.mark.s3
def test_every_service_started_listens_on_loopback(prefect_server, spark, seaweed):
    """This process and everything it started (Spark's JVM and Python workers, SeaweedFS, the
    Prefect server) listen on 127.0.0.1 only; Spark's web UI included."""
    spark.sparkContext.parallelize(range(4), 2).map(lambda x: x * 2).collect()  # Python workers up
    assert spark.sparkContext.uiWebUrl.startswith("http://127.0.0.1:")
    me = psutil.Process()
    listening = {}
    for process in [me, *me.children(recursive=True)]:
        try:
            sockets = [c for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            continue
        listening[f"{process.pid} {process.name()}"] = {c.laddr.ip for c in sockets}
    names = " ".join(listening)
    assert "java" in names and "weed" in names and any(ips for ips in listening.values())
    exposed = {name: ips for name, ips in listening.items() if ips - {"127.0.0.1", "::1", "::ffff:127.0.0.1"}}
    assert exposed == {}
