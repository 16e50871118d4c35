"""Preference pairs for the reward model, DPO and RLAIF: a prompt and two replies, one preferred.

    data = load_pairs(["harmless-base_test.jsonl.gz"], fmt="auto")
    pair = data.pairs[0]
    pair.prompt      # the conversation so far: messages ending in a user turn
    pair.chosen      # the preferred assistant reply: {"role": "assistant", "content": ...}
    pair.rejected    # the other one

Importers (auto-detected per file, in this order): `messages` (LLaMA-Factory's
chosen_messages/rejected_messages), `sharegpt` (LLaMA-Factory's conversations + chosen +
rejected), `hh` (Anthropic HH-RLHF transcripts), `trl` (prompt/chosen/rejected, string or
conversational, or the implicit-prompt form). A pair is skipped, and counted, when its prompt
breaks the message rules of model/chat.py or does not end in a user turn, a reply is not an
assistant's or is empty (`empty_chosen`, `empty_rejected`), both replies say the same
(`same_reply`), the two transcripts disagree before their last reply (`prompt_mismatch`), or,
with a tokenizer and `max_tokens`, prompt plus either reply is longer than the context
(`too_long`). `write_pairs` writes TRL's conversational layout, which `trl` reads back.
`fit_pair` is the other way to meet a context: it drops the prompt's earliest turns, whole
messages, until both sides fit (multi-turn HH-RLHF transcripts are long, their last turns matter).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from infra.storage import Storage
from model.chat import num_tokens, problem
from model.tokenizer import BpeTokenizer
from tasks.chat import hh, messages, sharegpt, trl
from tasks.chat.errors import Skip
from tasks.chat.files import write_jsonl
from tasks.chat.loading import FileReport, Importer, load_files
from tasks.chat.turns import Message


@dataclass(frozen=True)
class PreferencePair:
    prompt: list[Message]
    chosen: Message
    rejected: Message

    def to_row(self) -> dict[str, Any]:
        """TRL's conversational preference row."""
        return {"prompt": self.prompt, "chosen": [self.chosen], "rejected": [self.rejected]}


PAIR_IMPORTERS: dict[str, Importer[tuple]] = {
    module.FORMAT: Importer(module.looks_like_pair, module.pair) for module in (messages, sharegpt, hh, trl)
}
PAIR_FORMATS = ("auto", *PAIR_IMPORTERS)


@dataclass
class PairData:
    pairs: list[PreferencePair]
    reports: list[FileReport]


def finish_pair(parts: tuple[list[Message], Message, Message], counts: Counter) -> PreferencePair:
    """The rules every pair format shares; Skip with the first one broken."""
    prompt, chosen, rejected = parts
    reason = problem(prompt, needs_assistant=False)
    if reason:
        raise Skip(f"prompt_{reason}" if reason == "no_messages" else reason)
    if prompt[-1]["role"] != "user":
        raise Skip("prompt_not_ending_in_user")
    for side, reply in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(reply, dict) or reply.get("role") != "assistant":
            raise Skip("no_final_reply")
        reason = problem([reply])
        if reason == "empty_content":
            raise Skip(f"empty_{side}")
        if reason:
            raise Skip(reason)
    if _same(chosen["content"], rejected["content"]):
        raise Skip("same_reply")
    return PreferencePair(prompt, chosen, rejected)


def _same(first: Any, second: Any) -> bool:
    if isinstance(first, str) and isinstance(second, str):
        return first.strip() == second.strip()
    return first == second


def pair_tokens(tokenizer: BpeTokenizer, pair: PreferencePair) -> int:
    """The longer of the two rendered sides, for the context-length check."""
    return max(num_tokens(tokenizer, [*pair.prompt, reply]) for reply in (pair.chosen, pair.rejected))


def fit_pair(tokenizer: BpeTokenizer, pair: PreferencePair, max_tokens: int) -> PreferencePair | None:
    """The pair with its prompt's earliest messages dropped until prompt plus either reply
    renders to at most `max_tokens` tokens; None when even the last user turn does not fit."""
    prompt = pair.prompt
    while pair_tokens(tokenizer, PreferencePair(prompt, pair.chosen, pair.rejected)) > max_tokens:
        if len(prompt) == 1:
            return None
        prompt = prompt[1:]
    return pair if prompt is pair.prompt else PreferencePair(prompt, pair.chosen, pair.rejected)


def load_pairs(
    data: Sequence[str],
    fmt: str = "auto",
    storage: Storage | None = None,
    tokenizer: BpeTokenizer | None = None,
    max_tokens: int | None = None,
) -> PairData:
    """Preference pairs from files, globs or folders (local or s3://); see the module docstring."""
    length = (lambda pair: pair_tokens(tokenizer, pair)) if tokenizer is not None else None
    pairs, reports = load_files(storage or Storage(), data, PAIR_IMPORTERS, fmt, "preference pairs", finish_pair, length, max_tokens)
    return PairData(pairs, reports)


def write_pairs(uri: str, pairs: Sequence[PreferencePair], storage: Storage | None = None) -> int:
    """Write pairs as JSON Lines in TRL's conversational layout; return how many."""
    return write_jsonl(storage or Storage(), uri, (pair.to_row() for pair in pairs))
