"""Dedup at scale: 10k and 100k synthetic documents (1M with --with-1m) through `run_dedup`.

    .venv/bin/python bench/bench_dedup_scale.py [--with-1m] [--master local[2]] [--data DIR]

Shows that time grows about linearly with the corpus and that the driver's memory does not:
every size runs in a fresh process (so peaks are per size) on local Spark, and reports the
stage's wall time (after a warm-up run that pays the one-off costs, reported apart), seconds
per 1,000 documents, the driver's peak RSS (Python, from `resource.getrusage`, and the JVM's
VmHWM, which in local mode also holds the executor's cache, bounded by `spark.driver_memory`),
and what was removed. Corpora (tasks.samples.dedup_corpus: 10%
of documents in near-duplicate pairs at s = 0.5-0.9, 5% in exact pairs, 10,000 per file) are
generated once into --data and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _peak_rss_mb(pid: int) -> float:
    """The peak resident set of a live process, from /proc (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_one(corpus: str, master: str) -> None:
    """Child process: one run_dedup over `corpus`; prints its figures as JSON."""
    from infra.settings import Settings, SparkSettings
    from infra.spark import spark_session
    from infra.storage import Storage
    from tasks.samples.dedup_corpus import write_corpus
    from tasks.jobs.dedup import run_dedup

    started = time.perf_counter()
    settings = Settings(spark=SparkSettings(master=master))
    spark = spark_session(settings.spark)
    spark.range(1).count()
    startup = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as scratch:
        # a first, tiny run pays the one-off costs (Python workers, query code generation)
        write_corpus(Storage(), os.path.join(scratch, "warmup"), 500, near={0.8: 20}, exact=10)
        started = time.perf_counter()
        run_dedup(spark, os.path.join(scratch, "warmup"), os.path.join(scratch, "warmup-out"), settings)
        warmup = time.perf_counter() - started
        started = time.perf_counter()
        stats = run_dedup(spark, corpus, os.path.join(scratch, "out"), settings)
        seconds = time.perf_counter() - started
    figures = {
        "docs": stats["documents_in"],
        "seconds": seconds,
        "startup": startup,
        "first_run_500_docs": warmup,
        "phases": stats["seconds"],
        "removed": {key: stats[key] for key in ("exact_duplicates", "near_duplicates")},
        "clusters": stats["near_duplicate_clusters"],
        "rounds": stats["component_rounds"],
        "driver_python_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "driver_jvm_rss_mb": _peak_rss_mb(spark.sparkContext._gateway.proc.pid),
    }
    spark.stop()
    print(json.dumps(figures))


def ensure_corpus(data: Path, docs: int) -> str:
    folder = data / f"synthetic-{docs}"
    if not (folder / "complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        print(f"generating {docs:,} documents into {folder} ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "tasks.samples.dedup_corpus", str(folder), str(docs)], check=True, cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        (folder / "complete").touch()
    return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with-1m", action="store_true", help="also 1,000,000 documents (long)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "crawl2chat-bench-dedup"))
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        return run_one(args.run, args.master)
    sizes = [10_000, 100_000] + ([1_000_000] if args.with_1m else [])
    rows = []
    for docs in sizes:
        corpus = ensure_corpus(Path(args.data), docs)
        result = subprocess.run(
            [sys.executable, __file__, "--run", corpus, "--master", args.master], capture_output=True, text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        if result.returncode != 0:
            print(result.stderr[-3000:])
            raise SystemExit(f"run on {docs} documents failed")
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print(
        f"\nrun_dedup on {args.master}, after Spark's start-up (~{rows[0]['startup']:.0f} s) and a first 500-document run "
        f"(~{rows[0]['first_run_500_docs']:.0f} s: Python workers, code generation), both paid once per session:"
    )
    columns = [
        "documents", "wall s", "s per 1k docs", "docs/s", "sketch s", "plan s", "rewrite s", "exact removed",
        "near removed", "clusters", "CC rounds", "driver Python peak RSS MB", "driver JVM peak RSS MB",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---:|" * len(columns))
    for row in rows:
        cells = [
            f"{row['docs']:,}", f"{row['seconds']:.1f}", f"{1000 * row['seconds'] / row['docs']:.2f}",
            f"{row['docs'] / row['seconds']:,.0f}", f"{row['phases']['sketch']:.1f}", f"{row['phases']['plan']:.1f}",
            f"{row['phases']['rewrite']:.1f}", f"{row['removed']['exact_duplicates']:,}",
            f"{row['removed']['near_duplicates']:,}", f"{row['clusters']:,}", str(row["rounds"]),
            f"{row['driver_python_rss_mb']:.0f}", f"{row['driver_jvm_rss_mb']:.0f}",
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
