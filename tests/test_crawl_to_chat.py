"""Crawl to chat model, driven as a user drives it: the main command, the train flow, the UI's view.

Under Prefect's test harness (a real temporary server on SQLite), with tiny model settings:
- `crawl2chat run` (the main command) on the generated sample crawl runs crawl-to-chat end to
  end: the data flow, the chat data, pretraining, the report card; the run, its subflows, its
  progress and table artifacts and the report card (plots inline) are read back over the API;
  `crawl2chat chat` talks to the model it made;
- a rerun skips every finished training stage and rewrites none of its files; other settings
  are refused in one line unless `--force`, which retrains;
- a stage whose process is killed mid-way resumes from its checkpoint (the task's retry), while
  its progress artifact, read over the API as it trains, moves;
- a 2-process torchrun (gloo) stage inside the train flow.
Stages wired by CLI name whose command this installation lacks are refused before anything runs.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from flows.cli import main
from flows.stages import STAGES, Stage, StageError, check_commands, installed_commands, pipeline
from infra.storage import Storage, join
from model.checkpoint import latest_pointer, load_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.spark]

TINY = {
    "model.n_layer": 1, "model.n_head": 2, "model.n_kv_head": 1, "model.n_embd": 32, "model.seq_len": 64,
    "train.batch_size": 4, "train.total_batch_tokens": None, "train.max_steps": 12, "train.warmup_steps": 2, "train.eval_every": 6,
    "train.checkpoint_every": 6, "train.log_every": 2, "train.eval_tokens": 1024, "train.sample_tokens": 8,
    "train.lr": 0.01, "tokenizer.vocab_size": 512, "spark.shuffle_partitions": 2,
}


def sets(values: dict, **more) -> list[str]:
    return [arg for key, value in {**values, **more}.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    previous = os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"  # offline: no telemetry attempts
    try:
        with prefect_test_harness(server_startup_timeout=180):
            yield
    finally:
        if previous is None:
            del os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"]
        else:
            os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = previous


def flow_runs(name: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])), sort=FlowRunSort.START_TIME_DESC)


def artifacts_of(run_ids: list) -> dict[str, object]:
    """The artifacts of these flow runs by key (the newest of a key), as the UI lists them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, TaskRunFilter
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=run_ids)),
                                      flow_run_filter=FlowRunFilter(), task_run_filter=TaskRunFilter(),
                                      sort=ArtifactSort.CREATED_DESC, limit=200)
    by_key: dict[str, object] = {}
    for artifact in found:
        by_key.setdefault(artifact.key, artifact)
    return by_key


def checksums(root: Path) -> dict[str, tuple[str, float]]:
    return {str(path.relative_to(root)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime)
            for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def sample_run(harness, tmp_path_factory):
    """`crawl2chat run --until pretrain` on the generated sample crawl, tiny settings."""
    output = tmp_path_factory.mktemp("run") / "run"
    started = time.monotonic()
    code = main(["run", "--output", str(output), "--until", "pretrain", *sets(TINY)])
    return {"output": output, "code": code, "seconds": time.monotonic() - started}


def test_the_main_command_runs_crawl_to_chat_end_to_end(sample_run, capsys):
    output = sample_run["output"]
    assert sample_run["code"] == 0
    print(f"\ncrawl2chat run (sample crawl, tiny pretraining): {sample_run['seconds']:.0f} s")
    (run,) = flow_runs("crawl-to-chat")[:1]
    assert run.state_name == "Completed"
    children = {name: flow_runs(name)[0] for name in ("crawl-to-tokens", "crawl-to-docs", "train")}
    assert all(child.state_name == "Completed" for child in children.values())
    artifacts = artifacts_of([run.id, *(child.id for child in children.values())])

    # Progress artifacts ended full; the tables hold the funnels and the logged steps.
    for key in ("filter-progress", "dedup-progress", "tokenize-progress", "pretrain-progress"):
        assert artifacts[key].type == "progress" and artifacts[key].data == 100.0, key
    assert "of 2" in artifacts["filter-progress"].description  # WARC files done of total
    assert "url_filter" in str(artifacts["filter-funnel"].data) and "near_dedup" in str(artifacts["dedup-funnel"].data)
    steps = [row["step"] for row in json.loads(artifacts["pretrain-metrics"].data)]
    assert steps[0] == 0 and steps[-1] == TINY["train.max_steps"]

    # The report card: funnel, tokens, training with its curves inline, samples, links.
    card = artifacts["report-card"].data
    for heading in ("## Data funnel", "## Tokens", "## Training", "## Sample generations", "## Artifacts of this run"):
        assert heading in card, heading
    images = re.findall(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", card)
    assert len(images) == 2 and all(base64.b64decode(image).startswith(b"\x89PNG") for image in images)
    assert f"/artifacts/artifact/{artifacts['pretrain-metrics'].id}" in card
    report = output / "report"
    assert sorted(p.name for p in report.iterdir()) == ["curves-pretrain.png", "data-funnel.png", "report.md"]
    assert "(curves-pretrain.png)" in (report / "report.md").read_text()

    record = json.loads((output / "pretrain" / "stage.json").read_text())
    assert record["status"] == "done" and record["attempts"] == 1 and len(record["fingerprint"]) == 16
    assert latest_pointer(Storage(), str(output / "pretrain"))["final"]


def test_the_run_ends_with_a_model_to_talk_to(sample_run, capsys):
    output = sample_run["output"]
    capsys.readouterr()
    assert main(["chat", "--checkpoint", str(output / "pretrain"), "--prompt", "Hello!", "--max-tokens", "6",
                 "--temperature", "0"]) == 0
    assert capsys.readouterr().out.strip()


def test_a_rerun_skips_every_finished_stage_and_writes_nothing(sample_run, capsys):
    output = sample_run["output"]
    before = checksums(output / "pretrain")
    report_before = checksums(output / "report")
    card_before = (output / "report" / "report.md").read_text()
    assert "| pretrain | trained |" in card_before
    capsys.readouterr()
    assert main(["run", "--output", str(output), "--until", "pretrain", *sets(TINY)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"pretrain\s+skipped\s+12", out), out
    assert checksums(output / "pretrain") == before  # same bytes, not even rewritten
    after = checksums(output / "report")
    assert after.keys() == report_before.keys()
    assert all(after[name] == report_before[name] for name in after if name.endswith(".png"))  # not redrawn
    # The card says what this run did: the same card, with pretraining skipped instead of trained.
    assert card_before.replace("| pretrain | trained |", "| pretrain | skipped |") == (output / "report" / "report.md").read_text()


def test_other_settings_are_refused_in_one_line_unless_forced(sample_run, capsys):
    output = str(sample_run["output"])
    capsys.readouterr()
    assert main(["train", "--output", output, "--until", "pretrain", *sets(TINY, **{"train.max_steps": 8})]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "settings.train.max_steps 12 -> 8" in err and "--force" in err, err

    assert main(["train", "--output", output, "--until", "pretrain", "--force", *sets(TINY, **{"train.max_steps": 8})]) == 0
    assert latest_pointer(Storage(), join(output, "pretrain"))["step"] == 8
    assert json.loads(Path(output, "pretrain", "stage.json").read_text())["made_from"]["settings"]["train"]["max_steps"] == 8


def test_stages_without_their_command_are_refused_before_anything_runs(sample_run, capsys):
    with pytest.raises(StageError, match=r"stage orpo needs the `crawl2chat orpo` command.*--until pretrain"):
        check_commands([STAGES["pretrain"], Stage("orpo", "orpo", checkpoints={"--policy": "pretrain"})])
    with pytest.raises(StageError, match="not a stage of the dpo pipeline"):
        pipeline("dpo", until="ppo")
    absent = [stage.name for stage in pipeline("ppo") if stage.command not in installed_commands()]
    if not absent:
        pytest.skip("every stage's command is installed")
    capsys.readouterr()
    assert main(["train", "--output", str(sample_run["output"]), *sets(TINY)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"stage {absent[0]} needs the `crawl2chat {absent[0]}` command" in err and "\n" not in err


def test_spark_jobs_report_units_done_while_they_run(spark, tmp_path):
    """The progress callback the data stages turn into their progress artifacts: units an earlier
    run finished count from the start, and the count moves while the job runs."""
    from infra.settings import StorageSettings
    from tasks.jobs.units import run_units

    inputs = []
    for i in range(4):
        (tmp_path / f"unit-{i}.txt").write_text(str(i))
        inputs.append(str(tmp_path / f"unit-{i}.txt"))

    seen_midway = tmp_path / "seen-midway"

    def work(uri: str, key: str) -> dict:
        # The last unit finishes only once the driver has reported a count between start and end
        # (or after 60 s, and then the test fails): the job is still running when progress moves.
        if uri.endswith("unit-3.txt"):
            deadline = time.monotonic() + 60
            while not seen_midway.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return {"input": uri}

    def progress(done: int, total: int) -> None:
        calls.append((done, total))
        if 1 < done < total:
            seen_midway.touch()

    output = str(tmp_path / "out")
    run_units(spark, inputs[:1], work, output, StorageSettings(), shaping={})
    calls: list[tuple[int, int]] = []
    result = run_units(spark, inputs, work, output, StorageSettings(), shaping={}, progress=progress, poll_seconds=0.1)
    assert result.resumed == 1 and len(result.stats) == 4
    assert calls[0] == (1, 4) and calls[-1] == (4, 4)
    done = [count for count, _ in calls]
    assert done == sorted(done) and any(1 < count < 4 for count in done), calls


def _stage_process(output: str) -> psutil.Process | None:
    for child in psutil.Process().children(recursive=True):
        try:
            if "flows.cli" in child.cmdline() and output in child.cmdline():
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def test_a_stage_killed_mid_way_resumes_from_its_checkpoint(sample_run, tmp_path):
    """SIGKILL to the pretrain process after its first checkpoint: the task's retry resumes it
    from there, and its progress artifact, read over the API while it trains, moves."""
    from flows.train import train

    output = str(tmp_path / "killed")
    stage = join(output, "pretrain")
    steps = {"train.max_steps": 40, "train.checkpoint_every": 8, "train.eval_every": 0, "train.sample_tokens": 0,
             "train.log_every": 1}
    overrides = {}
    for key, value in {**TINY, **steps}.items():
        section, field = key.split(".")
        overrides.setdefault(section, {})[field] = value
    seen: dict = {"progress": []}

    def watch() -> None:
        deadline = time.monotonic() + 300
        while (latest_pointer(Storage(), stage) or {}).get("step", 0) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        process = _stage_process(stage)
        seen["killed_at"] = (latest_pointer(Storage(), stage) or {}).get("step")
        if process is not None:
            process.send_signal(signal.SIGKILL)
        while time.monotonic() < deadline and not (latest_pointer(Storage(), stage) or {}).get("final"):
            progress = [a for a in artifacts_of([flow_runs("train")[0].id]).values() if a.key == "pretrain-progress"]
            if progress:
                seen["progress"].append(progress[0].data)
            time.sleep(0.3)

    watcher = threading.Thread(target=contextvars.copy_context().run, args=(watch,), daemon=True)
    watcher.start()
    result = train(output=output, tokens=join(str(sample_run["output"]), "tokens"), until="pretrain", processes=1,
                   retries=1, overrides=overrides, report=False)
    watcher.join(timeout=60)

    assert seen["killed_at"] is not None and 8 <= seen["killed_at"] < 40
    record = json.loads(Path(stage, "stage.json").read_text())
    assert result["stages"]["pretrain"]["status"] == "trained" and record["attempts"] == 2 and record["status"] == "done"
    metrics = [json.loads(line) for line in Path(stage, "metrics.jsonl").read_text().splitlines()]
    trained = [m["step"] for m in metrics if m["train_loss"] is not None]
    assert trained == list(range(1, 41))  # every step once: the retry went on from the checkpoint
    pointer = latest_pointer(Storage(), stage)
    assert pointer["step"] == 40 and pointer["final"]
    moving = [value for value in seen["progress"] if 0 < value < 100]
    assert moving, f"the progress artifact never showed a partial value: {seen['progress']}"


def test_a_two_process_torchrun_stage_inside_the_train_flow(sample_run, tmp_path):
    from flows.train import train

    output = str(tmp_path / "ddp")
    overrides = {}
    for key, value in {**TINY, "train.total_batch_tokens": 512, "train.max_steps": 6}.items():
        section, field = key.split(".")
        overrides.setdefault(section, {})[field] = value
    result = train(output=output, tokens=join(str(sample_run["output"]), "tokens"), until="pretrain", processes=2,
                   overrides=overrides, report=False)
    assert result["stages"]["pretrain"]["status"] == "trained"
    checkpoint = load_checkpoint(Storage(), join(output, "pretrain"))
    meta = checkpoint.record["meta"]
    assert meta["world_size"] == 2 and checkpoint.step == 6
    assert len(set(meta["replica_fingerprints"])) == 1  # the two replicas stayed bit-identical
    record = json.loads(Path(output, "pretrain", "stage.json").read_text())
    assert record["command"][1:4] == ["-m", "torch.distributed.run", "--standalone"]
