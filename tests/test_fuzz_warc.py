"""The WARC reader under hostile input: a seeded fuzz slice, the fuzzer's own checks, and one
regression test for each reader fault the fuzzer found.

The full run (10,000+ mutated WARCs) is `make fuzz` / `bench/fuzz_warc.py`; this slice runs the
same harness on 400 cases: mutated real WARCs read through `open_warc` and
`iter_warc_documents` in worker processes, every one checked for no crash, no hang, bounded
memory, balanced books and nothing lost before the damage (bench/fuzz_warc.py's docstring
says exactly what "every record either read or counted" means).
"""

from __future__ import annotations

import gzip
import io
import re

import pytest

from bench.fuzz_warc import Oracle, _read, run_fuzz
from bench.warc_mutator import load_seeds, make_seed, mutate
from infra.storage import Storage
from tasks.pipeline import StepStats
from tasks.readers.inputs import open_warc
from tasks.readers.warc import iter_warc_documents

from tests.conftest import REALDATA, needs_realdata

WARCS = REALDATA / "warc"
SLICE = range(400)  # the same 400 cases on every machine


@pytest.fixture(scope="module")
def seeds():
    if not WARCS.exists():
        pytest.skip("../shared/realdata is absent")
    return load_seeds(WARCS)


def read_through_open_warc(path) -> tuple[list, StepStats]:
    """What the filter job does with an input file."""
    stats = StepStats()
    with open_warc(str(path), Storage()) as stream:
        docs = list(iter_warc_documents(stream, str(path), "", stats))
    return docs, stats


def balanced(stats: StepStats) -> bool:
    return stats.docs_in == stats.docs_out + sum(stats.dropped.values())


# --- the slice -------------------------------------------------------------------------------


@needs_realdata
def test_seeded_fuzz_slice_reads_or_counts_every_record(seeds):
    totals = run_fuzz(SLICE, jobs=2, time_limit=30)
    assert totals.files == len(SLICE)
    assert not totals.failures, [(f["case"], f.get("kind"), f["problems"]) for f in totals.failures[:5]]
    # every family of damage was tried, and damage was met, counted, and read past
    assert {"bit_flips", "truncate", "splice", "warc_content_length", "gzip", "http", "warc_header"} <= set(totals.kinds)
    assert totals.dropped["truncated_or_corrupt_file"] > 50 and totals.documents > 500
    # Records lost with no damage counted (FastWARC resynchronising past a broken record; see
    # RELIABILITY.md) are measured, and must not grow: 3.0% of the 10,000 of `make fuzz` when this was written.
    assert sum(totals.uncounted.values()) <= 0.05 * len(SLICE)
    assert totals.peak_rss_bytes < 1024 * 2**20


def test_mutations_are_seeded_and_damage_the_file(seeds):
    for case in range(50):
        seed, data, kind = mutate(seeds, case)
        assert mutate(seeds, case)[1:] == (data, kind)  # the case number alone replays it
        assert data != seed.data or kind.startswith("records:"), kind  # a shuffle of one record is a no-op


# --- the harness can fail ------------------------------------------------------------------


@needs_realdata
def test_the_oracle_catches_lost_and_uncounted_records(seeds, tmp_path):
    seed = next(s for s in seeds if s.name == "dolma/sample-0000.warc.gz")
    oracle = Oracle(str(tmp_path / "case.warc"))
    docs, stats = _read(io.BytesIO(seed.data), oracle.warc_path)
    assert oracle.problems(seed, seed.data, "none", docs, stats) == []
    # a reader that lost a document before any damage, books kept "balanced"
    damaged = seed.data[:-10]
    short = StepStats(docs_in=stats.docs_in - 1, docs_out=stats.docs_out - 1, counts=stats.counts.copy())
    found = oracle.problems(seed, damaged, "truncate", docs[1:], short)
    assert any("lost before the damage" in p for p in found), found
    assert any("read as whole" in p for p in found), found  # it also saw fewer records than exist
    # a reader that yields one document more than it counts
    extra = StepStats(docs_in=stats.docs_in, docs_out=stats.docs_out, counts=stats.counts.copy())
    assert any("yielded" in p for p in oracle.problems(seed, seed.data, "none", docs + docs[:1], extra))


@needs_realdata
def test_the_runner_names_crashes_hangs_and_memory_blowups(tmp_path):
    (tmp_path / "cc.warc.gz").write_bytes((WARCS / "jwarc/cc.warc.gz").read_bytes())  # a quick start
    totals = run_fuzz(range(8), jobs=1, time_limit=3, warc_dir=tmp_path, sabotage={"crash": 1, "hang": 3, "hog": 5})
    assert totals.files == 8
    problems = {f["case"]: f["problems"][0] for f in totals.failures}
    assert problems[1].startswith("crash: worker died") and problems[3].startswith("hang:")
    assert problems[5] == "escaped MemoryError"  # 4 GiB is past the 1 GiB a case may add
    assert set(problems) == {1, 3, 5}  # the worker was restarted past each and the rest ran


# --- regressions: one per fault the fuzzer found -------------------------------------------


@needs_realdata
def test_lz4_checksum_panic_is_a_counted_skip(tmp_path):
    """FastWARC (Rust) panicked on a bad LZ4 frame checksum: pyo3's PanicException is a
    BaseException, so it went through `except Exception` and would have killed the task."""
    data = bytearray((WARCS / "resiliparse/block-sized-records.warc.lz4").read_bytes())
    data[634] = 0xFF  # inside the third record's frame
    path = tmp_path / "bad.warc.lz4"
    path.write_bytes(bytes(data))
    docs, stats = read_through_open_warc(path)
    assert docs == [] and stats.counts["non_response_records"] == 3  # the file has no responses
    assert dict(stats.dropped) == {"truncated_or_corrupt_file": 1} and balanced(stats)


def _with_content_length(data: bytes, record_index: int, value: int) -> bytes:
    seed = make_seed("x", data)
    start, end = seed.spans[record_index]
    record = gzip.decompress(data[start:end])
    record = re.sub(rb"(?im)^content-length:.*\r$", f"Content-Length: {value}\r".encode(), record, count=1)
    return data[:start] + gzip.compress(record, mtime=0) + data[end:]


@needs_realdata
def test_a_record_longer_than_the_file_is_counted(tmp_path):
    """A Content-Length past the end of the file made FastWARC skip to the end without a word:
    the records it swallowed were neither read nor counted."""
    intact, _ = read_through_open_warc(WARCS / "dolma/sample-0000.warc.gz")
    data = (WARCS / "dolma/sample-0000.warc.gz").read_bytes()
    path = tmp_path / "long.warc.gz"
    path.write_bytes(_with_content_length(data, 3, 10**12))  # a request record, before the 2nd page
    docs, stats = read_through_open_warc(path)
    assert [d.id for d in docs] == [d.id for d in intact[:1]]
    assert dict(stats.dropped) == {"truncated_or_corrupt_file": 1} and balanced(stats)


@needs_realdata
def test_an_empty_gzip_member_mid_file_is_counted(tmp_path):
    """FastWARC ends its stream at an empty gzip member; everything after it was lost silently."""
    data = (WARCS / "dolma/sample-0000.warc.gz").read_bytes()
    intact, _ = read_through_open_warc(WARCS / "dolma/sample-0000.warc.gz")
    at = make_seed("x", data).spans[4][0]
    path = tmp_path / "empty-member.warc.gz"
    path.write_bytes(data[:at] + gzip.compress(b"", mtime=0) + data[at:])
    docs, stats = read_through_open_warc(path)
    assert 0 < len(docs) < len(intact) and [d.id for d in docs] == [d.id for d in intact[: len(docs)]]
    assert dict(stats.dropped) == {"truncated_or_corrupt_file": 1} and balanced(stats)
