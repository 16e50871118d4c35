"""Synthetic SFT conversations that teach the search tool, each checked against the real index.

    qas, _ = generate_qa(stage_documents(storage, stage), count=4 * n, seed=0)
    conversations, funnel = build_search_examples(SearchIndex.open(stage), qas, count=n)

From a question whose answer sits in an indexed document (qa.py), one conversation:

    user:       The tower was completed in what year?
    assistant:  <search> tower completed Paris
                <search_results> [1] ... https://example.org/eiffel ... completed in 1889 ...
                In 1889, according to example.org. The page says: "The tower was completed in 1889."

The query is the question's words without stop words and the question phrase, names and
numbers first, at most `MAX_QUERY_WORDS`, in the question's order. The results are what the
index really returns for that query, formatted exactly as the engine formats them at inference
(`search.top_k` hits, `search.result_chars`), so training and use see the same thing. A QA
becomes a conversation only when its source document is among the results and its answer
string occurs in the results text (otherwise it is counted as `source_not_found` or
`answer_not_in_results`), so every reply is backed by what the model was shown. The reply
quotes the source sentence only when the results show it whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from tasks.chat.qa import QA
from tasks.chat.turns import Message
from tasks.pipeline import Funnel
from tasks.search.index import SearchIndex
from tasks.search.results import format_results

MAX_QUERY_WORDS = 8
STOP_WORDS = frozenset(
    "a an the of to in on at by for from with about as into over after before since until during and or but nor "
    "is are was were be been being has have had do does did will would can could should may might must shall "
    "that which who whom whose what when where why how many much this these those there here it its their "
    "his her they them he she we our you your i not no than then so such also just up out more most some any "
    "all each per percentage year".split()
)
WORD = re.compile(r"[\w][\w'’.-]*\w|\w")


def search_query(question: str) -> str:
    """The words of `question` worth searching for (see the module docstring)."""
    words = [word for word in WORD.findall(question) if word.lower() not in STOP_WORDS]
    words = list(dict.fromkeys(words))

    def weight(position: int) -> tuple:
        word = words[position]
        named = word[0].isupper() or any(char.isdigit() for char in word)
        return (not named, -len(word), position)

    keep = sorted(sorted(range(len(words)), key=weight)[:MAX_QUERY_WORDS])
    return " ".join(words[position] for position in keep)


def _host(url: str) -> str:
    host = urlsplit(url).hostname or url
    return host[4:] if host.startswith("www.") else host


def reply_text(qa: QA, results: str) -> str:
    answer = qa.phrase[0].upper() + qa.phrase[1:]
    reply = f"{answer}, according to {_host(qa.url)}."
    evidence = " ".join(qa.evidence.split())
    if evidence in results:
        reply += f' The page says: "{evidence}"'
    return reply


def search_conversation(
    qa: QA, index: SearchIndex, k: int, max_chars: int, reply: Callable[[QA, str], str] = reply_text
) -> list[Message] | str:
    """The conversation teaching one search, or the reason the index does not back it.
    `reply(qa, results)` writes the answer (default: the answer phrase and its source)."""
    query = search_query(qa.question)
    hits = index.search(query, k)
    results = format_results(hits, max_chars)
    if not any(hit.doc_id == qa.doc_id and hit.url in results for hit in hits):
        return "source_not_found"
    if qa.answer not in results:
        return "answer_not_in_results"
    return [
        {"role": "user", "content": qa.question},
        {"role": "assistant", "content": [
            {"type": "search", "query": query},
            {"type": "search_results", "text": results},
            {"type": "text", "text": reply(qa, results)},
        ]},
    ]


def build_search_examples(
    index: SearchIndex, qas: Iterable[QA], count: int, k: int | None = None, max_chars: int | None = None,
    reply: Callable[[QA, str], str] = reply_text,
) -> tuple[list[list[Message]], Funnel]:
    """Up to `count` conversations from `qas`, in their order; the funnel counts the rejects."""
    k = k or index.settings.top_k
    max_chars = max_chars or index.settings.result_chars
    funnel = Funnel()
    checked = funnel["check"]
    conversations = []
    for qa in qas:
        if len(conversations) == count:
            break
        checked.docs_in += 1
        result = search_conversation(qa, index, k, max_chars, reply)
        if isinstance(result, str):
            checked.dropped[result] += 1
            continue
        checked.docs_out += 1
        conversations.append(result)
    return conversations, funnel
