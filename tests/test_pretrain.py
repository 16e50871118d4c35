"""Pretraining on real text, driven as a user drives it: the loss falls, a run killed with SIGKILL
resumes exactly, two processes (DDP, and FSDP2) compute what one process computes with the same
total batch and keep bit-identical replicas, checkpoints round-trip through the real SeaweedFS
server, `generate` streams from a checkpoint, and bad input gets one line and exit code 2.

The tokens are the real pretraining text (../shared/realdata/pretrain_text) made into a docs
stage and run through the project's own tokenize job on Spark, with a 512-token vocabulary.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.settings import Settings, ShardSettings, TokenizerSettings, load_settings
from infra.storage import Storage, join
from flows.cli import main, parse_overrides
from model.checkpoint import CHECKPOINTS_DIR, WEIGHTS_FILE, latest_pointer, load_checkpoint
from tasks.jobs.tokenize import run_tokenize
from tasks.samples.pretrain_text import pretrain_text_documents, write_documents
from tasks.train.pretrain import pretrain

pytestmark = [pytest.mark.spark, pytest.mark.usefixtures("one_thread")]

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.n_layer=1", "model.n_head=2", "model.n_kv_head=1", "model.n_embd=64", "model.seq_len=64",
    "train.batch_size=4", "train.eval_tokens=2048", "train.sample_tokens=8", "train.log_every=1",
    "train.warmup_steps=2", "train.lr=0.01", "train.eval_every=0",
]


def _tokenize(spark, docs_uri: str, tokens_uri: str, vocab_size: int) -> str:
    settings = Settings(
        tokenizer=TokenizerSettings(vocab_size=vocab_size, sample_docs=100_000, heldout_docs=10),
        shards=ShardSettings(shard_tokens=50_000, row_group_docs=4, val_fraction=0.1),
    )
    run_tokenize(spark, docs_uri, tokens_uri, settings)
    return tokens_uri


@pytest.fixture(scope="module")
def real_docs(realdata, tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("pretrain-docs")
    docs = pretrain_text_documents(realdata / "pretrain_text")[::3]  # a third: ~1 MB of C4, Wikipedia, Shakespeare
    write_documents(Storage(), str(root), docs, parts=2)
    return str(root)


@pytest.fixture(scope="module")
def real_tokens(spark, real_docs, tmp_path_factory) -> str:
    return _tokenize(spark, real_docs, str(tmp_path_factory.mktemp("pretrain-tokens")), vocab_size=512)


def _settings(*extra: str, storage=None) -> Settings:
    settings = load_settings(overrides=parse_overrides([*TINY, *extra]))
    return settings.model_copy(update={"storage": storage}) if storage else settings


def _records(storage: Storage, run: str, name: str = "metrics.jsonl") -> list[dict]:
    return [json.loads(line) for line in storage.read_text(join(run, name)).splitlines()]


def _losses(run: str) -> dict[int, float]:
    return {r["step"]: r["train_loss"] for r in _records(Storage(), run) if r["train_loss"] is not None}


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _torchrun(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "flows.cli", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _set(*pairs: str) -> list[str]:
    return [arg for pair in [*TINY, *pairs] for arg in ("--set", pair)]


# --- learning ---------------------------------------------------------------------------------


def test_the_loss_falls_on_real_text(real_tokens, tmp_path):
    run = str(tmp_path / "run")
    summary = pretrain(_settings("train.max_steps=60", "train.eval_every=30", "train.checkpoint_every=30"), real_tokens, run)
    records = _records(Storage(), run)
    evals = {r["step"]: r for r in records if "val_bpb" in r}
    assert sorted(evals) == [0, 30, 60]
    assert evals[60]["val_loss"] < evals[30]["val_loss"] < evals[0]["val_loss"]
    assert evals[60]["val_bpb"] < 0.9 * evals[0]["val_bpb"]
    train = [r for r in records if r["train_loss"] is not None]
    assert [r["step"] for r in train] == list(range(1, 61))
    assert sum(r["train_loss"] for r in train[-10:]) / 10 < train[0]["train_loss"] - 0.75  # nats, from ln(512) = 6.24
    for record in train:
        assert {"step", "tokens", "train_loss", "lr", "tokens_per_second", "grad_norm"} <= record.keys()
    assert train[-1]["tokens"] == 60 * 4 * 64 == summary["tokens"]
    assert summary["params"] == load_checkpoint(Storage(), run).config.num_params() and summary["flops_per_token"] > 0
    samples = _records(Storage(), run, "samples.jsonl")
    assert {s["step"] for s in samples} == {0, 30, 60} and all(isinstance(s["text"], str) for s in samples)
    pointer = latest_pointer(Storage(), run)
    assert pointer["step"] == 60 and pointer["final"]
    kept = sorted(p.name for p in (tmp_path / "run" / CHECKPOINTS_DIR).iterdir() if p.is_dir())
    assert kept == ["step-00000030", "step-00000060"]


def test_accumulation_reaches_the_total_batch_with_one_reader_per_micro_step(real_tokens, tmp_path):
    run = str(tmp_path / "accum")
    pretrain(_settings("train.max_steps=3", "train.total_batch_tokens=512"), real_tokens, run)
    record = load_checkpoint(Storage(), run, with_trainer_state=True)
    assert record.record["meta"]["accum_steps"] == 2
    assert len(record.trainer_state["data"][0]) == 2  # one reader position per micro-step slot
    assert _records(Storage(), run)[-1]["tokens"] == 3 * 512


# --- exact resume ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_killed_mid_way_resumes_exactly(real_tokens, tmp_path):
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    common = ["--tokens", real_tokens, *_set("train.max_steps=24", "train.checkpoint_every=8", "train.sample_tokens=0")]
    done = _cli("pretrain", "--output", straight, *common)
    assert done.returncode == 0, done.stderr

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "flows.cli", "pretrain", "--output", killed, *common], cwd=ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while (latest_pointer(Storage(), killed) or {}).get("step", 0) < 8:
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    died_at = max(_losses(killed))
    assert died_at < 24, "the run finished before it was killed"
    assert latest_pointer(Storage(), killed)["step"] < 24

    resumed = _cli("pretrain", "--output", killed, "--resume", *common)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    expected, got = _losses(straight), _losses(killed)
    assert sorted(got) == list(range(1, 25))  # no step twice, none missing
    assert all(abs(got[step] - expected[step]) <= 1e-6 for step in expected), (expected, got)
    assert json.loads(resumed.stdout)["val_loss"] == pytest.approx(json.loads(done.stdout)["val_loss"], abs=1e-6)


# --- several processes ------------------------------------------------------------------------


MULTI = _set("train.max_steps=6", "train.total_batch_tokens=512", "train.sample_tokens=0", "train.checkpoint_every=3")


@pytest.fixture(scope="module")
def one_process_run(real_tokens, tmp_path_factory) -> str:
    """6 steps of 512 tokens on one process: two micro-steps of 4 x 64."""
    run = str(tmp_path_factory.mktemp("one-process") / "run")
    done = _cli("pretrain", "--tokens", real_tokens, "--output", run, *MULTI)
    assert done.returncode == 0, done.stderr
    return run


def _assert_same_losses(run: str, reference: str, steps: range, tolerance: float = 1e-5) -> None:
    expected, got = _losses(reference), _losses(run)
    assert sorted(got) == list(range(1, steps.stop))
    assert all(abs(got[step] - expected[step]) < tolerance for step in steps), (expected, got)


@pytest.mark.slow
def test_two_ddp_processes_match_one_and_keep_identical_replicas(real_tokens, one_process_run, tmp_path):
    ddp = str(tmp_path / "ddp")
    done = _torchrun("pretrain", "--tokens", real_tokens, "--output", ddp, *MULTI)  # two processes, one micro-step each
    assert done.returncode == 0, done.stderr
    _assert_same_losses(ddp, one_process_run, range(1, 7))
    meta = load_checkpoint(Storage(), ddp).record["meta"]
    assert meta["world_size"] == 2 and meta["accum_steps"] == 1
    fingerprints = meta["replica_fingerprints"]  # checked equal by every rank at every checkpoint
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]


@pytest.mark.slow
def test_fsdp_matches_one_process_and_resumes(real_tokens, one_process_run, tmp_path):
    fsdp, one = str(tmp_path / "fsdp"), str(tmp_path / "one")
    done = _torchrun("pretrain", "--tokens", real_tokens, "--output", fsdp, *MULTI, "--set", "train.fsdp=true")
    assert done.returncode == 0, done.stderr
    _assert_same_losses(fsdp, one_process_run, range(1, 7))
    # Its checkpoint holds whole tensors: the one-process run's model, to float rounding.
    a, b = load_checkpoint(Storage(), one_process_run).tensors, load_checkpoint(Storage(), fsdp).tensors
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-5 for k in a)
    # Resuming scatters the whole optimizer state back to the shards: steps 7-8 as one process does them.
    shutil.copytree(one_process_run, one)
    longer = ["--tokens", real_tokens, "--resume", *MULTI, "--set", "train.max_steps=8"]
    assert _cli("pretrain", "--output", one, *longer).returncode == 0
    more = _torchrun("pretrain", "--output", fsdp, *longer, "--set", "train.fsdp=true")
    assert more.returncode == 0, more.stderr
    _assert_same_losses(fsdp, one, range(7, 9))


# --- object storage ---------------------------------------------------------------------------


@pytest.mark.s3
def test_tokens_and_checkpoints_on_seaweedfs(real_tokens, seaweed, s3_prefix, tmp_path):
    storage = Storage(seaweed)
    tokens = join(s3_prefix, "tokens")
    for path in Path(real_tokens).rglob("*"):
        if path.is_file():
            storage.write_bytes(join(tokens, path.relative_to(real_tokens).as_posix()), path.read_bytes())
    run = join(s3_prefix, "run")
    # A constant schedule, so that a 4-step run extended to 6 steps is the same run as 6 straight.
    first = pretrain(_settings("train.max_steps=4", "train.schedule=constant", "train.checkpoint_every=2", storage=seaweed), tokens, run)
    resumed = pretrain(_settings("train.max_steps=6", "train.schedule=constant", storage=seaweed), tokens, run, resume=True)
    straight = pretrain(_settings("train.max_steps=6", "train.schedule=constant"), real_tokens, str(tmp_path / "local"))
    assert first["steps"] == 4 and resumed["steps"] == 6
    remote = {r["step"]: r["train_loss"] for r in _records(storage, run) if r["train_loss"] is not None}
    local = _losses(str(tmp_path / "local"))
    assert sorted(remote) == list(range(1, 7)) and all(abs(remote[s] - local[s]) <= 1e-6 for s in local)
    checkpoint = load_checkpoint(storage, run, with_trainer_state=True)
    assert checkpoint.step == 6 and checkpoint.record["final"] and checkpoint.trainer_state["step"] == 6
    assert straight["val_loss"] == pytest.approx(resumed["val_loss"], abs=1e-6)


# --- the command line -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(real_tokens, tmp_path_factory) -> str:
    run = str(tmp_path_factory.mktemp("cli") / "run")
    pretrain(_settings("train.max_steps=30"), real_tokens, run)
    return run


def test_generate_streams_a_checkpoints_continuation(trained_run):
    from model.checkpoint import load_model
    from model.engine import Engine, SamplingParams

    done = _cli("generate", "--checkpoint", trained_run, "--prompt", "The king", "--max-tokens", "12", "--temperature", "0")
    assert done.returncode == 0, done.stderr
    model, tokenizer, _ = load_model(trained_run)
    (expected,) = Engine(model, tokenizer).generate([[tokenizer.bos_id, *tokenizer.encode("The king")]],
                                                     SamplingParams(max_tokens=12, temperature=0))
    assert done.stdout == "The king" + expected.text + "\n"
    assert "pretrain step 30" in done.stderr and "tokens/s" in done.stderr



def test_generate_takes_one_checkpoint_folder_and_sampling_flags(trained_run, capsys):
    folder = join(trained_run, CHECKPOINTS_DIR, latest_pointer(Storage(), trained_run)["path"])
    argv = ["generate", "--checkpoint", folder, "--prompt", "The", "--max-tokens", "5", "--top-k", "5", "--top-p", "0.9"]
    assert main([*argv, "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert main([*argv, "--seed", "3"]) == 0
    assert first.startswith("The") and capsys.readouterr().out == first


def _one_line_error(capsys, argv: list[str], *fragments: str) -> None:
    """`crawl2chat ARGV` (its real parser and handlers, in this process) exits 2 with one line."""
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crawl2chat: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_input_is_one_line_and_exit_code_2(capsys, spark, real_docs, real_tokens, trained_run, tmp_path):
    out = ["--output", str(tmp_path / "out")]
    _one_line_error(capsys, ["pretrain", "--tokens", str(tmp_path), *out], "no manifest.json")
    _one_line_error(capsys, ["pretrain", "--tokens", real_tokens, *out, "--preset", "gpu-2b"], "unknown preset 'gpu-2b'", "cpu-tiny")
    _one_line_error(capsys, ["pretrain", "--tokens", real_tokens, *out, *_set("train.seq_len=128")],
                    "train.seq_len (128) is above the model's context (model.seq_len=64)")
    _one_line_error(capsys, ["pretrain", "--tokens", real_tokens, *out, *_set("train.total_batch_tokens=1000")], "not a multiple")
    _one_line_error(capsys, ["pretrain", "--tokens", real_tokens, *out, *_set("model.n_head=3")], "invalid settings")
    _one_line_error(capsys, ["pretrain", "--tokens", real_tokens, "--output", trained_run, *_set()], "--resume")
    _one_line_error(capsys, ["pretrain", "--tokens", real_tokens, "--output", trained_run, "--resume", *_set("model.n_layer=2")],
                    "another model config", "n_layer 1 vs 2")
    other_tokens = _tokenize(spark, real_docs, str(tmp_path / "other-tokens"), vocab_size=400)
    _one_line_error(capsys, ["pretrain", "--tokens", other_tokens, "--output", trained_run, "--resume", *_set()],
                    "another tokenizer")

    broken = tmp_path / "broken"
    shutil.copytree(trained_run, broken)
    weights = broken / CHECKPOINTS_DIR / latest_pointer(Storage(), str(broken))["path"] / WEIGHTS_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[:-10] + bytes(10))
    _one_line_error(capsys, ["generate", "--checkpoint", str(broken), "--prompt", "x"], str(weights), "corrupt")
    weights.write_bytes(data[: len(data) // 2])
    _one_line_error(capsys, ["pretrain", "--tokens", real_tokens, "--output", str(broken), "--resume", *_set()],
                    str(weights), "truncated")
    _one_line_error(capsys, ["generate", "--checkpoint", str(tmp_path / "nothing"), "--prompt", "x"], "no complete checkpoint")


# --- Prefect ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


async def _latest_run(flow_name: str) -> tuple[str, list[str], set[str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter, ArtifactFilterFlowRunId, FlowFilter, FlowFilterName, FlowRunFilter, LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort, LogSort

    async with get_client() as client:
        (run,) = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])), sort=FlowRunSort.START_TIME_DESC, limit=1
        )
        logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])),
                                      limit=200, offset=0, sort=LogSort.TIMESTAMP_ASC)
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])),
            flow_run_filter=FlowRunFilter(), sort=ArtifactSort.CREATED_DESC, limit=10,  # (a task filter drops flow-level ones)
        )
        return run.state_name, [log.message for log in logs], {artifact.key for artifact in artifacts}


@pytest.mark.slow
def test_the_pretrain_flow_puts_its_progress_in_the_run_logs(prefect_server, real_tokens, tmp_path):
    from flows.pretrain import pretrain_flow

    summary = pretrain_flow(real_tokens, str(tmp_path / "run"), overrides=parse_overrides([*TINY, "train.max_steps=4"]))
    assert summary["steps"] == 4
    state, messages, artifacts = asyncio.run(_latest_run("pretrain"))
    assert state == "Completed" and "pretrain-summary" in artifacts
    assert any(message.startswith("pretrain step 4/4 | loss ") and "tok/s" in message for message in messages), messages
    assert any(message.startswith("pretrain eval step 4 | val_loss") for message in messages)
