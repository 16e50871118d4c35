"""Conversations as the model sees them: the message format, its rules, and rendering to tokens.

A conversation is a list of messages `{"role": "system"|"user"|"assistant", "content": ...}`,
the common `messages` format. A content is a string, or for an assistant that uses the search
tool, a list of typed parts in the order they happen:

    {"type": "text", "text": "..."}               what the assistant says
    {"type": "search", "query": "..."}            a search call: <|search_start|>query<|search_end|>
    {"type": "search_results", "text": "..."}     what the engine put back: <|result_start|>...<|result_end|>

A search-results part follows the search part it answers. The template itself is
`BpeTokenizer.encode_chat_masked` (model/tokenizer.py); this module checks a conversation
against the rules above (`problem`), renders it for training with the loss mask (`render`: 1
exactly on the tokens an assistant writes) and renders a prompt for generation (`render_prompt`:
it ends in an opened assistant turn).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from model.tokenizer import PART_FIELDS, RESULTS_PART, SEARCH_PART, TEXT_PART, BpeTokenizer

ROLES = ("system", "user", "assistant")
PART_TYPES = tuple(PART_FIELDS)

Message = Mapping[str, Any]


class ConversationError(ValueError):
    """A conversation that breaks the message format; the message is one line."""


def parts_of(content: str | Sequence[Mapping[str, str]]) -> list[Mapping[str, str]]:
    """A content as a list of typed parts (a string is one text part)."""
    return [{"type": TEXT_PART, "text": content}] if isinstance(content, str) else list(content)


def text_of(content: str | Sequence[Mapping[str, str]]) -> str:
    """The text a content says, its search calls and results left out (for lengths and judging)."""
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content if part.get("type") == TEXT_PART)


def simplify(content: str | Sequence[Mapping[str, str]]) -> str | list[Mapping[str, str]]:
    """A content with text parts only becomes one string: the common case stays plain."""
    if isinstance(content, str) or any(part.get("type") != TEXT_PART for part in content):
        return content
    return "".join(part["text"] for part in content)


def _content_problem(role: str, content: Any) -> str | None:
    if isinstance(content, str):
        return None if content.strip() else "empty_content"
    if not isinstance(content, list) or not content:
        return "empty_content" if content in (None, [], "") else "malformed_content"
    previous = None
    for part in content:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind not in PART_FIELDS:
            return f"unsupported_part:{kind}"
        value = part.get(PART_FIELDS[kind])
        if not isinstance(value, str):
            return "malformed_content"
        if kind != TEXT_PART and role != "assistant":
            return "search_outside_assistant"
        if kind == RESULTS_PART and previous != SEARCH_PART:
            return "results_without_search"
        if kind == SEARCH_PART and not value.strip():
            return "empty_content"
        previous = kind
    if not text_of(content).strip() and not any(part["type"] == SEARCH_PART for part in content):
        return "empty_content"
    return None


def problem(messages: Any, needs_assistant: bool = True) -> str | None:
    """The first reason `messages` is not a usable conversation, as a short drop reason, or None.

    Reasons: no_messages, malformed_message, unknown_role:<role>, empty_content,
    malformed_content, unsupported_part:<type>, search_outside_assistant, results_without_search
    and, with `needs_assistant`, no_assistant_turn.
    """
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        return "no_messages"
    for message in messages:
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            return "malformed_message"
        role = message["role"]
        if role not in ROLES:
            return f"unknown_role:{str(role)[:40]}"
        reason = _content_problem(role, message["content"])
        if reason:
            return reason
    if needs_assistant and not any(message["role"] == "assistant" for message in messages):
        return "no_assistant_turn"
    return None


def _check(messages: Sequence[Message], needs_assistant: bool) -> None:
    reason = problem(messages, needs_assistant)
    if reason:
        raise ConversationError(f"not a usable conversation: {reason}")


def render(tokenizer: BpeTokenizer, messages: Sequence[Message]) -> tuple[list[int], list[int]]:
    """A whole conversation as (ids, mask) for training; mask 1 exactly on assistant-written tokens."""
    _check(messages, needs_assistant=True)
    return tokenizer.encode_chat_masked(messages)


def render_prompt(tokenizer: BpeTokenizer, messages: Sequence[Message]) -> list[int]:
    """The conversation so far, ending in `<|im_start|>assistant<|im_sep|>`: what generation continues."""
    _check(messages, needs_assistant=False)
    return tokenizer.encode_chat(messages, open_turn="assistant")


def num_tokens(tokenizer: BpeTokenizer, messages: Sequence[Message]) -> int:
    """The rendered length of a conversation, for context-length checks."""
    return len(tokenizer.encode_chat(messages))
