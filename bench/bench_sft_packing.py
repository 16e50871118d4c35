"""SFT batching speed: packed rows against padded rows, over the same real conversations.

    nice .venv/bin/python bench/bench_sft_packing.py --base <checkpoint> [--batch-size 8] [--epochs 2]

The conversations are the real samples under ../shared/realdata/chat (Alpaca, OpenAssistant,
LLaMA-Factory's v1 SFT demo and identity), loaded and split as `crawl2chat sft` does, with the
base's tokenizer and context. The two contenders, each on its own copy of the base weights with
its own AdamW (model/optim.py, the Trainer's), train on the same training split:
- pack: `--batch-size` rows of seq_len per micro-batch, conversations placed by best-fit
  decreasing, attention kept inside each conversation by the document mask;
- pad: one conversation per row, length-sorted, as many per micro-batch as fit the same budget
  of `--batch-size` x seq_len positions, padded to the longest; plain causal attention.
Their optimizer steps are interleaved (one of pack, one of pad, ...) so that the load of a
shared machine falls on both alike, for `--epochs` epochs of each. What a step's time includes:
collating the micro-batch (model/packing.py), the forward and backward of `sft_loss`, and the
AdamW step; measured as CPU time of the process (one thread), which other work on the machine
inflates far less than wall time (wall time is shown too). Correctness is checked first: the
base's loss on the held-out conversations must agree between the two batchings to 1e-4 nats.
Prints a Markdown table for BENCHMARKS.md and one JSON line with every number.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import contextlib
import copy
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from infra.settings import load_settings  # noqa: E402
from infra.storage import Storage  # noqa: E402
from model.distributed import Distributed  # noqa: E402
from model.optim import build_optimizer  # noqa: E402
from model.packing import BATCHINGS, SftLoader  # noqa: E402
from model.trainer import sequence_length  # noqa: E402
from tasks.train.sft import batching_stats, evaluate_loss, load_base, load_sft_data, sft_loss  # noqa: E402

CHAT = ROOT.parent / "shared" / "realdata" / "chat"
REAL_CONVERSATIONS = [
    CHAT / "llama_factory" / "alpaca_en_demo.json",
    CHAT / "oasst2_openpaws" / "oasst2_filtered.jsonl",
    CHAT / "llama_factory" / "v1_sft_demo.jsonl",
    CHAT / "llama_factory" / "identity.json",
]


class Contender:
    """One batching: its model copy, optimizer, loader, and the time its steps took."""

    def __init__(self, batching: str, model: torch.nn.Module, data, batch_size: int, seq_len: int, settings) -> None:
        self.batching, self.model = batching, copy.deepcopy(model).train()
        self.optimizer = build_optimizer(self.model, settings, torch.device("cpu"))
        self.loader = SftLoader(data.train, batching, batch_size, seq_len, seed=0)
        self.steps_per_epoch = self.loader.batches_per_slot(0)
        self.cpu = self.wall = 0.0
        self.steps, self.tokens, self.loss_tokens = 0, 0, 0

    def step(self) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        batch = next(self.loader)
        out = sft_loss(self.model, batch)
        (out.loss / out.count).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.cpu += time.process_time() - cpu
        self.wall += time.perf_counter() - wall
        self.steps, self.tokens, self.loss_tokens = self.steps + 1, self.tokens + batch.tokens, self.loss_tokens + out.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the base checkpoint (its tokenizer, context and weights)")
    parser.add_argument("--batch-size", type=int, default=8, help="sft.train.batch_size: rows of seq_len per micro-batch")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each contender")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = load_settings().sft.train
    base = load_base(args.base, Storage())
    seq_len = sequence_length(settings, base.model.config)
    data = load_sft_data([str(path) for path in REAL_CONVERSATIONS], base.tokenizer, seq_len, val_fraction=0.05)

    # Equal correctness first: the same model's held-out loss through either batching.
    dist = Distributed(0, 0, 1, torch.device("cpu"))
    with torch.no_grad():
        losses = {batching: evaluate_loss(base.model.eval(), data.val, batching, args.batch_size, seq_len, dist, contextlib.nullcontext)
                  for batching in BATCHINGS}
    assert abs(losses["pack"] - losses["pad"]) < 1e-4, f"the two batchings disagree on the same model's loss: {losses}"

    contenders = [Contender(batching, base.model, data, args.batch_size, seq_len, settings) for batching in BATCHINGS]
    while any(c.steps < args.epochs * c.steps_per_epoch for c in contenders):
        for contender in contenders:
            if contender.steps < args.epochs * contender.steps_per_epoch:
                contender.step()

    split = data.report["split"]["train"]
    pack = contenders[0]
    print(f"\n{split['conversations']} training conversations, {split['tokens']:,} tokens ({split['loss_tokens']:,} assistant), "
          f"seq_len {seq_len}, {args.epochs} epochs each; held-out loss of the base {losses['pack']:.6f} packed, "
          f"{losses['pad']:.6f} padded\n")
    print("| batching | micro-batch budget | micro-batches / epoch | fill | CPU s / epoch | wall s / epoch | assistant tokens / CPU s | CPU time vs pack |")
    print("|---|---|---|---|---|---|---|---|")
    runs = []
    for c in contenders:
        stats = batching_stats(data.train, c.batching, args.batch_size, seq_len)
        run = {"batching": c.batching, "batch_size": args.batch_size, "steps_per_epoch": c.steps_per_epoch, "fill": stats["fill"],
               "cpu_seconds_per_epoch": round(c.cpu / args.epochs, 2), "wall_seconds_per_epoch": round(c.wall / args.epochs, 2),
               "loss_tokens_per_cpu_second": round(c.loss_tokens / c.cpu, 1), "tokens": c.tokens}
        runs.append(run)
        print(f"| {c.batching} | {args.batch_size} x {seq_len} positions | {c.steps_per_epoch} | {stats['fill']:.1%} | "
              f"{run['cpu_seconds_per_epoch']:.1f} | {run['wall_seconds_per_epoch']:.1f} | {run['loss_tokens_per_cpu_second']:,.0f} | "
              f"{c.cpu / pack.cpu:.3f}x |")
    print(json.dumps({"seq_len": seq_len, "epochs": args.epochs, "split": split, "val_loss": losses, "runs": runs}))


if __name__ == "__main__":
    main()
