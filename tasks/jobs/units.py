"""Run one function per input file on Spark, resumably, trusting saved progress only when it still holds.

Every stage that maps input files to output files (filtering WARCs, rewriting deduplicated
docs, tokenizing docs into shards) uses this. A task writes its outputs first and its marker
`_progress/<unit>.json` last, so a crash leaves either a finished unit or one that the next run
redoes (overwriting, never duplicating, its files). The driver:

1. checks `<output>/_settings.json`, the settings that shape this stage's output: made under
   others, the output is refused with one line naming what changed (`StaleProgress`), or with
   `force` redone;
2. finds the finished units with one listing of `_progress/` and one read of
   `_progress_index.json`, the markers compacted by the last run (only markers written since,
   by a run that crashed, are read one by one), instead of one request per marker;
3. trusts a marker only if the input is the same file it was made from (size and mtime, from one
   listing per folder; http(s) inputs are immutable Common Crawl URLs and are not re-checked) and
   the settings are the same: a changed input is `StaleProgress` (or, with `force`, redone); a
   marker made from another build of the input stage (`upstream`, e.g. a dedup replanned over
   more files) is redone without asking;
4. runs the rest as one Spark task each. Inside its task a unit runs in a forked process, so a
   segfault, a Rust panic or an OOM kill takes down that process, not the Python worker or the
   job: the unit is tried `jobs.unit_attempts` times, then quarantined (a marker recording its
   error; reported, not retried by later runs unless `force`), and the rest of the stage finishes;
5. rewrites the index.

A unit that raises is reported, not fatal: its error is returned in `failed`, it gets no marker,
and a rerun (or a Prefect retry) tries it again. Units are named, keyed and reported by their
input's `display_uri` (a presigned URL without its signature); only the work itself sees the URI
as given. The stage decides what a failure means:
`UnitsFailed` (exit code 1, flow run Failed) unless the user allowed a partial result.
The markers hold each unit's stats, so the merged stats of a resumed run are those of an
uninterrupted one.

Progress: with `progress=callback`, `callback(done, total)` is called when the job starts (the
units an earlier run finished count as done), whenever more of its tasks have finished, and at
the end. A thread on the driver reads Spark's status tracker (the driver's own in-memory
record of its jobs, no call to the executors) for the job's group every `poll_seconds`, so the
job itself is not slowed; the flows turn the calls into a progress artifact in the Prefect UI.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from infra.settings import JobSettings, StorageSettings
from infra.storage import Storage, join
from tasks.formats.docs import PROGRESS_DIR, PROGRESS_INDEX_FILE, SETTINGS_FILE, unit_key
from tasks.readers.inputs import display_uri, is_http

log = logging.getLogger(__name__)

UnitWork = Callable[[str, str], dict[str, Any]]  # (input uri, unit key) -> that unit's stats
Progress = Callable[[int, int], None]  # (units done, units in all)
MARKER_READ_THREADS = 16
SHOWN_FAILURES = 3


class StaleProgress(ValueError):
    """Saved progress that no longer matches the input or the settings; one line for the user."""


class UnitsFailed(RuntimeError):
    """Some units of a stage failed, and going on without them was not allowed."""

    def __init__(self, stage: str, failed: dict[str, str]) -> None:
        super().__init__(stage, failed)
        self.stage, self.failed = stage, failed

    def __str__(self) -> str:
        shown = "; ".join(f"{uri}: {error}" for uri, error in list(self.failed.items())[:SHOWN_FAILURES])
        more = f"; and {len(self.failed) - SHOWN_FAILURES} more" if len(self.failed) > SHOWN_FAILURES else ""
        return (
            f"{self.stage}: {len(self.failed)} unit(s) failed: {shown}{more}; "
            "rerun to retry them, or pass --allow-partial to go on without them"
        )


@dataclass
class UnitsResult:
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # unit key -> stats
    failed: dict[str, str] = field(default_factory=dict)  # input uri -> one-line error
    quarantined: dict[str, str] = field(default_factory=dict)  # input uri -> its crash, after every attempt
    resumed: int = 0  # units skipped because an earlier run finished them
    redone: int = 0  # units an earlier run finished that were done again (other upstream build, --force)
    seconds: float = 0.0


# --- settings ----------------------------------------------------------------------------------


def settings_sha(shaping: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(values, dict):
        return {prefix: values}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def settings_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    """'a.b: 1 -> 2; c: x -> y' for the settings that differ (the first few)."""
    before, after = _flatten(old), _flatten(json.loads(json.dumps(new, default=str)))
    changes = [
        f"{key}: {before.get(key, '(unset)')} -> {after.get(key, '(unset)')}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]
    more = f"; and {len(changes) - SHOWN_FAILURES} more" if len(changes) > SHOWN_FAILURES else ""
    return "; ".join(changes[:SHOWN_FAILURES]) + more


def check_settings(storage: Storage, output: str, shaping: dict[str, Any], force: bool = False) -> bool:
    """Refuse (StaleProgress) an output made under other settings; with `force`, adopt the new
    ones. Returns True when the settings changed (and were forced)."""
    uri = join(output, SETTINGS_FILE)
    sha = settings_sha(shaping)
    changed = False
    if storage.exists(uri):
        recorded = json.loads(storage.read_text(uri))
        if recorded.get("sha") == sha:
            return False
        diff = settings_diff(recorded.get("settings", {}), shaping)
        if not force:
            raise StaleProgress(
                f"{output} was made with other settings ({diff}); use a fresh output, or --force to redo it"
            )
        log.warning("--force: redoing %s under new settings (%s)", output, diff)
        changed = True
    storage.write_text(uri, json.dumps({"sha": sha, "settings": shaping}, indent=1, sort_keys=True, default=str))
    return changed


# --- progress markers --------------------------------------------------------------------------


def _marker_uri(output: str, key: str) -> str:
    return join(output, PROGRESS_DIR, f"{key}.json")


def load_progress(storage: Storage, output: str) -> dict[str, dict[str, Any]]:
    """unit key -> marker, for every unit with a marker: one listing, one index read, and a
    read of each marker the index does not hold yet."""
    listed = {
        entry.uri.rsplit("/", 1)[-1][: -len(".json")]: entry.uri
        for entry in storage.list(join(output, PROGRESS_DIR), suffix=".json")
    }
    index_uri = join(output, PROGRESS_INDEX_FILE)
    index = json.loads(storage.read_text(index_uri))["markers"] if listed and storage.exists(index_uri) else {}
    markers = {key: index[key] for key in listed if key in index}
    unindexed = [key for key in listed if key not in index]
    if unindexed:
        log.info("reading %d progress markers written since the last index", len(unindexed))
        with ThreadPoolExecutor(MARKER_READ_THREADS) as pool:
            texts = pool.map(lambda key: storage.read_text(listed[key]), unindexed)
            markers.update({key: json.loads(text) for key, text in zip(unindexed, texts)})
    return markers


def write_progress_index(storage: Storage, output: str, markers: dict[str, dict[str, Any]]) -> None:
    # Not key-sorted: a funnel's steps keep their chain order.
    storage.write_text(join(output, PROGRESS_INDEX_FILE), json.dumps({"markers": markers}))


def _staleness(marker: dict[str, Any], fingerprint: dict | None, sha: str, upstream: str) -> tuple[str, str] | None:
    """(kind, what) when a marker no longer stands for its unit: kind 'upstream' (redo quietly)
    or 'changed' (ask for --force); None when it still does."""
    if marker.get("settings_sha") != sha:
        return "changed", "it was made with other settings (an interrupted --force?)"
    if marker.get("upstream", "") != upstream:
        return "upstream", "its input stage was rebuilt"
    recorded = marker.get("fingerprint")
    if fingerprint is not None and recorded is not None and recorded != fingerprint:
        what = ", ".join(f"{key} {recorded.get(key)} -> {fingerprint.get(key)}" for key in fingerprint if recorded.get(key) != fingerprint.get(key))
        return "changed", f"{marker.get('input')} changed since it was processed ({what})"
    return None


# --- running one unit --------------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def _describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else f"signal {number}"
        hint = " (out of memory?)" if number == signal.SIGKILL else ""
        return f"the unit's process was killed by {name}{hint}"
    return f"the unit's process exited with code {os.WEXITSTATUS(status)} before returning"


def run_in_child(work: UnitWork, uri: str, key: str) -> tuple[str, Any]:
    """Run `work(uri, key)` in a forked process: ('ok', stats), ('error', line) when it raised,
    or ('crash', what happened) when the process died (signal, os._exit, OOM kill)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns, never runs the parent's cleanup
        try:
            os.close(read_end)
            try:
                outcome: tuple[str, Any] = ("ok", work(uri, key))
            except BaseException as error:  # noqa: BLE001 - handed to the parent as one line
                log.error("unit %s failed: %s\n%s", display_uri(uri), _one_line(error), traceback.format_exc())
                outcome = ("error", _one_line(error))
            try:
                payload = pickle.dumps(outcome)
            except Exception as error:  # noqa: BLE001 - stats that cannot be sent are an error too
                payload = pickle.dumps(("error", f"unit result could not be sent back: {_one_line(error)}"))
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(payload)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        payload = pipe.read()
    _, status = os.waitpid(pid, 0)
    if payload:
        return pickle.loads(payload)
    return "crash", _describe_exit(status)


@dataclass(frozen=True)
class _UnitContext:
    """What every task of one run_units call needs (shipped to the workers once)."""

    work: UnitWork
    storage_settings: StorageSettings
    output: str
    settings_sha: str
    upstream: str
    attempts: int


def _run_unit(context: _UnitContext, uri: str, fingerprint: dict | None) -> tuple[str, dict | None, str | None]:
    """One Spark task: (uri, marker written, error) for one unit."""
    key = unit_key(display_uri(uri))
    marker = {"input": display_uri(uri), "fingerprint": fingerprint, "settings_sha": context.settings_sha, "upstream": context.upstream}
    for attempt in range(1, context.attempts + 1):
        kind, value = run_in_child(context.work, uri, key)
        if kind == "ok":
            marker["stats"] = value
            break
        if kind == "error":
            return uri, None, value
        log.error("unit %s crashed (attempt %d of %d): %s", display_uri(uri), attempt, context.attempts, value)
    else:
        marker["quarantined"] = {"error": value, "attempts": context.attempts}
        log.error("unit %s quarantined after %d crashes; delete its marker or rerun with --force to try it again", display_uri(uri), context.attempts)
    try:
        Storage(context.storage_settings).write_text(_marker_uri(context.output, key), json.dumps(marker))
    except Exception as error:  # noqa: BLE001 - the store kept failing: the unit is not done
        return uri, None, f"writing its progress marker failed: {_one_line(error)}"
    return uri, marker, None


# --- progress while the job runs --------------------------------------------------------------


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


# --- the driver --------------------------------------------------------------------------------


def run_units(
    spark,
    inputs: list[str],
    work: UnitWork,
    output: str,
    storage_settings: StorageSettings,
    *,
    shaping: dict[str, Any],
    jobs: JobSettings | None = None,
    force: bool = False,
    upstream: str = "",
    progress: Progress | None = None,
    poll_seconds: float = 1.0,
) -> UnitsResult:
    """Run `work` once per input not yet validly done, one Spark task each; merge in the rest.

    `shaping`: the settings that shape this stage's output; `upstream`: the build of the input
    stage (markers of another build are redone); `force`: redo stale and quarantined units
    instead of refusing them; `progress`: told units done of total while the job runs (see the
    module docstring).
    """
    started = time.perf_counter()
    jobs = jobs or JobSettings()
    storage = Storage(storage_settings)
    check_settings(storage, output, shaping, force)
    if removed := storage.remove_temporaries(output):
        log.info("removed %d temporary files that killed writes left in %s", removed, output)
    sha = settings_sha(shaping)
    fingerprints = {
        uri: entry.fingerprint for uri, entry in storage.stat_many([uri for uri in inputs if not is_http(uri)]).items()
    }
    markers = load_progress(storage, output)
    result = UnitsResult()
    todo: list[str] = []
    refused: list[str] = []
    for uri in inputs:
        key = unit_key(display_uri(uri))
        marker = markers.get(key)
        if marker is None:
            todo.append(uri)
            continue
        stale = _staleness(marker, fingerprints.get(uri), sha, upstream)
        if stale is not None and stale[0] == "changed" and not force:
            refused.append(stale[1])
        elif stale is not None or (force and "quarantined" in marker):
            log.info("redoing %s: %s", display_uri(uri), stale[1] if stale else "quarantined, and --force")
            todo.append(uri)
            result.redone += 1
        elif "quarantined" in marker:
            result.quarantined[display_uri(uri)] = marker["quarantined"]["error"]
            result.resumed += 1
        else:
            result.stats[key] = marker["stats"]
            result.resumed += 1
    if refused:
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        raise StaleProgress(f"{output}: {refused[0]}{more}; use a fresh output, or --force to redo it")
    if result.resumed:
        log.info("resuming: %d of %d units already done", result.resumed, len(inputs))
    todo_keys = {unit_key(display_uri(uri)) for uri in todo}
    kept = {key: marker for key, marker in markers.items() if key not in todo_keys}
    if len(kept) < len(markers):  # forget redone units before redoing them, so a crash cannot revive them
        write_progress_index(storage, output, kept)
        for key in markers.keys() - kept.keys():
            storage.delete(_marker_uri(output, key))
    if todo:
        context = _UnitContext(work, storage_settings, output, sha, upstream, jobs.unit_attempts)
        rdd = spark.sparkContext.parallelize(todo, numSlices=len(todo))
        watching = TaskProgress(spark, progress, result.resumed, len(inputs), poll_seconds) if progress else nullcontext()
        with watching:
            outcomes = rdd.map(lambda uri: _run_unit(context, uri, fingerprints.get(uri))).collect()
        for uri, marker, error in outcomes:
            if error is not None:
                result.failed[display_uri(uri)] = error
                continue
            key = unit_key(display_uri(uri))
            kept[key] = marker
            if "quarantined" in marker:
                result.quarantined[display_uri(uri)] = marker["quarantined"]["error"]
            else:
                result.stats[key] = marker["stats"]
    if kept:
        write_progress_index(storage, output, kept)  # one object for the next run to read
    if progress is not None:
        progress(len(result.stats) + len(result.quarantined), len(inputs))  # failed units are not done
    result.seconds = time.perf_counter() - started
    return result
