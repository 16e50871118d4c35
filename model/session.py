"""A conversation with the model, as the terminal chat holds it: history, commands, context.

    session = ChatSession(engine, SamplingParams(temperature=0.6, top_k=50), tools={"search": fn})
    for item in session.handle("when was the eiffel tower built?"):
        show(item)            # Piece("text" | "search" | "search_results", ...) or Notice(...)
    session.handle("/clear"); session.handle("/system You answer in one sentence.")
    if session.done: ...      # after /quit

Every line is either a command (`/clear`, `/system [TEXT]`, `/help`, `/quit`) or a user
message. A message is added to the history, the whole conversation is rendered with the chat
template (model/chat.py), ending in an opened assistant turn, and the reply streams as Pieces
(model/reply.py); the reply then joins the history as the parts the model produced, search calls
and results included, so the next turn's prompt holds exactly the tokens generated before it.

Context: when the conversation no longer leaves room for a reply (the smaller of `max_tokens`
and a quarter of the context), the oldest exchanges are forgotten, the system prompt kept, and a
Notice says so; a message too long on its own is refused with a Notice and not added. A reply
that says nothing (or is interrupted before it says anything) leaves the history as it was.

The terminal itself (reading lines, colours) is the CLI's (flows/commands/chat.py); this class
knows nothing of it, so tests drive it directly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from model.chat import render_prompt
from model.engine import Engine, SamplingParams, Tool
from model.reply import Piece, ReplyParser

HELP = """commands:
  /clear          forget the conversation (the system prompt stays)
  /system TEXT    set the system prompt (/system alone removes it)
  /help           this list
  /quit           leave (so does Ctrl-D)"""


@dataclass(frozen=True)
class Notice:
    """Something the chat says about itself (command feedback, context trimming), not the model."""

    text: str


class ChatSession:
    """One conversation: its messages, the sampling settings, and the commands that change them."""

    def __init__(
        self,
        engine: Engine,
        params: SamplingParams = SamplingParams(),
        system: str | None = None,
        tools: Mapping[str, Tool] | None = None,
        seed: int | None = None,
    ) -> None:
        self.engine, self.params, self.tools = engine, params, dict(tools or {})
        self.system = system or None
        self.history: list[dict[str, Any]] = []  # user and assistant messages, oldest first
        self.seed = seed  # None: a fresh seed per reply; else seed + turn number, reproducible
        self.turns = 0
        self.done = False

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The conversation as the template renders it: the system prompt first, when set."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.history

    def handle(self, line: str) -> Iterator[Piece | Notice]:
        """A command's feedback, or the model's reply to a message, as it comes."""
        line = line.strip()
        if not line:
            return
        if line.startswith("/"):
            yield from self._command(line)
        else:
            yield from self.reply(line)

    def _command(self, line: str) -> Iterator[Notice]:
        name, _, argument = line.partition(" ")
        argument = argument.strip()
        if name == "/clear":
            self.history = []
            yield Notice("conversation cleared")
        elif name == "/system":
            self.system = argument or None
            yield Notice(f"system prompt set: {argument}" if argument else "system prompt removed")
        elif name == "/help":
            yield Notice(HELP)
        elif name in ("/quit", "/exit"):
            self.done = True
        else:
            yield Notice(f"unknown command {name}; /help lists the commands")

    def reply(self, text: str) -> Iterator[Piece | Notice]:
        """Send one user message and stream the model's answer; the exchange joins the history."""
        message = {"role": "user", "content": text}
        tokenizer, context = self.engine.tokenizer, self.engine.context
        room = min(self.params.max_tokens, context // 4)
        alone = len(render_prompt(tokenizer, [*self.messages[: 1 if self.system else 0], message]))
        if alone + room > context:
            yield Notice(f"message not sent: it takes {alone} tokens with the system prompt, and the model's "
                         f"context of {context} must leave {room} for the reply")
            return
        forgotten = 0
        while len(prompt := render_prompt(tokenizer, [*self.messages, message])) + room > context:
            # Forget the oldest exchange: its user message and everything up to the next one.
            cut = next((i for i, m in enumerate(self.history[1:], 1) if m["role"] == "user"), len(self.history))
            forgotten += cut
            self.history = self.history[cut:]
        if forgotten:
            yield Notice(f"forgot the {forgotten} oldest message(s) to fit the model's context of {context} tokens")
        seed = None if self.seed is None else self.seed + self.turns
        self.turns += 1
        parser = ReplyParser(self.engine.tokenizer)
        generation = self.engine.stream([prompt], self.params, seed=seed, tools=self.tools)
        try:
            for event in generation:
                yield from parser.feed(event)
        finally:  # also when the caller stops early (Ctrl-C): keep what was said
            if parser.parts:
                self.history += [message, {"role": "assistant", "content": parser.content}]
        if not parser.parts:
            yield Notice("(the model said nothing)")
        elif parser.finish_reason == "length":
            yield Notice(f"(cut at {parser.tokens} tokens: --max-tokens or the context)")
