"""Anthropic HH-RLHF: `chosen` and `rejected` transcripts of "\n\nHuman: ..." / "\n\nAssistant: ..." turns.

As a conversation for SFT, the `chosen` transcript is taken. As a preference pair, both are
parsed and split into the prompt they share and their two final assistant replies; a row whose
transcripts differ before the last reply is a `prompt_mismatch`. Text before the first turn
marker means the transcript is not in this layout (`malformed_transcript`).
"""

from __future__ import annotations

import re
from typing import Any

from tasks.chat.errors import Skip
from tasks.chat.turns import Message, split_pair

FORMAT = "hh"
TURN_MARKER = re.compile(r"\n\n(Human|Assistant):")
ROLE_OF = {"Human": "user", "Assistant": "assistant"}


def looks_like(row: dict[str, Any]) -> bool:
    chosen = row.get("chosen")
    return isinstance(chosen, str) and isinstance(row.get("rejected"), str) and chosen.lstrip().startswith("Human:")


looks_like_pair = looks_like


def conversation(row: dict[str, Any]) -> list[Message]:
    return parse_transcript(row["chosen"])


def pair(row: dict[str, Any]) -> tuple[list[Message], Message, Message]:
    return split_pair(parse_transcript(row["chosen"]), parse_transcript(row["rejected"]))


def parse_transcript(text: Any) -> list[Message]:
    """A transcript as messages; each turn's text is stripped of the spaces around it."""
    if not isinstance(text, str):
        raise Skip("malformed_transcript")
    pieces = TURN_MARKER.split("\n\n" + text.lstrip())
    if pieces[0].strip():
        raise Skip("malformed_transcript")
    return [{"role": ROLE_OF[speaker], "content": said.strip()} for speaker, said in zip(pieces[1::2], pieces[2::2])]
