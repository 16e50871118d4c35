"""Checkable answers: the strict final-answer extractor and the rewards GRPO trains on.

    extract_answer("48 / 2 = 24\\n48 + 24 = 72\\n#### 72")   # "72"
    score(reply_text, finish_reason, gold="72")              # Score(correct=True, formatted=True, ...)

What counts as the final answer (GSM8K's convention, read strictly, so that a reply cannot
earn the reward by hedging or by burying several numbers):
1. the reply holds the marker `####` exactly once;
2. the marker opens the reply's last non-empty line (spaces or tabs before it are allowed);
3. the rest of that line is one number and nothing else (spaces or tabs around it allowed): an
   optional `-`, ASCII digits, commas only as thousands separators in groups of three
   (`1,234`, never `1,23`), and an optional decimal part (`.5`); no currency sign, unit, word,
   trailing period, fraction, exponent, `+` sign or second number;
4. the number is returned canonical: commas dropped, a decimal part's trailing zeros dropped
   (`2.50` -> `2.5`, `3.0` -> `3`), leading zeros dropped, `-0` -> `0`. Two answers are equal
   exactly when their canonical strings are.
Anything else has no final answer (None), which earns neither reward.

Rewards per reply: `correct` (its final answer equals the gold one) and `formatted` (it has a
final answer at all); with `require_stop` a reply that never closed its turn (finish "length")
gets neither. GRPO's reward is `correct + format_weight * formatted`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

MARKER = "####"
_NUMBER = r"-?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?"
_FINAL_LINE = re.compile(rf"[ \t]*{MARKER}[ \t]*({_NUMBER})[ \t]*")
_JUST_A_NUMBER = re.compile(rf"[ \t]*({_NUMBER})[ \t]*")


def canonical_number(text: str) -> str | None:
    """`text` as a canonical number (rule 4) when it is exactly one number by rule 3, else None."""
    match = _JUST_A_NUMBER.fullmatch(text)
    return _canonical(match.group(1)) if match else None


def _canonical(number: str) -> str:
    value = Decimal(number.replace(",", ""))
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_answer(text: str) -> str | None:
    """The reply's final answer, canonical, by the rules in the module docstring; else None."""
    if text.count(MARKER) != 1:
        return None
    lines = [line for line in text.splitlines() if line.strip()]
    match = _FINAL_LINE.fullmatch(lines[-1]) if lines else None
    return _canonical(match.group(1)) if match else None


@dataclass(frozen=True)
class Score:
    correct: bool
    formatted: bool
    answer: str | None  # the extracted final answer

    def reward(self, format_weight: float) -> float:
        return float(self.correct) + format_weight * float(self.formatted)


def score(text: str, finish_reason: str | None, gold: str, require_stop: bool = True) -> Score:
    """Score one reply against the canonical gold answer."""
    answer = extract_answer(text)
    if require_stop and finish_reason != "stop":
        return Score(False, False, answer)
    return Score(answer is not None and answer == gold, answer is not None, answer)
