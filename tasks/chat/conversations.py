"""Load conversations for SFT from files in any supported layout, every skipped row counted.

    data = load_conversations(["real.jsonl", "s3://bucket/oasst.trees.jsonl"], fmt="auto")
    data.conversations      # list of conversations: lists of {"role", "content"} messages
    data.reports            # per file: the format found and the funnel of kept and skipped rows

After its importer, a conversation keeps to the rules of model/chat.py (known roles, non-empty
contents, well-formed search parts, at least one assistant turn); turns after the last
assistant reply teach nothing and are cut (counted as `trailing_turns_cut`). With a tokenizer
and `max_tokens`, conversations longer than the context are skipped as `too_long`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from infra.storage import Storage
from model.chat import num_tokens, problem
from model.tokenizer import BpeTokenizer
from tasks.chat import alpaca, hh, messages, oasst, sharegpt
from tasks.chat.errors import Skip
from tasks.chat.files import write_jsonl
from tasks.chat.loading import FileReport, Importer, load_files
from tasks.chat.turns import Message

Conversation = list[Message]

# Detection tries these in order; the first whose fields a file's first row has wins.
CHAT_IMPORTERS: dict[str, Importer[Conversation]] = {
    module.FORMAT: Importer(module.looks_like, module.conversation) for module in (messages, sharegpt, alpaca, oasst, hh)
}
CHAT_FORMATS = ("auto", *CHAT_IMPORTERS)


@dataclass
class ChatData:
    conversations: list[Conversation]
    reports: list[FileReport]


def finish_conversation(conversation: Conversation, counts: Counter) -> Conversation:
    """The rules every format shares; Skip with the first one broken."""
    reason = problem(conversation)
    if reason:
        raise Skip(reason)
    last_reply = max(index for index, message in enumerate(conversation) if message["role"] == "assistant")
    if last_reply < len(conversation) - 1:
        counts["trailing_turns_cut"] += 1
        conversation = conversation[: last_reply + 1]
    return conversation


def load_conversations(
    data: Sequence[str],
    fmt: str = "auto",
    storage: Storage | None = None,
    tokenizer: BpeTokenizer | None = None,
    max_tokens: int | None = None,
) -> ChatData:
    """Conversations from files, globs or folders (local or s3://); see the module docstring."""
    length = (lambda conversation: num_tokens(tokenizer, conversation)) if tokenizer is not None else None
    conversations, reports = load_files(
        storage or Storage(), data, CHAT_IMPORTERS, fmt, "conversations", finish_conversation, length, max_tokens
    )
    return ChatData(conversations, reports)


def write_conversations(uri: str, conversations: Sequence[Conversation], storage: Storage | None = None) -> int:
    """Write conversations as `{"messages": [...]}` JSON Lines, the layout the `messages` importer reads."""
    return write_jsonl(storage or Storage(), uri, ({"messages": conversation} for conversation in conversations))
