"""Coverage-guided fuzzing of the WARC reader with atheris (libFuzzer for Python), for a bounded time.

Where bench/fuzz_warc.py applies damage we chose, this lets libFuzzer mutate the bytes toward
new coverage of the reader's Python code (tasks/readers/warc.py and the pipeline it feeds;
FastWARC itself is compiled Rust, run but not instrumented). It starts from the real WARCs
(bench/warc_mutator.py's seeds) and checks, on every input: no exception escapes (a Rust panic
included), the books balance, and at most one file-level drop is counted. Any input that
breaks one is written by libFuzzer as `crash-<sha1>` in the working directory.

    .venv/bin/pip install atheris      # the `fuzz` extra of pyproject.toml
    .venv/bin/python bench/atheris_warc.py -max_total_time=300 -rss_limit_mb=2048 -timeout=10 <corpus_dir>
"""

from __future__ import annotations

import io
import logging
import sys
import tempfile
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

with atheris.instrument_imports():
    from tasks.pipeline import StepStats
    from tasks.readers.warc import iter_warc_documents

from bench.warc_mutator import load_seeds  # noqa: E402

WARC_DIR = ROOT.parent / "shared" / "realdata" / "warc"
FILE_LEVEL = ("truncated_or_corrupt_file", "no_warc_records")


def test_one_input(data: bytes) -> None:
    stats = StepStats()
    docs = list(iter_warc_documents(io.BytesIO(data), "fuzz.warc", "", stats))
    if stats.docs_in != stats.docs_out + sum(stats.dropped.values()) or len(docs) != stats.docs_out:
        raise AssertionError(f"unbalanced books: {stats.to_dict()}")
    if sum(stats.dropped[reason] for reason in FILE_LEVEL) > 1:
        raise AssertionError(f"more than one file-level drop: {dict(stats.dropped)}")


def seed_corpus(directory: Path) -> None:
    """The real WARCs as the starting corpus (libFuzzer adds what it finds to the same folder)."""
    for index, seed in enumerate(load_seeds(WARC_DIR, whole_limit=300_000)):
        if len(seed.data) <= 300_000:
            (directory / f"seed-{index:03d}").write_bytes(seed.data)


def main() -> None:
    logging.getLogger("tasks").setLevel(logging.ERROR)
    args = list(sys.argv)
    if not any(not arg.startswith("-") for arg in args[1:]):  # no corpus folder given: a fresh one
        corpus = Path(tempfile.mkdtemp(prefix="atheris-warc-"))
        args.append(str(corpus))
    corpus = Path(next(arg for arg in args[1:] if not arg.startswith("-")))
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        seed_corpus(corpus)
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
