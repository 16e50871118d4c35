"""Chat data made from a run's own documents: SFT conversations, preference pairs, RL prompts.

    made = build_chat_data(storage, docs="out/deduped", output="out/chat-data", index=index, seed=0)
    made["files"]     # {"sft": [...], "pairs": [...], "prompts": [...], "heldout": [...]}

What the default run (`crawl2chat run`) fine-tunes on when the user brings no chat data, so a
fresh machine needs nothing but the crawl. Every item comes from one document and can be checked
against it; the same documents and seed give the same files, whatever order the parts are read in:

- page facts, from each document whose first line is a title (2 to 14 words, no full stop):
      site      'Which website published "<title>"?'   -> '"<title>" was published on <host>.'
      opening   'How does "<title>" begin?'             -> the first sentence after the title
- questions with known answers (tasks/chat/qa.py: a year, a percentage, a count), answered with
  the document's sentence, where the text has such sentences (real crawls do; the generated
  sample crawl does not);
- search conversations: site questions (and QA questions) answered through the search tool: the
  query, the index's real results, then the answer (kept only where the page is among the
  results and its host in their text, tasks/chat/search_examples.py);
- the hand-written conversations of builtin.py.

Held out: the documents whose key (xxh64 of seed and id) falls in the last `heldout_fraction`
give no training item; their site questions are `heldout.jsonl` (QA rows whose `answer` is what
a right reply contains), which the report card asks every chat stage. Preference pairs, one per
training fact and QA: chosen the right reply, rejected the same reply with the wrong key
(another site's host, another page's first sentence, the sentence with another number). RL
prompts are the training facts' questions, in TRL's prompt-only layout.

Under `output`: sft-facts.jsonl, sft-qa.jsonl, sft-search.jsonl, sft-builtin.jsonl (the
`messages` layout; a source with no row is not written), pairs.jsonl (TRL's conversational
layout), prompts.jsonl (`{"prompt": [messages]}`), heldout.jsonl, and manifest.json, written
last: what each file holds, the funnel of what was left out and why, and the fingerprint of the
documents and options it was made from (`build_chat_data` does nothing when it matches).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import xxhash

from infra.settings import SearchSettings
from infra.storage import Storage, join
from tasks.chat.builtin import builtin_conversations
from tasks.chat.conversations import write_conversations
from tasks.chat.files import write_jsonl
from tasks.chat.pairs import PreferencePair, write_pairs
from tasks.chat.qa import QA, generate_qa, read_qa, split_sentences, stage_documents, write_qa
from tasks.chat.search_examples import build_search_examples
from tasks.chat.turns import Message
from tasks.formats.docs import list_doc_files
from tasks.pipeline import Funnel
from tasks.search.build import input_fingerprint
from tasks.search.index import SearchIndex

MANIFEST = "manifest.json"
VERSION = 1  # of the rules above: a change gives other files, so it is part of the fingerprint
TITLE_WORDS = (2, 14)
OPENING_WORDS = (6, 40)
SITE_QUESTIONS = ('Which website published "{title}"?', 'Where was "{title}" published?',
                  'On which site can I read "{title}"?')
OPENING_QUESTIONS = ('How does "{title}" begin?', 'What is the first sentence of "{title}"?')
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def host_of(url: str) -> str:
    host = urlsplit(url).hostname or url
    return host[4:] if host.startswith("www.") else host


def _key(seed: int, *parts: str) -> int:
    return xxhash.xxh64_intdigest(":".join([str(seed), *parts]).encode())


def title_and_opening(text: str) -> tuple[str, str] | str:
    """A document's title line and the first sentence after it, or why it has none."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return "no_body"
    title = lines[0]
    if not TITLE_WORDS[0] <= len(title.split()) <= TITLE_WORDS[1] or title.endswith((".", "?", "!", ":")) or '"' in title:
        return "no_title"
    opening = next(split_sentences(lines[1]), "")
    if not OPENING_WORDS[0] <= len(opening.split()) <= OPENING_WORDS[1] or not opening.endswith("."):
        return "no_opening"
    return title, opening


def page_facts(document: dict[str, Any], seed: int) -> list[QA] | str:
    """The site and opening facts of one document (QA records of kinds `site` and `opening`:
    `answer` is what a right reply must contain, `phrase` the reply), or why it gives none."""
    found = title_and_opening(document.get("text") or "")
    if isinstance(found, str):
        return found
    title, opening = found
    url, doc_id = document.get("url") or "", document["id"]
    host = host_of(url)
    if not host:
        return "no_host"
    key = _key(seed, doc_id, "question")
    site = QA(SITE_QUESTIONS[key % len(SITE_QUESTIONS)].format(title=title), host, "site",
              f'"{title}" was published on {host}.', title, url, doc_id)
    first = QA(OPENING_QUESTIONS[key % len(OPENING_QUESTIONS)].format(title=title), opening, "opening",
               opening, title, url, doc_id)
    return [site, first]


def reply_of(qa: QA) -> str:
    """The assistant's reply to a fact or QA: the fact's phrase, or the QA's whole sentence."""
    return qa.phrase if qa.kind in ("site", "opening") else qa.evidence


def site_search_reply(qa: QA, results: str) -> str:
    return qa.phrase


def conversation(qa: QA) -> list[Message]:
    return [{"role": "user", "content": qa.question}, {"role": "assistant", "content": reply_of(qa)}]


def wrong_number(answer: str, key: int) -> str:
    """Another number of the same kind as the one in `answer` (a year stays a year)."""
    match = NUMBER.search(answer)
    number = float(match.group(0).replace(",", "")) if match else 0.0
    shift = 1 + key % 9
    other = number + shift if (key >> 8) % 2 or number <= shift else number - shift
    text = f"{other:,.0f}" if float(other).is_integer() else f"{other:.1f}"
    if match and "," not in match.group(0):
        text = text.replace(",", "")
    return answer[: match.start()] + text + answer[match.end():] if match else text


def rejected_reply(qa: QA, others: list[QA], hosts: list[str], key: int) -> str | None:
    """The right reply with the wrong key, or None when there is nothing else to say."""
    if qa.kind == "site":
        wrong = [host for host in hosts if host != qa.answer]
        return qa.phrase.replace(qa.answer, wrong[key % len(wrong)]) if wrong else None
    if qa.kind == "opening":
        wrong = [other.answer for other in others if other.kind == "opening" and other.answer != qa.answer]
        return wrong[key % len(wrong)] if wrong else None
    wrong = wrong_number(qa.answer, key)
    return qa.evidence.replace(qa.answer, wrong, 1) if wrong != qa.answer else None


def preference_pairs(items: list[QA], seed: int, funnel: Funnel) -> list[PreferencePair]:
    step = funnel["pairs"]
    hosts = sorted({qa.answer for qa in items if qa.kind == "site"})
    pairs = []
    for qa in items:
        step.docs_in += 1
        rejected = rejected_reply(qa, items, hosts, _key(seed, qa.doc_id, qa.kind, "wrong"))
        if rejected is None:
            step.dropped[f"no_wrong_{qa.kind}"] += 1
            continue
        step.docs_out += 1
        pairs.append(PreferencePair([{"role": "user", "content": qa.question}],
                                    {"role": "assistant", "content": reply_of(qa)},
                                    {"role": "assistant", "content": rejected}))
    return pairs


def collect_facts(documents: Iterable[dict[str, Any]], seed: int, count: int, heldout_fraction: float,
                  funnel: Funnel) -> tuple[list[QA], list[QA]]:
    """(training facts, held-out facts): up to `count` documents' facts by key, in key order."""
    step = funnel["page_facts"]
    threshold = int((1 - heldout_fraction) * 2**64)

    def keyed() -> Iterator[tuple[int, list[QA]]]:
        for document in documents:
            step.docs_in += 1
            facts = page_facts(document, seed)
            if isinstance(facts, str):
                step.dropped[facts] += 1
                continue
            step.docs_out += 1
            yield _key(seed, document["id"]), facts

    chosen = heapq.nsmallest(count, keyed(), key=lambda item: item[0])
    if step.docs_out > len(chosen):
        step.dropped["over_count"] += step.docs_out - len(chosen)
        step.docs_out = len(chosen)
    train = [fact for key, facts in chosen if key < threshold for fact in facts]
    heldout = [fact for key, facts in chosen if key >= threshold for fact in facts]
    step.counts["heldout_documents"] = len(heldout) // 2
    return train, heldout


def docs_fingerprint(storage: Storage, docs: str, options: dict[str, Any]) -> str:
    """What the files are made from: the docs parts (names, sizes, Parquet footers), the rules'
    version and the options."""
    files = list_doc_files(storage, docs)
    parts = input_fingerprint(storage, docs, files, SearchSettings())
    payload = json.dumps({"docs": parts, "version": VERSION, "options": options}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def read_manifest(storage: Storage, output: str) -> dict[str, Any] | None:
    uri = join(output, MANIFEST)
    return json.loads(storage.read_text(uri)) if storage.exists(uri) else None


def build_chat_data(
    storage: Storage, docs: str, output: str, index: SearchIndex | None = None, seed: int = 0, count: int = 2000,
    heldout_fraction: float = 0.1, search_k: int = 1, search_chars: int = 400,
) -> dict[str, Any]:
    """Write the default chat data for the documents of `docs` under `output`; return the
    manifest. Nothing is written when `output` already holds it for the same input and options."""
    options = {"seed": seed, "count": count, "heldout_fraction": heldout_fraction, "search": index is not None,
               "search_k": search_k, "search_chars": search_chars}
    fingerprint = docs_fingerprint(storage, docs, options)
    manifest = read_manifest(storage, output)
    if manifest and manifest["fingerprint"] == fingerprint:
        return {**manifest, "up_to_date": True}

    funnel = Funnel()
    facts, heldout = collect_facts(stage_documents(storage, docs), seed, count, heldout_fraction, funnel)
    heldout_ids = {fact.doc_id for fact in heldout}
    qas, qa_funnel = generate_qa((d for d in stage_documents(storage, docs) if d["id"] not in heldout_ids), count, seed)
    for name, stats in qa_funnel.steps.items():
        funnel.steps[f"qa_{name}"] = stats
    sources: dict[str, list[list[Message]]] = {
        "facts": [conversation(fact) for fact in facts],
        "qa": [conversation(qa) for qa in qas],
        "builtin": builtin_conversations(),
    }
    if index is not None:
        sites = [fact for fact in facts if fact.kind == "site"]
        searches, site_funnel = build_search_examples(index, sites, count, search_k, search_chars, reply=site_search_reply)
        qa_searches, qa_search_funnel = build_search_examples(index, qas, count, search_k, search_chars)
        sources["search"] = searches + qa_searches
        funnel.steps["search_sites"] = site_funnel["check"]
        funnel.steps["search_qa"] = qa_search_funnel["check"]
    pairs = preference_pairs(facts + qas, seed, funnel)

    files: dict[str, list[dict[str, Any]]] = {"sft": [], "pairs": [], "prompts": [], "heldout": []}
    for name, conversations in sources.items():
        if conversations:
            uri = join(output, f"sft-{name}.jsonl")
            files["sft"].append({"uri": uri, "source": name, "rows": write_conversations(uri, conversations, storage)})
    if pairs:
        uri = join(output, "pairs.jsonl")
        files["pairs"].append({"uri": uri, "rows": write_pairs(uri, pairs, storage)})
    questions = list(dict.fromkeys(qa.question for qa in facts + qas))
    if questions:
        uri = join(output, "prompts.jsonl")
        rows = ({"prompt": [{"role": "user", "content": question}]} for question in questions)
        files["prompts"].append({"uri": uri, "rows": write_jsonl(storage, uri, rows)})
    held_sites = [fact for fact in heldout if fact.kind == "site"]
    if held_sites:
        uri = join(output, "heldout.jsonl")
        files["heldout"].append({"uri": uri, "rows": write_qa(uri, held_sites, storage)})
    manifest = {
        "docs": docs, "fingerprint": fingerprint, "options": options, "files": files,
        "hosts": sorted({fact.answer for fact in facts + heldout if fact.kind == "site"}),
        "funnel": funnel.to_dict(),
    }
    storage.write_text(join(output, MANIFEST), json.dumps(manifest, indent=1))  # last: the commit point
    return {**manifest, "up_to_date": False}


def heldout_questions(storage: Storage, manifest: dict[str, Any]) -> list[QA]:
    """The held-out site questions a manifest lists (none when the run held none out)."""
    return [qa for entry in manifest["files"]["heldout"] for qa in read_qa(entry["uri"], storage)]
