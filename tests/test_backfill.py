"""Backfill's choices and records, deployment parameters, and the stack's bookkeeping, without servers.

The flows themselves run against a real stack in tests/test_service.py; here are the parts a
person gets wrong by hand: which snapshots a date range or a schedule picks, when a snapshot
counts as done, what a deployment may carry, which Prefect server a command talks to, and
the one-line errors of the service commands.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket

import psutil
import pytest

from flows.backfill import (
    check_record, fingerprint, pending_snapshots, read_record, record_snapshot, resolve_snapshots, select_snapshots,
)
from flows.cli import main
from flows.commands.service import prefect_server
from flows.deploy import check_parameters
from infra.seaweed import free_port
from infra.services import Stack
from infra.settings import SeaweedSettings, ServicesSettings, load_settings
from infra.storage import Storage
from tasks.readers.inputs import InputError

CRAWLS = ["CC-MAIN-2023-50", "CC-MAIN-2024-10", "CC-MAIN-2024-18", "CC-MAIN-2024-22", "CC-MAIN-2024-51"]


@pytest.fixture
def collinfo(tmp_path):
    """A crawl list as Common Crawl serves it (newest first), read through a file:// URL."""
    path = tmp_path / "collinfo.json"
    path.write_text(json.dumps([{"id": crawl, "name": crawl} for crawl in reversed(CRAWLS)] + [{"id": "junk"}]))
    return load_settings(overrides={"input": {"collinfo_url": path.as_uri()}})


def test_dates_pick_the_crawls_that_started_between_them():
    # CC-MAIN-2024-10 started in ISO week 10 of 2024 (Monday 2024-03-04), -18 on 2024-04-29.
    assert select_snapshots(CRAWLS, dt.date(2024, 3, 4), dt.date(2024, 4, 29)) == ["CC-MAIN-2024-10", "CC-MAIN-2024-18"]
    assert select_snapshots(CRAWLS, dt.date(2024, 3, 5), None) == ["CC-MAIN-2024-18", "CC-MAIN-2024-22", "CC-MAIN-2024-51"]
    assert select_snapshots(CRAWLS, None, dt.date(2023, 12, 31)) == ["CC-MAIN-2023-50"]
    with pytest.raises(InputError, match="after"):
        select_snapshots(CRAWLS, dt.date(2024, 5, 1), dt.date(2024, 1, 1))


def test_resolve_snapshots_from_ids_or_from_the_crawl_list(collinfo):
    assert resolve_snapshots(collinfo, ["CC-MAIN-2024-18", " CC-MAIN-2024-10", "CC-MAIN-2024-18"], None, None) == [
        "CC-MAIN-2024-10", "CC-MAIN-2024-18"]
    assert resolve_snapshots(collinfo, None, "2024-05-01", "2024-06-30") == ["CC-MAIN-2024-22"]
    for snapshots, since, until, message in (
        (["CC-MAIN-24-10"], None, None, "invalid snapshot id"),
        (["CC-MAIN-2024-10"], "2024-01-01", None, "not both"),
        (None, None, None, "no snapshots given"),
        (None, "2024-02-30", None, "invalid date"),
        (None, "2025-01-01", None, "no snapshot in"),
    ):
        with pytest.raises(InputError, match=message):
            resolve_snapshots(collinfo, snapshots, since, until)


def test_the_schedule_takes_crawls_newer_than_the_newest_done():
    assert pending_snapshots(CRAWLS, set()) == ["CC-MAIN-2024-51"]  # a first run: the newest only
    assert pending_snapshots(CRAWLS, {"CC-MAIN-2024-10"}) == ["CC-MAIN-2024-18", "CC-MAIN-2024-22", "CC-MAIN-2024-51"]
    assert pending_snapshots(CRAWLS, {"CC-MAIN-2023-50", "CC-MAIN-2024-51"}) == []  # backfilled gaps are not its job


def test_fingerprint_follows_the_data_settings_not_where_they_run():
    base = load_settings()
    moved = load_settings(overrides={"spark": {"master": "spark://cluster:7077"}, "storage": {"endpoint_url": "http://s3:9000"},
                                     "services": {"prefect_port": 4300}})
    assert fingerprint(base, 10) == fingerprint(moved, 10)
    assert fingerprint(base, 10) != fingerprint(base, 20)
    assert fingerprint(base, 10) != fingerprint(load_settings(overrides={"dedup": {"num_bands": 7}}), 10)


def test_the_record_keeps_every_snapshot_and_refuses_other_settings(tmp_path):
    storage, output = Storage(), str(tmp_path / "cc")
    assert read_record(storage, output) == {}
    record_snapshot(storage, output, "CC-MAIN-2024-18", {"fingerprint": "a", "documents": 2})
    record_snapshot(storage, output, "CC-MAIN-2024-10", {"fingerprint": "a", "documents": 1})
    record = read_record(storage, output)
    assert list(record) == ["CC-MAIN-2024-10", "CC-MAIN-2024-18"] and record["CC-MAIN-2024-18"]["documents"] == 2
    assert not list((tmp_path / "cc").glob("*.tmp-*"))  # written by rename: no half-written record
    check_record(record, ["CC-MAIN-2024-10", "CC-MAIN-2024-22"], "a", output)
    with pytest.raises(InputError, match="CC-MAIN-2024-10 in .* other settings"):
        check_record(record, ["CC-MAIN-2024-10"], "b", output)


def test_deployment_parameters_are_absolute_and_carry_no_secret(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checked = check_parameters({"output": "data/cc", "inputs": ["crawl/*.warc.gz", "s3://b/w", "https://x/y.warc.gz"],
                                "config_file": "run.yaml", "overrides": {"storage": {"endpoint_url": "http://s3:9000"}}})
    assert checked["output"] == str(tmp_path / "data" / "cc") and checked["config_file"] == str(tmp_path / "run.yaml")
    assert checked["inputs"] == [str(tmp_path / "crawl" / "*.warc.gz"), "s3://b/w", "https://x/y.warc.gz"]
    assert check_parameters({"output": "s3://b/cc"})["output"] == "s3://b/cc"
    with pytest.raises(ValueError, match="storage.secret_access_key is a credential"):
        check_parameters({"output": "s3://b/cc", "overrides": {"storage": {"secret_access_key": "hunter2"}}})


def test_service_commands_fail_in_one_line(tmp_path, capsys):
    state = ["--set", f"services.state_dir={tmp_path / 'state'}"]
    cases = [
        (["backfill", "--snapshots", "CC-MAIN-2024-10", "--from", "2024-01-01", "--output", str(tmp_path)], "not both"),
        (["backfill", "--from", "2024-13-01", "--output", str(tmp_path)], "invalid date"),
        (["backfill", "--output", str(tmp_path)], "no snapshots given"),
        (["deploy", "--output", "s3://b/cc", "--set", "storage.secret_access_key=hunter2", *state], "is a credential"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("crawl2chat: error:") and message in err and "\n" not in err, err
    assert "hunter2" not in err
    assert not (tmp_path / "state" / "run").exists()  # nothing was started on the way to an error


def _stack(tmp_path) -> Stack:
    services = ServicesSettings(state_dir=str(tmp_path / "state"), prefect_port=free_port(), gpu_worker=False,
                                cpu_worker_health_port=free_port())
    return Stack(services, SeaweedSettings(data_dir=str(tmp_path / "state" / "seaweedfs"), s3_port=free_port()))


def test_up_refuses_a_port_another_program_holds(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["up", "--set", f"services.state_dir={tmp_path / 'state'}", "--set", f"seaweed.s3_port={port}",
                "--set", f"services.prefect_port={free_port()}", "--set", f"services.cpu_worker_health_port={free_port()}"]
        assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert f"port {port}" in err and "seaweedfs" in err and "\n" not in err
    assert not list((tmp_path / "state" / "run").glob("*.json"))  # nothing left half-started


def test_status_of_a_stack_never_started(tmp_path, capsys):
    assert main(["status", "--set", f"services.state_dir={tmp_path / 'state'}", "--set", "services.gpu_worker=false"]) == 1
    out = capsys.readouterr().out
    assert "prefect-server  stopped" in out and "worker-process  stopped" in out


def test_a_pid_file_names_a_process_only_while_that_process_lives(tmp_path):
    stack = _stack(tmp_path)
    stack.run_dir.mkdir(parents=True)
    me = psutil.Process(os.getpid())
    since_boot = me.create_time() - psutil.boot_time()
    (stack.run_dir / "seaweedfs.json").write_text(json.dumps({"pid": me.pid, "created": since_boot, "started": 1}))
    assert stack.process_of("seaweedfs").pid == me.pid
    # The same pid, but a process started at another time: the pid was reused, it is not ours.
    (stack.run_dir / "seaweedfs.json").write_text(json.dumps({"pid": me.pid, "created": since_boot - 60, "started": 1}))
    assert stack.process_of("seaweedfs") is None
    assert stack.process_of("prefect-server") is None


def test_commands_report_to_the_server_prefect_api_url_names(tmp_path, monkeypatch):
    from prefect.settings import PREFECT_API_URL

    settings = load_settings(overrides={"services": {"state_dir": str(tmp_path / "state")}})
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    if PREFECT_API_URL.value():
        pytest.skip("a Prefect API is configured in this session's profile")
    with prefect_server(settings, ephemeral=True) as ui:
        assert ui is None  # Prefect's temporary server
    with prefect_server(settings, start=False) as ui:
        assert ui is None  # no stack running and not asked to start one
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    with prefect_server(settings) as ui:
        assert ui == "http://127.0.0.1:9" and PREFECT_API_URL.value() == "http://127.0.0.1:9/api"
    assert not (tmp_path / "state" / "run").exists()  # the user's server: nothing of ours started
