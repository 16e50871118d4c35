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

Progress: with `progress=callback`, `callback(done, total)` is called when the job starts (the
units an earlier run finished count as done), whenever more of its tasks have finished, and at
the end. A thread on the driver reads Spark's status tracker (the driver's own in-memory
record of its jobs, no call to the executors) for the job's group every `poll_seconds`, so the
job itself is not slowed; the flows turn the calls into a progress artifact in the Prefect UI.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from infra.settings import StorageSettings
from infra.storage import Storage, join
from tasks.formats.docs import PROGRESS_DIR, unit_key
from tasks.readers.inputs import display_uri

log = logging.getLogger(__name__)

UnitWork = Callable[[str, str], dict[str, Any]]  # (input uri, unit key) -> that unit's stats
Progress = Callable[[int, int], None]  # (units done, units in all)


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


class TaskProgress:
    """Reports the finished tasks of the Spark jobs in one job group while they run (a thread
    polling the driver's status tracker), as `progress(already_done + finished, total)`."""

    def __init__(self, spark, progress: Progress, already_done: int, total: int, poll_seconds: float) -> None:
        self.context, self.progress = spark.sparkContext, progress
        self.already_done, self.total, self.poll_seconds = already_done, total, poll_seconds
        self.group = f"crawl2chat-units-{uuid.uuid4().hex[:12]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name=self.group, daemon=True)
        self._last = -1

    def finished_tasks(self) -> int:
        tracker = self.context.statusTracker()
        finished = 0
        for job_id in tracker.getJobIdsForGroup(self.group):
            job = tracker.getJobInfo(job_id)
            for stage_id in job.stageIds if job else ():
                stage = tracker.getStageInfo(stage_id)
                finished += stage.numCompletedTasks if stage else 0
        return finished

    def report(self, done: int) -> None:
        if done != self._last:
            self._last = done
            self.progress(min(done, self.total), self.total)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.report(self.already_done + self.finished_tasks())
            except Exception as error:  # noqa: BLE001 - progress is a courtesy: never fail the job for it
                log.debug("progress poll failed: %s", error)

    def __enter__(self) -> "TaskProgress":
        # Jobs started from this thread join the group (PySpark pins job properties per thread).
        self._previous = self.context.getLocalProperty("spark.jobGroup.id")
        self.context.setJobGroup(self.group, "crawl2chat units", interruptOnCancel=False)
        self.report(self.already_done)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.context.setLocalProperty("spark.jobGroup.id", self._previous)


def run_units(
    spark, inputs: list[str], work: UnitWork, output: str, storage_settings: StorageSettings,
    progress: Progress | None = None, poll_seconds: float = 1.0,
) -> UnitsResult:
    """Run `work` once per input not yet done, one Spark task each; merge in the finished ones.
    With `progress`, report units done of total while the job runs (see the module docstring)."""
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
        watching = TaskProgress(spark, progress, result.resumed, len(inputs), poll_seconds) if progress else nullcontext()
        with watching:
            outcomes = rdd.map(lambda uri: _run_unit(work, storage_settings, output, uri)).collect()
        for uri, stats, error in outcomes:
            if error is None:
                result.stats[unit_key(display_uri(uri))] = stats
            else:
                result.failed[display_uri(uri)] = error
    if progress is not None:
        progress(len(result.stats), len(inputs))  # failed units are not done
    result.seconds = time.perf_counter() - started
    return result
