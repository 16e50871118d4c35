"""Arithmetic word problems with checkable answers, generated, with a difficulty dial.

    problems = ArithmeticProblems(ArithmeticSettings(max_operand=9, steps=1), seed=0)
    problems.train(0)
    # Problem(question="Ann has 3 apples. Ann finds 4 more apples. How many apples does Ann have now?",
    #         answer="7", solution="3 + 4 = 7\\n#### 7")

The dial (`grpo.arithmetic`): operand size (`min_operand`..`max_operand`), the number of
operations (`steps`), and which operations (`+`, `-`, `*`). A problem starts with a quantity
and applies `steps` operations to it, one sentence each; a subtraction never takes away more
than there is, so every intermediate count and the answer are whole and non-negative. The
worked solution writes one line per operation ("3 + 4 = 7") and the final-answer line.

Problem `i` of a split is a pure function of (seed, split, i), so a run resumes from an index.
Train and val never share a problem: each problem falls in the val partition when the hash of
its key is below `val_percent` of 100, and each split keeps drawing until a problem falls in its
own partition. The key is the question's text (`holdout="text"`: a val question never appears
in training, though at small operand ranges its sums do), or its operands and operations
(`holdout="operands"`: the arithmetic itself is unseen, a test of generalisation).
"""

from __future__ import annotations

import random

import xxhash

from infra.settings.rl import ArithmeticSettings
from tasks.verifiable.problems import Problem

NAMES = ["Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jo", "Kim", "Leo", "Mia", "Noor", "Omar",
         "Pia"]
ITEMS = ["apple", "pen", "stamp", "marble", "book", "coin", "shell", "card", "sticker", "cookie"]
ADD = ["{name} finds {n} more.", "{name} gets {n} more.", "A friend gives {name} {count}."]
SUBTRACT = ["{name} gives away {count}.", "{name} loses {count}.", "{name} uses {n} of them."]
MULTIPLY = ["{name} ends up with {n} times as many {items}.", "The number of {items} {name} has grows {n} times."]
SENTENCES = {"+": ADD, "-": SUBTRACT, "*": MULTIPLY}
MAX_DRAWS = 10_000


class ArithmeticProblems:
    """The generator as a ProblemSet (tasks/verifiable/problems.py)."""

    def __init__(self, settings: ArithmeticSettings, seed: int = 0) -> None:
        self.settings, self.seed = settings, seed

    def train(self, index: int) -> Problem:
        return self._problem("train", index)

    def val(self, count: int) -> list[Problem]:
        return [self._problem("val", index) for index in range(count)]

    def _problem(self, split: str, index: int) -> Problem:
        for draw in range(MAX_DRAWS):
            drawn = self._draw(random.Random(f"{self.seed}:{split}:{index}:{draw}"))
            if drawn is None:
                continue
            problem, key = drawn
            in_val = xxhash.xxh3_64_intdigest(key.encode()) % 100 < self.settings.val_percent
            if in_val == (split == "val"):
                return problem
        raise ValueError(
            f"grpo.arithmetic: no {split} problem found in {MAX_DRAWS} draws; the problem space is too small for a "
            "held-out split, or subtraction alone runs out (widen the operand range, add operations, or use holdout=text)"
        )

    def _draw(self, rng: random.Random) -> tuple[Problem, str] | None:
        """One random problem and its holdout key; None when only subtraction is allowed and
        nothing is left to take away (the caller draws again)."""
        s = self.settings
        name, item = rng.choice(NAMES), rng.choice(ITEMS)

        def count(n: int) -> str:
            return f"{n} {item}" if n == 1 else f"{n} {item}s"

        value = rng.randint(s.min_operand, s.max_operand)
        sentences = [f"{name} has {count(value)}."]
        lines, operands = [], [str(value)]
        for _ in range(s.steps):
            choices = [op for op in s.operations if op != "-" or value >= s.min_operand]
            if not choices:
                return None
            op = rng.choice(choices)
            low = max(2, s.min_operand) if op == "*" else s.min_operand  # "1 times as many" is no problem
            operand = rng.randint(low, min(value, s.max_operand) if op == "-" else max(low, s.max_operand))
            result = value + operand if op == "+" else value - operand if op == "-" else value * operand
            sentences.append(rng.choice(SENTENCES[op]).format(name=name, n=operand, count=count(operand), items=f"{item}s"))
            lines.append(f"{value} {op} {operand} = {result}")
            operands += [op, str(operand)]
            value = result
        question = " ".join(sentences) + f" How many {item}s does {name} have now?"
        solution = "\n".join(lines) + f"\n#### {value}"
        key = question if s.holdout == "text" else " ".join(operands)
        return Problem(question, str(value), solution), key
