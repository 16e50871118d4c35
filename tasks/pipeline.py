"""The shape every pipeline step shares: a Document, a Step, and the Funnel that counts them.

A step is a small object with a `name` and an `apply(doc, counts)` method. It returns `None` to
keep the document (possibly after rewriting `doc.text`, as C4 line removal and PII scrubbing do)
or a short reason string to drop it. Extra counters (e.g. how many e-mails were scrubbed) go into
`counts`, a Counter the runner gives each step. Steps know nothing of Spark or Prefect, so each
can be unit-tested on a hand-made Document.

`run_chain` drives documents through a list of steps and fills a `Funnel`: per step, documents
in, out, dropped by reason, extra counters and seconds spent. A step that raises does not crash
the partition: the document is dropped with reason `error:<ExceptionType>` and the error logged.
Funnels merge, so Spark tasks return theirs and the driver adds them up into stats.json.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Document:
    """One web page on its way from a WARC record to a clean training document."""

    id: str
    url: str
    text: str = ""  # extracted plain text; empty until the extraction step runs
    html: str | None = None  # decoded HTML; released after extraction to save memory
    warc_path: str = ""
    snapshot: str = ""
    crawl_date: str = ""  # ISO 8601, from WARC-Date
    language: str | None = None
    language_score: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class Step(ABC):
    """One unit of the document chain. Subclasses set `name` and implement `apply`."""

    name: ClassVar[str]

    @abstractmethod
    def apply(self, doc: Document, counts: Counter | None = None) -> str | None:
        """Return None to keep `doc` (maybe rewritten in place) or a drop reason."""


@dataclass
class StepStats:
    docs_in: int = 0
    docs_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def merge(self, other: "StepStats") -> None:
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.dropped.update(other.dropped)
        self.counts.update(other.counts)
        self.seconds += other.seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            "dropped": dict(sorted(self.dropped.items())),
            "counts": dict(sorted(self.counts.items())),
            "seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StepStats":
        return cls(
            docs_in=data["docs_in"],
            docs_out=data["docs_out"],
            dropped=Counter(data.get("dropped", {})),
            counts=Counter(data.get("counts", {})),
            seconds=data.get("seconds", 0.0),
        )


class Funnel:
    """Per-step statistics in pipeline order; mergeable across tasks and serialisable to JSON."""

    def __init__(self) -> None:
        self.steps: dict[str, StepStats] = {}

    def __getitem__(self, step_name: str) -> StepStats:
        if step_name not in self.steps:
            self.steps[step_name] = StepStats()
        return self.steps[step_name]

    def merge(self, other: "Funnel") -> "Funnel":
        for name, stats in other.steps.items():
            self[name].merge(stats)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {name: stats.to_dict() for name, stats in self.steps.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Funnel":
        funnel = cls()
        for name, stats in data.items():
            funnel.steps[name] = StepStats.from_dict(stats)
        return funnel


DropHandler = Callable[[Document, str, str], None]  # (document, step name, reason)


def run_chain(
    steps: Iterable[Step], docs: Iterable[Document], funnel: Funnel, on_drop: DropHandler | None = None
) -> Iterator[Document]:
    """Yield the documents that pass every step; count everything in `funnel`."""
    steps = list(steps)
    step_stats = [funnel[step.name] for step in steps]
    clock = time.perf_counter
    for doc in docs:
        for step, stats in zip(steps, step_stats):
            stats.docs_in += 1
            started = clock()
            try:
                reason = step.apply(doc, stats.counts)
            except Exception as error:  # noqa: BLE001 - one bad document must not kill the task
                reason = f"error:{type(error).__name__}"
                log.warning("step %s failed on %s: %s", step.name, doc.url, error)
            stats.seconds += clock() - started
            if reason is not None:
                stats.dropped[reason] += 1
                if on_drop is not None:
                    on_drop(doc, step.name, reason)
                break
            stats.docs_out += 1
        else:
            yield doc
