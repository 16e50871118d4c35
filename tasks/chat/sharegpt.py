"""ShareGPT: rows whose `conversations` list holds `{"from": ..., "value": ...}` turns.

Speakers map to roles: human/user -> user, gpt/assistant/chatgpt/model/bing/bard -> assistant,
system -> system; a row-level `system` string (LLaMA-Factory's column) becomes a leading system
turn. Any other speaker (function_call, observation, tool: `glaive_toolcall_en_demo.json`) keeps
its name and the row is skipped as `unknown_role:<name>`, since our template has no tool turns
but search.

Pairs in this layout are LLaMA-Factory's ranking rows (`dpo_en_demo.json`): `conversations` is
the prompt and `chosen` / `rejected` are single `{"from": "gpt", "value": ...}` turns.
"""

from __future__ import annotations

from typing import Any

from tasks.chat.errors import Skip
from tasks.chat.turns import Message

FORMAT = "sharegpt"
ROLE_OF_SPEAKER = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "model": "assistant",
    "bing": "assistant", "bard": "assistant",
    "system": "system",
}


def looks_like(row: dict[str, Any]) -> bool:
    return isinstance(row.get("conversations"), list) and "chosen" not in row


def looks_like_pair(row: dict[str, Any]) -> bool:
    return isinstance(row.get("conversations"), list) and "chosen" in row and "rejected" in row


def conversation(row: dict[str, Any]) -> list[Message]:
    system = row.get("system")
    turns = [{"role": "system", "content": system}] if isinstance(system, str) and system.strip() else []
    return turns + [_turn(turn) for turn in row["conversations"]]


def pair(row: dict[str, Any]) -> tuple[list[Message], Message, Message]:
    return conversation(row), _turn(row["chosen"]), _turn(row["rejected"])


def _turn(turn: Any) -> Message:
    if not isinstance(turn, dict):
        raise Skip("malformed_message")
    speaker = turn.get("from", turn.get("role"))
    role = ROLE_OF_SPEAKER.get(speaker.lower() if isinstance(speaker, str) else speaker, speaker)
    return {"role": role, "content": turn.get("value", turn.get("content"))}
