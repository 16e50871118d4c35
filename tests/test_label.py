"""RLAIF end to end: a tiny judge model served by the real `crawl2chat serve-model` process labels
preference pairs over HTTP (the `openai` client, both orders), its verdicts are cached so a
rerun asks nothing, and the pairs it labelled train a reward model that prefers the GOOD reply."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from infra.settings import load_settings
from model.heads import RewardModel
from tasks.chat.label import label_pairs
from tasks.train.reward import train_reward
from tests.model_server import served_model
from tests.preference_world import BAD, GOOD, JUDGE_RUBRIC, TOPICS, build_judge, prompt_of, sentiment, write_jsonl
from tests.rl_support import one_line_error

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]
LABEL = {"rubric": JUDGE_RUBRIC, "concurrency": 4, "save_every": 16}


@pytest.fixture(scope="module")
def judge_url(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("judge")
    with served_model(["--checkpoint", build_judge(root), "--model-name", "judge"], root / "server.log") as (url, _):
        yield url


def _unlabelled(path: Path, topics: tuple[str, ...], rng: random.Random) -> tuple[str, int]:
    """One-word pairs in no particular order (half with the BAD reply as `chosen`); and how many are in the right one."""
    rows, right = [], 0
    for topic in topics:
        for good in GOOD:
            for bad in BAD:
                first, second = (good, bad) if rng.random() < 0.5 else (bad, good)
                right += first == good
                rows.append({"prompt": prompt_of(topic), "chosen": [{"role": "assistant", "content": first}],
                             "rejected": [{"role": "assistant", "content": second}]})
    return write_jsonl(path, rows), right


def test_an_http_judge_labels_pairs_that_train_a_reward_model(judge_url, rl_world, tmp_path, capsys):
    data, right = _unlabelled(tmp_path / "pairs.jsonl", TOPICS[3:], random.Random(1))  # topics the judge never saw
    settings = load_settings(overrides={"label": LABEL})
    output = str(tmp_path / "ai-pairs.jsonl")
    report = label_pairs(settings, judge_url, [data], output)
    pairs = 9 * len(TOPICS[3:])
    assert report["pairs"] == pairs and report["requests"] == 2 * pairs and report["judge"].endswith("(model judge)")
    assert report["labelled"] >= 0.9 * pairs and sum(report["skipped"].values()) == pairs - report["labelled"]
    labelled = [json.loads(line) for line in Path(output).read_text().splitlines()]
    assert len(labelled) == report["labelled"]
    assert all(sentiment(row["chosen"][0]["content"]) > 0 > sentiment(row["rejected"][0]["content"]) for row in labelled)
    assert report["agreement"] == pytest.approx(right / pairs, abs=0.1) and 0.4 < report["first_position_rate"] < 0.6
    assert json.loads(Path(output + ".report.json").read_text())["labelled"] == report["labelled"]

    again = label_pairs(settings, judge_url, [data], output, resume=True)  # every verdict is cached: nothing asked
    assert again["requests"] == 0 and again["labelled"] == report["labelled"]
    assert [json.loads(line) for line in Path(output).read_text().splitlines()] == labelled
    one_line_error(capsys, ["label", "--judge", judge_url, "--data", data, "--output", output, "--set", f"label.rubric={JUDGE_RUBRIC}"],
                   "holds the verdicts of an earlier run", "--resume")

    rm_settings = load_settings(overrides={"reward": {"train": {"max_steps": 30, "eval_every": 0, "lr": 3e-3, "warmup_steps": 3}}})
    reward = RewardModel.load(train_reward(rm_settings, rl_world.policy, [output], str(tmp_path / "rm"))["output"])
    held_out = [prompt_of(topic) for topic in TOPICS[:3]]
    wins = [reward.score([*q, {"role": "assistant", "content": g}]) > reward.score([*q, {"role": "assistant", "content": b}])
            for q in held_out for g in GOOD for b in BAD]
    assert sum(wins) / len(wins) > 0.9
