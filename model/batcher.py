"""Serving many callers with one model: a worker thread that owns the engine and runs batches.

    worker = BatchWorker(engine, max_batch_rows=8, batch_window_s=0.02, max_queued=64)
    worker.start()
    job = worker.submit(prompt_ids, SamplingParams(max_tokens=64), n=1, seed=None, sink=callback)
    # callback(JobToken(choice, event)) for every new token of every choice, from the worker thread;
    # callback(JobEnd(error)) once, when every choice of the job has finished
    job.cancel()        # from any thread: a client gone, or a stop string matched (one choice)
    worker.close()

How batching works: callers `submit` jobs into a FIFO queue, and the one worker thread loops:
wait for a job, take from the head of the queue every job that fits in `max_batch_rows` rows (a
job with `n` choices takes n rows), and run them as one `Engine.stream` call: one prefill of all
prompts left-padded together, then one decoding step per token for the whole batch. Jobs that
arrive while a batch runs wait for the next one, so under load each batch holds what queued
during the previous one; when the worker is idle it waits `batch_window_s` after the first job
for company before it starts. Every token is handed to its job's `sink` as soon as its step is
done, so streaming callers see tokens while the batch runs, and a job ends (`JobEnd`) as soon as
its own choices finish, not when the batch does. A cancelled choice leaves the batch at the next
step (`Generation.cancel`), so a client that disconnects costs nothing after that.

Limits, from the engine's shape (static batches, not continuous batching as in vLLM):
- a job that arrives while a batch runs waits until that batch's longest row ends, even if a
  slot came free: up to `max_tokens` steps of the running batch;
- the rows of a batch decode in lockstep; finished rows leave, so the cost per step falls as
  they finish, but nothing joins a running batch;
- a job with a `seed` runs in a batch of its own (with `num_samples` = n, one prefill): the
  engine draws one random stream per batch, so only that keeps a seed reproducible; jobs without
  one share batches and a fresh seed per batch. Greedy jobs (temperature 0) give the same tokens
  in any batch;
- `max_queued` bounds the waiting jobs: `submit` raises `QueueFull` beyond it, so an overloaded
  server answers at once (HTTP 503) instead of letting waits grow without end.

A sink must not block (the server's puts the item on its request's asyncio queue with
`call_soon_threadsafe`); a sink that raises is taken for a caller gone, and its job is cancelled.
An error inside a batch ends that batch's unfinished jobs with `JobEnd(error)`, logged, and the
worker goes on with the next batch.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from model.engine import Engine, SamplingParams, TokenEvent, Tool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobToken:
    """One new token of one of a job's choices."""

    choice: int
    event: TokenEvent


@dataclass(frozen=True)
class JobEnd:
    """A job is over: every choice finished (or was cancelled), or the batch failed (`error`)."""

    error: str | None = None


Sink = Callable[[JobToken | JobEnd], None]


class QueueFull(RuntimeError):
    """More jobs wait than the worker takes (`max_queued`)."""


@dataclass(eq=False)
class Job:
    """One caller's request: a prompt, its sampling settings and `n` choices."""

    prompt: Sequence[int]
    params: SamplingParams
    n: int
    seed: int | None
    sink: Sink
    worker: BatchWorker
    submitted: float = field(default_factory=time.monotonic)
    id: int = 0
    cancelled: set[int] = field(default_factory=set)  # choices to stop

    def cancel(self, choice: int | None = None) -> None:
        """Stop one choice (or all): safe from any thread; the worker applies it between tokens,
        or drops the job before it starts."""
        self.cancelled.update(range(self.n) if choice is None else (choice,))
        self.worker._cancels.put(self)


class BatchWorker:
    """The single thread that owns the model: it runs the queued jobs in batches."""

    def __init__(self, engine: Engine, max_batch_rows: int = 8, batch_window_s: float = 0.005, max_queued: int = 64,
                 tools: dict[str, Tool] | None = None) -> None:
        if max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be at least 1, got {max_batch_rows}")
        self.engine, self.max_batch_rows, self.batch_window_s, self.max_queued = engine, max_batch_rows, batch_window_s, max_queued
        self.tools = tools or {}
        self._pending: deque[Job] = deque()
        self._cancels: queue.SimpleQueue[Job] = queue.SimpleQueue()  # jobs with new cancellations
        self._wake = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._stats_lock = threading.Lock()
        self._stats: dict[str, Any] = {"jobs": 0, "batches": 0, "rows": 0, "tokens": 0, "failed_batches": 0,
                                       "cancelled_rows": 0, "busy_seconds": 0.0}
        self._batch_rows: Counter[int] = Counter()

    # -- the callers' side ----------------------------------------------------------------------

    def start(self) -> BatchWorker:
        self._thread = threading.Thread(target=self._loop, name="batch-worker", daemon=True)
        self._thread.start()
        return self

    def submit(self, prompt: Sequence[int], params: SamplingParams, n: int = 1, seed: int | None = None,
               sink: Sink | None = None) -> Job:
        """Queue one job; its tokens and its end go to `sink`. Raises QueueFull when too many wait."""
        if not 1 <= n <= self.max_batch_rows:
            raise ValueError(f"n must be between 1 and {self.max_batch_rows} (the batch size), got {n}")
        job = Job(list(prompt), params, n, seed, sink or (lambda item: None), self, id=next(self._ids))
        with self._wake:
            if self._closed:
                raise RuntimeError("the batch worker is closed")
            if len(self._pending) >= self.max_queued:
                raise QueueFull(f"{len(self._pending)} requests are waiting already (serve.max_queued_requests)")
            self._pending.append(job)
            self._wake.notify()
        return job

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking jobs, end the waiting ones with an error, and let the running batch end."""
        with self._wake:
            self._closed = True
            waiting, self._pending = list(self._pending), deque()
            self._wake.notify()
        for job in waiting:
            self._deliver(job, JobEnd("the server is shutting down"))
        if self._thread is not None:
            self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        """Counters since start: jobs, batches, rows, tokens, the batch sizes seen (rows -> batches)."""
        with self._stats_lock:
            with self._wake:
                queued = len(self._pending)
            return {**self._stats, "busy_seconds": round(self._stats["busy_seconds"], 3), "queued": queued,
                    "max_batch_rows": self.max_batch_rows, "batch_rows": dict(sorted(self._batch_rows.items()))}

    # -- the worker's side ----------------------------------------------------------------------

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._run(batch)

    def _next_batch(self) -> list[Job] | None:
        with self._wake:
            while True:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return None
                if len(self._pending[0].cancelled) < self._pending[0].n:
                    break
                self._deliver(self._pending.popleft(), JobEnd())  # its caller left before it started
            # Idle until now: give jobs arriving together a moment to share this batch.
            deadline = self._pending[0].submitted + self.batch_window_s
            while sum(job.n for job in self._pending) < self.max_batch_rows and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(left)
            if self._pending[0].seed is not None:  # seeded: alone, for reproducibility
                return [self._pending.popleft()]
            batch, rows = [], 0
            while self._pending and self._pending[0].seed is None and rows + self._pending[0].n <= self.max_batch_rows:
                job = self._pending.popleft()
                batch.append(job)
                rows += job.n
            return batch

    def _run(self, batch: list[Job]) -> None:
        started = time.monotonic()
        owners = [(job, choice) for job in batch for choice in range(job.n)]  # engine row -> (job, choice)
        with self._stats_lock:  # counted as it starts: a caller may read them once its own job ended
            self._stats["jobs"] += len(batch)
            self._stats["batches"] += 1
            self._stats["rows"] += len(owners)
            self._batch_rows[len(owners)] += 1
        rows_of = {job: [row for row, (owner, _) in enumerate(owners) if owner is job] for job in batch}
        open_rows = {job: set(rows) for job, rows in rows_of.items()}
        tokens = cancelled = 0

        def close_row(job: Job, row: int) -> None:
            open_rows[job].discard(row)
            if not open_rows[job]:
                self._deliver(job, JobEnd())

        def apply_cancels(job: Job) -> None:
            nonlocal cancelled
            for row in [rows_of[job][choice] for choice in list(job.cancelled)]:
                if row in open_rows[job]:
                    generation.cancel(row)
                    cancelled += 1
                    close_row(job, row)

        try:
            if len(batch) == 1 and batch[0].seed is not None:  # one prefill for its n samples
                job = batch[0]
                generation = self.engine.stream([job.prompt], job.params, num_samples=job.n, seed=job.seed, tools=self.tools)
            else:
                generation = self.engine.stream([job.prompt for job, _ in owners], [job.params for job, _ in owners],
                                                seed=None, tools=self.tools)
            for job in batch:  # cancelled while it waited
                apply_cancels(job)
            for event in generation:
                job, choice = owners[event.row]
                tokens += 1
                if event.row in open_rows[job]:
                    if not self._deliver(job, JobToken(choice, event)):
                        job.cancel()
                    if event.finish_reason is not None:
                        close_row(job, event.row)
                while not self._cancels.empty():  # cheap when empty: checked between tokens
                    target = self._cancels.get()
                    if target in rows_of:
                        apply_cancels(target)
        except Exception as error:  # noqa: BLE001 - one failed batch must not take the server down
            log.exception("batch of %d job(s) failed", len(batch))
            for job in batch:
                if open_rows[job]:
                    open_rows[job].clear()
                    self._deliver(job, JobEnd(f"generation failed: {type(error).__name__}: {error}"))
            with self._stats_lock:
                self._stats["failed_batches"] += 1
        seconds = time.monotonic() - started
        with self._stats_lock:
            self._stats["tokens"] += tokens
            self._stats["cancelled_rows"] += cancelled
            self._stats["busy_seconds"] += seconds
        log.info("batch: %d job(s), %d row(s), %d tokens in %.2f s", len(batch), len(owners), tokens, seconds)

    @staticmethod
    def _deliver(job: Job, item: JobToken | JobEnd) -> bool:
        try:
            job.sink(item)
            return True
        except Exception:  # noqa: BLE001 - the caller's side is gone (its event loop closed)
            log.debug("job %d: its sink failed; cancelling it", job.id, exc_info=True)
            return False
