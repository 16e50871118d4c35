"""MinHash speed, side by side in one run: signatures per second on one core, and the whole stage.

    .venv/bin/python bench/bench_minhash.py [--docs 2000] [--stage-docs 5000] [--no-stage]

Part 1, signature throughput. One synthetic corpus (tasks.samples.dedup_corpus: Zipf vocabulary,
lognormal lengths, median 350 words, ~480 on average) is written once as JSONL; every contender
then runs in its own subprocess, pinned to one core with all thread pools at 1, and turns the
same raw texts into 112-value signatures. Each contender starts from raw text, so all include
their normalisation and shingling. Contenders: ours (tasks.dedup.minhash); plain per-document
datasketch (`update` per shingle), datasketch `update_batch` and `MinHash.bulk`, each with its
defaults (affine32, SHA-1) and with our configuration (affine64, xxh3); rensa's RMinHash (Rust,
32-bit values); datatrove's MinhashDedupSignature step (its own normalisation, word tokenizer and
64-bit Mersenne-prime scheme, writing its bucket files as it does in a pipeline); and our
shingling alone, the floor for any Python-side shingler. datatrove and rensa live in a separate
venv (.bench/venv, `--bench-python`), as datatrove's pins clash with ours.

Part 2, the whole stage on one core: `run_dedup` (Spark local[1], exact + near dedup, rewrite)
against datatrove's four MinHash stages (signatures, buckets, clusters, filter) with one task, on
the same Parquet corpus. Spark's start-up is reported separately from the stage's own time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NUM_PERM, BANDS, ROWS, NGRAM = 112, 14, 8, 5
WARMUP_DOCS = 50
# name -> (which interpreter, description)
CONTENDERS = {
    "shingling": ("main", "our normalisation + word 5-gram shingles only"),
    "ours": ("main", "tasks.dedup.minhash (affine64, xxh3) + band keys"),
    "datasketch_update": ("main", "datasketch MinHash.update per shingle (defaults)"),
    "datasketch_update_batch": ("main", "datasketch update_batch (defaults: affine32, sha1)"),
    "datasketch_update_batch_xxh3": ("main", "datasketch update_batch (affine64, xxh3)"),
    "datasketch_bulk": ("main", "datasketch MinHash.bulk (defaults)"),
    "datasketch_bulk_xxh3": ("main", "datasketch MinHash.bulk (affine64, xxh3)"),
    "rensa": ("bench", "rensa RMinHash (Rust, u32 values)"),
    "datatrove": ("bench", "datatrove MinhashDedupSignature step"),
}


# --- contenders (each runs in its own process) -------------------------------------------------


def _our_shingles(texts):
    from tasks.dedup.normalize import normalize_text, shingles

    return (shingles(normalize_text(text), NGRAM)[0] for text in texts)


def _datasketch(texts, mode: str, xxh3: bool):
    import xxhash
    from datasketch import MinHash

    options = {"num_perm": NUM_PERM, "seed": 1}
    if xxh3:
        options |= {"scheme": "affine64", "hashfunc": xxhash.xxh3_64_intdigest}
    if mode == "bulk":
        batch = []
        for grams in _our_shingles(texts):
            batch.append(grams)
            if len(batch) == 1_000:
                MinHash.bulk(batch, **options)
                batch = []
        MinHash.bulk(batch, **options)
        return
    for grams in _our_shingles(texts):
        sketch = MinHash(**options)
        if mode == "batch":
            sketch.update_batch(grams)
        else:
            for gram in grams:
                sketch.update(gram)


def _datatrove(texts, workdir: str):
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

    config = MinhashConfig(n_grams=NGRAM, num_buckets=BANDS, hashes_per_bucket=ROWS)
    step = MinhashDedupSignature(output_folder=workdir, config=config)
    step.run((Document(text=text, id=str(i)) for i, text in enumerate(texts)), rank=0)


def run_contender(name: str, texts: list[str], workdir: str) -> None:
    if name == "shingling":
        for _ in _our_shingles(texts):
            pass
    elif name == "ours":
        from tasks.dedup.minhash import MinHasher

        hasher = MinHasher(BANDS, ROWS, seed=1)
        for grams in _our_shingles(texts):
            if grams:
                hasher.band_keys(hasher.signature(grams))
    elif name.startswith("datasketch_"):
        mode = "bulk" if "bulk" in name else "batch" if "batch" in name else "update"
        _datasketch(texts, mode, xxh3=name.endswith("xxh3"))
    elif name == "rensa":
        from rensa import RMinHash

        for grams in _our_shingles(texts):
            RMinHash(NUM_PERM, 1).update(grams)
    elif name == "datatrove":
        _datatrove(texts, workdir)
    else:
        raise SystemExit(f"unknown contender {name}")


def contender_main(name: str, corpus: str) -> None:
    texts = [json.loads(line)["text"] for line in Path(corpus).read_text().splitlines()]
    with tempfile.TemporaryDirectory() as workdir:
        run_contender(name, texts[:WARMUP_DOCS], os.path.join(workdir, "warmup"))
        started = time.perf_counter()
        run_contender(name, texts, os.path.join(workdir, "run"))
        seconds = time.perf_counter() - started
    print(json.dumps({"docs": len(texts), "seconds": seconds}))


# --- the comparison (parent process) ---------------------------------------------------------


def _single_core(command: list[str]) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for pool in ("OMP", "OPENBLAS", "MKL", "RAYON"):
        env[f"{pool}_NUM_THREADS"] = "1"
    env["POLARS_MAX_THREADS"] = "1"
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    return pin + command, env


def _interpreters(bench_python: str) -> dict[str, str]:
    return {"main": sys.executable, "bench": bench_python}


def write_corpus_files(folder: Path, docs: int, seed: int = 0) -> tuple[Path, Path]:
    """The same documents as JSONL (part 1) and as a docs stage (part 2)."""
    from infra.storage import Storage
    from tasks.samples.dedup_corpus import write_corpus

    stage = folder / "stage"
    levels = (0.5, 0.7, 0.8, 0.9)
    corpus = write_corpus(
        Storage(), str(stage), docs, near={s: docs // 40 for s in levels}, exact=docs // 40, docs_per_file=docs, seed=seed
    )
    texts = pq.read_table(corpus.files[0], columns=["text"]).column("text").to_pylist()
    jsonl = folder / "corpus.jsonl"
    jsonl.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    return jsonl, stage


def signature_table(corpus: Path, bench_python: str, repeats: int) -> dict[str, float]:
    """Best rate of `repeats` rounds per contender; rounds interleave the contenders, so a burst of
    load from other processes on the machine hits one round of everyone, not one contender."""
    rates: dict[str, float] = {}
    interpreters = _interpreters(bench_python)
    for round_number in range(repeats):
        for name, (venv, _) in CONTENDERS.items():
            command, env = _single_core([interpreters[venv], __file__, "--contender", name, "--corpus", str(corpus)])
            result = subprocess.run(command, env=env, capture_output=True, text=True)
            if result.returncode != 0:
                print(f"  {name}: failed: {result.stderr.strip().splitlines()[-1:]}")
                continue
            figures = json.loads(result.stdout.strip().splitlines()[-1])
            rates[name] = max(rates.get(name, 0.0), figures["docs"] / figures["seconds"])
            print(f"  round {round_number + 1}: {name:30s} {figures['docs'] / figures['seconds']:9.0f} docs/s", flush=True)
    return rates


def print_signature_table(rates: dict[str, float]) -> None:
    datatrove = rates.get("datatrove")
    print("\n| contender | what | docs/s (1 core) | ours is x faster | vs datatrove |")
    print("|---|---|---:|---:|---:|")
    for name, rate in sorted(rates.items(), key=lambda item: -item[1]):
        versus_ours = rates["ours"] / rate if "ours" in rates else float("nan")
        versus_datatrove = f"{rate / datatrove:.1f}x" if datatrove else "-"
        print(f"| {name} | {CONTENDERS[name][1]} | {rate:,.0f} | {versus_ours:.2f} | {versus_datatrove} |")


# --- part 2: the whole stage --------------------------------------------------------------------


def stage_main(which: str, stage: str, workdir: str) -> None:
    """One whole-stage run (child process); prints its seconds, start-up seconds and details."""
    started = time.perf_counter()
    if which == "ours":
        from infra.settings import Settings, SparkSettings
        from infra.spark import spark_session
        from tasks.jobs.dedup import run_dedup

        spark = spark_session(SparkSettings(master="local[1]", shuffle_partitions=4))
        spark.range(1).count()
        startup = time.perf_counter() - started
        started = time.perf_counter()
        stats = run_dedup(spark, stage, os.path.join(workdir, "out"), Settings())
        details = {"documents_out": stats["documents_out"], "phases": stats["seconds"]}
    else:
        from datatrove.executor import LocalPipelineExecutor
        from datatrove.pipeline.dedup.minhash import (
            MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature,
        )
        from datatrove.pipeline.readers import ParquetReader
        from datatrove.pipeline.writers import ParquetWriter

        startup = 0.0
        config = MinhashConfig(n_grams=NGRAM, num_buckets=BANDS, hashes_per_bucket=ROWS)
        docs = os.path.join(stage, "docs")
        logs = os.path.join(workdir, "logs")
        stages = [
            ([ParquetReader(docs), MinhashDedupSignature(os.path.join(workdir, "sigs"), config=config)], 1),
            ([MinhashDedupBuckets(os.path.join(workdir, "sigs"), os.path.join(workdir, "buckets"), config=config)], BANDS),
            ([MinhashDedupCluster(os.path.join(workdir, "buckets"), os.path.join(workdir, "remove"), config=config)], 1),
            (
                [ParquetReader(docs), MinhashDedupFilter(os.path.join(workdir, "remove")), ParquetWriter(os.path.join(workdir, "out"))],
                1,
            ),
        ]
        for number, (pipeline, tasks) in enumerate(stages):
            LocalPipelineExecutor(pipeline, tasks=tasks, workers=1, logging_dir=f"{logs}/{number}").run()
        written = Path(workdir, "out").rglob("*.parquet")
        details = {"documents_out": sum(pq.ParquetFile(path).metadata.num_rows for path in written)}
    print(json.dumps({"seconds": time.perf_counter() - started, "startup": startup, "details": details}))


def stage_comparison(stage: Path, bench_python: str) -> None:
    interpreters = _interpreters(bench_python)
    results = {}
    for which, venv in (("ours", "main"), ("datatrove", "bench")):
        with tempfile.TemporaryDirectory() as workdir:
            arguments = ["--stage", which, "--corpus", str(stage), "--workdir", workdir]
            command, env = _single_core([interpreters[venv], __file__, *arguments])
            result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"  {which}: failed: {result.stderr.strip().splitlines()[-3:]}")
            continue
        results[which] = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"  {which}: {results[which]}")
    if len(results) == 2:
        ours, theirs = results["ours"]["seconds"], results["datatrove"]["seconds"]
        with_startup = ours + results["ours"]["startup"]
        print(f"\nwhole stage, 1 core: ours {ours:.1f} s (+{results['ours']['startup']:.1f} s Spark start-up), "
              f"datatrove {theirs:.1f} s: {theirs / ours:.1f}x faster ({theirs / with_startup:.1f}x counting start-up)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000, help="corpus size for the signature table")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the signature table (best counts)")
    parser.add_argument("--stage-docs", type=int, default=20_000, help="corpus size for the whole-stage run")
    parser.add_argument("--no-stage", action="store_true", help="only the signature table")
    parser.add_argument("--bench-python", default=str(ROOT / ".bench" / "venv" / "bin" / "python"))
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contender:
        return contender_main(args.contender, args.corpus)
    if args.stage:
        return stage_main(args.stage, args.corpus, args.workdir)
    with tempfile.TemporaryDirectory() as folder:
        jsonl, _ = write_corpus_files(Path(folder) / "signatures", args.docs)
        print(f"signature throughput, {args.docs} documents, one core each:")
        print_signature_table(signature_table(jsonl, args.bench_python, args.repeats))
        if not args.no_stage:
            _, stage = write_corpus_files(Path(folder) / "stage", args.stage_docs, seed=1)
            print(f"\nwhole stage, {args.stage_docs} documents:")
            stage_comparison(stage, args.bench_python)


if __name__ == "__main__":
    main()
