"""SFT batching speed: packed rows against padded rows, one epoch of the same real conversations.

    nice .venv/bin/python bench/bench_sft_packing.py --base <checkpoint> [--batch-size 8] [--pad-batch-sizes 8 16]

The conversations are the real samples under ../shared/realdata/chat (Alpaca, OpenAssistant,
LLaMA-Factory's v1 SFT demo and identity), loaded and split as `crawl2chat sft` does, with the
base's tokenizer and context. Each contender trains one epoch of the same training split from
the same base weights, through `tasks.train.sft.train_sft` (the real loop, one process, one
thread):
- pack: `--batch-size` rows of seq_len, conversations placed by best-fit decreasing, attention
  kept inside each conversation by the document mask;
- pad: `--pad-batch-sizes` conversations per micro-batch, length-sorted, padded to the longest,
  plain causal attention (the fast kernel path).
What the time includes: the whole `train_sft` call for one epoch (building the loader,
collation, every forward, backward and AdamW step, the final checkpoint write), no evaluation.
The figure is CPU time of the process (one thread), which the other work on a shared machine
inflates far less than wall time; wall time is shown too. Correctness is checked first: the
base's loss on the held-out conversations must agree between the two batchings to 1e-4
nats. Prints a Markdown table for BENCHMARKS.md and one JSON line with every number.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import contextlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from infra.settings import load_settings  # noqa: E402
from infra.storage import Storage  # noqa: E402
from model.distributed import Distributed  # noqa: E402
from model.packing import BATCHINGS, plan_batches  # noqa: E402
from model.trainer import sequence_length  # noqa: E402
from tasks.train.sft import SftData, batching_stats, evaluate_loss, load_base, load_sft_data, train_sft  # noqa: E402

CHAT = ROOT.parent / "shared" / "realdata" / "chat"
REAL_CONVERSATIONS = [
    CHAT / "llama_factory" / "alpaca_en_demo.json",
    CHAT / "oasst2_openpaws" / "oasst2_filtered.jsonl",
    CHAT / "llama_factory" / "v1_sft_demo.jsonl",
    CHAT / "llama_factory" / "identity.json",
]


def one_epoch(base_uri: str, data: SftData, batching: str, batch_size: int, seq_len: int, work: Path) -> dict:
    steps = len(plan_batches([len(e) for e in data.train], batching, batch_size, seq_len, rng=None))
    settings = load_settings(overrides={"sft": {"batching": batching, "train": {
        "batch_size": batch_size, "max_steps": steps, "eval_every": 0, "sample_tokens": 0, "checkpoint_every": 0,
        "log_every": 1000, "warmup_steps": 5, "device": "cpu"}}})
    base = load_base(base_uri, Storage())  # fresh weights for each contender
    train_only = SftData(data.train, [], json.loads(json.dumps(data.report)))  # no evaluation inside the timing
    cpu = time.process_time()
    summary = train_sft(settings, base, train_only, str(work / f"{batching}-{batch_size}"))
    cpu = time.process_time() - cpu
    loss_tokens = data.report["split"]["train"]["loss_tokens"]
    return {
        "batching": batching, "batch_size": batch_size, "steps": steps,
        **{k: v for k, v in batching_stats(data.train, batching, batch_size, seq_len).items() if k != "batching"},
        "epoch_seconds": summary["train_seconds"], "epoch_cpu_seconds": round(cpu, 2),
        "loss_tokens_per_cpu_second": round(loss_tokens / cpu, 1), "final_train_loss": summary["train_loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the base checkpoint (its tokenizer, context and weights)")
    parser.add_argument("--batch-size", type=int, default=8, help="packed rows per micro-batch")
    parser.add_argument("--pad-batch-sizes", type=int, nargs="+", default=[8, 16], help="padded conversations per micro-batch")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    base = load_base(args.base, Storage())
    seq_len = sequence_length(load_settings().sft.train, base.model.config)
    data = load_sft_data([str(path) for path in REAL_CONVERSATIONS], base.tokenizer, seq_len, val_fraction=0.05)
    # Equal correctness first: the same model's held-out loss through either batching.
    dist = Distributed(0, 0, 1, torch.device("cpu"))
    with torch.no_grad():
        losses = {batching: evaluate_loss(base.model.eval(), data.val, batching, args.batch_size, seq_len, dist, contextlib.nullcontext)
                  for batching in BATCHINGS}
    assert abs(losses["pack"] - losses["pad"]) < 1e-4, f"the two batchings disagree on the same model's loss: {losses}"
    with tempfile.TemporaryDirectory(prefix="bench-sft-packing-") as work:
        runs = [one_epoch(args.base, data, "pack", args.batch_size, seq_len, Path(work))]
        runs += [one_epoch(args.base, data, "pad", size, seq_len, Path(work)) for size in args.pad_batch_sizes]
    split = data.report["split"]["train"]
    print(f"\n{split['conversations']} training conversations, {split['tokens']:,} tokens ({split['loss_tokens']:,} assistant), "
          f"seq_len {seq_len}; held-out loss of the base {losses['pack']:.6f} packed, {losses['pad']:.6f} padded\n")
    print("| batching | micro-batch | micro-batches / epoch | fill | epoch, CPU s | epoch, wall s | assistant tokens / CPU s | CPU time vs pack |")
    print("|---|---|---|---|---|---|---|---|")
    for run in runs:
        unit = "rows" if run["batching"] == "pack" else "conversations"
        print(f"| {run['batching']} | {run['batch_size']} {unit} | {run['steps']} | {run['fill']:.1%} | {run['epoch_cpu_seconds']:.1f} | "
              f"{run['epoch_seconds']:.1f} | {run['loss_tokens_per_cpu_second']:,.0f} | "
              f"{run['epoch_cpu_seconds'] / runs[0]['epoch_cpu_seconds']:.2f}x |")
    print(json.dumps({"seq_len": seq_len, "split": split, "val_loss": losses, "runs": runs}))


if __name__ == "__main__":
    main()
