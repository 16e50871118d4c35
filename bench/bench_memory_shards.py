"""Peak memory of one task writing one token shard, by shard size: streamed against built in memory.

Each measurement is a fresh Python process (the way a Spark task's worker writes a unit's
shards) that writes one shard of N tokens, and reports its peak resident memory (VmHWM, reset
just before the first document) above what it held then: everything the shard costs, the Parquet
encoder and the upload included. Two writers, on the same documents, in the same run:

    streamed    model.shards.ShardWriter: each row group goes out as it fills (a local
                temporary file, or an S3 multipart upload in 8 MiB parts)
    in memory   the writer this replaced: the whole Parquet file built in a BytesIO, then
                handed to storage in one piece (`Storage.write_bytes`; before this change
                that call copied it into a second buffer, so the old code held more still)

Documents are about 1,000 tokens each (lengths drawn at random), with ids drawn from a
Zipf-like law over a 32,768 vocabulary so that zstd compresses them about as much as real
text's tokens; they are cut from one 8 MB pool, the same on both sides and counted in neither.
Storage: a local directory and, with --s3, a SeaweedFS server this script starts on loopback.

    .venv/bin/python bench/bench_memory_shards.py [--tokens 10e6 30e6 100e6] [--s3]

Prints a Markdown table for BENCHMARKS.md and one JSON line with every number.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DOC_TOKENS = 1_000
ROW_GROUP_DOCS = 1_000
POOL_TOKENS = 4_000_000


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def _reset_peak() -> None:
    """Start the peak-memory count afresh (Linux: VmHWM := current RSS)."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


def _peak_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _documents(total_tokens: int):
    """(id, tokens) of about DOC_TOKENS each, summing to `total_tokens`, as views into one pool."""
    import numpy as np

    rng = np.random.default_rng(0)
    pool = np.minimum(rng.zipf(1.2, size=POOL_TOKENS), 32_767).astype(np.uint16)
    written, i = 0, 0
    while written < total_tokens:
        length = min(int(rng.integers(DOC_TOKENS // 2, DOC_TOKENS * 3 // 2)), total_tokens - written)
        start = int(rng.integers(0, POOL_TOKENS - length))
        yield f"doc-{i}", pool[start : start + length]
        written, i = written + length, i + 1
    del pool


def _write_in_memory(storage, output: str, docs) -> None:
    """The replaced ShardWriter's way, reduced to one shard: Parquet into a BytesIO, then one write."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from infra.storage import join
    from model.shards import shard_schema

    schema = shard_schema("uint16")
    buffer = io.BytesIO()
    writer = pq.ParquetWriter(buffer, schema, compression="zstd")
    ids, tokens = [], []

    def flush() -> None:
        lengths = np.fromiter((len(t) for t in tokens), dtype=np.int32, count=len(tokens))
        offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(tokens)))
        writer.write_table(pa.Table.from_arrays([pa.array(ids, pa.string()), column, pa.array(lengths)], schema=schema))
        ids.clear(), tokens.clear()

    for doc_id, doc in docs:
        ids.append(doc_id), tokens.append(doc)
        if len(ids) >= ROW_GROUP_DOCS:
            flush()
    if ids:
        flush()
    writer.close()
    storage.write_bytes(join(output, "train/shard-inmemory-00000.parquet"), buffer.getvalue())


def _write_streamed(storage, output: str, docs) -> None:
    from model.shards import ShardWriter

    with ShardWriter(storage, output, "streamed", "uint16", shard_tokens=10**12, row_group_docs=ROW_GROUP_DOCS) as writer:
        for doc_id, doc in docs:
            writer.add("train", doc_id, doc)


def child(args: argparse.Namespace) -> None:
    """One measurement: write one shard, print peak memory above the starting point."""
    import numpy as np  # noqa: F401 - loaded before the baseline, as in a worker
    import pandas  # noqa: F401 - pyarrow loads it on a writer's first table, whatever its size
    import pyarrow.parquet  # noqa: F401

    from infra.settings import StorageSettings
    from infra.storage import Storage

    settings = StorageSettings.model_validate_json(args.storage) if args.storage else StorageSettings()
    storage = Storage(settings)
    docs = _documents(int(args.child_tokens))
    first = next(docs)  # the pool exists from here on: the same on both sides, not counted

    def all_docs():
        yield first
        yield from docs

    storage.exists(args.output)  # S3 client and connection set up before the baseline
    base = _rss_mb()
    _reset_peak()  # what imports and the document pool's set-up took is not the shard's
    started = time.perf_counter()
    (_write_streamed if args.child == "streamed" else _write_in_memory)(storage, args.output, all_docs())
    seconds = time.perf_counter() - started
    peak = _peak_mb()
    size = sum(entry.size for entry in storage.list(args.output, suffix=".parquet"))
    print(json.dumps({"peak_above_start_mb": round(peak - base, 1), "start_mb": round(base, 1),
                      "seconds": round(seconds, 2), "shard_mb": round(size / 2**20, 1)}))


def measure(writer: str, tokens: float, output: str, storage_json: str | None) -> dict:
    command = [sys.executable, __file__, "--child", writer, "--child-tokens", str(int(tokens)), "--output", output]
    if storage_json:
        command += ["--storage", storage_json]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=float, nargs="+", default=[10e6, 30e6, 100e6])
    parser.add_argument("--s3", action="store_true", help="also write to a local SeaweedFS server")
    parser.add_argument("--child", choices=["streamed", "in-memory"], help=argparse.SUPPRESS)
    parser.add_argument("--child-tokens", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp:
        targets = [("local", lambda name: f"{tmp}/{name}", None)]
        server = None
        if args.s3:
            import uuid

            from infra.seaweed import SeaweedServer, free_port
            from infra.settings import StorageSettings
            from infra.storage import Storage

            secret = uuid.uuid4().hex
            server = SeaweedServer(Path(tmp) / "seaweedfs", s3_port=free_port(), access_key_id="bench", secret_access_key=secret)
            server.__enter__()
            settings = StorageSettings(endpoint_url=server.endpoint_url, region="us-east-1", access_key_id="bench",
                                       secret_access_key=secret)
            Storage(settings).ensure_bucket("s3://bench/x")
            targets.append(("s3 (SeaweedFS)", lambda name: f"s3://bench/{name}", settings.model_dump_json()))
        try:
            for where, location, storage_json in targets:
                for tokens in args.tokens:
                    for writer in ("in-memory", "streamed"):
                        name = f"{writer}-{int(tokens)}"
                        result = measure(writer, tokens, location(name), storage_json)
                        results.append({"storage": where, "writer": writer, "tokens": int(tokens), **result})
                        print(f"{where:>15} {writer:>10} {tokens / 1e6:6.0f}M tokens: {result}", file=sys.stderr)
        finally:
            if server is not None:
                server.__exit__(None, None, None)

    print("| storage | shard tokens | shard MB | in memory: peak MB | streamed: peak MB | ratio | streamed s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in (r for r in results if r["writer"] == "streamed"):
        old = next(r for r in results if r["writer"] == "in-memory" and r["storage"] == row["storage"]
                   and r["tokens"] == row["tokens"])
        print(f"| {row['storage']} | {row['tokens'] / 1e6:.0f}M | {row['shard_mb']} | {old['peak_above_start_mb']} | "
              f"{row['peak_above_start_mb']} | {old['peak_above_start_mb'] / max(row['peak_above_start_mb'], 0.1):.1f}x | "
              f"{row['seconds']} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
