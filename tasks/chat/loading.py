"""The loop every chat and preference loader runs: rows in, usable items out, every skip counted.

Per file: `read` (rows that are JSON objects), `import` (the file's format turns a row into a
conversation or a pair, and the common rules check it), then `length` (when a tokenizer and a
context length are given, items longer than the context are skipped). The counts are a
`tasks.pipeline.Funnel` per file, the shape the data half reports in, so `flows/report.py`
prints them the same way. The format is told per file from its first row's fields unless one
is forced. A file with no usable row is a `ChatDataError`, in one line.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from infra.storage import Storage
from tasks.chat.errors import ChatDataError, Skip
from tasks.chat.files import BadRow, read_rows, resolve_data_files
from tasks.pipeline import Funnel

log = logging.getLogger(__name__)
Item = TypeVar("Item")
STEPS = ("read", "import", "length")


@dataclass(frozen=True)
class Importer(Generic[Item]):
    """One format: does a row look like it, and how a row becomes an item (raising Skip)."""

    looks_like: Callable[[dict[str, Any]], bool]
    convert: Callable[[dict[str, Any]], Item]


@dataclass
class FileReport:
    """What one file gave: its format and the funnel of its rows."""

    uri: str
    format: str
    funnel: Funnel = field(default_factory=Funnel)

    @property
    def kept(self) -> int:
        last = [name for name in STEPS if name in self.funnel.steps][-1]
        return self.funnel[last].docs_out

    def stats(self) -> dict[str, Any]:
        """The report shape `flows.report.funnel_text` prints."""
        return {"input": self.uri, "format": self.format, "steps": self.funnel.to_dict()}


def detect_format(row: dict[str, Any], importers: dict[str, Importer]) -> str | None:
    return next((name for name, importer in importers.items() if importer.looks_like(row)), None)


def load_files(
    storage: Storage,
    specs: Sequence[str],
    importers: dict[str, Importer[Item]],
    fmt: str,
    noun: str,
    finish: Callable[[Item, Counter], Item],
    length: Callable[[Item], int] | None = None,
    max_tokens: int | None = None,
) -> tuple[list[Item], list[FileReport]]:
    """Every usable item of the files `specs` name, and one report per file.

    `finish` applies the rules every format shares (raising Skip); `length` measures an item in
    tokens for the `max_tokens` check.
    """
    if max_tokens is not None and length is None:
        raise ValueError("a max_tokens check needs a tokenizer to measure with")
    if fmt != "auto" and fmt not in importers:
        raise ChatDataError(f"unknown {noun} format {fmt!r}: choose auto, {', '.join(importers)}")
    items: list[Item] = []
    reports = []
    for uri in resolve_data_files(specs, storage):
        kept, report = _load_file(storage, uri, importers, fmt, finish, length if max_tokens else None, max_tokens)
        if not kept:
            reasons = Counter()
            for stats in report.funnel.steps.values():
                reasons.update(stats.dropped)
            why = ", ".join(f"{reason}={count}" for reason, count in reasons.most_common(4)) or "the file is empty"
            raise ChatDataError(f"{uri}: no usable {noun} ({report.format} format; {why})")
        log.info("%s: %d %s kept of %d rows (%s)", uri, len(kept), noun, report.funnel["read"].docs_in, report.format)
        items += kept
        reports.append(report)
    return items, reports


def _load_file(storage, uri, importers, fmt, finish, length, max_tokens) -> tuple[list, FileReport]:
    report = FileReport(uri, fmt)
    read, imported = report.funnel["read"], report.funnel["import"]
    measured = report.funnel["length"] if length else None
    importer = importers.get(fmt)
    kept = []
    for row in read_rows(storage, uri):
        read.docs_in += 1
        if isinstance(row, BadRow):
            read.dropped[row.reason] += 1
            continue
        read.docs_out += 1
        if importer is None:
            report.format = detect_format(row, importers) or ""
            if not report.format:
                raise ChatDataError(
                    f"{uri}: cannot tell its format from the fields {sorted(row)[:8]} (choose one of {', '.join(importers)})"
                )
            importer = importers[report.format]
        imported.docs_in += 1
        try:
            item = finish(importer.convert(row), imported.counts)
        except Skip as skip:
            imported.dropped[skip.reason] += 1
            continue
        except (KeyError, TypeError, AttributeError, ValueError) as error:  # a row that lacks the layout's fields
            imported.dropped["malformed_row"] += 1
            log.debug("%s: malformed row (%s: %s)", uri, type(error).__name__, error)
            continue
        imported.docs_out += 1
        if measured is not None:
            measured.docs_in += 1
            if length(item) > max_tokens:
                measured.dropped["too_long"] += 1
                continue
            measured.docs_out += 1
        kept.append(item)
    return kept, report
