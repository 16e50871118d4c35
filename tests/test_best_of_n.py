"""Best-of-N rejection sampling with a reward model that knows the preference: the kept replies
score above the mean sample, fine-tuning on them raises the reward of the policy's greedy
replies, the winners are SFT's conversations format, and a killed run resumes exactly,
re-sampling the very batches it had not finished."""

from __future__ import annotations

import json

import pytest

from infra.settings import load_settings
from tasks.chat.conversations import load_conversations
from tasks.train.best_of_n import best_of_n
from tasks.train.reward import train_reward
from tests.preference_world import sentiment
from tests.rl_support import metrics, one_line_error, sigterm_at_step

pytestmark = pytest.mark.usefixtures("one_thread")


def _settings(**best) -> object:
    values = {"train": {"max_steps": 30, "lr": 1e-3, "log_every": 5}, "samples": 8, "max_new_tokens": 16, "eval_prompts": 16,
              "prompts_per_batch": 16, **best}
    return load_settings(overrides={"best_of_n": values})


@pytest.fixture(scope="module")
def reward_model(rl_world, tmp_path_factory, one_thread):
    settings = load_settings(overrides={"reward": {"train": {"max_steps": 30, "eval_every": 0, "lr": 3e-3, "warmup_steps": 3}}})
    return train_reward(settings, rl_world.policy, [rl_world.pairs], str(tmp_path_factory.mktemp("bon-rm") / "rm"))["output"]


def test_best_of_n_then_sft_raises_the_reward_of_greedy_replies(rl_world, reward_model, tmp_path):
    summary = best_of_n(_settings(), rl_world.policy, reward_model, [rl_world.prompts], str(tmp_path / "bon"))
    selection = summary["selection"]
    assert selection["prompts"] == 72 - 16 and selection["replies"] == 8 * selection["prompts"]
    assert selection["kept"] + selection["no_finished_reply"] == selection["prompts"]
    assert selection["kept_reward_mean"] > selection["sample_reward_mean"] + 0.1
    # Fine-tuning on the winners at least halves what the greedy replies lack of a perfect score
    # (the starting policy's greedy replies may already lean good: how much depends on its seed).
    before, after = summary["greedy_reward_before"], summary["greedy_reward_after"]
    assert after > before and 1 - after < (1 - before) / 2
    winners = load_conversations([summary["winners_file"]]).conversations
    assert len(winners) == selection["kept"] and all(c[-1]["role"] == "assistant" for c in winners)
    said = [sentiment(c[-1]["content"]) for c in winners]  # the reward model kept good replies, never bad ones
    assert sum(s > 0 for s in said) > 0.5 * len(said) and sum(s < 0 for s in said) <= 0.05 * len(said)
    report = json.loads((tmp_path / "bon" / "selection.json").read_text())
    assert report == selection
    evals = [line for line in metrics(tmp_path / "bon") if "val_reward_mean" in line]
    assert [e["step"] for e in evals] == [0, 30]


def test_a_killed_run_resumes_exactly(rl_world, reward_model, tmp_path, monkeypatch, capsys):
    straight = best_of_n(_settings(), rl_world.policy, reward_model, [rl_world.prompts], str(tmp_path / "straight"))
    with sigterm_at_step(monkeypatch, 12):
        stopped = best_of_n(_settings(), rl_world.policy, reward_model, [rl_world.prompts], str(tmp_path / "killed"))
    assert stopped["stopped"] and stopped["steps"] == 12
    (tmp_path / "killed" / "selection" / "batch-00002.jsonl").unlink()  # as if the selection had died there
    resumed = best_of_n(_settings(), rl_world.policy, reward_model, [rl_world.prompts], str(tmp_path / "killed"), resume=True)
    assert resumed["selection"] == straight["selection"] and resumed["steps"] == 30
    assert (tmp_path / "killed" / "winners.jsonl").read_text() == (tmp_path / "straight" / "winners.jsonl").read_text()
    killed = {line["step"]: line for line in metrics(tmp_path / "killed")}  # plus the line of step 12, where it stopped
    for a in metrics(tmp_path / "straight"):
        b = killed[a["step"]]
        assert a.get("train_loss") == pytest.approx(b.get("train_loss"), abs=1e-6)
        assert a.get("val_reward_mean") == pytest.approx(b.get("val_reward_mean"), abs=1e-6)

    def cli(output: str, *more: str) -> list[str]:  # the policy's context is 96 tokens: the default 128 new ones do not fit
        return ["best-of-n", "--policy", rl_world.policy, "--reward", reward_model, "--prompts", rl_world.prompts,
                "--output", output, "--set", "best_of_n.max_new_tokens=16", *more]

    killed_run = str(tmp_path / "killed")
    one_line_error(capsys, cli(killed_run), "already holds a best-of-n run", "--resume")
    one_line_error(capsys, cli(killed_run, "--resume", "--set", "best_of_n.samples=4"), "selected from other inputs", "best_of_n")
    one_line_error(capsys, cli(str(tmp_path / "short"), "--set", "best_of_n.max_new_tokens=500"), "leaves no room")
