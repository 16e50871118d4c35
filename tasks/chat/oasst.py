"""OpenAssistant message trees (the oasst1/oasst2 `*.trees.jsonl` export): one row per tree.

A row has `message_tree_id`, `tree_state` and `prompt`, the root message; every message has
`role` ("prompter" or "assistant"), `text`, `rank`, `deleted`, `review_result`, `labels` and
its `replies`. The conversation is the tree's highest-ranked path: from the root, follow at each
step the best usable reply, where usable means not deleted and not rejected in review, and best
means the lowest `rank` (0 is the human rankers' first choice), then, for replies nobody ranked,
the highest `quality` label, then the earliest. The path is cut after its last assistant turn.

Whole trees are skipped when moderators halted them or their prompt was graded too low
(`tree_state:halted_by_moderator`, `tree_state:aborted_low_grade`), or when the prompt itself
was deleted or rejected in review (`rejected_prompt`).
"""

from __future__ import annotations

from typing import Any

from tasks.chat.errors import Skip
from tasks.chat.turns import Message

FORMAT = "oasst"
ROLE_OF = {"prompter": "user", "assistant": "assistant"}
SKIPPED_TREE_STATES = ("halted_by_moderator", "aborted_low_grade")


def looks_like(row: dict[str, Any]) -> bool:
    return "message_tree_id" in row and isinstance(row.get("prompt"), dict)


def conversation(row: dict[str, Any]) -> list[Message]:
    state = row.get("tree_state")
    if state in SKIPPED_TREE_STATES:
        raise Skip(f"tree_state:{state}")
    node = row["prompt"]
    if not _usable(node):
        raise Skip("rejected_prompt")
    path = []
    while node is not None:
        path.append(node)
        node = _best_reply(node)
    return [{"role": ROLE_OF.get(message.get("role"), message.get("role")), "content": message.get("text")} for message in path]


def _usable(message: dict[str, Any]) -> bool:
    return not message.get("deleted") and message.get("review_result") is not False


def _best_reply(message: dict[str, Any]) -> dict[str, Any] | None:
    replies = [reply for reply in message.get("replies") or [] if isinstance(reply, dict) and _usable(reply)]
    return min(replies, key=_rank_key) if replies else None


def _rank_key(message: dict[str, Any]) -> tuple:
    rank = message.get("rank")
    quality = ((message.get("labels") or {}).get("quality") or {}).get("value") or 0.0
    return (rank is None, rank or 0, -quality, message.get("created_date") or "", message.get("message_id") or "")
