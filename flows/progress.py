"""Progress in the Prefect UI while a long stage runs: a progress artifact that moves.

    progress = ProgressArtifact("filter-progress", "filter: WARC files done")
    run_filter(..., progress=progress.update)           # update(done, total), from any thread

    with watch_metrics(storage, "<run>/metrics.jsonl", on_record=..., poll_seconds=2):
        ...                                              # a training stage's process runs here

Spark jobs report units done through `tasks.jobs.units` (a thread reading Spark's status
tracker); training stages write a line to their `metrics.jsonl` every log interval, which
`watch_metrics` reads while the stage's process runs, so any stage that uses the shared trainer
(model/trainer.py), in one process or under torchrun, shows steps done of its total.

Outside a Prefect run (plain Python, a unit test of a job) a ProgressArtifact does nothing.
Updates come from other threads than the run's, which do not inherit the run's context (where
Prefect keeps the API address of a test harness or of `temporary_settings`): each update runs
in a copy of the context the artifact was created in.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

from infra.storage import Storage

log = logging.getLogger(__name__)


def in_prefect_run() -> bool:
    from prefect.context import get_run_context

    try:
        get_run_context()
    except Exception:  # noqa: BLE001 - MissingContextError: not inside a flow or task run
        return False
    return True


class ProgressArtifact:
    """A Prefect progress artifact of the current run, from 0 to 100 %, described as "done of total"."""

    def __init__(self, key: str, what: str) -> None:
        self.key, self.what = key, what
        self.id: UUID | None = None
        self.percent: float | None = None
        self._lock = threading.Lock()
        if not in_prefect_run():
            return
        from prefect.artifacts import create_progress_artifact

        self.id = create_progress_artifact(0.0, key=key, description=f"{what}: starting")
        self._context = contextvars.copy_context()

    def update(self, done: int | float, total: int | float, detail: str = "") -> None:
        """Move to `done` of `total` (an unchanged percentage sends nothing)."""
        if self.id is None:
            return
        percent = round(100.0 * done / total, 1) if total else 100.0
        description = f"{self.what}: {done:,} of {total:,}" + (f" ({detail})" if detail else "")
        with self._lock:
            if percent == self.percent:
                return
            self.percent = percent
            try:
                self._context.run(self._send, percent, description)
            except Exception as error:  # noqa: BLE001 - a progress bar never fails the stage it shows
                log.warning("could not update progress artifact %s: %s", self.key, error)

    def _send(self, percent: float, description: str) -> None:
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(self.id, min(percent, 100.0), description=description)


def last_record(storage: Storage, uri: str) -> dict[str, Any] | None:
    """The last JSON line of a run's metrics.jsonl (None while it has none)."""
    if not storage.exists(uri):
        return None
    lines = [line for line in storage.read_text(uri).splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None


@contextlib.contextmanager
def watch_metrics(
    storage: Storage, uri: str, on_record: Callable[[dict[str, Any]], None], poll_seconds: float = 2.0
) -> Iterator[None]:
    """Call `on_record(last line)` whenever `uri` (a metrics.jsonl) gains a new step, from a
    thread, while the block runs; once more at its end."""
    stop = threading.Event()
    seen: list[Any] = [None]

    def poll() -> None:
        try:
            record = last_record(storage, uri)
        except (OSError, ValueError) as error:  # mid-rewrite on a filesystem without atomic rename
            log.debug("metrics not readable yet: %s", error)
            return
        if record is not None and record.get("step") != seen[0]:
            seen[0] = record.get("step")
            on_record(record)

    def loop() -> None:
        while not stop.wait(poll_seconds):
            poll()

    thread = threading.Thread(target=loop, name=f"watch {uri}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        poll()
