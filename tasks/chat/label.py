"""RLAIF: preference pairs ordered by an AI judge instead of people (Bai et al. 2022, Lee et al. 2023).

    report = label_pairs(settings, judge="http://127.0.0.1:8000/v1", data_specs=["pairs.jsonl"], output_uri="ai.jsonl")
    report = label_pairs(settings, judge="runs/reward", ...)           # a reward model checkpoint judges

Input: pairs in any preference format (tasks/chat/pairs.py); the order they come in is ignored
by the judge and kept only to measure agreement with it (for HH-RLHF those are the human labels;
unlabelled candidates can come in either order). Output: the same pairs in TRL's layout with
`chosen` the judge's pick, which `crawl2chat reward` and DPO read.

Judges:
- a reward model checkpoint: both replies scored, the higher one chosen (equal scores: `tie`);
- an OpenAI-compatible endpoint (an http(s) URL: our `crawl2chat serve-model`, vLLM, Ollama, a
  hosted API): asked through the `openai` client, with `label.rubric` as the system message and
  the conversation and the two replies as the user message (`judge_messages`); the answer must
  hold `[[A]]` or `[[B]]` (a bare "A" or "B" is taken too), anything else is `unparseable`. With
  `label.both_orders` each pair is asked twice, the replies swapped the second time, and only
  verdicts that agree count (disagreeing ones are `inconsistent`: position bias cancelled, not
  averaged in). Requests run `label.concurrency` at a time (a batching server batches them),
  each with `label.timeout_seconds` and `label.retries`; a request that still fails is
  `request_failed`. The key, when the endpoint needs one, comes from OPENAI_API_KEY and is
  never logged or written.

The report (returned, and written next to the output as `<output>.report.json`): pairs read,
labelled, skipped by reason, `agreement` (the share of labelled pairs where the judge picked
the input's chosen reply), `first_position_rate` (the share of parseable verdicts for reply A:
0.5 is no position bias), requests made and seconds. Resume: every HTTP verdict goes into
`<output>.verdicts.jsonl` (keyed by a hash of the endpoint, model, rubric, sampling settings and
the texts), saved every `label.save_every` pairs; a rerun asks only what is missing. The output
is written whole, atomically, at the end.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

import xxhash

from infra.settings import LabelSettings, Settings
from infra.storage import Storage
from model.chat import text_of
from model.heads import RewardModel
from tasks.chat.pairs import PreferencePair, load_pairs, write_pairs

log = logging.getLogger(__name__)

VERDICT = re.compile(r"\[\[\s*([AB])\s*\]\]")
BARE_VERDICT = re.compile(r"^\W*([AB])\W*$")
ROLE_NAMES = {"user": "User", "assistant": "Assistant", "system": "System"}


class JudgeError(ValueError):
    """A judge that cannot be used (unreachable, no model), in one line."""


def is_endpoint(judge: str) -> bool:
    return urlparse(judge).scheme in ("http", "https")


def judge_messages(pair_prompt: Sequence[dict], reply_a: str, reply_b: str, rubric: str) -> list[dict[str, str]]:
    """What the judge reads: the rubric, then the conversation and the two candidate replies."""
    transcript = "\n".join(f"{ROLE_NAMES[m['role']]}: {text_of(m['content'])}" for m in pair_prompt)
    return [{"role": "system", "content": rubric},
            {"role": "user", "content": f"[Conversation]\n{transcript}\n\n[Reply A]\n{reply_a}\n\n[Reply B]\n{reply_b}"}]


def parse_verdict(answer: str | None) -> str | None:
    """"A" or "B" from a judge's answer, or None when it says neither (or both)."""
    found = set(VERDICT.findall(answer or ""))
    if len(found) == 1:
        return found.pop()
    bare = BARE_VERDICT.match(answer or "") if not found else None
    return bare.group(1) if bare else None


# -- the HTTP judge ----------------------------------------------------------------------------


def _base_url(url: str) -> str:
    """The OpenAI client's base URL: the given one, with /v1 added to a bare host."""
    url = url.rstrip("/")
    return url + "/v1" if urlparse(url).path in ("", "/") else url


class EndpointJudge:
    """Asks an OpenAI-compatible chat endpoint which reply is better; caches every verdict."""

    def __init__(self, url: str, s: LabelSettings) -> None:
        from openai import APIError, OpenAI

        self.url, self.s = _base_url(url), s
        self.api_error = APIError
        self.client = OpenAI(base_url=self.url, api_key=os.environ.get("OPENAI_API_KEY") or "not-needed",
                             timeout=s.timeout_seconds, max_retries=s.retries)
        try:
            self.model = s.model or self.client.models.list().data[0].id
        except (APIError, IndexError) as error:
            raise JudgeError(f"cannot use the judge at {self.url}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no model listed'}") from error
        self.requests = 0

    def key(self, prompt: Sequence[dict], reply_a: str, reply_b: str) -> str:
        identity = [self.url, self.model, self.s.rubric, self.s.max_tokens, self.s.temperature, list(prompt), reply_a, reply_b]
        return xxhash.xxh64(json.dumps(identity, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def ask(self, prompt: Sequence[dict], reply_a: str, reply_b: str) -> dict[str, Any]:
        """{"verdict": "A" | "B" | None, "answer": the text} or {"error": ...} for a failed request."""
        self.requests += 1
        try:
            response = self.client.chat.completions.create(
                model=self.model, messages=judge_messages(prompt, reply_a, reply_b, self.s.rubric),
                max_tokens=self.s.max_tokens, temperature=self.s.temperature)
        except self.api_error as error:
            return {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:200]}
        answer = response.choices[0].message.content or ""
        return {"verdict": parse_verdict(answer), "answer": answer[:200]}


class VerdictCache:
    """The HTTP verdicts of a labelling run, kept next to its output so a rerun reuses them."""

    def __init__(self, storage: Storage, uri: str, resume: bool) -> None:
        self.storage, self.uri = storage, uri
        self.verdicts: dict[str, dict[str, Any]] = {}
        if storage.exists(uri):
            if not resume:
                raise ValueError(f"{uri} holds the verdicts of an earlier run: pass --resume, or choose another output")
            for line in storage.read_text(uri).splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.verdicts[row["key"]] = row

    def save(self) -> None:
        self.storage.write_text(self.uri, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in self.verdicts.values()))


def endpoint_verdicts(judge: EndpointJudge, pairs: Sequence[PreferencePair], cache: VerdictCache,
                      s: LabelSettings) -> list[tuple[dict, dict | None]]:
    """Per pair: the verdict with the input's chosen reply as A, and (both orders) swapped."""
    questions = []
    for pair in pairs:
        chosen, rejected = text_of(pair.chosen["content"]), text_of(pair.rejected["content"])
        questions.append((pair.prompt, chosen, rejected))
        if s.both_orders:
            questions.append((pair.prompt, rejected, chosen))
    keys = [judge.key(*question) for question in questions]
    question_of = dict(zip(keys, questions))
    todo = [key for key in dict.fromkeys(keys) if key not in cache.verdicts]
    log.info("label: %d questions for %d pairs, %d already answered; asking %s (model %s)", len(question_of), len(pairs),
             len(question_of) - len(todo), judge.url, judge.model)
    failed: dict[str, dict[str, Any]] = {}  # not kept: a rerun asks these again
    per_save = s.save_every * (2 if s.both_orders else 1)
    with ThreadPoolExecutor(max_workers=s.concurrency) as pool:
        for start in range(0, len(todo), per_save):
            chunk = todo[start : start + per_save]
            for key, result in zip(chunk, pool.map(lambda k: judge.ask(*question_of[k]), chunk)):
                if "error" in result:
                    failed[key] = result
                else:
                    cache.verdicts[key] = {"key": key, **result}
            cache.save()
            log.info("label: %d of %d questions answered", start + len(chunk), len(todo))
    results = [cache.verdicts.get(key) or failed[key] for key in keys]
    step = 2 if s.both_orders else 1
    return [(results[i], results[i + 1] if s.both_orders else None) for i in range(0, len(results), step)]


def combine(first: dict, swapped: dict | None) -> tuple[bool | None, str | None]:
    """(whether the input's chosen reply wins, or None; the skip reason, or None)."""
    for result in (first, swapped):
        if result is not None and "error" in result:
            return None, "request_failed"
        if result is not None and result["verdict"] is None:
            return None, "unparseable"
    chosen_wins = first["verdict"] == "A"
    if swapped is not None and (swapped["verdict"] == "B") != chosen_wins:
        return None, "inconsistent"
    return chosen_wins, None


# -- the stage ---------------------------------------------------------------------------------


def _reward_model_verdicts(model: RewardModel, pairs: Sequence[PreferencePair]) -> list[tuple[bool | None, str | None]]:
    conversations = [side for pair in pairs for side in ([*pair.prompt, pair.chosen], [*pair.prompt, pair.rejected])]
    rewards = model.rewards(conversations)
    out = []
    for chosen, rejected in zip(rewards[0::2], rewards[1::2]):
        out.append((None, "tie") if chosen == rejected else (chosen > rejected, None))
    return out


def label_pairs(settings: Settings, judge: str, data_specs: Sequence[str], output_uri: str, fmt: str = "auto",
                resume: bool = False) -> dict[str, Any]:
    """Order every pair of `data_specs` by `judge` (a URL or a reward model checkpoint) and
    write the labelled pairs to `output_uri`; return the report (see the module docstring)."""
    s = settings.label
    storage = Storage(settings.storage)
    began = time.perf_counter()
    data = load_pairs(data_specs, fmt, storage)
    pairs = data.pairs
    requests = 0
    if is_endpoint(judge):
        endpoint = EndpointJudge(judge, s)
        cache = VerdictCache(storage, output_uri + ".verdicts.jsonl", resume)
        asked = endpoint_verdicts(endpoint, pairs, cache, s)
        decisions = [combine(first, swapped) for first, swapped in asked]
        verdicts = [result for first, swapped in asked for result in (first, swapped) if result is not None]
        position_a = [v["verdict"] == "A" for v in verdicts if v.get("verdict") is not None]
        requests, judge_name = endpoint.requests, f"{endpoint.url} (model {endpoint.model})"
    else:
        model = RewardModel.load(judge, storage, batch_size=s.batch_size)
        decisions, position_a, judge_name = _reward_model_verdicts(model, pairs), [], judge
    labelled, skipped = [], Counter()
    agree = 0
    for pair, (chosen_wins, reason) in zip(pairs, decisions):
        if reason is not None:
            skipped[reason] += 1
            continue
        agree += chosen_wins
        labelled.append(pair if chosen_wins else PreferencePair(pair.prompt, pair.rejected, pair.chosen))
    if not labelled:
        why = ", ".join(f"{reason}={count}" for reason, count in skipped.most_common()) or "no pairs"
        raise JudgeError(f"the judge labelled none of the {len(pairs)} pairs ({why})")
    write_pairs(output_uri, labelled, storage)
    report = {
        "judge": judge_name, "output": output_uri, "pairs": len(pairs), "labelled": len(labelled), "skipped": dict(skipped),
        "agreement": agree / len(labelled), "both_orders": s.both_orders if is_endpoint(judge) else None,
        "first_position_rate": sum(position_a) / len(position_a) if position_a else None,
        "requests": requests, "seconds": round(time.perf_counter() - began, 2),
        "files": [report.stats() for report in data.reports],
    }
    storage.write_text(output_uri + ".report.json", json.dumps(report, indent=1))
    return report
