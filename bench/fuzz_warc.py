"""Fuzz the WARC reader with seeded mutations of the real WARCs; print what it read and skipped.

Each case (bench/warc_mutator.py) is written to a file and read the way the filter job reads
its input, `open_warc` then `iter_warc_documents`. Cases run in worker processes, so a crash
in native code (FastWARC is C++) or a hang is caught and named by its case number instead of
ending the run; the runner restarts the worker after it. "Every record either read or counted"
means, for each mutated file:

  1. nothing escapes: no exception, no dead worker, no case over `--time-limit` seconds, and
     no allocation past `--memory-mb` beyond what the worker holds at rest (an address-space
     limit, so a runaway allocation is a failure, not a swapped machine);
  2. the books balance: response records in == documents out + drops by reason, and the
     documents yielded are exactly `docs_out`, each with an id, a URL string and HTML text;
  3. at most one file-level drop (`truncated_or_corrupt_file` or `no_warc_records`), and it
     is there whenever the reader stopped early: when none is counted, the reader saw exactly
     the records FastWARC finds in the file on its own and FastWARC ended without an error;
     it never counts more records than exist (+1 for the unreadable rest);
  4. nothing before the damage is lost: every record that ends before the first damaged byte
     gives the very document it gives in the undamaged file (id, URL, HTML, date).

    .venv/bin/python bench/fuzz_warc.py --cases 10000 [--start 0] [--jobs 2] [--json out.json]
    .venv/bin/python bench/fuzz_warc.py --replay 1234   # one case, in this process, with details
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import resource
import selectors
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastwarc.warc import ArchiveIterator  # noqa: E402

from bench.warc_mutator import Seed, load_seeds, mutate  # noqa: E402
from infra.storage import Storage  # noqa: E402
from tasks.pipeline import StepStats  # noqa: E402
from tasks.readers.inputs import open_warc  # noqa: E402
from tasks.readers.warc import iter_warc_documents  # noqa: E402

WARC_DIR = ROOT.parent / "shared" / "realdata" / "warc"
FILE_LEVEL = ("truncated_or_corrupt_file", "no_warc_records")
# Drops that say "these bytes were damaged" (the others say "a fine record we do not want").
DAMAGE_REASONS = (*FILE_LEVEL, "malformed_http", "digest_mismatch")
# Mutations that can remove whole records and leave a valid, shorter WARC: no reader can tell.
WHOLE_RECORD_CUTS = ("records:drop", "truncate", "splice", "delete_span")
STARTUP_SECONDS = 120.0  # a worker's imports and its reading of every seed, on a busy machine


# --- one case ------------------------------------------------------------------------------


def _read(stream, warc_path: str) -> tuple[list[tuple[str, str, str, str]], StepStats]:
    stats = StepStats()
    docs = [(d.id, d.url, d.html, d.crawl_date) for d in iter_warc_documents(stream, warc_path, "", stats)]
    return docs, stats


def _parse(data: bytes) -> tuple[list[str], bool]:
    """(the record ids FastWARC finds on its own with the reader's options, whether it stopped on an error)."""
    ids = []
    try:
        for record in ArchiveIterator(io.BytesIO(data), parse_http=True, quirks_mode=True, auto_decode="none"):
            ids.append(record.record_id or "")
    except BaseException as error:  # noqa: BLE001 - any error is what is being recorded (Rust panics too)
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        return ids, True
    return ids, False


def _first_difference(a: bytes, b: bytes) -> int:
    """The offset of the first byte where `a` and `b` differ (the shorter length if one is a prefix)."""
    low, high = 0, min(len(a), len(b))
    if a[:high] == b[:high]:
        return high
    while high - low > 1:  # binary search on prefix equality: O(log n) memcmp calls
        middle = (low + high) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle
    return low


class Oracle:
    """What the undamaged seeds give, cached, and the checks of one case against them."""

    def __init__(self, warc_path: str) -> None:
        self.warc_path = warc_path
        self._docs: dict[str, list] = {}
        self._ids: dict[str, list[str]] = {}

    def original_docs(self, seed: Seed) -> list:
        self._learn(seed)
        return self._docs[seed.name]

    def original_ids(self, seed: Seed) -> list[str]:
        """The record id of each of the seed's spans; [] where its spans are not its records."""
        self._learn(seed)
        return self._ids[seed.name]

    def _learn(self, seed: Seed) -> None:
        if seed.name not in self._docs:
            self._docs[seed.name] = _read(io.BytesIO(seed.data), self.warc_path)[0]
            ids = _parse(seed.data)[0]
            self._ids[seed.name] = ids if len(ids) == len(seed.spans) else []

    def problems(self, seed: Seed, data: bytes, kind: str, docs: list, stats: StepStats) -> list[str]:
        found = []
        dropped = sum(stats.dropped.values())
        if stats.docs_in != stats.docs_out + dropped:
            found.append(f"unbalanced: docs_in {stats.docs_in} != docs_out {stats.docs_out} + dropped {dropped}")
        if len(docs) != stats.docs_out:
            found.append(f"yielded {len(docs)} documents but counted docs_out {stats.docs_out}")
        for doc_id, url, html, date in docs:
            if not (doc_id and isinstance(url, str) and isinstance(html, str) and html and "\x00" not in html):
                found.append(f"malformed document {doc_id!r}")
                break
        file_level = sum(stats.dropped[reason] for reason in FILE_LEVEL)
        seen = stats.docs_in + stats.counts["non_response_records"]
        parsed_ids, parse_failed = _parse(data)
        parsed = len(parsed_ids)
        if file_level > 1:
            found.append(f"{file_level} file-level drops for one file")
        elif stats.dropped["no_warc_records"]:
            if parsed or seen != 1:
                found.append(f"no_warc_records counted but FastWARC finds {parsed} records")
        elif not stats.dropped["truncated_or_corrupt_file"]:
            if parse_failed or seen != parsed:
                found.append(f"read as whole: saw {seen} records, FastWARC finds {parsed} (error: {parse_failed})")
        elif seen > parsed + 1:
            found.append(f"saw {seen} records, more than the {parsed} in the file (+1 for its rest)")
        found.extend(self._prefix_problems(seed, data, docs, seen))
        if not file_level:
            found.extend(self._changed_after(seed, data, docs))
        return found

    def uncounted_losses(self, seed: Seed, data: bytes, kind: str, stats: StepStats) -> list[str]:
        """Records lost inside or after the damage with no damage counted: FastWARC's parser
        resynchronising past a broken record, or ending at a broken gzip member, without an error.
        Measured, not failed: the reader cannot see what its parser skips (see RELIABILITY.md)."""
        if any(stats.dropped[reason] for reason in FILE_LEVEL):
            return []
        parsed_ids = set(_parse(data)[0])
        losses = [f"record {record_id} after the damage vanished" for record_id in sorted(self._untouched_after(seed, data) - parsed_ids)]
        seen = stats.docs_in + stats.counts["non_response_records"]
        whole_cut = any(cut in kind for cut in WHOLE_RECORD_CUTS)
        if self.original_ids(seed) and not whole_cut and seen < len(seed.spans) and not any(stats.dropped[r] for r in DAMAGE_REASONS):
            losses.append(f"{len(seed.spans) - seen} of {len(seed.spans)} records vanished without a damage count")
        return losses[:3]

    def _prefix_problems(self, seed: Seed, data: bytes, docs: list, seen: int) -> list[str]:
        damage = _first_difference(seed.data, data)
        intact_ends = [end for _, end in seed.spans if end <= damage]
        if not intact_ends:
            return []
        before, stats = _read(io.BytesIO(seed.data[: intact_ends[-1]]), self.warc_path)
        original = self.original_docs(seed)
        cut_clean = intact_ends[-1] == len(seed.data) or not any(stats.dropped[r] for r in FILE_LEVEL)
        if not cut_clean or before != original[: len(before)]:
            return [f"oracle: the undamaged first {len(intact_ends)} records do not read like the whole file"]
        problems = []
        if docs[: len(before)] != before:
            kept = next((i for i, (a, b) in enumerate(zip(docs, before)) if a != b), min(len(docs), len(before)))
            problems.append(f"lost before the damage at byte {damage}: {kept} of {len(before)} intact documents kept")
        if seen < len(intact_ends):
            problems.append(f"saw {seen} records but {len(intact_ends)} end before the damage at byte {damage}")
        return problems

    def _untouched_after(self, seed: Seed, data: bytes) -> set[str]:
        """Ids of the seed's records that lie, byte for byte, after the damage in `data`."""
        ids = self.original_ids(seed)
        if not ids:
            return set()
        head = _first_difference(seed.data, data)
        tail = min(_first_difference(seed.data[::-1], data[::-1]), len(seed.data) - head, len(data) - head)
        untouched = {ids[i] for i, (start, _) in enumerate(seed.spans) if start >= len(seed.data) - tail and ids[i]}
        return untouched - {record_id for record_id in ids if ids.count(record_id) > 1}  # ambiguous ones

    def _changed_after(self, seed: Seed, data: bytes, docs: list) -> list[str]:
        """A document from a record after the damage reads exactly as in the undamaged file."""
        untouched = {record_id.removeprefix("<").removesuffix(">").removeprefix("urn:uuid:") for record_id in self._untouched_after(seed, data)}
        original = {doc[0]: doc for doc in self.original_docs(seed)}
        changed = [doc[0] for doc in docs if doc[0] in untouched and doc[0] in original and doc != original[doc[0]]]
        return [f"document {doc_id} after the damage changed" for doc_id in changed[:3]]


def run_case(seeds: list[Seed], case: int, oracle: Oracle, storage: Storage) -> dict:
    """Mutate, write, read through `open_warc`, check; the outcome as a JSON-able dict."""
    seed, data, kind = mutate(seeds, case)
    path = oracle.warc_path
    Path(path).write_bytes(data)
    started = time.perf_counter()
    try:
        with open_warc(path, storage) as stream:
            docs, stats = _read(stream, path)
    except BaseException as error:  # noqa: BLE001 - the very thing the fuzzer looks for (Rust panics too)
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        return {"case": case, "seed": seed.name, "kind": kind, "size": len(data),
                "problems": [f"escaped {type(error).__name__}: {str(error)[:200]}"]}
    seconds = time.perf_counter() - started
    return {
        "case": case, "seed": seed.name, "kind": kind, "size": len(data), "seconds": round(seconds, 4),
        "docs": stats.docs_out, "docs_in": stats.docs_in, "dropped": dict(stats.dropped),
        "non_response": stats.counts["non_response_records"],
        "problems": oracle.problems(seed, data, kind, docs, stats),
        "uncounted_loss": oracle.uncounted_losses(seed, data, kind, stats),
    }


# --- the worker process ----------------------------------------------------------------------


def _vm_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    """This process's own resident high-water mark (VmHWM). Not ru_maxrss: Linux carries that
    over exec from the forked parent, so a worker started by a 1 GB pytest process would report
    the parent's size as its own."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(cases: list[int], warc_dir: Path, memory_mb: int, sabotage: dict[str, int] | None = None) -> None:
    """Run `cases` in order, one JSON line each on stdout, then a last line with peak memory.
    `sabotage` ({"crash": case, "hang": case, "hog": case}) makes a case abort the process, sleep,
    or allocate 4 GiB, to show that the runner catches each."""
    sabotage = sabotage or {}
    import faulthandler

    faulthandler.enable()  # a native crash leaves its stack on stderr for the runner to show
    logging.getLogger("tasks").setLevel(logging.ERROR)  # each damaged file logs a warning: 10,000 lines
    seeds = load_seeds(warc_dir)
    with tempfile.TemporaryDirectory(prefix="fuzz-warc-") as scratch:
        oracle, storage = Oracle(str(Path(scratch) / "case.warc")), Storage()
        limit = _vm_bytes() + memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        print(json.dumps({"ready": True}), flush=True)
        for case in cases:
            if case == sabotage.get("crash"):
                os.abort()  # what a native crash does: SIGABRT, no Python cleanup
            if case == sabotage.get("hang"):
                time.sleep(3600)
            if case == sabotage.get("hog"):
                try:
                    bytearray(4 << 30)
                except MemoryError:
                    print(json.dumps({"case": case, "kind": "hog", "problems": ["escaped MemoryError"]}), flush=True)
                    continue
            print(json.dumps(run_case(seeds, case, oracle, storage)), flush=True)
    print(json.dumps({"done": True, "peak_rss_bytes": _peak_rss_bytes()}), flush=True)


# --- the runner ------------------------------------------------------------------------------


@dataclass
class Totals:
    files: int = 0
    documents: int = 0  # documents yielded
    response_records: int = 0  # docs_in less file-level drops
    non_response_records: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> count, file-level ones included
    kinds: Counter = field(default_factory=Counter)  # mutation family -> cases
    failures: list[dict] = field(default_factory=list)  # problems, crashes, hangs: each with its case
    uncounted: Counter = field(default_factory=Counter)  # mutation -> cases that lost records uncounted
    uncounted_examples: list[dict] = field(default_factory=list)
    max_seconds: float = 0.0
    max_seconds_case: int = -1
    peak_rss_bytes: int = 0
    wall_seconds: float = 0.0

    def add(self, result: dict) -> None:
        self.files += 1
        self.kinds.update({kind.split(":")[0] for kind in result["kind"].split("+")})
        if result.get("problems"):
            self.failures.append(result)
        if result.get("uncounted_loss"):
            self.uncounted[result["kind"]] += 1
            if len(self.uncounted_examples) < 20:
                self.uncounted_examples.append(result)
        if "docs" not in result:
            return
        self.documents += result["docs"]
        self.response_records += result["docs_in"] - sum(result["dropped"].get(r, 0) for r in FILE_LEVEL)
        self.non_response_records += result["non_response"]
        self.dropped.update(result["dropped"])
        if result["seconds"] > self.max_seconds:
            self.max_seconds, self.max_seconds_case = result["seconds"], result["case"]

    def to_dict(self) -> dict:
        return {
            "files": self.files, "documents": self.documents, "response_records": self.response_records,
            "non_response_records": self.non_response_records, "dropped": dict(sorted(self.dropped.items())),
            "mutation_families": dict(sorted(self.kinds.items())), "failures": self.failures,
            "uncounted_loss_cases": sum(self.uncounted.values()), "uncounted_loss_by_mutation": dict(self.uncounted.most_common()),
            "uncounted_loss_examples": self.uncounted_examples,
            "max_seconds_per_file": self.max_seconds, "slowest_case": self.max_seconds_case,
            "peak_worker_rss_mb": round(self.peak_rss_bytes / 2**20, 1), "wall_seconds": round(self.wall_seconds, 1),
        }


class _Worker:
    def __init__(self, cases: list[int], warc_dir: Path, memory_mb: int, log_dir: Path, extra_args: list[str]) -> None:
        self.pending, self.extra_args = list(cases), extra_args
        self.warc_dir, self.memory_mb, self.log_dir = warc_dir, memory_mb, log_dir
        self.process: subprocess.Popen | None = None
        self.buffer = b""
        self.started = 0.0
        self.ready = False
        self.finished = False

    def start(self) -> None:
        self.stderr_path = self.log_dir / f"worker-{self.pending[0]}.log"
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--worker", "--warc-dir", str(self.warc_dir),
                 "--memory-mb", str(self.memory_mb), "--cases-list", ",".join(map(str, self.pending)), *self.extra_args],
                stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT,
            )
        os.set_blocking(self.process.stdout.fileno(), False)
        self.buffer, self.started, self.ready = b"", time.monotonic(), False

    def stderr_tail(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-1500:]


def run_fuzz(cases: range | list[int], jobs: int = 2, time_limit: float = 20.0, memory_mb: int = 1024,
             warc_dir: Path = WARC_DIR, progress: bool = False, sabotage: dict[str, int] | None = None) -> Totals:
    """Run every case in worker processes; a crash or hang is recorded and the worker restarted past it."""
    totals, began = Totals(), time.monotonic()
    cases = list(cases)
    extra = ["--sabotage", json.dumps(sabotage)] if sabotage else []
    with tempfile.TemporaryDirectory(prefix="fuzz-logs-") as logs:
        workers = [_Worker(cases[j::jobs], warc_dir, memory_mb, Path(logs), extra) for j in range(jobs) if cases[j::jobs]]
        selector = selectors.DefaultSelector()
        for w in workers:
            w.start()
            selector.register(w.process.stdout, selectors.EVENT_READ, w)
        while any(not w.finished for w in workers):
            for key, _ in selector.select(timeout=1.0):
                _drain(key.data, selector, totals, time_limit, progress)
            for w in workers:
                allowed = time_limit if w.ready else STARTUP_SECONDS
                if not w.finished and time.monotonic() - w.started > allowed:
                    _restart(w, selector, totals, "hang", f"no answer in {allowed} s")
    totals.wall_seconds = time.monotonic() - began
    return totals


def _drain(w: _Worker, selector, totals: Totals, time_limit: float, progress: bool) -> None:
    chunk = w.process.stdout.read() or b""
    w.buffer += chunk
    *lines, w.buffer = w.buffer.split(b"\n")
    for line in lines:
        result = json.loads(line)
        if result.get("done"):
            totals.peak_rss_bytes = max(totals.peak_rss_bytes, result["peak_rss_bytes"])
            continue
        if result.get("ready"):
            w.ready, w.started = True, time.monotonic()
            continue
        w.pending.pop(0)
        w.started = time.monotonic()
        totals.add(result)
        if progress and totals.files % 1000 == 0:
            print(f"  {totals.files} files, {len(totals.failures)} failures", file=sys.stderr, flush=True)
    if not chunk:  # end of file: the worker exited
        w.process.wait()
        if not w.ready:
            raise RuntimeError(f"a fuzz worker failed to start (exit {w.process.returncode}):\n{w.stderr_tail()}")
        if w.pending:
            _restart(w, selector, totals, "crash", f"worker died (exit {w.process.returncode})")
        else:
            selector.unregister(w.process.stdout)
            w.finished = True


def _restart(w: _Worker, selector, totals: Totals, what: str, detail: str) -> None:
    """Record the case in hand as a crash or hang, then carry on with the rest in a fresh worker."""
    if w.process.poll() is None:
        w.process.kill()
        w.process.wait()
    selector.unregister(w.process.stdout)
    case = w.pending.pop(0)
    seed, data, kind = mutate(load_seeds(w.warc_dir), case)  # what the dead worker was given
    totals.add({"case": case, "seed": seed.name, "kind": kind, "size": len(data),
                "problems": [f"{what}: {detail}"], "stderr": w.stderr_tail()})
    if w.pending:
        w.start()
        selector.register(w.process.stdout, selectors.EVENT_READ, w)
    else:
        w.finished = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--start", type=int, default=0, help="first case number (cases are seeds)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--time-limit", type=float, default=20.0, help="seconds one case may take")
    parser.add_argument("--memory-mb", type=int, default=1024, help="allocation a case may add to a worker")
    parser.add_argument("--warc-dir", type=Path, default=WARC_DIR)
    parser.add_argument("--json", type=Path, help="write the totals and every failure here")
    parser.add_argument("--replay", type=int, help="run one case in this process and print its outcome")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cases-list", help=argparse.SUPPRESS)
    parser.add_argument("--sabotage", type=json.loads, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker([int(c) for c in args.cases_list.split(",")], args.warc_dir, args.memory_mb, args.sabotage)
        return 0
    if args.replay is not None:
        with tempfile.TemporaryDirectory() as scratch:
            print(json.dumps(run_case(load_seeds(args.warc_dir), args.replay, Oracle(f"{scratch}/case.warc"), Storage()), indent=2))
        return 0
    totals = run_fuzz(range(args.start, args.start + args.cases), args.jobs, args.time_limit, args.memory_mb,
                      args.warc_dir, progress=True)
    report = totals.to_dict()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k not in ("failures", "uncounted_loss_examples")}, indent=2))
    for failure in totals.failures[:20]:
        print(f"FAILED case {failure['case']} ({failure.get('seed', '?')}, {failure.get('kind', '?')}): "
              f"{'; '.join(failure['problems'])}", file=sys.stderr)
    print(f"{totals.files} mutated WARCs, {len(totals.failures)} failures", file=sys.stderr)
    return 1 if totals.failures else 0


if __name__ == "__main__":
    sys.exit(main())
