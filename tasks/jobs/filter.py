"""The crawl-to-documents Spark job: WARC files in, filtered documents and a funnel out.

One Spark task per WARC file (the unit Common Crawl itself ships). Each task streams its WARC
through the reader and the step chain into `docs/part-<unit>.parquet` a row group at a time (and,
if asked, the dropped documents with their reason into `dropped/`), so its memory stays flat
whatever the WARC's size, and returns its funnel. The driver never sees documents, only per-file
statistics, which it merges into `<output>/stats.json`, with the files that failed (a read that
broke off: rerun to redo them) and those quarantined after crashing their process every time.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from contextlib import ExitStack

from infra.lease import hold_lease
from infra.settings import Settings
from infra.storage import Storage, join
from tasks.filters.chain import chain_for
from tasks.formats.docs import (
    DOC_SCHEMA, DROPPED_SCHEMA, STATS_FILE, PartWriter, documents_to_table, docs_uri, dropped_to_table, dropped_uri,
)
from tasks.jobs.units import Progress, run_units
from tasks.pipeline import Document, Funnel, run_chain
from tasks.readers.inputs import display_uri, open_warc, snapshot_of
from tasks.readers.warc import iter_warc_documents

log = logging.getLogger(__name__)

READ_STEP = "read_warc"


def filter_warc(uri: str, unit: str, output: str, settings: Settings, snapshot: str = "") -> dict[str, Any]:
    """Filter one WARC file into its docs part; return its funnel (plain function, no Spark)."""
    storage = Storage(settings.storage)
    funnel = Funnel()
    row_group = settings.filter.row_group_rows
    started = time.perf_counter()
    with ExitStack() as parts:
        kept = parts.enter_context(PartWriter(storage, docs_uri(output, unit), DOC_SCHEMA, row_group, documents_to_table))
        on_drop = None
        if settings.filter.keep_dropped:
            dropped = parts.enter_context(
                PartWriter(storage, dropped_uri(output, unit), DROPPED_SCHEMA, row_group, dropped_to_table)
            )

            def on_drop(doc: Document, step: str, reason: str) -> None:
                doc.html = None  # the inspection file keeps whatever text there was, never the HTML
                dropped.add((doc, step, reason))

        with open_warc(uri, storage, timeout=settings.input.http_timeout_seconds) as stream:
            documents = iter_warc_documents(
                stream, display_uri(uri), snapshot or snapshot_of(uri), funnel[READ_STEP], settings.input.max_record_bytes
            )
            for doc in run_chain(chain_for(settings.filter), documents, funnel, on_drop):
                kept.add(doc)
    return {"input": display_uri(uri), "funnel": funnel.to_dict(), "seconds": round(time.perf_counter() - started, 3)}


def summarize(funnel: Funnel) -> dict[str, Any]:
    """Totals across the chain: records read, documents kept, and every drop reason by step."""
    steps = list(funnel.steps.values())  # in chain order, the reader first
    return {
        "records_in": steps[0].docs_in if steps else 0,
        "docs_out": steps[-1].docs_out if steps else 0,
        "dropped": sum(sum(stats.dropped.values()) for stats in funnel.steps.values()),
        "dropped_by_reason": {
            f"{name}/{reason}": count for name, stats in funnel.steps.items() for reason, count in sorted(stats.dropped.items())
        },
    }


def filter_shaping(settings: Settings, snapshot: str) -> dict[str, Any]:
    """The settings that shape the filter stage's output (a change means other documents)."""
    return {"filter": settings.filter.model_dump(), "max_record_bytes": settings.input.max_record_bytes, "snapshot": snapshot}


def run_filter(
    spark, inputs: list[str], output: str, settings: Settings, snapshot: str = "", force: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Filter every WARC in `inputs` (already resolved URIs) into `output`; return the stats.

    Failed files are listed in the stats (`inputs_failed`), not raised: the caller decides
    whether a partial result may go on (flows/crawl_to_tokens.py). `progress(done, total)`
    hears of WARCs finished while the job runs (tasks/jobs/units.py).
    """
    storage = Storage(settings.storage)
    storage.check_writable(output)
    started = time.perf_counter()

    def work(uri: str, unit: str) -> dict[str, Any]:
        return filter_warc(uri, unit, output, settings, snapshot)

    with hold_lease(storage, output, settings.jobs.lease_seconds, "filter") as lease:
        result = run_units(
            spark, inputs, work, output, settings.storage,
            shaping=filter_shaping(settings, snapshot), jobs=settings.jobs, force=force, progress=progress,
        )
        funnel = Funnel()
        for unit_stats in result.stats.values():
            funnel.merge(Funnel.from_dict(unit_stats["funnel"]))
        read = funnel[READ_STEP]
        for _ in result.quarantined:  # a file that crashed every attempt counts as one dropped "document"
            read.docs_in += 1
            read.dropped["quarantined"] += 1
        stats = {
            "stage": "filter",
            "output": output,
            "inputs": len(inputs),
            "inputs_done": len(result.stats),
            "inputs_resumed": result.resumed,
            "inputs_redone": result.redone,
            "inputs_failed": result.failed,
            "inputs_quarantined": result.quarantined,
            "incomplete": {**result.failed, **{uri: f"quarantined: {error}" for uri, error in result.quarantined.items()}},
            "totals": summarize(funnel),
            "steps": funnel.to_dict(),
            "wall_seconds": round(time.perf_counter() - started, 3),
        }
        lease.check()
        storage.write_text(join(output, STATS_FILE), json.dumps(stats, indent=2))
    for uri, error in result.failed.items():
        log.error("could not process %s: %s", uri, error)
    for uri, error in result.quarantined.items():
        log.error("quarantined %s: %s", uri, error)
    return stats
