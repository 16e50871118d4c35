"""What a verifiable task gives GRPO: problems with canonical answers, for training and held out.

    problems = ArithmeticProblems(settings.grpo.arithmetic, seed=0)   # or FileProblems(rows, ...)
    problem = problems.train(1234)         # the 1234th training problem: the same on every call
    held_out = problems.val(200)           # a fixed list, disjoint from every training problem
    messages = problem.messages(system_prompt=None, instruction="")    # the chat prompt

A `Problem` is a question, its canonical answer (tasks/verifiable/rewards.py) and a worked
solution that ends in the final-answer line (what a warm start or a reference reply looks
like). Training problems come by index so that a run's position is one integer: exact resume
needs nothing else. `FileProblems` serves rows read from files (GSM8K, or generated problems
written out), shuffled once per epoch from the seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Problem:
    question: str
    answer: str  # canonical (rewards.canonical_number)
    solution: str  # a worked reply ending in "#### <answer>"

    def messages(self, system_prompt: str | None = None, instruction: str = "") -> list[dict[str, Any]]:
        """The conversation GRPO asks the policy to continue: [system], user question."""
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return [*system, {"role": "user", "content": self.question + instruction}]

    def conversation(self, system_prompt: str | None = None, instruction: str = "") -> list[dict[str, Any]]:
        """The prompt answered with the worked solution: an SFT example."""
        return [*self.messages(system_prompt, instruction), {"role": "assistant", "content": self.solution}]


class ProblemSet(Protocol):
    def train(self, index: int) -> Problem: ...

    def val(self, count: int) -> list[Problem]: ...


class FileProblems:
    """Problems from rows: `train` walks a seeded permutation of the training rows, a new one
    each epoch; `val` is the held-out rows (the first `count`)."""

    def __init__(self, train_rows: Sequence[Problem], val_rows: Sequence[Problem], seed: int) -> None:
        if not train_rows:
            raise ValueError("no training problems")
        if not val_rows:
            raise ValueError("no held-out problems for val_accuracy")
        self.rows, self.held_out, self.seed = list(train_rows), list(val_rows), seed
        self._epoch, self._order = -1, list(range(len(self.rows)))

    def train(self, index: int) -> Problem:
        epoch, position = divmod(index, len(self.rows))
        if epoch != self._epoch:
            self._order = list(range(len(self.rows)))
            random.Random(f"{self.seed}:epoch:{epoch}").shuffle(self._order)
            self._epoch = epoch
        return self.rows[self._order[position]]

    def val(self, count: int) -> list[Problem]:
        return self.held_out[:count]


def split_held_out(rows: Sequence[Problem], count: int, seed: int) -> tuple[list[Problem], list[Problem]]:
    """(train, val): `count` rows picked by a seeded shuffle are held out, the rest train."""
    order = list(range(len(rows)))
    random.Random(f"{seed}:held-out").shuffle(order)
    count = min(count, max(1, len(rows) // 5))  # never more than a fifth of a small file
    held = set(order[:count])
    return [row for i, row in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]
