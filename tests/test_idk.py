""""I don't know" data (tasks/chat/idk.py) and its commands: the judging rule, and on a tiny model
that was taught the answers to half of 40 real questions (made by qa.py from real news pages),
`idk build` finds the half it knows and the half it does not, and SFT on the mix of the known
answers and the refusals raises the refusal rate on held-out questions it does not know while
the accuracy on those it knows does not fall."""

from __future__ import annotations

import json

import pytest

from flows.cli import main
from infra.settings import IdkSettings
from infra.storage import Storage
from model.tokenizer import BpeTokenizer
from tasks.chat.conversations import load_conversations, write_conversations
from tasks.chat.files import write_jsonl
from tasks.chat.idk import REFUSALS, judge, normalise, read_questions, verdict_of
from tasks.chat.qa import generate_qa, write_qa
from tests.test_sft import make_base, records, settings_with

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("reply", "answer", "expected"),
    [
        ("In 1889, two years after work began.", "1889", "correct"),
        ("It was completed in 1887 or maybe 1889.", "1889", "wrong"),  # the first number stated counts
        ("1889", "1889", "correct"),
        ("The plant employs 3200 people.", "3,200", "correct"),
        ("About 3,200.", "3,200", "correct"),
        ("32,000 people work there.", "3,200", "wrong"),
        ("Shares rose 12.5% in early trading.", "12.5 percent", "correct"),
        ("Shares rose 12.5 per cent.", "12.5 percent", "correct"),
        ("Shares rose 12.5 points.", "12.5 percent", "wrong"),
        ("It sold 4 million copies.", "4 million", "correct"),
        ("It sold 4 thousand copies.", "4 million", "wrong"),
        ("I don’t know.", "1889", "refused"),
        ("I'm not sure, but 1889?", "1889", "refused"),  # a hedge with the answer in it is no answer
        ("The capital is Paris.", "Paris", "correct"),
        ("Parisian cafes are nice.", "Paris", "wrong"),
        ("It is in New York City.", "New York", "correct"),
        ("", "1889", "wrong"),
    ],
)
def test_the_judging_rule(reply, answer, expected):
    assert judge(reply, answer) == expected


def test_normalising_and_verdicts():
    assert normalise("“3,200” People — 12.5%!") == "3200 people 12.5 percent"
    assert verdict_of(["correct"] * 3 + ["wrong"], 0.75) == "known"
    assert verdict_of(["correct"] * 2 + ["wrong"] * 2, 0.75) == "uncertain"
    assert verdict_of(["wrong", "refused", "wrong", "wrong"], 0.75) == "unknown"
    assert all(judge(phrase, "1889") == "refused" for phrase in REFUSALS)


@pytest.fixture(scope="module")
def qas(realdata):
    from tests.test_search_index import real_pages

    documents = [{"id": d.id, "url": d.url, "text": d.text, "language": d.language} for d in real_pages()]
    found, _ = generate_qa(documents, count=40, seed=0)
    assert len(found) == 40
    return found


def answer_conversation(qa) -> list[dict]:
    return [{"role": "user", "content": qa.question}, {"role": "assistant", "content": qa.phrase[0].upper() + qa.phrase[1:] + "."}]


@pytest.fixture(scope="module")
def taught(qas, tmp_path_factory):
    """A tiny model SFT-trained on the answers to the first 20 questions only."""
    root = tmp_path_factory.mktemp("idk")
    texts = [f"{qa.question} {qa.phrase}." for qa in qas] + list(REFUSALS)
    tokenizer = BpeTokenizer.train(texts * 5, vocab_size=600)
    base = make_base(str(root / "base"), tokenizer, seq_len=128, n_embd=96, n_head=4, n_kv_head=2)
    answers = str(root / "answers.jsonl")
    write_conversations(answers, [answer_conversation(qa) for qa in qas[:20]])
    run = str(root / "taught")
    from tasks.train.sft import sft

    sft(settings_with("sft.train.max_steps=150", "sft.val_fraction=0", "sft.train.log_every=50"), base, [answers], run)
    qa_file = str(root / "qa.jsonl")
    write_qa(qa_file, qas)
    return {"root": root, "model": run, "answers": answers, "qa": qa_file}


def test_idk_build_finds_what_the_model_knows(taught, qas, capsys):
    output = str(taught["root"] / "idk.jsonl")
    capsys.readouterr()
    argv = ["idk", "build", "--model", taught["model"], "--qa", taught["qa"], "--output", output, "--samples", "4",
            "--set", "idk.heldout_fraction=0.3"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    probes = [json.loads(line) for line in open(str(taught["root"] / "idk.probes.jsonl"))]
    assert [p["question"] for p in probes] == [qa.question for qa in qas]
    verdicts = {p["question"]: p["verdict"] for p in probes}
    trained, untrained = [qa.question for qa in qas[:20]], [qa.question for qa in qas[20:]]
    known = sum(verdicts[q] == "known" for q in trained)
    unknown = sum(verdicts[q] == "unknown" for q in untrained)
    assert known >= 18 and unknown >= 18, (known, unknown, probes)
    assert not any(verdicts[q] == "known" for q in untrained)  # no answer it was never taught is judged known
    # The training set: the train split's known questions with the model's own right answer,
    # its unknown ones with a refusal; the held-out split and the uncertain ones left out.
    conversations = load_conversations([output]).conversations
    by_question = {c[0]["content"]: c[1]["content"] for c in conversations}
    expected = {p["question"] for p in probes if p["split"] == "train" and p["verdict"] != "uncertain"}
    assert set(by_question) == expected and {p["split"] for p in probes} == {"train", "heldout"}
    for p in probes:
        if p["question"] in by_question:
            reply = by_question[p["question"]]
            assert (reply in REFUSALS) == (p["verdict"] == "unknown")
            assert p["verdict"] == "unknown" or (reply in p["replies"] and judge(reply, p["answer"]) == "correct")
        assert p["correct"] + p["wrong"] + p["refused"] == 4 == len(p["replies"])
    idk_count = sum(reply in REFUSALS for reply in by_question.values())
    assert f"({idk_count} \"I don't know\", {len(by_question) - idk_count} answers)" in printed
    assert "judge" in printed and "heldout_" in printed


def _eval(capsys, model: str, qa: str) -> dict:
    capsys.readouterr()
    assert main(["idk", "eval", "--model", model, "--qa", qa, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_sft_on_the_mix_raises_refusals_where_the_model_does_not_know(taught, capsys):
    idk_file, probes = str(taught["root"] / "idk.jsonl"), str(taught["root"] / "idk.probes.jsonl")
    if not (taught["root"] / "idk.probes.jsonl").exists():
        assert main(["idk", "build", "--model", taught["model"], "--qa", taught["qa"], "--output", idk_file,
                     "--set", "idk.heldout_fraction=0.3"]) == 0
    before = _eval(capsys, taught["model"], probes)
    run = str(taught["root"] / "with-idk")
    from tasks.train.sft import sft

    sft(settings_with("sft.train.max_steps=100", "sft.val_fraction=0", "sft.train.log_every=50"), taught["model"],
        [taught["answers"], idk_file], run)
    after = _eval(capsys, run, probes)
    assert records(run)[-1]["step"] == 100
    for group in ("train/unknown", "heldout/unknown"):
        assert after[group]["refusal_rate"] > before[group]["refusal_rate"] + 0.5, (group, before, after)
    for group in ("train/known", "heldout/known"):
        assert after[group]["accuracy"] >= before[group]["accuracy"], (group, before, after)
    assert after["all"]["questions"] == 40


def test_question_files_of_both_layouts_and_bad_ones(taught, qas, tmp_path, capsys):
    simple = str(tmp_path / "simple.jsonl")
    write_jsonl(Storage(), simple, [{"question": qa.question, "answer": qa.answer} for qa in qas[:5]]
                + [{"question": "no answer here"}, {"question": qas[0].question, "answer": "again"}])
    questions, funnel = read_questions(Storage(), [taught["qa"], simple])
    assert len(questions) == 40
    assert funnel["read"].dropped == {"duplicate_question": 6, "no_question_and_answer": 1}
    bad = str(tmp_path / "bad.jsonl")
    write_jsonl(Storage(), bad, [{"prompt": "x"}])
    capsys.readouterr()
    assert main(["idk", "build", "--model", taught["model"], "--qa", bad, "--output", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no usable question" in err[0] and "no_question_and_answer=1" in err[0]
    assert main(["idk", "eval", "--model", str(tmp_path / "none"), "--qa", taught["qa"]]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err
    assert IdkSettings().samples == 4
