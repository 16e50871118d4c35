"""An assistant's reply as it streams: the engine's tokens read back into the message format.

    parser = ReplyParser(tokenizer, stop=["\\nUser:"])
    for event in engine.stream([prompt], params):
        for piece in parser.feed(event):       # Piece("text", "Hel"), Piece("search", ""), ...
            show(piece)
        if parser.stopped:                     # a stop string matched: the reply ends there
            generation.cancel(event.row)
    messages.append({"role": "assistant", "content": parser.content})

The engine streams a row's tokens with their decoded text, search markers included as their
special-token strings. The parser splits that stream at the markers into the typed parts of
model/chat.py: text, a search call (`<|search_start|>query<|search_end|>`) and its results
(`<|result_start|>...<|result_end|>`), so the terminal chat and the server can show each kind
its own way, and so the reply goes back into the history as the very tokens the model produced
(rendering `content` with the chat template gives them again).

A `Piece` with empty text opens a search or results part (the call is starting); the parts'
text then follows as it is decoded. A marker out of place (results without a search before
them, a closing marker with nothing open, a search opened inside a search) is left out: a
history the template cannot render would break the next turn.

Stop strings apply to what the assistant says (text parts), as OpenAI's `stop` does: the text
up to the first match is the reply, the match and what follows are dropped, and text that might
be the start of a match is held back until it is not (so nothing past a stop is ever shown).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from model.chat import simplify, text_of
from model.engine import TokenEvent
from model.tokenizer import PART_FIELDS, RESULT_END, RESULT_START, RESULTS_PART, SEARCH_END, SEARCH_PART, SEARCH_START, TEXT_PART, BpeTokenizer


@dataclass(frozen=True)
class Piece:
    """New text of one kind of part: "text", "search" (a query) or "search_results"."""

    kind: str
    text: str


class ReplyParser:
    """One row's TokenEvents -> Pieces as they come, and the reply's parts once it ends."""

    def __init__(self, tokenizer: BpeTokenizer, stop: Sequence[str] = ()) -> None:
        ids = tokenizer.special_ids
        self._markers = {
            ids[SEARCH_START]: (SEARCH_START, "open", SEARCH_PART),
            ids[SEARCH_END]: (SEARCH_END, "close", SEARCH_PART),
            ids[RESULT_START]: (RESULT_START, "open", RESULTS_PART),
            ids[RESULT_END]: (RESULT_END, "close", RESULTS_PART),
        }
        self.stop = [s for s in stop if s]
        self._parts: list[dict[str, str]] = []
        self._kind = TEXT_PART
        self._held = ""  # text that may be the start of a stop string
        self.stopped = False  # a stop string matched
        self.finish_reason: str | None = None
        self.tokens = 0  # completion tokens seen (sampled and forced)

    def feed(self, event: TokenEvent) -> list[Piece]:
        """The pieces one token adds (often one, none mid-character or while held back)."""
        self.tokens += 1
        if self.stopped:
            return []
        pieces: list[Piece] = []
        marker = self._markers.get(event.token)
        text = event.text
        if marker is not None:
            text = text.removesuffix(marker[0])  # any text before it was still undecoded
        self._add(text, pieces, final=marker is not None or event.finish_reason is not None)
        if marker is not None and not self.stopped:
            self._switch(marker[1], marker[2], pieces)
        if event.finish_reason is not None:
            self.finish_reason = "stop" if self.stopped else event.finish_reason
        return pieces

    def finish(self, reason: str = "stop") -> list[Piece]:
        """End the reply where it is (the row was cancelled): what was held back comes out."""
        pieces: list[Piece] = []
        if not self.stopped:
            self._add("", pieces, final=True)
        self.finish_reason = self.finish_reason or reason
        return pieces

    @property
    def parts(self) -> list[dict[str, str]]:
        """The reply as typed parts, only those the template can render again: no empty text,
        no search with an empty query (nor its results)."""
        kept: list[dict[str, str]] = []
        for part in self._parts:
            kind = part["type"]
            if kind == TEXT_PART and not part["text"]:
                continue
            if kind == SEARCH_PART and not part["query"].strip():
                continue
            if kind == RESULTS_PART and (not kept or kept[-1]["type"] != SEARCH_PART):
                continue
            kept.append(dict(part))
        return kept

    @property
    def content(self) -> str | list[dict[str, str]]:
        """The reply as a message content: a string when it is text only."""
        return simplify(self.parts)

    @property
    def text(self) -> str:
        """What the assistant said, its search calls and results left out."""
        return text_of(self.parts)

    # -- inside ---------------------------------------------------------------------------------

    def _switch(self, action: str, kind: str, pieces: list[Piece]) -> None:
        previous = self._parts[-1]["type"] if self._parts else None
        if action == "open":
            fits = self._kind == TEXT_PART and (kind == SEARCH_PART or previous == SEARCH_PART)
            if fits:
                self._kind = kind
                self._parts.append({"type": kind, PART_FIELDS[kind]: ""})
                pieces.append(Piece(kind, ""))
        elif self._kind == kind:  # the matching close
            self._kind = TEXT_PART

    def _add(self, text: str, pieces: list[Piece], final: bool) -> None:
        if self._kind != TEXT_PART:
            self._append(self._kind, text, pieces)
            return
        text = self._held + text
        self._held = ""
        if self.stop:
            found = [(text.find(s), s) for s in self.stop if s in text]
            if found:
                self._append(TEXT_PART, text[: min(found)[0]], pieces)
                self.stopped = True
                return
            if not final:
                hold = max((n for s in self.stop for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
                text, self._held = text[: len(text) - hold], text[len(text) - hold :]
        self._append(TEXT_PART, text, pieces)

    def _append(self, kind: str, text: str, pieces: list[Piece]) -> None:
        if not text:
            return
        if not self._parts or self._parts[-1]["type"] != kind:
            self._parts.append({"type": kind, PART_FIELDS[kind]: ""})
        self._parts[-1][PART_FIELDS[kind]] += text
        pieces.append(Piece(kind, text))
