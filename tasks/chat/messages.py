"""The `messages` layout: rows whose `messages` list holds `{"role", "content"}` turns.

The content is a string or a list of typed parts. Text parts come as `{"type": "text",
"text": ...}` (OpenAI, and ours) or `{"type": "text", "value": ...}` (LLaMA-Factory's v1
format, `v1_sft_demo.jsonl`); search parts are ours (see tasks/chat). Extra keys such as
LLaMA-Factory's `loss_weight` are ignored. A KTO row (`label: false`, e.g. `kto_en_demo.json`)
holds an answer marked undesirable and is skipped as `labelled_undesirable` rather than taught.

Pairs in this layout are LLaMA-Factory's `chosen_messages` / `rejected_messages` (two whole
conversations, `v1_dpo_demo.jsonl`), split into the shared prompt and the two replies.
"""

from __future__ import annotations

from typing import Any

from model.chat import PART_FIELDS, simplify
from tasks.chat.errors import Skip
from tasks.chat.turns import Message, split_pair

FORMAT = "messages"


def looks_like(row: dict[str, Any]) -> bool:
    return isinstance(row.get("messages"), list)


def looks_like_pair(row: dict[str, Any]) -> bool:
    return isinstance(row.get("chosen_messages"), list) and isinstance(row.get("rejected_messages"), list)


def conversation(row: dict[str, Any]) -> list[Message]:
    if row.get("label") is False:
        raise Skip("labelled_undesirable")
    return normalise(row["messages"])


def pair(row: dict[str, Any]) -> tuple[list[Message], Message, Message]:
    return split_pair(normalise(row["chosen_messages"]), normalise(row["rejected_messages"]))


def normalise(messages: list[Any]) -> list[Message]:
    """Messages with contents in our form: a string, or our typed parts when there is a search."""
    if not isinstance(messages, list):
        raise Skip("malformed_row")
    out = []
    for message in messages:
        if not isinstance(message, dict):
            raise Skip("malformed_message")
        out.append({"role": message.get("role"), "content": _content(message.get("content"))})
    return out


def _content(content: Any) -> Any:
    if not isinstance(content, list):
        return content
    parts = []
    for part in content:
        if not isinstance(part, dict):
            raise Skip("malformed_content")
        kind = part.get("type")
        field = PART_FIELDS.get(kind)
        if field is None:
            raise Skip(f"unsupported_part:{kind}")
        value = part.get(field, part.get("value"))  # LLaMA-Factory calls the text "value"
        parts.append({"type": kind, field: value})
    return simplify(parts) if all(isinstance(part[PART_FIELDS[part["type"]]], str) for part in parts) else parts
