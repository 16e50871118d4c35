"""PPO on tiny models with known rewards: it raises the mean reward of a programmatic reward
while the KL to the reference stays under its budget; a reward that can be hacked by length is
caught by the judge and prevented by the length penalty; a run killed mid-rollout resumes to the
same rollouts and losses; the KL budget stops a run; GAE and the per-token alignment of the
rollout's log-probabilities are checked against direct computations; and the command runs with
a reward model, its critic and a judge trained on the other half of the pairs."""

from __future__ import annotations

import json

import pytest
import torch

from infra.settings import PpoSettings, load_settings
from model.chat import render_prompt
from model.checkpoint import load_model
from model.engine import Engine, SamplingParams
from tasks.train.ppo import distinct_2, gae, ppo, reply_logprobs
from tasks.train.reward import train_reward
from tests.preference_world import concise, positive, prompt_of, wordy
from tests.rl_support import metrics, one_line_error, sigterm_at_step

pytestmark = pytest.mark.usefixtures("one_thread")
ROLLOUT = {"rollout_prompts": 16, "samples_per_prompt": 2, "minibatch_size": 16, "epochs": 2, "max_new_tokens": 16,
           "eval_prompts": 16, "critic_init": "policy", "kl_coef": 0.05}
PER_LINE = ("step", "reward_mean", "kl", "entropy", "response_length", "clip_fraction", "distinct_2", "generate_share")


def _settings(train: dict, **ppo) -> object:
    return load_settings(overrides={"ppo": {"train": {"lr": 3e-4, "eval_every": 16, **train}, **ROLLOUT, **ppo}})


def test_gae_matches_a_direct_computation():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.5, -1.0, 0.0, 0.0]])
    values = torch.tensor([[0.1, 0.2, 0.3, 9.0], [0.4, 0.0, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    gamma, lam = 0.9, 0.8
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    for row in range(2):
        n = int(mask[row].sum())
        v = values[row, :n].tolist() + [0.0]  # nothing after the reply's last token
        deltas = [rewards[row, t].item() + gamma * v[t + 1] - v[t] for t in range(n)]
        expected = [sum((gamma * lam) ** (k - t) * deltas[k] for k in range(t, n)) for t in range(n)]
        assert advantages[row, :n].tolist() == pytest.approx(expected, abs=1e-6)
        assert returns[row, :n].tolist() == pytest.approx([a + b for a, b in zip(expected, v)], abs=1e-6)
        assert advantages[row, n:].abs().sum() == 0 and returns[row, n:].abs().sum() == 0
    assert distinct_2([[1, 2, 1, 2], [1, 2]]) == pytest.approx(2 / 4) and distinct_2([[7]]) == 0.0


def test_the_rollouts_log_probabilities_line_up_with_the_engines(rl_world):
    """The updates recompute, for each reply token, what the engine sampled it with."""
    model, tokenizer, _ = load_model(rl_world.policy)
    prompts = [render_prompt(tokenizer, prompt_of(topic)) for topic in ("cats", "the sun and the rain on the boats")]
    done = Engine(model, tokenizer).generate(prompts, SamplingParams(max_tokens=12, temperature=0.7), num_samples=3, seed=4)
    rows = [prompts[c.prompt] + c.tokens for c in done]
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    starts = torch.tensor([len(prompts[c.prompt]) - 1 for c in done])
    with torch.no_grad():
        recomputed = reply_logprobs(model(ids), ids, starts, max(len(c.tokens) for c in done), temperature=0.7)
    for i, completion in enumerate(done):
        assert recomputed[i, : len(completion.tokens)].tolist() == pytest.approx(completion.logprobs, abs=1e-4)


def test_ppo_raises_the_reward_while_the_kl_stays_under_its_budget(rl_world, tmp_path):
    settings = _settings({"max_steps": 48}, kl_target=2.0, kl_horizon=100, kl_budget=10.0)
    summary = ppo(settings, rl_world.policy, positive, [rl_world.prompts], str(tmp_path / "ppo"), judge=positive)
    lines = metrics(tmp_path / "ppo")
    assert not summary["stopped"] and summary["rollouts"] == 12
    rollouts = {line["rollout"]: line for line in lines if "rollout" in line}
    first, last = [rollouts[i]["reward_mean"] for i in (1, 2, 3)], [rollouts[i]["reward_mean"] for i in (10, 11, 12)]
    assert sum(last) / 3 > sum(first) / 3 + 0.1, (first, last)
    evals = [line for line in lines if "val_reward_mean" in line]
    assert [e["step"] for e in evals] == [0, 16, 32, 48] and evals[-1]["val_reward_mean"] > evals[0]["val_reward_mean"] + 0.4
    assert max(line["kl"] for line in rollouts.values()) < 10.0 and summary["reward_gain"] > 0.4
    # The first update starts at the sampling policy, to float rounding (the rollout's and the
    # update's log-probabilities come from different forward passes).
    assert rollouts[1]["kl"] == 0.0 and abs(lines[1]["train_approx_kl"]) < 1e-9
    # Adapted towards the target after every rollout: down while its KL is under 2.0, up while
    # over (a fixed range failed when a run's KL stayed low long enough to pass below it).
    ordered = [rollouts[i] for i in sorted(rollouts)]
    assert ordered[0]["kl_coef"] == 0.05
    for before, after in zip(ordered, ordered[1:]):
        assert (after["kl_coef"] > before["kl_coef"]) == (before["kl"] > 2.0), (before, after)
    for line in lines[1:]:
        assert all(line.get(name) is not None for name in PER_LINE), line
        assert 0 <= line["clip_fraction"] <= 1 and 0 < line["distinct_2"] <= 1 and 0 < line["generate_share"] < 1
        assert line["entropy"] > 0 and line["rollout_tokens_per_second"] > 0 and line["finished_fraction"] > 0.5
    assert "judge_mean" in evals[-1] and summary["hacking_suspected"] is False


def test_a_length_hackable_reward_is_caught_by_the_judge_and_the_length_penalty(rl_world, tmp_path):
    """`wordy` pays for length; the judge (`concise`) is what it was meant to stand for."""
    hackable = {"train": {"max_steps": 48, "lr": 1e-3}, "kl_coef": 0.01, "epochs": 4, "max_new_tokens": 24}
    free = ppo(_settings(**hackable), rl_world.policy, wordy, [rl_world.prompts], str(tmp_path / "free"), judge=concise)
    evals = [line for line in metrics(tmp_path / "free") if "judge_mean" in line]
    assert free["hacking_suspected"] and free["reward_gain"] > 0.1 and free["judge_gain"] < -0.1
    assert evals[-1]["val_response_length"] > evals[0]["val_response_length"] + 1
    assert 48 in free["hacking_suspected_at"]

    penalised = ppo(_settings(**hackable, length_penalty=0.1), rl_world.policy, wordy, [rl_world.prompts], str(tmp_path / "penalised"),
                    judge=concise)
    evals = [line for line in metrics(tmp_path / "penalised") if "judge_mean" in line]
    # The judge holds: it moves by at most about one of its 24 held-out replies either way.
    assert not penalised["hacking_suspected"] and penalised["judge_gain"] > -0.05
    assert evals[-1]["val_response_length"] <= evals[0]["val_response_length"] + 0.5


def test_a_run_killed_mid_rollout_resumes_to_the_same_rollouts_and_losses(rl_world, tmp_path, monkeypatch):
    settings = _settings({"max_steps": 12, "eval_every": 8})
    ppo(settings, rl_world.policy, positive, [rl_world.prompts], str(tmp_path / "straight"), judge=positive)
    with sigterm_at_step(monkeypatch, 6):  # rollout 2 of 3, half trained on
        stopped = ppo(settings, rl_world.policy, positive, [rl_world.prompts], str(tmp_path / "killed"), judge=positive)
    assert stopped["stopped"] and stopped["steps"] == 6
    resumed = ppo(settings, rl_world.policy, positive, [rl_world.prompts], str(tmp_path / "killed"), judge=positive, resume=True)
    assert resumed["steps"] == 12 and resumed["rollouts"] == 3
    straight, killed = metrics(tmp_path / "straight"), metrics(tmp_path / "killed")
    assert [r["step"] for r in killed] == [r["step"] for r in straight] == list(range(13))
    for a, b in zip(straight, killed):
        for key in ("rollout", "reward_mean", "kl", "kl_coef", "response_length", "distinct_2", "entropy", "val_reward_mean", "judge_mean"):
            assert a.get(key) == pytest.approx(b.get(key), abs=1e-6), (key, a, b)
        for key in ("train_loss", "train_policy_loss", "train_value_loss", "train_clip_fraction"):
            assert a.get(key) == pytest.approx(b.get(key), abs=1e-6), (key, a, b)


@pytest.fixture(scope="module")
def reward_and_judge(rl_world, tmp_path_factory, one_thread):
    """A reward model on one half of the pairs and a judge on the other half."""
    root = tmp_path_factory.mktemp("rm")
    runs = []
    for part in (0, 1):
        settings = load_settings(overrides={"reward": {"train": {"max_steps": 30, "eval_every": 0, "lr": 3e-3, "warmup_steps": 3},
                                                      "parts": 2, "part": part, "val_fraction": 0.2}})
        runs.append(train_reward(settings, rl_world.policy, [rl_world.pairs], str(root / f"part{part}"))["output"])
    return runs


def test_the_command_runs_against_a_reward_model_and_stops_at_the_kl_budget(rl_world, reward_and_judge, tmp_path, capsys):
    from flows.cli import main

    reward, judge = reward_and_judge
    args = ["ppo", "--policy", rl_world.policy, "--reward", reward, "--judge", judge, "--prompts", rl_world.prompts,
            "--output", str(tmp_path / "ppo"), *sum((["--set", f"ppo.{key}={json.dumps(value)}"] for key, value in ROLLOUT.items()
                                                     if key != "critic_init"), []),
            "--set", "ppo.train.max_steps=8", "--set", "ppo.train.eval_every=4", "--set", "ppo.train.lr=3e-4", "--set", "ppo.kl_budget=0.01"]
    capsys.readouterr()
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["stopped"] and summary["stop_reason"].startswith("kl_budget") and summary["steps"] == 5  # rollout 2 is over it
    assert summary["reward"] == reward and summary["judge"] == judge and summary["critic_params"] == summary["params"]
    lines = metrics(tmp_path / "ppo")
    assert 0 <= lines[0]["judge_mean"] <= 1 and 0 <= lines[0]["val_reward_mean"] <= 1 and lines[-1]["step"] == 5
    one_line_error(capsys, args, "already holds checkpoints")
    one_line_error(capsys, [*args, "--resume", "--set", "ppo.epochs=3"], "invalid settings", "max_steps")
    one_line_error(capsys, [*args, "--resume", "--set", "ppo.length_penalty=0.5"], "other inputs", "ppo.length_penalty 0.0 vs 0.5")
    with pytest.raises(ValueError, match="must divide the rollout"):
        PpoSettings(rollout_prompts=6, minibatch_size=4)
