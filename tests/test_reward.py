"""The reward model on a separable preference: it learns it (held-out pairwise accuracy > 90%),
`score` stays in [0, 1], pairs too long for the context lose their earliest turns or are
counted, two parts of the pairs never overlap, a run killed by SIGTERM resumes to the same
losses, and the command line trains one and refuses bad input in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infra.settings import RewardSettings, load_settings
from infra.storage import Storage
from model.checkpoint import CheckpointError, load_checkpoint
from model.heads import RewardModel
from tasks.chat.pairs import PreferencePair, fit_pair, load_pairs
from tasks.train.reward import pair_key, split_pairs, train_reward
from tests.preference_world import preference_pairs, prompt_of, write_jsonl
from tests.rl_support import metrics, one_line_error, sigterm_at_step

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")
FAST = {"max_steps": 40, "eval_every": 20, "lr": 3e-3, "warmup_steps": 4, "log_every": 1}


def _settings(**reward) -> object:
    return load_settings(overrides={"reward": {"train": FAST, "val_fraction": 0.25, **reward}})


def test_the_reward_model_learns_a_separable_preference(rl_world, tmp_path):
    summary = train_reward(_settings(), rl_world.policy, [rl_world.pairs], str(tmp_path / "rm"))
    evals = [r for r in metrics(tmp_path / "rm") if "val_accuracy" in r]
    assert evals[0]["step"] == 0 and 0.2 < evals[0]["val_accuracy"] < 0.8  # an untrained head is near chance
    assert evals[-1]["val_accuracy"] > 0.9 and summary["val_accuracy"] == evals[-1]["val_accuracy"]
    assert summary["train_pairs"] + summary["val_pairs"] == 240 and summary["val_pairs"] > 30
    assert {"train_accuracy", "train_margin", "train_chosen", "train_rejected"} <= set(metrics(tmp_path / "rm")[-1])

    judge = RewardModel.load(str(tmp_path / "rm"))
    question = prompt_of("cats")
    good = judge.score([*question, {"role": "assistant", "content": "the cat is very good"}])
    bad = judge.score([*question, {"role": "assistant", "content": "the cat is very bad"}])
    assert 0.0 <= bad < 0.5 < good <= 1.0
    odd = [[*question, {"role": "assistant", "content": text}] for text in ("x", "good " * 200, "\u00e9\u00e8 ?", "bad bad bad")]
    assert all(0.0 <= score <= 1.0 for score in judge.scores(odd))  # 200 words: longer than the context, still scored
    with pytest.raises(ValueError, match="end in an assistant reply"):
        judge.score(question)
    record = load_checkpoint(Storage(), str(tmp_path / "rm")).record
    assert record["stage"] == "reward" and json.loads((tmp_path / "rm" / "data_report.json").read_text())["split"]["val"] > 0


def test_a_killed_run_resumes_to_the_same_losses(rl_world, tmp_path, monkeypatch):
    train_reward(_settings(), rl_world.policy, [rl_world.pairs], str(tmp_path / "straight"))
    with sigterm_at_step(monkeypatch, 13):
        stopped = train_reward(_settings(), rl_world.policy, [rl_world.pairs], str(tmp_path / "killed"))
    assert stopped["stopped"] and stopped["steps"] == 13 and stopped["stop_reason"] == "SIGTERM"
    resumed = train_reward(_settings(), rl_world.policy, [rl_world.pairs], str(tmp_path / "killed"), resume=True)
    assert resumed["steps"] == 40 and not resumed["stopped"]
    straight, killed = metrics(tmp_path / "straight"), metrics(tmp_path / "killed")
    assert [r["step"] for r in killed] == [r["step"] for r in straight]
    for a, b in zip(straight, killed):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert (a.get(key) is None) == (b.get(key) is None) and (a.get(key) or 0) == pytest.approx(b.get(key) or 0, abs=1e-6)
    with pytest.raises(CheckpointError, match="other inputs .*reward"):  # same output, other settings: refused
        train_reward(_settings(margin=0.5), rl_world.policy, [rl_world.pairs], str(tmp_path / "killed"), resume=True)


def test_long_pairs_lose_their_earliest_turns_and_parts_never_overlap(rl_world):
    tokenizer = rl_world.tokenizer
    history = [{"role": "user", "content": "the dog " * 20}, {"role": "assistant", "content": "the cat " * 20}]
    pair = PreferencePair([*history, *prompt_of("cats")], {"role": "assistant", "content": "good"}, {"role": "assistant", "content": "bad"})
    fitted = fit_pair(tokenizer, pair, 40)
    assert fitted.prompt == prompt_of("cats") and fitted.chosen == pair.chosen
    assert fit_pair(tokenizer, pair, 200) is pair and fit_pair(tokenizer, pair, 6) is None

    import random

    pairs = load_pairs([write_jsonl(Path(rl_world.root) / "more-pairs.jsonl", preference_pairs(random.Random(5), 400))]).pairs
    train0, val0 = split_pairs(pairs, 0.2, parts=2, part=0)
    train1, val1 = split_pairs(pairs, 0.2, parts=2, part=1)
    assert val0 == val1 and 40 < len(val0) < 120
    assert not {pair_key(p) for p in train0} & {pair_key(p) for p in train1}
    assert len(train0) + len(train1) + len(val0) == len(pairs)
    with pytest.raises(ValueError, match="reward.part"):
        RewardSettings(parts=2, part=2)


def test_the_command_trains_one_and_refuses_bad_input_in_one_line(rl_world, tmp_path, capsys):
    done = subprocess.run([sys.executable, "-m", "flows.cli", "reward", "--base", rl_world.policy, "--data", rl_world.pairs,
                           "--output", str(tmp_path / "rm"), "--set", "reward.train.max_steps=4", "--set", "reward.train.eval_every=0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["steps"] == 4 and "reward step 4/4" in done.stderr

    rm = ["--output", str(tmp_path / "rm")]
    one_line_error(capsys, ["reward", "--base", rl_world.policy, "--data", rl_world.pairs, *rm], "already holds checkpoints", "--resume")
    same = write_jsonl(tmp_path / "same.jsonl", [{"prompt": "hi", "chosen": "same", "rejected": "same"}])
    one_line_error(capsys, ["reward", "--base", rl_world.policy, "--data", same, "--output", str(tmp_path / "rm2")],
                   "no usable preference pairs", "same_reply=1")
    one_line_error(capsys, ["reward", "--base", str(tmp_path / "nothing"), "--data", rl_world.pairs, "--output", str(tmp_path / "rm3")],
                   "no complete checkpoint")
    one_line_error(capsys, ["reward", "--base", rl_world.policy, "--data", rl_world.pairs, "--output", str(tmp_path / "rm4"),
                            "--set", "reward.part=3"], "invalid settings", "reward.part")
    one_line_error(capsys, ["ppo", "--policy", rl_world.policy, "--reward", rl_world.policy, "--prompts", rl_world.prompts,
                            "--output", str(tmp_path / "ppo")], "not a reward model")
