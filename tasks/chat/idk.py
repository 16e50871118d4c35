""""I don't know" data, LLaMA 3's recipe against hallucination: probe the model, judge, write.

    questions, read_funnel = read_questions(storage, "qa.jsonl")           # qa.py's rows or {"question","answer"}
    probes = probe(model, tokenizer, questions, settings.idk)               # several sampled replies each, judged
    conversations, funnel = idk_conversations(probes, settings.idk)         # the training set, counted
    results = evaluate(model, tokenizer, questions, samples=1, temperature=0)  # after SFT: refusal rate, accuracy

Probing: each question is asked as the only user turn, in the chat template, and the engine
samples `idk.samples` replies (one prefill per question, `num_samples`) at `idk.temperature`
and `idk.top_k`, seeded. Each reply is judged against the reference answer (`judge`):

- "refused" when it says it does not know (`REFUSAL_MARKERS`, after normalising);
- otherwise, for an answer that is a number (qa.py's years, counts and percentages): "correct"
  when the first number the reply states is the reference's, with the same unit word after it
  where the reference has one (percent, million, ...): "In 1889, ..." is right, "1887 or 1889"
  is not (hedging is not rewarded), and "3200" equals "3,200";
- for any other answer: "correct" when the reference's words occur in the reply as a whole, in
  order, at word boundaries ("Paris" in "It is Paris.", but not in "Parisian");
- "wrong" otherwise.
Normalising: Unicode NFKC, lower case, curly quotes straightened, thousands separators
dropped, "%" and "per cent" read as "percent", every other non-word character a space.

A question's verdict, from its samples: "known" when at least `idk.known_fraction` of them are
correct, "unknown" when none is, "uncertain" in between (left out: the model half knows it, and
neither lesson would be honest). A known question keeps one of the model's own correct replies
(the first); an unknown one gets a reply saying it does not know, one of `REFUSALS`, chosen by
the question's hash. `idk.heldout_fraction` of the questions (by hash) are probed but kept out
of the training set, so that `idk eval` can show the lesson generalises to questions the SFT
never saw. The probes (verdict, split, counts, replies) are written next to the conversations,
and a probes file is itself a question file for `idk eval`, which then breaks its figures down
by split and verdict.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import xxhash

from infra.settings import IdkSettings
from infra.storage import Storage
from model.chat import render_prompt
from model.engine import Engine, SamplingParams
from model.gpt import GPT
from model.tokenizer import BpeTokenizer
from tasks.chat.errors import ChatDataError
from tasks.chat.files import BadRow, read_rows, write_jsonl
from tasks.chat.turns import Message
from tasks.pipeline import Funnel

REFUSALS = (
    "I don't know.",
    "I don't know the answer to that.",
    "I'm not sure, and I would rather not guess: I don't know.",
    "Sorry, I don't know that.",
)
REFUSAL_MARKERS = ("i don't know", "i do not know", "i'm not sure", "i am not sure", "i don't have that information")
UNIT_WORDS = frozenset({"percent", "thousand", "million", "billion", "trillion"})
NUMBER = re.compile(r"\d+(?:\.\d+)?")
WORD = re.compile(r"\d+(?:\.\d+)?|[^\W_]+(?:'[^\W_]+)*")  # a number with its decimals, or a word with its apostrophes
VERDICTS = ("known", "unknown", "uncertain")


def normalise(text: str) -> str:
    """The form answers and replies are compared in (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'").replace("‘", "'")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 3,200 -> 3200
    text = re.sub(r"\s*%", " percent", text).replace("per cent", "percent")
    return " ".join(WORD.findall(text))


def is_refusal(reply: str) -> bool:
    text = normalise(reply)
    return any(marker in text for marker in REFUSAL_MARKERS)


def _numeric(words: Sequence[str]) -> int | None:
    """The index of the first word that is a number, or None."""
    return next((i for i, word in enumerate(words) if NUMBER.fullmatch(word)), None)


def judge(reply: str, answer: str) -> str:
    """"correct", "wrong" or "refused": one reply against its reference answer."""
    if is_refusal(reply):
        return "refused"
    said, reference = normalise(reply).split(), normalise(answer).split()
    if not reference:
        raise ValueError("an empty reference answer cannot be judged")
    if NUMBER.fullmatch(reference[0]):
        first = _numeric(said)
        if first is None or float(said[first]) != float(reference[0]):
            return "wrong"
        unit = reference[1] if len(reference) > 1 and reference[1] in UNIT_WORDS else None
        if unit and (first + 1 >= len(said) or said[first + 1] != unit):
            return "wrong"
        return "correct"
    width = len(reference)
    found = any(said[i : i + width] == reference for i in range(len(said) - width + 1))
    return "correct" if found else "wrong"


@dataclass
class Question:
    question: str
    answer: str
    split: str | None = None  # from a probes file: "train" or "heldout"
    verdict: str | None = None  # from a probes file: the probed model's verdict


def question_key(question: str) -> int:
    return xxhash.xxh64_intdigest(" ".join(question.split()).encode())


def read_questions(storage: Storage, uris: Iterable[str]) -> tuple[list[Question], Funnel]:
    """Questions with known answers from JSON Lines / JSON / Parquet files: qa.py's rows, simple
    `{"question", "answer"}` rows, or a probes file; bad rows and repeated questions counted."""
    funnel = Funnel()
    read = funnel["read"]
    questions: list[Question] = []
    seen: set[str] = set()
    for uri in uris:
        for row in read_rows(storage, uri):
            read.docs_in += 1
            if isinstance(row, BadRow):
                read.dropped[row.reason] += 1
                continue
            question, answer = row.get("question"), row.get("answer")
            if not isinstance(question, str) or not isinstance(answer, str) or not question.strip() or not normalise(answer):
                read.dropped["no_question_and_answer"] += 1
                continue
            if question in seen:
                read.dropped["duplicate_question"] += 1
                continue
            seen.add(question)
            read.docs_out += 1
            questions.append(Question(question, answer, row.get("split"), row.get("verdict")))
    if not questions:
        reasons = ", ".join(f"{reason}={count}" for reason, count in read.dropped.most_common(3)) or "no rows"
        raise ChatDataError(f"no usable question in {', '.join(uris)} (expected rows with 'question' and 'answer'; {reasons})")
    return questions, funnel


def ask(tokenizer: BpeTokenizer, question: str) -> list[int]:
    return render_prompt(tokenizer, [{"role": "user", "content": question}])


def sample_replies(model: GPT, tokenizer: BpeTokenizer, questions: Sequence[str], samples: int, params: SamplingParams,
                   batch_size: int, seed: int) -> list[list[str]]:
    """`samples` replies to every question, through the engine in batches of `batch_size` questions."""
    engine = Engine(model, tokenizer)
    replies: list[list[str]] = []
    for start in range(0, len(questions), batch_size):
        chunk = questions[start : start + batch_size]
        done = engine.generate([ask(tokenizer, q) for q in chunk], params, num_samples=samples, seed=seed + start)
        replies += [[c.text.strip() for c in done[i * samples : (i + 1) * samples]] for i in range(len(chunk))]
    return replies


@dataclass
class Probe:
    question: str
    answer: str
    split: str  # "train" or "heldout"
    verdict: str  # known, unknown or uncertain
    correct: int
    refused: int
    wrong: int
    replies: list[str] = field(default_factory=list)

    def to_row(self) -> dict[str, Any]:
        return asdict(self)


def verdict_of(judgements: Sequence[str], known_fraction: float) -> str:
    correct = judgements.count("correct")
    if correct >= known_fraction * len(judgements):
        return "known"
    return "unknown" if correct == 0 else "uncertain"


def split_of(question: str, heldout_fraction: float) -> str:
    return "heldout" if question_key(question) < int(heldout_fraction * 2**64) else "train"


def probe(model: GPT, tokenizer: BpeTokenizer, questions: Sequence[Question], settings: IdkSettings) -> list[Probe]:
    """Sample and judge `settings.samples` replies to each question; its verdict and split."""
    params = SamplingParams(max_tokens=settings.max_tokens, temperature=settings.temperature, top_k=settings.top_k)
    replies = sample_replies(model, tokenizer, [q.question for q in questions], settings.samples, params,
                             settings.batch_size, settings.seed)
    probes = []
    for question, texts in zip(questions, replies):
        judgements = [judge(text, question.answer) for text in texts]
        counts = Counter(judgements)
        probes.append(Probe(question.question, question.answer, split_of(question.question, settings.heldout_fraction),
                            verdict_of(judgements, settings.known_fraction), counts["correct"], counts["refused"],
                            counts["wrong"], texts))
    return probes


def refusal_for(question: str) -> str:
    return REFUSALS[question_key(question) % len(REFUSALS)]


def idk_conversations(probes: Sequence[Probe]) -> tuple[list[list[Message]], Funnel]:
    """The training conversations of the train split's known and unknown questions, and the
    funnel: verdicts, the held-out share, and how many of each kind were written."""
    funnel = Funnel()
    judged, split, written = funnel["judge"], funnel["split"], funnel["write"]
    conversations = []
    for p in probes:
        judged.docs_in += 1
        judged.counts[p.verdict] += 1
        judged.counts.update({"samples_correct": p.correct, "samples_wrong": p.wrong, "samples_refused": p.refused})
        if p.verdict == "uncertain":
            judged.dropped["uncertain"] += 1
            continue
        judged.docs_out += 1
        split.docs_in += 1
        if p.split == "heldout":
            split.dropped[f"heldout_{p.verdict}"] += 1
            continue
        split.docs_out += 1
        written.docs_in += 1
        if p.verdict == "unknown":
            reply = refusal_for(p.question)
            written.counts["idk"] += 1
        else:
            reply = next(text for text in p.replies if judge(text, p.answer) == "correct")
            written.counts["answer"] += 1
        written.docs_out += 1
        conversations.append([{"role": "user", "content": p.question}, {"role": "assistant", "content": reply}])
    return conversations, funnel


def write_probes(storage: Storage, uri: str, probes: Sequence[Probe]) -> int:
    return write_jsonl(storage, uri, (p.to_row() for p in probes))


def probes_uri(output: str) -> str:
    """Where the probes go by default: next to the conversations, `idk.jsonl` -> `idk.probes.jsonl`."""
    stem = output[: -len(".jsonl")] if output.endswith(".jsonl") else output
    return f"{stem}.probes.jsonl"


# -- evaluation --------------------------------------------------------------------------------


def evaluate(model: GPT, tokenizer: BpeTokenizer, questions: Sequence[Question], settings: IdkSettings,
             samples: int = 1, temperature: float = 0.0) -> dict[str, Any]:
    """Refusal rate and accuracy over `questions` (greedy by default), overall and per
    (split, verdict) group when the questions come from a probes file."""
    params = SamplingParams(max_tokens=settings.max_tokens, temperature=temperature, top_k=settings.top_k if temperature else None)
    replies = sample_replies(model, tokenizer, [q.question for q in questions], samples, params, settings.batch_size, settings.seed)
    groups: dict[str, Counter] = {}
    examples = []
    for question, texts in zip(questions, replies):
        judgements = [judge(text, question.answer) for text in texts]
        keys = ["all"] + ([f"{question.split}/{question.verdict}"] if question.split and question.verdict else [])
        for key in keys:
            groups.setdefault(key, Counter()).update(judgements)
            groups[key]["questions"] += 1
        examples.append({"question": question.question, "answer": question.answer, "reply": texts[0], "judged": judgements[0]})

    def rates(counts: Counter) -> dict[str, Any]:
        replies_judged = counts["correct"] + counts["wrong"] + counts["refused"]
        return {"questions": counts["questions"], "replies": replies_judged,
                "accuracy": round(counts["correct"] / replies_judged, 4), "refusal_rate": round(counts["refused"] / replies_judged, 4),
                "wrong_rate": round(counts["wrong"] / replies_judged, 4)}

    return {"groups": {key: rates(counts) for key, counts in sorted(groups.items())}, "examples": examples}
