"""TRL's preference layout: `prompt`, `chosen`, `rejected`, in its string or conversational form.

String form: `prompt` is the user's text and `chosen` / `rejected` the two replies. Conversational
form: `prompt` is a list of messages and `chosen` / `rejected` lists holding one assistant
message each. Without a `prompt` (TRL's implicit-prompt form) `chosen` and `rejected` are whole
conversations, split into the prompt they share and their last replies. This is also the layout
`write_pairs` writes, so TRL reads our pairs as they are.
"""

from __future__ import annotations

from typing import Any

from tasks.chat import messages
from tasks.chat.errors import Skip
from tasks.chat.turns import Message, split_pair

FORMAT = "trl"


def looks_like_pair(row: dict[str, Any]) -> bool:
    if "chosen" not in row or "rejected" not in row:
        return False
    if "prompt" in row:
        return True
    return isinstance(row["chosen"], list) and isinstance(row["rejected"], list)


def pair(row: dict[str, Any]) -> tuple[list[Message], Message, Message]:
    if "prompt" not in row:
        return split_pair(messages.normalise(row["chosen"]), messages.normalise(row["rejected"]))
    prompt = row["prompt"]
    prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else messages.normalise(prompt)
    return prompt, _reply(row["chosen"]), _reply(row["rejected"])


def _reply(reply: Any) -> Message:
    if isinstance(reply, str):
        return {"role": "assistant", "content": reply}
    if not isinstance(reply, list):
        raise Skip("malformed_row")
    if len(reply) != 1:
        raise Skip("empty_reply" if not reply else "multi_message_reply")
    return messages.normalise(reply)[0]
