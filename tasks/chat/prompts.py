"""Prompts for the stages that sample replies (PPO, best-of-N): conversations that end in a user turn.

    data = load_prompts(["harmless-base_test.jsonl.gz"], tokenizer=tokenizer, max_tokens=192)
    data.prompts[0]     # [{"role": "user", "content": "..."}] (earlier turns kept)

Any file the chat loaders read gives prompts, auto-detected per file in this order:
- preference pairs (`hh-pairs`, `trl-pairs`, `messages-pairs`, `sharegpt-pairs`): the prompt the
  two replies answer;
- `prompt`: TRL's prompt-only layout, `{"prompt": "text"}` or `{"prompt": [messages]}`;
- conversations (`messages`, `sharegpt`, `alpaca`, `oasst`, `hh`): everything before the last
  assistant reply (or the whole conversation when it already ends in a user turn).

A prompt is skipped and counted when it breaks the message rules of model/chat.py, does not end
in a user turn (`prompt_not_ending_in_user`), repeats an earlier one (`duplicate_prompt`: pairs
files hold the same prompt many times), or, with a tokenizer and `max_tokens`, renders to more
than `max_tokens` tokens with the opened assistant turn (`too_long`: the reply needs the rest
of the context).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import xxhash

from infra.storage import Storage
from model.chat import problem, render_prompt
from model.tokenizer import BpeTokenizer
from tasks.chat import messages
from tasks.chat.conversations import CHAT_IMPORTERS
from tasks.chat.errors import Skip
from tasks.chat.files import write_jsonl
from tasks.chat.loading import FileReport, Importer, load_files
from tasks.chat.pairs import PAIR_IMPORTERS
from tasks.chat.turns import Message

Prompt = list[Message]


def _prompt_only(row: dict[str, Any]) -> Prompt:
    prompt = row["prompt"]
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else messages.normalise(prompt)


def _before_last_reply(conversation: list[Message]) -> Prompt:
    if conversation and conversation[-1].get("role") == "assistant":
        return conversation[:-1]
    return conversation


def _importers() -> dict[str, Importer[Prompt]]:
    found: dict[str, Importer[Prompt]] = {}
    for name, importer in PAIR_IMPORTERS.items():
        found[f"{name}-pairs"] = Importer(importer.looks_like, lambda row, convert=importer.convert: convert(row)[0])
    found["prompt"] = Importer(lambda row: "prompt" in row and "chosen" not in row, _prompt_only)
    for name, importer in CHAT_IMPORTERS.items():
        found[name] = Importer(importer.looks_like, lambda row, convert=importer.convert: _before_last_reply(convert(row)))
    return found


PROMPT_IMPORTERS = _importers()
PROMPT_FORMATS = ("auto", *PROMPT_IMPORTERS)


@dataclass
class PromptData:
    prompts: list[Prompt]
    reports: list[FileReport]


def prompt_key(prompt: Prompt) -> str:
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def load_prompts(
    data: Sequence[str],
    fmt: str = "auto",
    storage: Storage | None = None,
    tokenizer: BpeTokenizer | None = None,
    max_tokens: int | None = None,
) -> PromptData:
    """Prompts from files, globs or folders (local or s3://); see the module docstring."""
    seen: set[str] = set()

    def finish(prompt: Prompt, counts: Counter) -> Prompt:
        reason = problem(prompt, needs_assistant=False)
        if reason:
            raise Skip(f"prompt_{reason}" if reason == "no_messages" else reason)
        if prompt[-1]["role"] != "user":
            raise Skip("prompt_not_ending_in_user")
        key = prompt_key(prompt)
        if key in seen:
            raise Skip("duplicate_prompt")
        seen.add(key)
        return prompt

    length = (lambda prompt: len(render_prompt(tokenizer, prompt))) if tokenizer is not None else None
    prompts, reports = load_files(storage or Storage(), data, PROMPT_IMPORTERS, fmt, "prompts", finish, length, max_tokens)
    return PromptData(prompts, reports)


def hold_out(prompts: Sequence[Prompt], count: int) -> tuple[list[Prompt], list[Prompt]]:
    """(the rest, held out): the `count` prompts of lowest content hash are held out (a judge's,
    an evaluation's), in hash order, whatever the order of the files."""
    order = sorted(range(len(prompts)), key=lambda i: xxhash.xxh64_intdigest(prompt_key(prompts[i]).encode()))
    held = set(order[:count])
    return [p for i, p in enumerate(prompts) if i not in held], [prompts[i] for i in order[:count]]


def write_prompts(uri: str, prompts: Sequence[Prompt], storage: Storage | None = None) -> int:
    """Write prompts as `{"prompt": [messages]}` JSON Lines, the layout `prompt` reads back."""
    return write_jsonl(storage or Storage(), uri, ({"prompt": prompt} for prompt in prompts))
