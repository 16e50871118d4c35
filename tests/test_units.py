"""tasks/jobs/units.py on local Spark: units that really crash their process are quarantined while
the rest finish; saved progress is trusted only for the same input files and settings; a rerun
learns what is done from one listing and one index read.

The work functions are defined inside the tests so that Spark ships them by value to its
Python workers (this test module is not importable there).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
from pathlib import Path

import pytest

from infra.settings import JobSettings, StorageSettings
from infra.storage import Storage, join
from tasks.formats.docs import PROGRESS_DIR, PROGRESS_INDEX_FILE
from tasks.jobs.units import StaleProgress, run_units

pytestmark = pytest.mark.spark

STORAGE = StorageSettings(endpoint_url=None)


def make_inputs(folder: Path, contents: dict[str, str]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in contents.items():
        (folder / name).write_text(text)
    return sorted(str(folder / name) for name in contents)


def counting_work(log_dir: Path):
    """A unit that records each call and returns the length of its input."""

    def work(uri: str, unit: str) -> dict:
        with open(log_dir / f"{unit}.calls", "a") as calls:
            calls.write("x")
        return {"chars": len(Path(uri).read_text())}

    return work


def calls(log_dir: Path) -> dict[str, int]:
    return {path.stem.split("-")[0]: len(path.read_text()) for path in log_dir.glob("*.calls")}


def test_units_that_crash_their_process_are_quarantined_and_the_rest_finish(spark, tmp_path):
    behaviours = {"ok.txt": "ok", "exit.txt": "exit", "kill.txt": "kill", "segv.txt": "segv", "raise.txt": "raise"}
    inputs = make_inputs(tmp_path / "in", behaviours)
    log_dir = tmp_path / "calls"
    log_dir.mkdir()

    def work(uri: str, unit: str) -> dict:
        with open(log_dir / f"{unit}.calls", "a") as record:
            record.write("x")
        what = Path(uri).read_text()
        if what == "exit":
            os._exit(3)  # a native library calling exit(), or a Rust panic that aborts
        if what == "kill":
            os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does
        if what == "segv":
            ctypes.string_at(0)  # a real segmentation fault
        if what == "raise":
            raise ValueError("an ordinary error")
        return {"what": what}

    output = str(tmp_path / "out")
    jobs = JobSettings(unit_attempts=2)
    result = run_units(spark, inputs, work, output, STORAGE, shaping={"v": 1}, jobs=jobs)
    by_name = {Path(uri).name: error for uri, error in result.quarantined.items()}
    assert by_name == {
        "exit.txt": "the unit's process exited with code 3 before returning",
        "kill.txt": "the unit's process was killed by SIGKILL (out of memory?)",
        "segv.txt": "the unit's process was killed by SIGSEGV",
    }
    assert list(result.stats.values()) == [{"what": "ok"}]
    assert {Path(uri).name: error for uri, error in result.failed.items()} == {"raise.txt": "ValueError: an ordinary error"}
    # Crashes are retried up to unit_attempts; an ordinary error is not retried in the task.
    assert calls(log_dir) == {"exit.txt": 2, "kill.txt": 2, "segv.txt": 2, "raise.txt": 1, "ok.txt": 1}
    markers = [json.loads(Path(p).read_text()) for p in sorted((Path(output) / PROGRESS_DIR).glob("*.json"))]
    assert sorted(Path(m["input"]).name for m in markers if "quarantined" in m) == ["exit.txt", "kill.txt", "segv.txt"]
    assert all(m["quarantined"]["attempts"] == 2 for m in markers if "quarantined" in m)

    # A rerun keeps the quarantine (reported again, not retried) and retries only the failed unit.
    again = run_units(spark, inputs, work, output, STORAGE, shaping={"v": 1}, jobs=jobs)
    assert again.quarantined == result.quarantined and again.resumed == 4
    assert calls(log_dir)["raise.txt"] == 2 and calls(log_dir)["segv.txt"] == 2
    # --force gives quarantined units another chance.
    forced = run_units(spark, inputs, work, output, STORAGE, shaping={"v": 1}, jobs=jobs, force=True)
    assert forced.redone == 3 and calls(log_dir)["segv.txt"] == 4


def test_progress_is_trusted_only_for_the_same_inputs_and_settings(spark, tmp_path):
    inputs = make_inputs(tmp_path / "in", {"a.txt": "alpha", "b.txt": "beta", "c.txt": "gamma"})
    log_dir = tmp_path / "calls"
    log_dir.mkdir()
    work = counting_work(log_dir)
    output = str(tmp_path / "out")
    shaping = {"stage": {"min_words": 50, "languages": ["en"]}}
    first = run_units(spark, inputs, work, output, STORAGE, shaping=shaping)
    assert len(first.stats) == 3 and first.resumed == 0

    # Other settings: refused with what changed, or redone with force.
    other = {"stage": {"min_words": 40, "languages": ["en"]}}
    with pytest.raises(StaleProgress, match=r"made with other settings \(stage\.min_words: 50 -> 40\); use a fresh output, or --force"):
        run_units(spark, inputs, work, output, STORAGE, shaping=other)
    assert calls(log_dir) == {"a.txt": 1, "b.txt": 1, "c.txt": 1}
    forced = run_units(spark, inputs, work, output, STORAGE, shaping=other, force=True)
    assert forced.redone == 3 and calls(log_dir) == {"a.txt": 2, "b.txt": 2, "c.txt": 2}

    # An input rewritten since: refused, naming the file and how it changed.
    Path(inputs[1]).write_text("beta, but longer")
    with pytest.raises(StaleProgress, match=r"b\.txt changed since it was processed \(size 4 -> 16, mtime_ns \d+ -> \d+\)"):
        run_units(spark, inputs, work, output, STORAGE, shaping=other)
    redone = run_units(spark, inputs, work, output, STORAGE, shaping=other, force=True)
    assert redone.redone == 1 and redone.resumed == 2 and redone.stats[next(k for k in redone.stats if k.startswith("b"))] == {"chars": 16}

    # A grown input: the new file is processed, the rest resume.
    grown = inputs + make_inputs(tmp_path / "in", {"d.txt": "delta"})
    more = run_units(spark, grown, work, output, STORAGE, shaping=other)
    assert more.resumed == 3 and len(more.stats) == 4 and calls(log_dir)["d.txt"] == 1

    # Another build of the input stage: everything is redone, without asking.
    rebuilt = run_units(spark, grown, work, output, STORAGE, shaping=other, upstream="build-2")
    assert rebuilt.redone == 4 and rebuilt.resumed == 0


def test_a_rerun_reads_the_marker_index_not_every_marker(spark, tmp_path):
    inputs = make_inputs(tmp_path / "in", {f"{i}.txt": "x" * i for i in range(1, 7)})
    log_dir = tmp_path / "calls"
    log_dir.mkdir()
    work = counting_work(log_dir)
    output = str(tmp_path / "out")
    first = run_units(spark, inputs, work, output, STORAGE, shaping={})
    storage = Storage(STORAGE)
    index = json.loads(storage.read_text(join(output, PROGRESS_INDEX_FILE)))["markers"]
    assert len(index) == 6
    # Were a marker read, this would fail to parse: the rerun must get everything from the index.
    for entry in storage.list(join(output, PROGRESS_DIR)):
        Path(entry.uri).write_text("{not json")
    again = run_units(spark, inputs, work, output, STORAGE, shaping={})
    assert again.resumed == 6 and again.stats == first.stats and sum(calls(log_dir).values()) == 6

    # Markers written after the last index (a run that crashed before compacting) are read.
    for entry in storage.list(join(output, PROGRESS_DIR)):
        key = entry.uri.rsplit("/", 1)[-1].removesuffix(".json")
        Path(entry.uri).write_text(json.dumps(index[key]))
    storage.delete(join(output, PROGRESS_INDEX_FILE))
    third = run_units(spark, inputs, work, output, STORAGE, shaping={})
    assert third.resumed == 6 and third.stats == first.stats
    assert storage.exists(join(output, PROGRESS_INDEX_FILE))  # compacted again
