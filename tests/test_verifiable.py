"""The verifiable tasks: the strict answer extractor on every real GSM8K answer and on adversarial
replies, the rewards, and the arithmetic generator's determinism, correctness, dial and
train/val separation."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from infra.settings.rl import ArithmeticSettings
from tasks.chat.errors import ChatDataError
from tasks.verifiable.arithmetic import ArithmeticProblems
from tasks.verifiable.gsm8k import read_problems
from tasks.verifiable.problems import FileProblems, split_held_out
from tasks.verifiable.rewards import canonical_number, extract_answer, score

# --- the extractor ------------------------------------------------------------------------------


def test_every_real_gsm8k_answer_extracts_to_its_own_final_line(realdata):
    rows = 0
    for name in ("train.jsonl.gz", "test.jsonl.gz"):
        with gzip.open(realdata / "verifiable" / "gsm8k" / name, "rt") as lines:
            for line in lines:
                answer = json.loads(line)["answer"]
                stated = answer.rsplit("#### ", 1)[1].strip()  # what the dataset says, read independently
                assert extract_answer(answer) == str(int(stated.replace(",", ""))), answer[-80:]
                rows += 1
    assert rows == 7473 + 1319


def test_gsm8k_rows_become_problems_without_calculator_annotations(realdata):
    problems, report = read_problems([str(realdata / "verifiable" / "gsm8k" / "test.jsonl.gz")])
    assert len(problems) == 1319 and list(report.values())[0]["skipped"] == {}
    assert all("<<" not in p.solution and extract_answer(p.solution) == p.answer for p in problems)


@pytest.mark.parametrize("reply, answer", [
    ("#### 72", "72"),
    ("48 / 2 = 24\n48 + 24 = 72\n#### 72", "72"),
    ("  ####   1,234  ", "1234"),
    ("#### 1,234,567", "1234567"),
    ("####-5", "-5"),
    ("#### 2.50", "2.5"),
    ("#### 3.0", "3"),
    ("#### 007", "7"),
    ("#### -0", "0"),
    ("work\n\n#### 5\n\n", "5"),
    ("#### 5\t", "5"),
])
def test_the_final_answer_line_is_read_and_made_canonical(reply, answer):
    assert extract_answer(reply) == answer


@pytest.mark.parametrize("reply", [
    "72", "The answer is 72.", "", "  \n ", "####",
    "#### 72.", "#### $72", "#### 72 apples", "#### 7 or 8", "#### 7, 8",
    "#### 1,23", "#### 12,3456", "#### ,123", "#### 1,234,56", "#### .5", "#### 3/4", "#### 1e3", "#### +5",
    "#### \u0667\u0662",  # Arabic-Indic digits: not ASCII
    "#### \u22125",  # a Unicode minus sign
    "#### 5\n#### 6",  # two final answers: hedging
    "#### 5 #### 5",
    "#### 5\nSo the answer is 5",  # the marker is not on the last line
    "##### 5", "### 5", "# 5",
    "I think #### 5 is right\n5",
])
def test_anything_else_has_no_final_answer(reply):
    assert extract_answer(reply) is None


def test_canonical_number_and_scores():
    assert canonical_number(" 1,000 ") == "1000" and canonical_number("10.10") == "10.1" and canonical_number("x") is None
    right = score("3 + 4 = 7\n#### 7", "stop", "7")
    assert right.correct and right.formatted and right.reward(0.1) == pytest.approx(1.1)
    wrong = score("3 + 4 = 8\n#### 8", "stop", "7")
    assert not wrong.correct and wrong.formatted and wrong.reward(0.1) == pytest.approx(0.1)
    unformatted = score("7", "stop", "7")
    assert not unformatted.correct and not unformatted.formatted and unformatted.reward(0.1) == 0.0
    cut = score("#### 7", "length", "7")  # a reply that never closed its turn earns nothing
    assert cut.reward(0.1) == 0.0 and cut.answer == "7"
    assert score("#### 7", "length", "7", require_stop=False).correct


# --- the arithmetic generator -----------------------------------------------------------------


_LINE = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)")


def _check_solution(problem, settings: ArithmeticSettings) -> None:
    *lines, final = problem.solution.split("\n")
    assert len(lines) == settings.steps and extract_answer(problem.solution) == problem.answer
    value = None
    for line in lines:
        a, op, b, result = _LINE.fullmatch(line).groups()
        a, b, result = int(a), int(b), int(result)
        assert value is None or a == value  # each step continues from the last
        assert op in settings.operations and settings.min_operand <= b <= settings.max_operand
        assert result == {"+": a + b, "-": a - b, "*": a * b}[op] >= 0
        value = result
    assert str(value) == problem.answer and problem.question.endswith("have now?")


def test_problems_are_deterministic_correct_and_follow_the_dial():
    settings = ArithmeticSettings(min_operand=2, max_operand=30, steps=3, operations=["+", "-", "*"])
    problems = ArithmeticProblems(settings, seed=5)
    again = ArithmeticProblems(settings, seed=5)
    assert [problems.train(i) for i in range(50)] == [again.train(i) for i in range(50)]
    assert problems.train(0) != ArithmeticProblems(settings, seed=6).train(0)
    for i in range(300):
        _check_solution(problems.train(i), settings)
    for problem in problems.val(50):
        _check_solution(problem, settings)
    easy = ArithmeticProblems(ArithmeticSettings(max_operand=9, steps=1), seed=0)
    assert all(int(p.answer) <= 18 and p.solution.count("\n") == 1 for p in map(easy.train, range(100)))


@pytest.mark.parametrize("holdout", ["text", "operands"])
def test_train_and_val_problems_never_meet(holdout):
    problems = ArithmeticProblems(ArithmeticSettings(max_operand=9, holdout=holdout), seed=0)
    val = problems.val(60)
    train = [problems.train(i) for i in range(3000)]
    if holdout == "text":
        assert not {p.question for p in val} & {p.question for p in train}
    else:  # the sums themselves are unseen
        assert not {p.solution for p in val} & {p.solution for p in train}
        assert len({p.solution for p in train}) > 50


def test_a_problem_space_too_small_to_hold_out_is_a_clear_error():
    tiny = ArithmeticProblems(ArithmeticSettings(min_operand=1, max_operand=1, holdout="operands"), seed=0)
    with pytest.raises(ValueError, match="too small"):
        [tiny.train(0), *tiny.val(1)]


def test_file_problems_walk_a_new_permutation_each_epoch_and_hold_out_rows(realdata):
    rows, _ = read_problems([str(realdata / "verifiable" / "gsm8k" / "test.jsonl.gz")])
    train, val = split_held_out(rows[:100], 10, seed=0)
    assert len(val) == 10 and not {p.question for p in val} & {p.question for p in train}
    problems = FileProblems(train, val, seed=0)
    epoch0, epoch1 = [problems.train(i) for i in range(90)], [problems.train(90 + i) for i in range(90)]
    assert sorted(p.question for p in epoch0) == sorted(p.question for p in epoch1) == sorted(p.question for p in train)
    assert epoch0 != epoch1 and problems.train(5) == epoch0[5]


def test_a_file_without_usable_problems_is_one_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "answer": "no marker here"}\n{"question": "", "answer": "#### 1"}\n')
    with pytest.raises(ChatDataError, match="no usable problems.*no_final_answer=1"):
        read_problems([str(path)])
