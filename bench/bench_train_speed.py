"""Training speed on CPU: our GPT against transformers' GPT2LMHeadModel and LlamaForCausalLM at
the same size, each eager and under `torch.compile`, in one run, with the same loop for all.

    nice .venv/bin/python bench/bench_train_speed.py [--rounds 6] [--steps 1] [--vocab-size 32768]

Shape (the issue's): 4 layers, 4 heads, 256 wide, context 256, batch 16 sequences, float32,
AdamW. Vocabulary: our BPE trained on the real pretraining sample (bench/realtext.py) with the
project's default size, 32768 tokens, so every contender has the same embedding and head; the
batches are windows of that real text, the same ones for every contender.

What each timed step includes, for every contender alike: one step of our trainer
(`model.trainer.Trainer`, the loop every stage uses, built with `TrainSettings(compile=...)` so it
compiles the model itself): the forward from token ids to the loss (ours: `model(inputs,
targets)`, the head fused with the cross-entropy, model/loss.py; transformers': `model(input_ids,
labels=..., shift_labels=...)`, its own loss function over the same 256 targets per row), the
backward, the scaling of the gradients to the mean, gradient clipping at 1.0, the schedule's
learning rate, AdamW (`model.optim.build_optimizer`: the same settings and code path for all)
and `zero_grad()`. Batches are sliced beforehand; the first steps of each contender (warm-up,
and compilation under `torch.compile`) are timed apart and left out.

The machine is shared, so contenders take turns (A B C ... A B C ...) for `--rounds` rounds of
`--steps` steps each, and the table gives each one's median step: read the ratios. The CPU
seconds per step (this process's, all threads) are printed as a second view, less sensitive to
time lost waiting for a core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.realtext import realdata_texts, realdata_tokenizer  # noqa: E402
from infra.settings.train import ModelSettings, TrainSettings  # noqa: E402
from model.distributed import init_distributed  # noqa: E402
from model.gpt import GPT, GPTConfig  # noqa: E402
from model.trainer import LossOutput, Trainer  # noqa: E402

LAYERS, HEADS, WIDTH, CONTEXT, BATCH = 4, 4, 256, 256, 16


@dataclass
class Contender:
    name: str
    compiled: bool
    loss: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    parameters: int = 0
    trainer: Trainer | None = None
    warmup_seconds: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)  # this process's CPU time per step
    last_loss: float = float("nan")

    @property
    def label(self) -> str:
        return f"{self.name} ({'torch.compile' if self.compiled else 'eager'})"


def ours(vocab_size: int) -> torch.nn.Module:
    settings = ModelSettings(n_layer=LAYERS, n_head=HEADS, n_kv_head=HEADS, n_embd=WIDTH, seq_len=CONTEXT)
    return GPT(GPTConfig.from_settings(settings, vocab_size), seed=0)


def llama(vocab_size: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    mlp_hidden = GPTConfig.from_settings(ModelSettings(n_embd=WIDTH), vocab_size).mlp_hidden  # the same SwiGLU width as ours
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=WIDTH, intermediate_size=mlp_hidden, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=HEADS, max_position_embeddings=CONTEXT,
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, pad_token_id=None,
    )
    return LlamaForCausalLM(config)


def gpt2(vocab_size: int) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=vocab_size, n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS, n_positions=CONTEXT,
                        bos_token_id=0, eos_token_id=0, pad_token_id=None)  # MLP 4x wide, head tied: GPT-2 as it is
    return GPT2LMHeadModel(config)


def our_loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return model(inputs, targets)


def hf_loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return model(input_ids=inputs, labels=targets, shift_labels=targets).loss


def batches(vocab_size: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`count` batches of BATCH windows of CONTEXT + 1 tokens of real text (documents joined by <|bos|>)."""
    tokenizer = realdata_tokenizer(vocab_size)
    stream = torch.tensor([t for text in realdata_texts() for t in (tokenizer.bos_id, *tokenizer.encode(text))])
    windows = stream[: len(stream) // (CONTEXT + 1) * (CONTEXT + 1)].view(-1, CONTEXT + 1)
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(0))
    if len(windows) < count * BATCH:
        raise SystemExit(f"the real sample has {len(windows)} windows; {count * BATCH} needed")
    picked = windows[order[: count * BATCH]].view(count, BATCH, CONTEXT + 1)
    return [(rows[:, :-1].contiguous(), rows[:, 1:].contiguous()) for rows in picked]


def step(contender: Contender, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """One step of the trainer; its wall-clock and CPU seconds."""
    def loss_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> LossOutput:
        count = batch[1].numel()  # the trainer wants the sum over targets; both losses give the mean
        return LossOutput(loss=contender.loss(model, *batch) * count, count=count, tokens=count)

    started, cpu_started = time.perf_counter(), time.process_time()
    # The trainer's own step (what fit() runs between its logging and checkpoints), so every
    # contender goes through exactly the loop our stages use, and nothing of fit()'s I/O is timed.
    result = contender.trainer._train_step(loss_fn, lambda micro_step: (inputs, targets), accum_steps=1)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    contender.last_loss = result.loss
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=32_768)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=1, help="timed steps per contender per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per contender first (compilation happens here)")
    parser.add_argument("--only", nargs="*", default=["ours", "llama", "gpt2"], help="contenders to run")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own, one per core)")
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    builders = {"ours": (ours, our_loss), "llama": (llama, hf_loss), "gpt2": (gpt2, hf_loss)}
    tokenizer, dist = realdata_tokenizer(args.vocab_size), init_distributed("cpu")
    run = str(ROOT / ".bench" / "train-speed-run")  # the trainers' output; nothing is written, fit() is never called
    contenders = []
    for compiled in (False,) if args.no_compile else (False, True):
        settings = TrainSettings(batch_size=BATCH, max_steps=args.warmup + args.rounds * args.steps, warmup_steps=0,
                                 lr=1e-3, compile=compiled, device="cpu", precision="fp32")
        for name in args.only:
            build, loss = builders[name]
            model = build(args.vocab_size).train()
            trainer = Trainer(model, settings, dist=dist, run=f"{run}/{name}-{compiled}", stage="bench", tokenizer=tokenizer)
            contenders.append(Contender(name, compiled, loss, sum(p.numel() for p in model.parameters()), trainer))
    data = batches(args.vocab_size, args.warmup + args.rounds * args.steps)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: timings are under whatever else shares "
          "the machine, so read the ratios (contenders take turns)", flush=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; vocabulary {args.vocab_size}; "
          f"{BATCH}x{CONTEXT} tokens per step", flush=True)

    for contender in contenders:
        for inputs, targets in data[: args.warmup]:
            contender.warmup_seconds.append(step(contender, inputs, targets)[0])
        print(f"  warm-up {contender.label}: {', '.join(f'{s:.1f}s' for s in contender.warmup_seconds)}", flush=True)
    for round_ in range(args.rounds):
        for contender in contenders:
            for inputs, targets in data[args.warmup + round_ * args.steps : args.warmup + (round_ + 1) * args.steps]:
                elapsed, cpu = step(contender, inputs, targets)
                contender.step_seconds.append(elapsed)
                contender.cpu_seconds.append(cpu)
        print(f"  round {round_ + 1}: " + ", ".join(f"{c.label} {statistics.median(c.step_seconds[-args.steps:]):.2f}s" for c in contenders), flush=True)

    tokens = BATCH * CONTEXT
    results = [{"contender": c.name, "compiled": c.compiled, "parameters": c.parameters,
                "median_step_seconds": statistics.median(c.step_seconds), "step_seconds": c.step_seconds,
                "median_cpu_seconds": statistics.median(c.cpu_seconds), "cpu_seconds": c.cpu_seconds,
                "warmup_seconds": c.warmup_seconds, "tokens_per_second": tokens / statistics.median(c.step_seconds),
                "last_loss": c.last_loss} for c in contenders]
    mine = {r["compiled"]: r["tokens_per_second"] for r in results if r["contender"] == "ours"}
    print("\n| contender | mode | parameters | median step (s) | tokens/s | ours / this | CPU s per step |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        ratio = mine.get(r["compiled"], float("nan")) / r["tokens_per_second"]
        print(f"| {r['contender']} | {'torch.compile' if r['compiled'] else 'eager'} | {r['parameters']:,} | "
              f"{r['median_step_seconds']:.2f} | {r['tokens_per_second']:,.0f} | {ratio:.2f}x | {r['median_cpu_seconds']:.2f} |")
    peers = [r for r in results if r["contender"] != "ours"]
    if mine and peers:
        best_peer = max(peers, key=lambda r: r["tokens_per_second"])
        best_ours = max(mine.values())
        print(f"\nfastest of ours: {best_ours:,.0f} tokens/s; fastest peer: {best_peer['contender']} "
              f"({'torch.compile' if best_peer['compiled'] else 'eager'}) {best_peer['tokens_per_second']:,.0f} tokens/s; "
              f"ratio {best_ours / best_peer['tokens_per_second']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"vocab_size": args.vocab_size, "threads": torch.get_num_threads(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
