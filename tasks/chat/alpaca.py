"""Alpaca: rows of `instruction`, optional `input`, and `output` (one exchange).

The user turn is the instruction, then the input after a blank line when there is one.
LLaMA-Factory's optional columns are kept: `system` becomes a leading system turn and
`history` (a list of [instruction, response] pairs) the turns before this one.
"""

from __future__ import annotations

from typing import Any

from tasks.chat.errors import Skip
from tasks.chat.turns import Message

FORMAT = "alpaca"


def looks_like(row: dict[str, Any]) -> bool:
    return "instruction" in row and "output" in row


def conversation(row: dict[str, Any]) -> list[Message]:
    instruction, extra, output = row.get("instruction"), row.get("input"), row.get("output")
    if not all(isinstance(value, str) for value in (instruction, output)) or not isinstance(extra, (str, type(None))):
        raise Skip("malformed_row")
    messages: list[Message] = []
    system = row.get("system")
    if isinstance(system, str) and system.strip():
        messages.append({"role": "system", "content": system})
    for exchange in row.get("history") or []:
        if not (isinstance(exchange, (list, tuple)) and len(exchange) == 2):
            raise Skip("malformed_row")
        messages += [{"role": "user", "content": exchange[0]}, {"role": "assistant", "content": exchange[1]}]
    prompt = "\n\n".join(text for text in (instruction, extra) if text and text.strip())
    return messages + [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
