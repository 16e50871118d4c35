"""Run one function per input file on Spark, resumably.

Every stage that maps input files to output files (filtering WARCs, rewriting deduplicated
docs, tokenizing docs into shards) uses this: the driver lists the units, skips those whose
`_progress/<unit>.json` marker exists, and runs the rest as one Spark task each. A task writes
its outputs first and its marker last, so a crash leaves either a finished unit or one that the
next run redoes (overwriting, never duplicating, its files). The markers hold each unit's stats,
so the merged stats of a resumed run are the same as those of an uninterrupted one.

A unit that raises is reported, not fatal: its error is returned in `failed`, it gets no marker,
and a rerun tries it again. Units are named, keyed and reported by their input's `display_uri`
(a presigned URL without its signature); only the work itself sees the URI as given.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infra.settings import StorageSettings
from infra.storage import Storage, join
from tasks.formats.docs import PROGRESS_DIR, unit_key
from tasks.readers.inputs import display_uri

log = logging.getLogger(__name__)

UnitWork = Callable[[str, str], dict[str, Any]]  # (input uri, unit key) -> that unit's stats


@dataclass
class UnitsResult:
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # unit key -> stats
    failed: dict[str, str] = field(default_factory=dict)  # input uri -> one-line error
    resumed: int = 0  # units skipped because an earlier run finished them
    seconds: float = 0.0


def completed_units(storage: Storage, output: str) -> dict[str, dict[str, Any]]:
    markers = storage.list(join(output, PROGRESS_DIR), suffix=".json")
    return {entry.uri.rsplit("/", 1)[-1][: -len(".json")]: json.loads(storage.read_text(entry.uri)) for entry in markers}


def _run_unit(work: UnitWork, storage_settings: StorageSettings, output: str, uri: str) -> tuple[str, dict | None, str | None]:
    key = unit_key(display_uri(uri))
    try:
        stats = work(uri, key)
    except Exception as error:  # noqa: BLE001 - reported per unit, the job goes on
        line = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        log.error("unit %s failed: %s\n%s", display_uri(uri), line, traceback.format_exc())
        return uri, None, line
    Storage(storage_settings).write_text(join(output, PROGRESS_DIR, f"{key}.json"), json.dumps(stats))
    return uri, stats, None


def run_units(spark, inputs: list[str], work: UnitWork, output: str, storage_settings: StorageSettings) -> UnitsResult:
    """Run `work` once per input not yet done, one Spark task each; merge in the finished ones."""
    started = time.perf_counter()
    storage = Storage(storage_settings)
    done = completed_units(storage, output)
    result = UnitsResult()
    todo = []
    for uri in inputs:
        key = unit_key(display_uri(uri))
        if key in done:
            result.stats[key] = done[key]
            result.resumed += 1
        else:
            todo.append(uri)
    if result.resumed:
        log.info("resuming: %d of %d units already done", result.resumed, len(inputs))
    if todo:
        rdd = spark.sparkContext.parallelize(todo, numSlices=len(todo))
        outcomes = rdd.map(lambda uri: _run_unit(work, storage_settings, output, uri)).collect()
        for uri, stats, error in outcomes:
            if error is None:
                result.stats[unit_key(display_uri(uri))] = stats
            else:
                result.failed[display_uri(uri)] = error
    result.seconds = time.perf_counter() - started
    return result
