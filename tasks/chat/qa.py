"""Questions with known short answers, taken from the pipeline's own documents, by rule.

    qas, funnel = generate_qa(stage_documents(storage, "out/deduped"), count=500, seed=0)

For the "I don't know" builder (probe a model with questions whose answers are known) and for
the search examples (search_examples.py). No model writes them: each comes from one sentence of
one document, so its answer is that document's word, checkable by string match.

The heuristics, in order (a sentence failing one is counted under its name):
1. Documents in English only (`language` "en"), split into paragraphs by line and into
   sentences after `.` `!` `?` before a capital.
2. A sentence is a statement of 8 to 40 words ending in a full stop, with no `?`, `!`, `:`,
   `|`, URL or e-mail, balanced quotes, and neither a heading run into its paragraph nor cut
   after an initial (`too_short`, `too_long`, `not_a_statement`); it has at least two English
   function words (the, of, is, ...), which leaves out other languages quoted inside English
   pages (`not_english_prose`).
3. It must stand alone: no pronoun or connective first (It, This, They, However, ...:
   `context_dependent`), no time relative to the writing (today, last year, on Tuesday, ago,
   recent, ...: `relative_time`), and a capitalised word besides the first and the answer,
   which names what it is about (`no_named_subject`).
4. It holds exactly one answer of these kinds (`no_answer`, `several_answers`); any other
   number in it is left as context:
   - year: a year 1600-2099 after in/since/by/until/during/before/after, not at the start:
     "... was completed in 1889." -> "... was completed in what year?", answer "1889"
   - percentage: "rose 12.5 percent" / "12.5%" -> "rose what percentage", answer "12.5 percent"
   - count: a number, optionally million/billion/thousand, before a plural noun, not a year,
     not after a word with a capital (a name: "Level 2 chargers") and not the end of a range:
     "... employs 3,200 people." -> "... employs how many people?", answer "3,200"
   The question is the sentence with the answer replaced by the question phrase, an echo
   question ("The tower was completed in what year?"), so it asks exactly what the sentence says.
5. Selection is deterministic and streaming: every candidate gets the key
   xxh64(seed, document id, sentence number); each document gives its `per_doc` lowest-key
   candidates and the run keeps the `count` lowest keys overall, in key order. The same seed
   gives the same questions whatever order the files are read in.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import xxhash

from infra.storage import Storage
from tasks.chat.files import read_rows, write_jsonl
from tasks.formats.docs import list_doc_files, read_batches
from tasks.pipeline import Funnel

MIN_WORDS, MAX_WORDS = 8, 40
SENTENCE_END = re.compile(r"(?<=[.!?])[\"”’)]?\s+(?=[\"“‘(]?[A-Z])")
NOT_A_STATEMENT = re.compile(r"[?!:|]|https?://|www\.|@")
CONTEXT_WORDS = frozenset(
    "it its this that these those they them their he she his her him we our us i you your there here "
    "but and or so also however then thus hence meanwhile instead still yet such both another other".split()
)
FUNCTION_WORDS = frozenset("the a an of to in is was and for on with that by as at from are were has have be".split())
RELATIVE_TIME = re.compile(
    r"\b(?:today|tonight|yesterday|tomorrow|now|currently|recent|recently|lately|soon|ago|upcoming|"
    r"(?:on|last|this|next) (?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)|"
    r"(?:this|last|next|past|coming) (?:week|month|year|season|decade|century|spring|summer|fall|autumn|winter|weekend|time)|"
    r"(?:earlier|later) this)\b",
    re.IGNORECASE,
)
NUMBER = r"\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?"
ANSWER_PATTERNS = {
    "year": re.compile(r"(?<=\s)(?P<lead>in|since|by|until|during|before|after) (?P<answer>(?:1[6-9]|20)\d\d)(?![\d,.]\d|s\b|-|%|\w)"),
    "percentage": re.compile(rf"(?<![\w.,$])(?P<answer>(?:{NUMBER})(?: ?%| percent\b| per cent\b))"),
    "count": re.compile(rf"(?:^|(?<=\s))(?P<answer>(?:{NUMBER})(?: (?:million|billion|thousand))?) (?P<noun>[a-z]{{3,}}s|people|children|men|women)\b(?![/-])"),
}
QUESTION_PHRASE = {"year": "{lead} what year", "percentage": "what percentage", "count": "how many {noun}"}
CAPITALISED = re.compile(r"\b[A-Z][\w'’-]*")


@dataclass(frozen=True)
class QA:
    question: str
    answer: str  # the exact words of the document, e.g. "1889", "12.5 percent", "3,200"
    kind: str  # year | percentage | count
    phrase: str  # the answer as the sentence says it: "in 1889", "12.5 percent", "3,200 people"
    evidence: str  # the sentence, verbatim from the document
    url: str
    doc_id: str

    def to_row(self) -> dict[str, Any]:
        return asdict(self)


def split_sentences(text: str) -> Iterator[str]:
    for paragraph in text.splitlines():
        for sentence in SENTENCE_END.split(paragraph.strip()):
            if sentence:
                yield sentence.strip()


def _is_count(sentence: str, match: re.Match) -> bool:
    """A number before a plural noun that counts something: not a year ("2019 elections"), not
    part of a name ("Level 2 chargers", "iPhone 7 refurbs", "Nov. 9 loss": a word with a capital
    before it), not the end of a range ("242 to 330 passengers")."""
    number = match["answer"].split(" ")[0]
    if len(number) == 4 and number.isdigit() and 1600 <= int(number) <= 2099:
        return False
    before = sentence[: match.start()].split()
    if before and any(char.isupper() for char in before[-1]):
        return False
    return not (len(before) >= 2 and before[-1] in ("to", "and", "or") and any(char.isdigit() for char in before[-2]))


def question_from(sentence: str) -> QA | str:
    """A QA (without url and doc id) from one sentence, or the reason it gives none."""
    words = sentence.split()
    if len(words) < MIN_WORDS:
        return "too_short"
    if len(words) > MAX_WORDS:
        return "too_long"
    if (
        not sentence.endswith(".") or NOT_A_STATEMENT.search(sentence) or not sentence[0].isupper()
        or (words[0].isupper() and len(words[0]) > 4)  # a heading run into its paragraph
        or re.fullmatch(r"[A-Z]\.", words[-1])  # cut after an initial ("James T.")
        or sentence.count("“") != sentence.count("”") or sentence.count('"') % 2  # a piece of a quotation
    ):
        return "not_a_statement"
    if sum(word.lower() in FUNCTION_WORDS for word in words) < 2:
        return "not_english_prose"
    if re.sub(r"\W", "", words[0]).lower() in CONTEXT_WORDS:
        return "context_dependent"
    if RELATIVE_TIME.search(sentence):
        return "relative_time"
    found = []
    for kind, pattern in ANSWER_PATTERNS.items():
        for match in pattern.finditer(sentence):
            if kind == "count" and not _is_count(sentence, match):
                continue
            if kind == "year" and match.start() < 2:
                continue
            found.append((kind, match))
    # A percentage is also a number before a word: count each span once.
    spans = {match.span("answer"): (kind, match) for kind, match in sorted(found, key=lambda item: item[0] != "percentage")}
    if not spans:
        return "no_answer"
    if len(spans) > 1:
        return "several_answers"
    ((kind, match),) = spans.values()
    start, end = match.span()
    if not any(start_ > 0 and not start <= start_ < end for start_ in (m.start() for m in CAPITALISED.finditer(sentence))):
        return "no_named_subject"
    phrase = QUESTION_PHRASE[kind].format(lead=match.groupdict().get("lead"), noun=match.groupdict().get("noun"))
    question = (sentence[:start] + phrase + sentence[end:]).rstrip(". ") + "?"
    question = question[0].upper() + question[1:]
    if match["answer"] in question:  # the same number elsewhere in the sentence would give it away
        return "several_answers"
    return QA(question, match["answer"], kind, match.group(0), sentence, "", "")


def stage_documents(storage: Storage, stage: str) -> Iterator[dict[str, Any]]:
    """The documents of a docs stage (id, url, text, language), part by part."""
    for uri in list_doc_files(storage, stage):
        for batch in read_batches(storage, uri, columns=["id", "url", "text", "language"]):
            yield from batch.to_pylist()


def candidates(documents: Iterable[dict[str, Any]], seed: int, per_doc: int, funnel: Funnel) -> Iterator[tuple[int, QA]]:
    """(key, QA) for every document's best `per_doc` candidates; every sentence counted."""
    docs, sentences = funnel["documents"], funnel["sentences"]
    for document in documents:
        docs.docs_in += 1
        if document.get("language") != "en":
            docs.dropped[f"language:{document.get('language')}"] += 1
            continue
        docs.docs_out += 1
        found = []
        for number, sentence in enumerate(split_sentences(document.get("text") or "")):
            sentences.docs_in += 1
            result = question_from(sentence)
            if isinstance(result, str):
                sentences.dropped[result] += 1
                continue
            sentences.docs_out += 1
            key = xxhash.xxh64_intdigest(f"{seed}:{document['id']}:{number}".encode())
            found.append((key, QA(**{**result.to_row(), "url": document.get("url") or "", "doc_id": document["id"]})))
        found.sort(key=lambda item: item[0])
        select = funnel["select"]
        select.docs_in += len(found)
        if len(found) > per_doc:
            select.dropped["over_per_doc_limit"] += len(found) - per_doc
        yield from found[:per_doc]


def generate_qa(documents: Iterable[dict[str, Any]], count: int, seed: int = 0, per_doc: int = 1) -> tuple[list[QA], Funnel]:
    """Up to `count` QAs from `documents`, in key order; the funnel says what became of the rest."""
    funnel = Funnel()
    chosen = heapq.nsmallest(count, candidates(documents, seed, per_doc, funnel), key=lambda item: item[0])
    select = funnel["select"]
    select.docs_out = len(chosen)
    unchosen = select.docs_in - sum(select.dropped.values()) - len(chosen)
    if unchosen:
        select.dropped["over_count"] = unchosen
    return [qa for _, qa in chosen], funnel


def write_qa(uri: str, qas: Iterable[QA], storage: Storage | None = None) -> int:
    return write_jsonl(storage or Storage(), uri, (qa.to_row() for qa in qas))


def read_qa(uri: str, storage: Storage | None = None) -> list[QA]:
    """A QA file as written by `write_qa`."""
    return [QA(**row) for row in read_rows(storage or Storage(), uri) if isinstance(row, dict)]
