"""The crawl-to-documents Spark job: WARC files in, filtered documents and a funnel out.

One Spark task per WARC file (the unit Common Crawl itself ships). Each task streams its WARC
through the reader and the step chain, writes `docs/part-<unit>.parquet` (and, if asked, the
dropped documents with their reason), and returns its funnel. The driver never sees documents,
only per-file statistics, which it merges into `<output>/stats.json`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from infra.settings import Settings
from infra.storage import Storage, join
from tasks.filters.chain import chain_for
from tasks.formats.docs import STATS_FILE, documents_to_table, docs_uri, dropped_to_table, dropped_uri, write_table
from tasks.readers.inputs import display_uri, open_warc, snapshot_of
from tasks.jobs.units import Progress, run_units
from tasks.pipeline import Document, Funnel, run_chain
from tasks.readers.warc import iter_warc_documents

log = logging.getLogger(__name__)

READ_STEP = "read_warc"


def filter_warc(uri: str, unit: str, output: str, settings: Settings, snapshot: str = "") -> dict[str, Any]:
    """Filter one WARC file into its docs part; return its funnel (plain function, no Spark)."""
    storage = Storage(settings.storage)
    funnel = Funnel()
    dropped: list[tuple[Document, str, str]] = []
    on_drop = (lambda doc, step, reason: dropped.append((doc, step, reason))) if settings.filter.keep_dropped else None
    started = time.perf_counter()
    with open_warc(uri, storage, timeout=settings.input.http_timeout_seconds) as stream:
        documents = iter_warc_documents(
            stream, display_uri(uri), snapshot or snapshot_of(uri), funnel[READ_STEP], settings.input.max_record_bytes
        )
        kept = list(run_chain(chain_for(settings.filter), documents, funnel, on_drop))
    row_group = settings.filter.row_group_rows
    write_table(storage, docs_uri(output, unit), documents_to_table(kept), row_group)
    if on_drop is not None:
        for doc, _, _ in dropped:
            doc.html = None  # the inspection file keeps whatever text there was, never the HTML
        write_table(storage, dropped_uri(output, unit), dropped_to_table(dropped), row_group)
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


def run_filter(
    spark, inputs: list[str], output: str, settings: Settings, snapshot: str = "", progress: Progress | None = None
) -> dict[str, Any]:
    """Filter every WARC in `inputs` (already resolved URIs) into `output`; return the stats.
    `progress(done, total)` hears of WARCs finished while the job runs (tasks/jobs/units.py)."""
    storage = Storage(settings.storage)
    storage.check_writable(output)
    started = time.perf_counter()

    def work(uri: str, unit: str) -> dict[str, Any]:
        return filter_warc(uri, unit, output, settings, snapshot)

    result = run_units(spark, inputs, work, output, settings.storage, progress)
    funnel = Funnel()
    for unit_stats in result.stats.values():
        funnel.merge(Funnel.from_dict(unit_stats["funnel"]))
    stats = {
        "stage": "filter",
        "output": output,
        "inputs": len(inputs),
        "inputs_done": len(result.stats),
        "inputs_resumed": result.resumed,
        "inputs_failed": result.failed,
        "totals": summarize(funnel),
        "steps": funnel.to_dict(),
        "wall_seconds": round(time.perf_counter() - started, 3),
    }
    storage.write_text(join(output, STATS_FILE), json.dumps(stats, indent=2))
    for uri, error in result.failed.items():
        log.error("could not process %s: %s", uri, error)
    return stats
