"""GRPO driven as a user drives it: advantages and loss aggregation by their definitions, one
update moving each reply by its advantage's sign, held-out accuracy rising on easy arithmetic
from a warm-started tiny policy, every RL metric on every step, a run killed mid-rollout
resuming exactly (the rollout RNG and the rollout itself restored), GSM8K from the real files,
two processes, and bad input as one line, exit code 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flows.cli import main, parse_overrides
from infra.settings import load_settings
from infra.settings.rl import ArithmeticSettings
from infra.storage import Storage
from model.checkpoint import latest_pointer, load_checkpoint
from model.export import load_for_inference
from model.rl import token_logprobs
from model.tokenizer import BpeTokenizer
from tasks.train.grpo import aggregate, grpo, group_advantages
from tasks.verifiable.gsm8k import read_problems
from tests.rl_models import arithmetic_policy, save_policy, tiny_gpt

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
EASY = ["grpo.max_new_tokens=16", "grpo.group_size=8", "grpo.prompts_per_rollout=8", "grpo.train.batch_size=64",
        "grpo.train.lr=3e-4", "grpo.val_problems=100", "grpo.train.log_every=1"]
RL_METRICS = {"reward_mean", "reward_std", "correct_rate", "format_rate", "response_length", "truncated_rate", "distinct_2",
              "zero_advantage_groups", "entropy", "kl", "clip_fraction", "generate_share", "rollout_tokens_per_second"}


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> str:
    """A tiny GPT that has seen 150 steps of worked single-digit additions: it writes `#### n`
    answers and gets about two in five held-out problems right (greedy)."""
    torch.set_num_threads(1)
    return arithmetic_policy(tmp_path_factory.mktemp("grpo-policy"), ArithmeticSettings(), warm_steps=150)


def _records(run: str) -> list[dict]:
    return [json.loads(line) for line in Path(run, "metrics.jsonl").read_text().splitlines()]


def _losses(run: str) -> dict[int, float]:
    return {r["step"]: r["train_loss"] for r in _records(run) if r["train_loss"] is not None}


def _set(*pairs: str) -> list[str]:
    return [arg for pair in [*EASY, *pairs] for arg in ("--set", pair)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


# --- definitions --------------------------------------------------------------------------------


def test_group_advantages_by_their_definitions():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.1, 1.1, 1.1, 1.1], [0.0, 0.1, 1.1, 0.0]], dtype=torch.float64)
    scaled = group_advantages(rewards, "group")
    centred = rewards - rewards.mean(1, keepdim=True)
    assert torch.allclose(scaled, centred / (rewards.std(1, keepdim=True) + 1e-4))  # unbiased std, as TRL
    assert (scaled[1] == 0).all()  # a group that scored alike teaches nothing
    assert torch.allclose(group_advantages(rewards, "none"), centred)  # Dr. GRPO
    assert torch.allclose(group_advantages(rewards, "batch", batch_std=0.5), centred / 0.5001)


def test_loss_aggregation_per_sequence_per_token_and_constant():
    per_token = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    loss, count = aggregate(per_token, mask, "grpo", max_new_tokens=8)
    assert loss.item() / count == pytest.approx((2.0 + 4.0) / 2)  # each sequence's mean, then their mean
    loss, count = aggregate(per_token, mask, "dapo", max_new_tokens=8)
    assert loss.item() / count.item() == pytest.approx(10.0 / 4)  # every token weighs the same
    loss, count = aggregate(per_token, mask, "dr_grpo", max_new_tokens=8)
    assert loss.item() / count == pytest.approx(10.0 / (2 * 8))  # no length normalisation


# --- learning ----------------------------------------------------------------------------------


def test_grpo_raises_held_out_accuracy_on_easy_arithmetic(policy, tmp_path):
    run = str(tmp_path / "run")
    settings = load_settings(overrides=parse_overrides([*EASY, "grpo.train.max_steps=40", "grpo.train.eval_every=20"]))
    summary = grpo(settings, policy, run, task="arithmetic")
    records = _records(run)
    before, after = records[0], records[-1]
    assert before["step"] == 0 and after["step"] == 40
    assert 0.2 < before["val_accuracy"] < 0.7 and before["val_format_rate"] > 0.9  # the warm start's
    assert after["val_accuracy"] >= before["val_accuracy"] + 0.1, (before, after)
    steps = [r for r in records if r["train_loss"] is not None]
    assert [r["step"] for r in steps] == list(range(1, 41))
    for record in steps:
        assert RL_METRICS <= record.keys(), RL_METRICS - record.keys()
        assert record["kl"] is None  # beta 0: no reference, nothing to measure against
        assert record["clip_fraction"] == 0.0  # one update per rollout: the ratio is exactly 1
        assert 0 < record["generate_share"] < 1 and 0 < record["distinct_2"] <= 1 and record["response_length"] > 3
    samples = [json.loads(line) for line in Path(run, "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {0, 20, 40} and all("#### " in s["reply"] for s in samples)
    assert summary["val_accuracy"] == after["val_accuracy"]


def test_one_update_raises_the_replies_with_positive_advantage_and_lowers_the_others(policy, tmp_path):
    """The gradient's direction, on one logged rollout: after its single on-policy step the replies
    that beat their group's mean are likelier and those below it less likely (log-probabilities
    of the whole reply, before and after)."""
    run = str(tmp_path / "one")
    settings = load_settings(overrides=parse_overrides([*EASY, "grpo.train.max_steps=1", "grpo.train.lr=1e-5",
                                                        "grpo.train.warmup_steps=0", "grpo.log_completions=true",
                                                        "grpo.val_problems=4"]))
    grpo(settings, policy, run, task="arithmetic")
    (log,) = Path(run, "completions").glob("*.jsonl")
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    before, after = (load_for_inference(uri, Storage())[0] for uri in (policy, run))

    @torch.no_grad()
    def reply_logp(model, row) -> float:
        logps = token_logprobs(model, torch.tensor([row["prompt_ids"] + row["completion_ids"]]))[0]
        return logps[len(row["prompt_ids"]) - 1 :].sum().item()

    moved = [(row["advantage"], reply_logp(after, row) - reply_logp(before, row)) for row in rows]
    up = [delta for advantage, delta in moved if advantage > 0]
    down = [delta for advantage, delta in moved if advantage < 0]
    assert len(up) >= 8 and len(down) >= 8, "the rollout should hold groups that scored differently"
    assert sum(up) / len(up) > 0 > sum(down) / len(down), (up, down)


# --- resume -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_killed_mid_rollout_resumes_exactly(policy, tmp_path):
    """Two minibatches x two epochs per rollout (ratios move, the clip acts), a KL penalty to the
    reference, checkpoints every 3 steps: the kill lands inside a rollout's four updates."""
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    common = ["--policy", policy, "--task", "arithmetic",
              *_set("grpo.train.max_steps=12", "grpo.train.checkpoint_every=3", "grpo.train.eval_every=6",
                    "grpo.minibatches=2", "grpo.epochs=2", "grpo.train.batch_size=16", "grpo.beta=0.05",
                    "grpo.prompts_per_rollout=4", "grpo.val_problems=20", "grpo.train.lr=2e-3", "grpo.clip_high=0.28")]
    assert main(["grpo", "--output", straight, *common]) == 0

    process = subprocess.Popen([sys.executable, "-m", "flows.cli", "grpo", "--output", killed, *common], cwd=ROOT,
                               env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while (latest_pointer(Storage(), killed) or {}).get("step", 0) < 3:
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    step = latest_pointer(Storage(), killed)["step"]
    assert step < 12, "the run finished before it was killed"
    if step % 4:  # the usual case: the checkpoint holds the rollout it was in the middle of
        assert load_checkpoint(Storage(), killed, with_trainer_state=True).trainer_state["data"][0]["rollout"] is not None

    resumed = subprocess.run([sys.executable, "-m", "flows.cli", "grpo", "--output", killed, "--resume", *common],
                             cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    expected, got = _losses(straight), _losses(killed)
    assert sorted(got) == list(range(1, 13))
    assert all(abs(got[s] - expected[s]) <= 1e-6 for s in expected), (expected, got)
    same = {r["step"]: r for r in _records(straight)}
    for record in _records(killed):
        if record["train_loss"] is not None:
            assert record["reward_mean"] == same[record["step"]]["reward_mean"]  # the same samples were drawn
            assert record["kl"] == pytest.approx(same[record["step"]]["kl"], abs=1e-6) and record["kl"] >= 0
    assert any(r["clip_fraction"] > 0 for r in _records(straight) if r["train_loss"] is not None)
    assert main(["grpo", "--output", killed, "--resume", *common, "--set", "grpo.group_size=4"]) == 2  # other settings


# --- GSM8K and several processes ---------------------------------------------------------------


def test_grpo_on_real_gsm8k_rows(realdata, tmp_path):
    gsm8k = realdata / "verifiable" / "gsm8k"
    problems, _ = read_problems([str(gsm8k / "test.jsonl.gz")])
    tokenizer = BpeTokenizer.train([f"{p.question}\n{p.solution}" for p in problems[:300]] + ["user assistant"],
                                   vocab_size=512)
    policy = save_policy(str(tmp_path / "policy"), tiny_gpt(tokenizer, seq_len=256, layers=1), tokenizer)
    run = str(tmp_path / "run")
    code = main(["grpo", "--policy", policy, "--task", "gsm8k", "--data", str(gsm8k / "test.jsonl.gz"), "--output", run,
                 *_set("grpo.train.max_steps=2", "grpo.max_new_tokens=8", "grpo.group_size=2", "grpo.prompts_per_rollout=4",
                       "grpo.train.batch_size=8", "grpo.val_problems=6", "grpo.train.eval_every=0",
                       "grpo.log_completions=true")])
    assert code == 0
    records = _records(run)
    steps = {r["step"]: r for r in records if r["train_loss"] is not None}
    logged = sorted(Path(run, "completions").glob("rollout-*-rank-0.jsonl"))
    assert [p.name for p in logged] == ["rollout-000000-rank-0.jsonl", "rollout-000001-rank-0.jsonl"]
    for path in logged:  # every sampled reply, enough to replay the rollout: its ids, log-probs, reward
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(rows) == 8 and {(r["prompt"], r["sample"]) for r in rows} == {(p, s) for p in range(4) for s in range(2)}
        assert all(len(r["completion_ids"]) == len(r["logprobs"]) == 8 and r["finish_reason"] == "length" for r in rows)
        assert all(tokenizer.decode(r["prompt_ids"]).count(r["question"]) == 1 for r in rows)
        assert sum(r["reward"] for r in rows) / 8 == pytest.approx(steps[rows[0]["step"]]["reward_mean"])
    assert records[0]["val_accuracy"] == records[-1]["val_accuracy"] == 0.0  # a random model: nothing right yet
    assert RL_METRICS <= records[-1].keys() and records[-1]["truncated_rate"] == 1.0
    meta = load_checkpoint(Storage(), run).record["meta"]
    assert meta["skipped_too_long"] > 0 and meta["val_problems"] == 6  # long questions skipped, and counted


@pytest.mark.slow
def test_two_processes_train_one_model(policy, tmp_path):
    run = str(tmp_path / "ddp")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "flows.cli",
               "grpo", "--policy", policy, "--task", "arithmetic", "--output", run,
               *_set("grpo.train.max_steps=2", "grpo.prompts_per_rollout=2", "grpo.group_size=4", "grpo.train.batch_size=8",
                     "grpo.val_problems=8", "grpo.train.eval_every=0", "grpo.scale_rewards=batch")]
    done = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    meta = load_checkpoint(Storage(), run).record["meta"]
    assert meta["world_size"] == 2 and meta["sequences_per_step"] == 16
    assert len(set(meta["replica_fingerprints"])) == 1  # the replicas stayed bit-identical
    assert RL_METRICS <= _records(run)[-1].keys()


# --- bad input -----------------------------------------------------------------------------------


def test_bad_input_is_one_line_and_exit_code_2(policy, tmp_path, capsys):
    assert main(["grpo", "--policy", policy, "--task", "gsm8k", "--output", str(tmp_path / "a")]) == 2
    assert "--task gsm8k needs --data" in capsys.readouterr().err
    assert main(["grpo", "--policy", policy, "--output", str(tmp_path / "b"), "--set", "grpo.prompts_per_rollout=3",
                 "--set", "grpo.group_size=3", "--set", "grpo.train.batch_size=4"]) == 2
    assert "does not split" in capsys.readouterr().err
    assert main(["grpo", "--policy", policy, "--output", str(tmp_path / "c"), "--set", "grpo.arithmetic.max_operand=0"]) == 2
    err = capsys.readouterr().err
    assert "max_operand" in err and len(err.strip().splitlines()) == 1
