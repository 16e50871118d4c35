"""Tokenizer speed, side by side on the same text: our BPE (HF `tokenizers`) against tiktoken
built from our own merges, so both produce the very same token ids (checked on every text).

Everything runs on one core (RAYON_NUM_THREADS=1, set before the libraries load), so the
numbers are per core: encoding one text per call and in batches, and training time, with
rustbpe and bpeasy as training peers when the bench virtualenv has them (bench/peers).

    .venv/bin/python bench/bench_tokenizer.py [--vocab-size 32768] [--repeat 3] [FILE ...]

FILEs are .jsonl (a "text" field per line) or plain text (one document per blank-line-separated
block); the default is the real pretraining sample in ../shared/realdata/pretrain_text.
Prints a Markdown table for BENCHMARKS.md and one JSON line with every number.
"""

from __future__ import annotations

import os

os.environ["RAYON_NUM_THREADS"] = "1"  # one core for everyone, before tokenizers/tiktoken load
os.environ["TOKENIZERS_PARALLELISM"] = "true"  # said explicitly: no fork warning when the peer starts

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tiktoken  # noqa: E402

from bench.realtext import REALDATA_TEXT, load_texts  # noqa: E402
from model.tokenizer import SPLIT_PATTERN, BpeTokenizer  # noqa: E402

BENCH_PYTHON = ROOT / ".bench" / "venv" / "bin" / "python"


def best_seconds(run, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def peer_training(texts: list[str], vocab_size: int) -> dict:
    if not BENCH_PYTHON.exists():
        return {}
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", encoding="utf-8", delete=False) as handle:
        handle.writelines(json.dumps(text) + "\n" for text in texts)
    try:
        peer = ROOT / "bench" / "peers" / "bpe_trainers.py"
        out = subprocess.run(
            [str(BENCH_PYTHON), str(peer), handle.name, SPLIT_PATTERN, str(vocab_size)],
            capture_output=True, text=True, check=True, env={**os.environ, "RAYON_NUM_THREADS": "1"},
        )
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        os.unlink(handle.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--vocab-size", type=int, default=32_768)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    files = args.files or sorted(REALDATA_TEXT.glob("*"))
    texts = load_texts(files)
    n_bytes = sum(len(text.encode("utf-8")) for text in texts)

    started = time.perf_counter()
    ours = BpeTokenizer.train(texts, vocab_size=args.vocab_size)
    train_seconds = time.perf_counter() - started
    theirs = tiktoken.Encoding(
        "crawl2chat", pat_str=SPLIT_PATTERN, mergeable_ranks=ours.mergeable_ranks(), special_tokens=ours.special_ids
    )

    ids = ours.encode_batch(texts)
    assert [ours.decode(x) for x in ids] == texts, "round trip failed"
    assert theirs.encode_ordinary_batch(texts, num_threads=1) == ids, "tiktoken gives other ids"
    assert [ours.encode_with_hf(text) for text in texts] == ids, "HF tokenizers gives other ids"
    n_tokens = sum(map(len, ids))

    runs = {
        "ours: encode (one text per call)": lambda: [ours.encode(text) for text in texts],
        "ours: encode_batch": lambda: ours.encode_batch(texts),
        "HF tokenizers encoder, same tokenizer.json (reference)": lambda: [ours.encode_with_hf(text) for text in texts],
        "tiktoken: encode_ordinary (one per call)": lambda: [theirs.encode_ordinary(text) for text in texts],
        "tiktoken: encode_ordinary_batch": lambda: theirs.encode_ordinary_batch(texts, num_threads=1),
    }
    encode = {name: best_seconds(run, args.repeat) for name, run in runs.items()}
    peers = peer_training(texts, args.vocab_size)

    fastest_tiktoken = min(encode["tiktoken: encode_ordinary (one per call)"], encode["tiktoken: encode_ordinary_batch"])
    print(f"text: {len(texts)} documents, {n_bytes / 1e6:.2f} MB, {n_tokens:,} tokens at vocab {ours.vocab_size:,} "
          f"({n_bytes / n_tokens:.2f} bytes/token); ids identical to tiktoken on every document; one core\n")
    print("| encoding (1 core) | tokens/s | MB/s | time vs fastest tiktoken |")
    print("|---|---:|---:|---:|")
    for name, seconds in encode.items():
        print(f"| {name} | {n_tokens / seconds:,.0f} | {n_bytes / seconds / 1e6:.2f} | {seconds / fastest_tiktoken:.2f}x |")
    print("\n| training (1 core) | seconds | vocab |")
    print("|---|---:|---:|")
    print(f"| ours (HF tokenizers BpeTrainer) | {train_seconds:.2f} | {ours.vocab_size:,} |")
    for name, result in peers.items():
        print(f"| {name} | {result['seconds']:.2f} | {result['vocab_size']:,} |")
    print(json.dumps({
        "documents": len(texts), "bytes": n_bytes, "tokens": n_tokens, "vocab_size": ours.vocab_size,
        "encode_seconds": encode, "train_seconds": train_seconds, "peer_training": peers,
    }))


if __name__ == "__main__":
    main()
