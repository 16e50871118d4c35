"""What the pair importers share: one preference pair out of two whole conversations.

Several layouts store a pair as two complete conversations that differ only in their last
assistant reply (HH-RLHF transcripts, LLaMA-Factory's chosen_messages/rejected_messages, TRL's
implicit-prompt layout). `split_pair` cuts them into the shared prompt and the two replies.
"""

from __future__ import annotations

from typing import Any

from tasks.chat.errors import Skip

Message = dict[str, Any]


def split_pair(chosen: list[Message], rejected: list[Message]) -> tuple[list[Message], Message, Message]:
    """(prompt, chosen reply, rejected reply); Skip when the two do not share their prompt."""
    if not chosen or not rejected:
        raise Skip("empty_reply")
    *chosen_prompt, chosen_reply = chosen
    *rejected_prompt, rejected_reply = rejected
    if chosen_reply.get("role") != "assistant" or rejected_reply.get("role") != "assistant":
        raise Skip("no_final_reply")
    if chosen_prompt != rejected_prompt:
        raise Skip("prompt_mismatch")
    return chosen_prompt, chosen_reply, rejected_reply
