"""The local stack as a user runs it: real processes on loopback, driven through the CLI and REST.

One stack for the module (`crawl2chat up --spark`'s machinery on free ports, state in a tmp
dir): a `prefect server` on SQLite, SeaweedFS with auth, a process-pool worker, and a Spark
standalone master and worker started from the pyspark installation. Then:

- `crawl2chat deploy`, and runs of crawl-to-tokens/on-demand created over the REST API and
  executed by the worker: the first is killed (SIGKILL to its flow-run process and everything
  below it) in the middle of the filter stage, the second resumes it and completes with its
  artifacts, the third finds everything committed and rewrites no data file;
- `crawl2chat run` on spark://127.0.0.1 gives the same documents, removals and token shards as
  those runs on local[1];
- `crawl2chat backfill --from/--to --dedup-across` over a local stand-in for Common Crawl;
- `up` again keeps what runs; `down` leaves no process and no open port behind.

Every test tears down what it started, the fixture the stack, even on failure.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from infra.seaweed import free_port, port_open
from infra.services import Stack
from infra.settings import SeaweedSettings, ServicesSettings, StorageSettings
from infra.storage import Storage, join
from model.tokenizer import BpeTokenizer
from tasks.samples.crawl import generate_sample_crawl

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[1]
# Tiny, the same on every master; the backfill's snapshots hold a few tens of KB of text each.
FAST = ["--set", "tokenizer.vocab_size=300", "--set", "tokenizer.min_train_bytes=5000", "--set", "spark.shuffle_partitions=2"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    state = tmp_path_factory.mktemp("stack")
    services = ServicesSettings(
        state_dir=str(state), prefect_port=free_port(), cpu_worker_health_port=free_port(), gpu_worker=False,
        worker_poll_seconds=1, spark_master_port=free_port(), spark_master_ui_port=free_port(),
        spark_worker_ui_port=free_port(), spark_worker_cores=2, spark_worker_memory="1g",
        start_timeout_seconds=300, stop_timeout_seconds=15,
    )
    stack = Stack(services, SeaweedSettings(data_dir=str(state / "seaweedfs"), s3_port=free_port()))
    try:
        started = time.monotonic()
        stack.up(spark=True)
        print(f"\nstack up in {time.monotonic() - started:.1f} s")
        yield stack
    finally:
        stack.down()


@pytest.fixture
def use_stack(stack, monkeypatch):
    """Point the CLI at the stack the way a user does: PREFECT_API_URL (as in stack.env)."""
    monkeypatch.setenv("PREFECT_API_URL", stack.api_url)
    return stack


def storage_of(stack: Stack) -> Storage:
    env = stack.client_env(spark=False)
    return Storage(StorageSettings(endpoint_url=env["AWS_ENDPOINT_URL"], access_key_id=env["AWS_ACCESS_KEY_ID"],
                                   secret_access_key=env["AWS_SECRET_ACCESS_KEY"], max_attempts=3, backoff_seconds=0.05))


def rest(stack: Stack, method: str, path: str, body: object = None) -> object:
    """One call to the Prefect REST API, retried on 503 as Prefect's own client does (a busy
    SQLite database answers "try again")."""
    request = urllib.request.Request(
        stack.api_url + path, method=method, headers={"content-type": "application/json"},
        data=None if body is None else json.dumps(body).encode(),
    )
    for attempt in range(6):
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            if error.code != 503 or attempt == 5:
                raise
            time.sleep(0.5 * 2**attempt)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def finished(stack: Stack, run_id: str, timeout: float = 400) -> dict:
    def final():
        run = rest(stack, "GET", f"/flow_runs/{run_id}")
        return run if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    return wait_for(final, timeout, f"flow run {run_id}", interval=1)


def run_artifacts(stack: Stack, run_id: str) -> dict[str, object]:
    """The artifacts of a flow run and its subflows, by key, as the UI lists them."""
    children = rest(stack, "POST", "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}})
    ids = [run_id] + [child["id"] for child in children]
    artifacts = rest(stack, "POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": ids}}})
    return {artifact["key"]: artifact["data"] for artifact in artifacts if artifact["key"]}


def checksums(storage: Storage, prefix: str) -> dict[str, str]:
    return {entry.uri[len(prefix):]: hashlib.sha256(storage.read_bytes(entry.uri)).hexdigest() for entry in storage.list(prefix)}


@pytest.fixture(scope="module")
def deployed(stack, tmp_path_factory):
    """`crawl2chat deploy`, then crawl-to-tokens/on-demand three times through the worker, on
    one crawl and one output (S3 on the stack): killed mid-filter, resumed, rerun. Returns
    what each step left, for the tests below to judge."""
    os.environ["PREFECT_API_URL"] = stack.api_url
    try:
        return _deploy_and_run(stack, tmp_path_factory.mktemp("deployed"))
    finally:
        del os.environ["PREFECT_API_URL"]


def _deploy_and_run(stack: Stack, tmp_path: Path) -> dict:
    storage = storage_of(stack)
    output = f"s3://crawl2chat/{uuid.uuid4().hex[:8]}"
    crawl = generate_sample_crawl(tmp_path / "crawl", num_warcs=3, pages_per_warc=16, seed=7)
    seen: dict = {"output": output, "crawl": str(tmp_path / "crawl"), "seconds": {}}
    # local[1]: units one after another, so there is a moment with one WARC done and two to go.
    seen["deploy_exit"] = main(["deploy", "--output", output, "--no-schedule", *FAST, "--set", "spark.master=local[1]"])
    deployment = rest(stack, "GET", "/deployments/name/crawl-to-tokens/on-demand")
    seen["deployment"] = deployment
    seen["deployments"] = {d["name"]: d for d in rest(stack, "POST", "/deployments/filter", {})}

    def run(label: str, kill_after_first_unit: bool = False) -> dict:
        started = time.monotonic()
        flow_run = rest(stack, "POST", f"/deployments/{deployment['id']}/create_flow_run",
                        {"parameters": {"inputs": [seen["crawl"]]}})
        if kill_after_first_unit:
            # The flow-run process the worker started (known before the first unit ends, so the
            # kill follows that unit's marker closely), with Spark's JVM and workers below it.
            pid = wait_for(lambda: rest(stack, "GET", f"/flow_runs/{flow_run['id']}")["infrastructure_pid"], 300,
                           "the flow-run process", interval=0.5)
            engine = psutil.Process(int(str(pid).rsplit(":", 1)[-1]))
            markers = join(output, "filtered", "_progress")
            wait_for(lambda: storage.list(markers), 300, "the first filtered WARC", interval=0.1)
            for process in [engine, *engine.children(recursive=True)]:
                try:
                    process.send_signal(signal.SIGKILL)
                except psutil.NoSuchProcess:
                    pass
            seen["units_done_at_kill"] = len(storage.list(markers))
            seen["filter_stats_at_kill"] = storage.exists(join(output, "filtered", "stats.json"))
        final = finished(stack, flow_run["id"])
        seen["seconds"][label] = round(time.monotonic() - started, 1)
        print(f"\n{label} run: {final['state']['type']} in {seen['seconds'][label]} s")
        return final

    seen["killed"] = run("killed", kill_after_first_unit=True)
    seen["resumed"] = run("resumed")
    seen["resumed_filter_stats"] = json.loads(storage.read_text(join(output, "filtered", "stats.json")))
    seen["artifacts"] = run_artifacts(stack, seen["resumed"]["id"])
    seen["files_before"] = checksums(storage, output)
    seen["manifest_before"] = json.loads(storage.read_text(join(output, "tokens", "manifest.json")))
    seen["rerun"] = run("rerun")
    seen["files_after"] = checksums(storage, output)
    seen["rerun_filter_stats"] = json.loads(storage.read_text(join(output, "filtered", "stats.json")))
    seen["manifest_after"] = json.loads(storage.read_text(join(output, "tokens", "manifest.json")))
    return seen


def test_deploy_puts_the_deployments_in_their_pools(deployed, stack):
    assert deployed["deploy_exit"] == 0
    assert set(deployed["deployments"]) >= {"scheduled", "backfill", "on-demand"}
    pools = {name: d["work_pool_name"] for name, d in deployed["deployments"].items()}
    assert {pools[name] for name in ("scheduled", "backfill", "on-demand")} == {stack.settings.cpu_pool}
    assert {pools[name] for name in ("stages", "end-to-end")} == {stack.settings.gpu_pool}  # train, crawl-to-chat
    assert deployed["deployment"]["entrypoint"] == "flows.crawl_to_tokens.crawl_to_tokens"
    assert deployed["deployment"]["parameters"]["output"] == deployed["output"]


def test_a_run_killed_mid_stage_resumes_through_the_worker(deployed):
    assert deployed["killed"]["state"]["type"] == "CRASHED"
    assert 1 <= deployed["units_done_at_kill"] < 3 and not deployed["filter_stats_at_kill"]  # killed inside filter
    assert deployed["resumed"]["state"]["type"] == "COMPLETED"
    stats = deployed["resumed_filter_stats"]
    assert stats["inputs_done"] == 3 and stats["inputs_resumed"] >= deployed["units_done_at_kill"]
    assert not stats["inputs_failed"]
    artifacts = deployed["artifacts"]  # what the run's page in the UI shows, read over REST
    assert {"filter-funnel", "filter-summary", "dedup-funnel", "dedup-summary", "tokenize-summary"} <= set(artifacts)
    assert "near_dedup" in str(artifacts["dedup-funnel"]) and "train_tokens" in str(artifacts["tokenize-summary"])


def test_a_rerun_skips_committed_work_and_rewrites_no_data(deployed):
    assert deployed["rerun"]["state"]["type"] == "COMPLETED"
    before, after = deployed["files_before"], deployed["files_after"]
    assert set(after) == set(before)  # nothing added, nothing duplicated
    rewritten = {path for path in before if after[path] != before[path]}
    # Only the rerun's own records: filter's and dedup's stats (their resume counts) and the
    # manifest's time.
    assert rewritten <= {"/filtered/stats.json", "/deduped/stats.json", "/tokens/manifest.json"}, rewritten
    assert deployed["rerun_filter_stats"]["inputs_resumed"] == 3
    assert {**deployed["manifest_after"], "created_at": None} == {**deployed["manifest_before"], "created_at": None}


def _cli(stack: Stack, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The CLI in its own process (one Spark driver per process), pointed at the stack."""
    env = {**os.environ, "PREFECT_API_URL": stack.api_url, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _rows(storage: Storage, folder: str, subfolder: str, key: str = "id") -> list[dict]:
    """Every row of the Parquet files under folder/subfolder, in one order whatever the file names."""
    rows = []
    for entry in storage.list(join(folder, subfolder), ".parquet"):
        with storage.open_input(entry.uri) as handle:
            rows += pq.read_table(handle).to_pylist()
    return sorted(rows, key=lambda row: (row[key], json.dumps(row, sort_keys=True, default=str)))


def test_data_flow_on_spark_standalone_matches_local(stack, deployed, tmp_path):
    """The same crawl and settings as the deployed runs (local[1]), now on spark://127.0.0.1."""
    storage, local = storage_of(stack), deployed["output"]
    started = time.monotonic()
    cluster = str(tmp_path / "cluster")
    done = _cli(stack, "run", "--data-only", "--input", deployed["crawl"], "--output", cluster,
                "--set", f"spark.master={stack.spark_master_url}", *FAST)
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"\non {stack.spark_master_url}: {time.monotonic() - started:.1f} s")
    master = json.loads(urllib.request.urlopen(
        f"http://{stack.settings.host}:{stack.settings.spark_master_ui_port}/json/", timeout=5).read())
    assert [app["name"] for app in master["completedapps"] + master["activeapps"]] == ["crawl2chat"]  # it ran there

    for stage in ("filtered/docs", "deduped/docs", "deduped/removed"):
        assert _rows(storage, cluster, stage) == _rows(storage, local, stage) != []
    on_cluster = json.loads((tmp_path / "cluster" / "tokens" / "manifest.json").read_text())
    on_local = deployed["manifest_after"]
    for key in ("dtype", "source_snapshots"):
        assert on_cluster[key] == on_local[key]
    # Each run trains its tokenizer on the driver, from its documents in the order their parts are
    # listed (a known difference between these two runs: see the closing note of issue 11), so
    # the shards are compared as what they hold: every document once, in the same split, with the
    # same text once decoded by its own run's tokenizer.
    tokenizers = {run: BpeTokenizer.load(join(run, "tokens", "tokenizer.json"), storage) for run in (cluster, local)}
    for split in on_local["splits"]:
        assert on_cluster["splits"][split]["n_docs"] == on_local["splits"][split]["n_docs"]
        decoded = {
            run: sorted((row["id"], tokenizers[run].decode(row["tokens"])) for row in _rows(storage, run, f"tokens/{split}"))
            for run in (cluster, local)
        }
        assert decoded[cluster] == decoded[local] != []


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _common_crawl_stand_in(root: Path, crawls: dict[str, list[tuple[int, int]]]) -> None:
    """collinfo.json and, per snapshot, WARCs made from (seed, pages) and their warc.paths.gz."""
    root.mkdir(parents=True)
    (root / "collinfo.json").write_text(json.dumps([{"id": snapshot} for snapshot in sorted(crawls, reverse=True)]))
    for snapshot, warcs in crawls.items():
        listing = []
        for index, (seed, pages) in enumerate(warcs):
            made = generate_sample_crawl(root / "tmp" / f"{snapshot}-{index}", num_warcs=1, pages_per_warc=pages,
                                         seed=seed, snapshot=snapshot).warc_paths[0]
            target = root / "crawl-data" / snapshot / "segments" / f"{snapshot}-{index:05d}.warc.gz"
            target.parent.mkdir(parents=True, exist_ok=True)
            made.rename(target)
            listing.append(target.relative_to(root).as_posix())
        (root / "crawl-data" / snapshot / "warc.paths.gz").write_bytes(gzip.compress("\n".join(listing).encode()))


def test_backfill_by_dates_dedups_across_snapshots_and_skips_done_ones(use_stack, tmp_path, capsys):
    root = tmp_path / "commoncrawl"
    # The later crawl fetched the earlier one's pages again (same seed), and new ones.
    _common_crawl_stand_in(root, {"CC-MAIN-2024-10": [(11, 20)], "CC-MAIN-2024-18": [(11, 20), (12, 20)]})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    output = tmp_path / "cc"
    argv = ["backfill", "--from", "2024-03-01", "--to", "2024-05-31", "--output", str(output), "--dedup-across", *FAST,
            "--set", f"input.commoncrawl_base_url={base}", "--set", f"input.collinfo_url={base}/collinfo.json"]
    try:
        started = time.monotonic()
        assert main(argv) == 0
        print(f"\nbackfill of 2 snapshots: {time.monotonic() - started:.1f} s")
        assert "CC-MAIN-2024-10, CC-MAIN-2024-18" in capsys.readouterr().out
        record = json.loads((output / "_snapshots.json").read_text())["snapshots"]
        first, later = record["CC-MAIN-2024-10"], record["CC-MAIN-2024-18"]
        assert first["index_duplicates"] == 0 and later["index_duplicates"] > 0
        assert first["documents"] > 0 and later["documents"] > 0
        for snapshot in record:
            assert (output / snapshot / "tokens" / "manifest.json").exists()
            assert json.loads((output / snapshot / "tokens" / "manifest.json").read_text())["source_snapshots"] == [snapshot]
        # What the later one kept is not what the earlier one had already kept.
        earlier_ids = {row["id"] for row in _rows(Storage(), str(output / "CC-MAIN-2024-10"), "deduped/docs")}
        later_ids = {row["id"] for row in _rows(Storage(), str(output / "CC-MAIN-2024-18"), "deduped/docs")}
        assert later_ids and not earlier_ids & later_ids

        started = time.monotonic()
        assert main(["backfill", "--snapshots", "CC-MAIN-2024-18,CC-MAIN-2024-10", *argv[5:]]) == 0
        assert capsys.readouterr().out.count("already done") == 2
        assert json.loads((output / "_snapshots.json").read_text())["snapshots"] == record
        print(f"backfill again: {time.monotonic() - started:.1f} s")
        assert main([*argv, "--set", "dedup.num_bands=7"]) == 2  # other settings: refused, not mixed
        assert "made with other settings" in capsys.readouterr().err
    finally:
        server.shutdown()


def test_up_again_keeps_the_stack_and_down_stops_all_of_it(stack):
    alive = {name: stack.process_of(name) for name in stack.recorded()}
    assert set(alive) == {"seaweedfs", "prefect-server", "spark-master", "spark-worker", "worker-process"}
    assert all(alive.values()), f"not running any more: {[name for name, process in alive.items() if not process]}"
    recorded = {name: process.pid for name, process in alive.items()}
    started = time.monotonic()
    states = stack.up(spark=True)
    assert time.monotonic() - started < 10
    assert {state.name: state.pid for state in states} == recorded
    assert all(state.state == "running" for state in states)
    processes = [psutil.Process(pid) for pid in recorded.values()]
    processes += [child for process in processes for child in process.children(recursive=True)]
    ports = [stack.settings.prefect_port, stack.seaweed.s3_port, stack.settings.spark_master_port]

    assert sorted(stack.down()) == sorted(recorded)
    assert not [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not [port for port in ports if port_open(port, stack.settings.host)]
    assert all(state.state == "stopped" for state in stack.status())
