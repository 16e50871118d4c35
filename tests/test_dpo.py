"""DPO driven as a user drives it: the loss against hand computations, a separable preference
learned on held-out pairs, real HH-RLHF pairs, the reference log-probabilities computed once
and reused on resume, a run killed with SIGKILL resuming exactly, two processes computing what
one does, and bad input as one line with exit code 2."""

from __future__ import annotations

import gzip
import json
import math
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
from infra.storage import Storage
from model.checkpoint import latest_pointer, load_checkpoint
from model.tokenizer import BpeTokenizer
from tasks.chat.pairs import PreferencePair, load_pairs, write_pairs
from tasks.train.dpo import REFERENCE_FILE, dpo, dpo_loss
from tests.rl_models import save_policy, tiny_gpt

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
TOPICS = ["rivers", "bread", "stars", "trains", "music", "chess", "tea", "birds", "snow", "maps", "clocks", "bees",
          "ships", "paper", "glass", "salt", "wool", "moths", "caves", "kites", "lamps", "roads", "coins", "ferns"]
FAST = ["dpo.train.batch_size=4", "dpo.train.log_every=1", "dpo.train.warmup_steps=0", "dpo.train.lr=3e-3",
        "dpo.beta=0.5", "dpo.train.schedule=constant"]


def _style_pairs(topics: list[str]) -> list[PreferencePair]:
    """A preference anyone can check: the helpful reply wins, the refusal loses."""
    return [PreferencePair([{"role": "user", "content": f"Tell me about {topic}."}],
                           {"role": "assistant", "content": f"Sure! Here is a short note about {topic}."},
                           {"role": "assistant", "content": f"No. I will not talk about {topic}."}) for topic in topics]


@pytest.fixture(scope="module")
def style_data(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("dpo-style")
    train, val = str(root / "train.jsonl"), str(root / "val.jsonl")
    write_pairs(train, _style_pairs(TOPICS[:16]))
    write_pairs(val, _style_pairs(TOPICS[16:]))
    texts = [f"{p.prompt[0]['content']} {p.chosen['content']} {p.rejected['content']}" for p in _style_pairs(TOPICS)]
    tokenizer = BpeTokenizer.train(texts * 3 + ["user assistant system"], vocab_size=300)
    policy = save_policy(str(root / "policy"), tiny_gpt(tokenizer, seq_len=64, layers=1), tokenizer)
    return {"train": train, "val": val, "policy": policy}


def _records(run: str) -> list[dict]:
    return [json.loads(line) for line in Path(run, "metrics.jsonl").read_text().splitlines()]


def _losses(run: str) -> dict[int, float]:
    return {r["step"]: r["train_loss"] for r in _records(run) if r["train_loss"] is not None}


def _set(*pairs: str) -> list[str]:
    return [arg for pair in [*FAST, *pairs] for arg in ("--set", pair)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


# --- the loss ---------------------------------------------------------------------------------


def test_the_loss_is_log_2_at_the_reference_and_follows_its_definitions():
    logps = torch.tensor([[-10.0, -12.0], [-8.0, -7.0]])
    ref = torch.tensor([[-11.0, -11.0], [-8.0, -8.0]])
    counts = torch.tensor([[4.0, 2.0], [5.0, 5.0]])
    same, chosen, rejected = dpo_loss(ref, ref, counts, beta=0.1, loss="sigmoid")
    assert torch.allclose(same, torch.full((2,), math.log(2))) and (chosen == 0).all() and (rejected == 0).all()

    per_pair, chosen, rejected = dpo_loss(logps, ref, counts, beta=0.1, loss="sigmoid")
    d = torch.tensor([1.0 - -1.0, 0.0 - 1.0])  # (chosen log-ratio) - (rejected log-ratio)
    assert torch.allclose(per_pair, -torch.nn.functional.logsigmoid(0.1 * d))
    assert torch.allclose(chosen, torch.tensor([0.1, 0.0])) and torch.allclose(rejected, torch.tensor([-0.1, 0.1]))

    smoothed, _, _ = dpo_loss(logps, ref, counts, beta=0.1, loss="sigmoid", label_smoothing=0.2)
    expected = -0.8 * torch.nn.functional.logsigmoid(0.1 * d) - 0.2 * torch.nn.functional.logsigmoid(-0.1 * d)
    assert torch.allclose(smoothed, expected)

    ipo, _, _ = dpo_loss(logps, ref, counts, beta=0.5, loss="ipo")
    averaged = torch.tensor([1.0 / 4 - -1.0 / 2, 0.0 / 5 - 1.0 / 5])
    assert torch.allclose(ipo, (averaged - 1 / (2 * 0.5)) ** 2)


# --- learning ----------------------------------------------------------------------------------


def test_dpo_raises_the_held_out_margin_and_accuracy(style_data, tmp_path):
    run = str(tmp_path / "run")
    settings = load_settings(overrides=parse_overrides([*FAST, "dpo.train.max_steps=25", "dpo.train.eval_every=25"]))
    summary = dpo(settings, style_data["policy"], [style_data["train"]], run, val_data=[style_data["val"]])
    records = _records(run)
    before, after = records[0], records[-1]
    assert before["step"] == 0 and before["val_accuracy"] == 0.5 and before["val_margin"] == 0.0
    assert before["val_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert after["step"] == 25 and after["val_accuracy"] > 0.95 and after["val_margin"] > 1.0
    assert after["val_reward_chosen"] > after["val_reward_rejected"]
    train = [r for r in records if r["train_loss"] is not None]
    assert train[0]["train_loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy = reference at step 1
    assert {"train_reward_chosen", "train_reward_rejected", "train_margin", "train_accuracy"} <= train[0].keys()
    assert train[-1]["train_margin"] > train[0]["train_margin"] and train[-1]["train_accuracy"] == 1.0
    assert summary["val_accuracy"] == after["val_accuracy"] and summary["train_pairs"] == 16


def test_dpo_on_real_hh_rlhf_pairs_learns_them(realdata, tmp_path):
    with gzip.open(realdata / "chat" / "hh_rlhf" / "harmless-base_test.jsonl.gz", "rt") as lines:
        rows = [line for _, line in zip(range(60), lines)]  # the real transcripts, in their own layout
    data = tmp_path / "hh.jsonl"
    data.write_text("".join(rows))
    pairs = load_pairs([str(data)]).pairs
    texts = [m["content"] for p in pairs for m in [*p.prompt, p.chosen, p.rejected]]
    tokenizer = BpeTokenizer.train(texts, vocab_size=512)
    policy = save_policy(str(tmp_path / "policy"), tiny_gpt(tokenizer, seq_len=192, layers=1), tokenizer)
    run = str(tmp_path / "run")
    code = main(["dpo", "--policy", policy, "--data", str(data), "--output", run,
                 *_set("dpo.train.max_steps=16", "dpo.train.eval_every=0", "dpo.val_fraction=0.1",
                       "dpo.train.batch_size=8", "dpo.beta=0.1", "dpo.train.lr=3e-3")])
    assert code == 0
    records = _records(run)
    train = [r for r in records if r["train_loss"] is not None]
    assert train[0]["train_accuracy"] == 0.5 and train[0]["train_margin"] == 0.0
    late = train[-4:]
    assert sum(r["train_margin"] for r in late) / 4 > 0.5 and sum(r["train_accuracy"] for r in late) / 4 > 0.8
    assert "val_accuracy" in records[-1]
    meta = load_checkpoint(Storage(), run).record["meta"]
    assert meta["train_pairs"] + meta["val_pairs"] == len(load_pairs([str(data)], tokenizer=tokenizer, max_tokens=192).pairs)
    assert "too_long" in json.dumps(meta["files"])  # the pairs over the context were skipped, and counted


# --- resume and reference cache ------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_run_resumes_exactly_and_reuses_the_reference(style_data, tmp_path):
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    common = ["--policy", style_data["policy"], "--data", style_data["train"], "--val-data", style_data["val"],
              *_set("dpo.train.max_steps=18", "dpo.train.checkpoint_every=4", "dpo.train.eval_every=6")]
    assert main(["dpo", "--output", straight, *common]) == 0  # in this process, also on one thread

    process = subprocess.Popen([sys.executable, "-m", "flows.cli", "dpo", "--output", killed, *common], cwd=ROOT,
                               env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while (latest_pointer(Storage(), killed) or {}).get("step", 0) < 4:
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert latest_pointer(Storage(), killed)["step"] < 18, "the run finished before it was killed"
    cached = (Path(killed) / REFERENCE_FILE).stat().st_mtime_ns

    resumed = subprocess.run([sys.executable, "-m", "flows.cli", "dpo", "--output", killed, "--resume", *common],
                             cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "reference log-probabilities loaded" in resumed.stderr and "resumed from" in resumed.stderr
    assert (Path(killed) / REFERENCE_FILE).stat().st_mtime_ns == cached  # not recomputed
    expected, got = _losses(straight), _losses(killed)
    assert sorted(got) == list(range(1, 19))
    assert all(abs(got[step] - expected[step]) <= 1e-6 for step in expected), (expected, got)
    assert json.loads(resumed.stdout)["val_margin"] == pytest.approx(_records(straight)[-1]["val_margin"], abs=1e-6)

    other = main(["dpo", "--output", killed, "--resume", "--policy", style_data["policy"], "--data", style_data["val"],
                  "--val-data", style_data["val"], *_set("dpo.train.max_steps=20")])
    assert other == 2  # other pairs: refused, not trusted


@pytest.mark.slow
def test_two_processes_compute_what_one_does_with_two_micro_steps(style_data, tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    common = ["--policy", style_data["policy"], "--data", style_data["train"], "--val-data", style_data["val"],
              *_set("dpo.train.max_steps=4", "dpo.train.batch_size=2", "dpo.train.eval_every=0")]
    assert main(["dpo", "--output", one, *common, "--set", "dpo.accum_steps=2"]) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "flows.cli",
               "dpo", "--output", two, *common]
    done = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    expected, got = _losses(one), _losses(two)
    assert sorted(got) == [1, 2, 3, 4] and all(abs(got[s] - expected[s]) < 1e-5 for s in expected), (expected, got)
    reference = torch.load(Path(two) / REFERENCE_FILE, weights_only=True)  # computed by rank share, gathered whole
    assert torch.allclose(reference["train"], torch.load(Path(one) / REFERENCE_FILE, weights_only=True)["train"])


# --- bad input -----------------------------------------------------------------------------------


def test_bad_input_is_one_line_and_exit_code_2(style_data, tmp_path, capsys):
    same = tmp_path / "same.jsonl"
    same.write_text(json.dumps({"prompt": "hi", "chosen": "hello", "rejected": "hello"}) + "\n")
    assert main(["dpo", "--policy", style_data["policy"], "--data", str(same), "--output", str(tmp_path / "a")]) == 2
    assert "no usable preference pairs" in capsys.readouterr().err
    assert main(["dpo", "--policy", str(tmp_path / "nothing"), "--data", style_data["train"], "--output", str(tmp_path / "b")]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err
    assert main(["dpo", "--policy", style_data["policy"], "--data", style_data["train"], "--output", str(tmp_path / "c"),
                 "--set", "dpo.loss=ipo", "--set", "dpo.label_smoothing=0.1"]) == 2
    err = capsys.readouterr().err
    assert "label_smoothing" in err and len(err.strip().splitlines()) == 1
