"""Mix several conversation sources with weights, deterministically by seed.

    crawl2chat sft --data real.jsonl --data idk.jsonl:2 --data search.jsonl:0.5 ...

A source is a file, glob or folder with an optional `:WEIGHT` suffix (default 1). The weight
says how many times, on average, each of the source's conversations appears in the mix: 2
repeats every conversation twice, 0.5 keeps a seeded half, 1.5 keeps all of them plus a seeded
half again. Repeating rather than resampling keeps small hand-made sources (the "I don't know"
and search examples) from being drowned by a large real one, without dropping real data. The
mix is then shuffled with the same seed, so one seed gives one order.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from infra.storage import Storage
from model.tokenizer import BpeTokenizer
from tasks.chat.conversations import Conversation, load_conversations
from tasks.chat.errors import ChatDataError
from tasks.chat.loading import FileReport

WEIGHT_SUFFIX = re.compile(r"^(?P<data>.+):(?P<weight>\d+(?:\.\d*)?|\.\d+)$")


@dataclass(frozen=True)
class Source:
    data: str
    weight: float = 1.0


def parse_source(spec: str) -> Source:
    """`FILE` or `FILE:WEIGHT` (an s3:// URI's own colon is no weight)."""
    match = WEIGHT_SUFFIX.match(spec)
    if not match:
        return Source(spec)
    weight = float(match["weight"])
    if weight <= 0:
        raise ChatDataError(f"weight of {match['data']} must be above 0, got {weight}")
    return Source(match["data"], weight)


@dataclass
class Mix:
    conversations: list[Conversation]
    reports: list[FileReport]
    composition: dict[str, dict[str, float]] = field(default_factory=dict)  # source -> loaded, weight, in mix


def weighted(conversations: Sequence[Conversation], weight: float, rng: random.Random) -> list[Conversation]:
    """Each conversation `int(weight)` times, plus a seeded sample of the fractional part."""
    whole, fraction = divmod(weight, 1.0)
    chosen = list(conversations) * int(whole)
    extra = round(fraction * len(conversations))
    return chosen + [conversations[index] for index in sorted(rng.sample(range(len(conversations)), extra))]


def load_mix(
    specs: Sequence[str],
    fmt: str = "auto",
    seed: int = 0,
    storage: Storage | None = None,
    tokenizer: BpeTokenizer | None = None,
    max_tokens: int | None = None,
) -> Mix:
    """Load every source, weight it, and shuffle the lot by `seed`."""
    rng = random.Random(seed)
    mixed: list[Conversation] = []
    mix = Mix([], [])
    for source in map(parse_source, specs):
        data = load_conversations([source.data], fmt, storage, tokenizer, max_tokens)
        part = weighted(data.conversations, source.weight, rng)
        mix.reports += data.reports
        mix.composition[source.data] = {"loaded": len(data.conversations), "weight": source.weight, "in_mix": len(part)}
        mixed += part
    rng.shuffle(mixed)
    mix.conversations = mixed
    return mix
