"""Pretraining quality: the CPU presets' validation bits per byte against xz -9 and zstd -19.

    nice .venv/bin/python bench/bench_pretrain_quality.py [--presets cpu-tiny cpu-small] [--vocab-size 4096]

In one run, on the same split of the real pretraining text (../shared/realdata/pretrain_text:
C4, Wikipedia, Tiny Shakespeare, 2.9 MB):
1. the text becomes a docs stage (documents in a seeded random order, as a crawl's are) and goes
   through the project's own tokenize job on Spark (a BPE of `--vocab-size` tokens trained on
   it; the id-hash train/val split, val_fraction 0.1);
2. the compressors: the train documents and then the val documents, decoded back from the
   token shards (so exactly the split the model sees), one per line; a compressor's cost of the
   validation text after it has seen the training text is size(train+val) - size(train), in
   bits per validation byte. `xz -9` (64 MB dictionary) and `zstd -19` (8 MB window) both hold
   the whole training text in their window;
3. each preset is pretrained (`tasks.train.pretrain`, resumable: a rerun continues) and its
   final checkpoint evaluated on the whole validation split (every full row of the training
   length): bits per byte = summed target losses in nats / ln 2 / the UTF-8 bytes of those
   targets (`<|bos|>` at document starts costs its loss and counts 0 bytes);
4. greedy continuations of a few prompts from each preset's final model.

Prints a Markdown table for BENCHMARKS.md and writes every number to <work>/results.json.
Times: training wall time includes evaluations and checkpoints, not tokenization.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from infra.settings import Settings, ShardSettings, SparkSettings, TokenizerSettings, load_settings  # noqa: E402
from infra.storage import Storage, join  # noqa: E402
from model.checkpoint import load_model  # noqa: E402
from model.data import TokenStream  # noqa: E402
from model.distributed import init_distributed  # noqa: E402
from model.shards import manifest_uri  # noqa: E402
from tasks.train.pretrain import evaluate_bpb, pretrain, sample_continuations, token_bytes, validation_rows  # noqa: E402

REALDATA_TEXT = ROOT.parent / "shared" / "realdata" / "pretrain_text"
PROMPTS = ["The history of the city", "ROMEO:", "Anarchism is a political philosophy", "The best way to clean"]
COMPRESSORS = {"xz -9": ["xz", "-9", "-c"], "zstd -19": ["zstd", "-19", "-c", "-q"]}


def make_tokens(work: Path, vocab_size: int, val_fraction: float) -> str:
    from infra.spark import spark_session
    from tasks.jobs.tokenize import run_tokenize
    from tasks.samples.pretrain_text import pretrain_text_documents, write_documents

    tokens = str(work / "tokens")
    if Storage().exists(manifest_uri(tokens)):
        return tokens
    # Shuffled (seeded): the files come one source after another, a crawl's documents do not,
    # and the token stream reads documents in order.
    docs = pretrain_text_documents(REALDATA_TEXT)
    random.Random(0).shuffle(docs)
    write_documents(Storage(), str(work / "docs"), docs, parts=4)
    settings = Settings(
        tokenizer=TokenizerSettings(vocab_size=vocab_size, sample_docs=1_000_000, heldout_docs=20),
        shards=ShardSettings(shard_tokens=250_000, row_group_docs=8, val_fraction=val_fraction),
    )
    spark = spark_session(SparkSettings(master="local[2]", shuffle_partitions=4, app_name="bench-pretrain"))
    try:
        report = run_tokenize(spark, str(work / "docs"), tokens, settings)
    finally:
        spark.stop()
    print(f"tokenized: {report['splits']}", file=sys.stderr)
    return tokens


def split_text(tokens: str, split: str) -> bytes:
    stream = TokenStream(tokens, split=split)
    tokenizer = stream.load_tokenizer()
    return "\n".join(tokenizer.decode(doc[1:].tolist()) for doc in stream.documents()).encode("utf-8")


def compressor_bpb(train: bytes, val: bytes) -> dict[str, dict[str, float]]:
    results = {}
    for name, command in COMPRESSORS.items():
        began = time.perf_counter()
        alone = len(subprocess.run(command, input=train, capture_output=True, check=True).stdout)
        both = len(subprocess.run(command, input=train + b"\n" + val, capture_output=True, check=True).stdout)
        results[name] = {"val_bpb": (both - alone) * 8 / len(val), "seconds": round(time.perf_counter() - began, 1)}
    return results


def train_preset(preset: str, tokens: str, work: Path, val_tokens: int) -> dict:
    settings = load_settings(preset=preset)  # its periodic evaluations use the preset's eval_tokens
    output = str(work / preset)
    began = time.perf_counter()
    summary = pretrain(settings, tokens, output, resume=True)
    wall = time.perf_counter() - began
    model, tokenizer, checkpoint = load_model(output)
    seq_len = settings.train.seq_len or settings.model.seq_len
    inputs, targets = validation_rows(tokens, Storage(), seq_len, val_tokens)
    dist = init_distributed("cpu")
    final = evaluate_bpb(model, inputs, targets, token_bytes(tokenizer), 32, dist, contextlib.nullcontext)
    samples = sample_continuations(model, tokenizer, PROMPTS, 40)
    return {
        "preset": preset, "params": checkpoint.config.num_params(), "steps": checkpoint.step,
        "tokens": summary["tokens"], "train_seconds": summary["train_seconds"], "wall_seconds": round(wall, 1),
        "tokens_per_second": summary["tokens_per_second"], "val_loss": final["val_loss"], "val_bpb": final["val_bpb"],
        "val_rows": len(inputs), "seq_len": seq_len, "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["cpu-tiny", "cpu-small"])
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "pretrain-quality")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    args.work.mkdir(parents=True, exist_ok=True)

    tokens = make_tokens(args.work, args.vocab_size, args.val_fraction)
    manifest = TokenStream(tokens).manifest
    train, val = split_text(tokens, "train"), split_text(tokens, "val")
    results = {
        "vocab_size": manifest.tokenizer.vocab_size, "train_bytes": len(train), "val_bytes": len(val),
        "train_tokens": manifest.splits["train"].n_tokens, "val_tokens": manifest.splits["val"].n_tokens,
        "torch_threads": torch.get_num_threads(), "compressors": compressor_bpb(train, val), "models": [],
    }
    for preset in args.presets:
        results["models"].append(train_preset(preset, tokens, args.work, manifest.splits["val"].n_tokens))
        (args.work / "results.json").write_text(json.dumps(results, indent=1))

    print(f"\nvalidation: {results['val_bytes']:,} bytes, {results['val_tokens']:,} tokens "
          f"({results['val_bytes'] / results['val_tokens']:.2f} bytes/token, vocabulary {results['vocab_size']}); "
          f"training text {results['train_bytes']:,} bytes\n")
    print("| model or compressor | parameters | steps | training tokens | wall time | tokens/s | val bits/byte |")
    print("|---|---|---|---|---|---|---|")
    for name, value in results["compressors"].items():
        print(f"| `{name}` | | | | {value['seconds']} s | | {value['val_bpb']:.3f} |")
    for model in results["models"]:
        print(f"| `{model['preset']}` | {model['params'] / 1e6:.2f}M | {model['steps']} | {model['tokens']:,} | "
              f"{model['wall_seconds'] / 60:.1f} min | {model['tokens_per_second']:,.0f} | {model['val_bpb']:.3f} |")
    for model in results["models"]:
        print(f"\n{model['preset']}, greedy:")
        for sample in model["samples"]:
            print(f"- `{sample['prompt']}` -> {json.dumps(sample['text'])}")
    print(json.dumps({k: v for k, v in results.items() if k != "models"}))


if __name__ == "__main__":
    main()
