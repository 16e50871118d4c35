"""GPU pretraining throughput: bf16 tokens/s and model FLOPs utilisation of a preset, through our loop.

    python bench/gpu_pretrain.py                                  # gpu-gpt2-small on one GPU
    python bench/gpu_pretrain.py --preset gpu-1b --steps 30
    torchrun --nproc-per-node 8 bench/gpu_pretrain.py             # 8 GPUs, DDP (or --set train.fsdp=true)
    python bench/gpu_pretrain.py --tokens s3://bucket/tokens      # real shards instead of random tokens

It runs `model.trainer.Trainer` exactly as `crawl2chat pretrain` does (bf16 autocast, fused
AdamW, torch.compile as the preset says, gradient accumulation to the preset's total batch,
the per-step all-reduce and clipping), for `--warmup` steps (compilation, allocator, cudnn
autotuning) and then `--steps` timed steps. Without `--tokens` the batches are uniformly random
token ids made on the GPU (vocabulary `--vocab-size`), so the number is the model and optimizer
alone, with no data loading; with `--tokens`, the real TokenStream readers of tasks/train/pretrain.py.

MFU = flops_per_token x tokens/s / (peak x GPUs), flops_per_token from `GPTConfig.flops_per_token`
(6 per matmul weight + attention's 12 * layers * heads * head_dim * context, PaLM's appendix B)
and the peak of the dense bf16 tensor cores: 989 TFLOPS for an H100/H200 SXM (NVIDIA's
datasheet), 312 for an A100, or `--set train.peak_flops=...`. Prints one Markdown row and
one JSON line. Not run in this project's CI (no GPU there); see BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from flows.cli import parse_overrides  # noqa: E402
from infra.settings import load_settings  # noqa: E402
from model.distributed import init_distributed, process_group  # noqa: E402
from model.gpt import GPT, GPTConfig  # noqa: E402
from model.tokenizer import BpeTokenizer  # noqa: E402
from model.trainer import LossOutput, Trainer, accumulation_steps, sequence_length  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gpu-gpt2-small")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation)")
    parser.add_argument("--vocab-size", type=int, default=32768)
    parser.add_argument("--tokens", help="real token shards (a tokenize output) instead of random ids")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    args = parser.parse_args()
    settings = load_settings(overrides=parse_overrides(args.set), preset=args.preset)
    train = settings.train.model_copy(update={"max_steps": args.warmup + args.steps, "eval_every": 0, "checkpoint_every": 0,
                                               "log_every": max(1, args.steps // 4)})
    dist = init_distributed(train.device)
    if args.tokens:
        from model.data import TokenStream

        tokenizer = TokenStream(args.tokens).load_tokenizer()
    else:
        tokenizer = BpeTokenizer.train(["a b c d e f g h i j k l m n o p q r s t u v w x y z"] * 4, vocab_size=300)
    vocab = tokenizer.vocab_size if args.tokens else args.vocab_size
    config = GPTConfig.from_settings(settings.model, vocab_size=vocab)
    seq_len = sequence_length(train, config)
    accum = accumulation_steps(train, train.batch_size * seq_len, dist.world_size)
    model = GPT(config, seed=train.seed).to(dist.device)
    run = tempfile.mkdtemp(prefix="gpu-pretrain-")
    trainer = Trainer(model, train, dist=dist, run=run, stage="bench", tokenizer=tokenizer, config=config,
                      flops_per_token=config.flops_per_token())

    if args.tokens:
        from model.data import TokenStream

        slots = dist.world_size * accum
        streams = [TokenStream(args.tokens, "train", rank=dist.rank * accum + m, world_size=slots, loop=True).batches(
            train.batch_size, seq_len) for m in range(accum)]

        def next_batch(micro_step: int):
            inputs, targets = next(streams[micro_step])
            return (torch.from_numpy(inputs).pin_memory().to(dist.device, non_blocking=True),
                    torch.from_numpy(targets).pin_memory().to(dist.device, non_blocking=True))
    else:
        generator = torch.Generator(device=dist.device).manual_seed(dist.rank)

        def next_batch(micro_step: int):
            ids = torch.randint(0, vocab, (train.batch_size, seq_len + 1), device=dist.device, generator=generator)
            return ids[:, :-1], ids[:, 1:]

    def loss_fn(module, batch) -> LossOutput:
        inputs, targets = batch
        return LossOutput(module(inputs, targets) * targets.numel(), targets.numel(), tokens=targets.numel())

    marks: dict[int, float] = {}

    def on_step(result) -> None:
        if result.step in (args.warmup, args.warmup + args.steps):
            if dist.device.type == "cuda":
                torch.cuda.synchronize()
            marks[result.step] = time.perf_counter()

    trainer.fit(loss_fn, next_batch, accum_steps=accum, on_step=on_step)
    seconds = marks[args.warmup + args.steps] - marks[args.warmup]
    tokens_per_step = train.batch_size * seq_len * accum * dist.world_size
    tokens_per_second = args.steps * tokens_per_step / seconds
    peak = trainer.peak_flops()
    mfu = config.flops_per_token() * tokens_per_second / (peak * dist.world_size) if peak else None
    result = {
        "preset": args.preset, "device": torch.cuda.get_device_name(dist.device) if dist.device.type == "cuda" else "cpu",
        "gpus": dist.world_size, "params": config.num_params(), "flops_per_token": config.flops_per_token(),
        "seq_len": seq_len, "batch_size": train.batch_size, "accum_steps": accum, "tokens_per_step": tokens_per_step,
        "compile": train.compile, "fsdp": train.fsdp, "data": "shards" if args.tokens else "random ids",
        "timed_steps": args.steps, "seconds": round(seconds, 3), "tokens_per_second": round(tokens_per_second),
        "peak_flops": peak, "mfu": round(mfu, 4) if mfu else None,
        "max_memory_gib": round(torch.cuda.max_memory_allocated(dist.device) / 2**30, 1) if dist.device.type == "cuda" else None,
        "torch": torch.__version__,
    }
    if dist.is_main:
        mfu_text = f"{100 * mfu:.1f}%" if mfu else "n/a"
        print(f"| {result['preset']} | {result['device']} x {result['gpus']} | {result['params'] / 1e6:.0f}M | "
              f"{result['tokens_per_second']:,} tok/s | MFU {mfu_text} | {result['max_memory_gib']} GiB |")
        print(json.dumps(result))
    shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    with process_group():
        main()
