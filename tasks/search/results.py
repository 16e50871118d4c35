"""Search hits as the text the engine puts between `<|result_start|>` and `<|result_end|>`.

    [1] Eiffel Tower - Wikipedia
    https://en.wikipedia.org/wiki/Eiffel_Tower
    The tower was completed in 1889 as the entrance to the World's Fair ...

    [2] ...

Numbered so an answer can refer to a result; the URL on its own line so it can be cited. The
whole text stays within `max_chars`: hits are added best first, the last one that fits only in
part has its snippet cut at a word boundary, and the rest are left out. The text is encoded as
plain text (model/tokenizer.py), so a page cannot close the results early or forge a turn.
`search_tool(index)` is the engine's `tools["search"]` for chat and serving: a query -> this
text, with the index's `top_k` and `result_chars`, as the search examples of SFT show it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tasks.search.index import Hit, SearchIndex

NO_RESULTS = "No results."
MIN_SNIPPET_CHARS = 40  # a cut snippet shorter than this says nothing: leave the hit out instead


def format_results(hits: Sequence[Hit], max_chars: int) -> str:
    blocks: list[str] = []
    used = 0
    for number, hit in enumerate(hits, 1):
        head = f"[{number}] {hit.title}\n{hit.url}\n"
        room = max_chars - used - len(head) - (2 if blocks else 0)
        snippet = hit.snippet if len(hit.snippet) <= room else _cut(hit.snippet, room)
        if len(snippet) < min(MIN_SNIPPET_CHARS, len(hit.snippet)):
            break
        blocks.append(head + snippet)
        used += len(blocks[-1]) + (2 if len(blocks) > 1 else 0)
    return "\n\n".join(blocks) if blocks else NO_RESULTS


def search_tool(index: SearchIndex, k: int | None = None, max_chars: int | None = None) -> Callable[[str], str]:
    """A query -> the results text of its best `k` hits (default: the index's search settings)."""
    k, max_chars = k or index.settings.top_k, max_chars or index.settings.result_chars
    return lambda query: format_results(index.search(query, k), max_chars)


def _cut(text: str, room: int) -> str:
    if room <= 1:
        return ""
    cut = text[: room - 1].rsplit(" ", 1)[0]
    return cut.rstrip() + "…"
