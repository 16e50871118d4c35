"""The training half's commands: pretraining and sampling from a checkpoint.

    crawl2chat pretrain --tokens data/run/tokens --output data/base --preset cpu-tiny
    crawl2chat pretrain --tokens s3://bucket/tokens --output s3://bucket/base --resume --set train.max_steps=2000
    torchrun --nproc-per-node 8 -m flows.cli pretrain --tokens ... --output ... --preset gpu-gpt2-small
    crawl2chat generate --checkpoint data/base --prompt "Once upon a time" --max-tokens 64 --temperature 0

`--checkpoint` takes a run's output (its newest complete checkpoint) or one checkpoint folder.
Progress goes to stderr through `logging` (one line per log interval); the summary is printed
as JSON on stdout when training ends. `generate` streams the continuation to stdout as it comes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from flows.cli import add_config_args, parse_overrides


def register(commands: argparse._SubParsersAction) -> None:
    pretrain = commands.add_parser("pretrain", help="train a GPT from scratch on token shards (also under torchrun)")
    pretrain.add_argument("--tokens", required=True, help="a tokenize stage's output (its manifest.json), local or s3://")
    pretrain.add_argument("--output", "-o", required=True, help="where checkpoints, metrics.jsonl and samples.jsonl go")
    pretrain.add_argument("--preset", help="named settings: cpu-tiny, cpu-small, gpu-gpt2-small, gpu-1b (under --config/--set)")
    pretrain.add_argument("--resume", action="store_true", help="continue from the output's newest checkpoint, if any")
    add_config_args(pretrain)
    pretrain.set_defaults(handler=_pretrain)

    generate = commands.add_parser("generate", help="continue a prompt with a checkpoint's model, streaming")
    generate.add_argument("--checkpoint", required=True, help="a run's output or one checkpoint folder, local or s3://")
    generate.add_argument("--prompt", required=True)
    generate.add_argument("--max-tokens", type=int, default=64)
    generate.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    generate.add_argument("--top-k", type=int, default=None)
    generate.add_argument("--top-p", type=float, default=None)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_config_args(generate)
    generate.set_defaults(handler=_generate)


def configure_logging() -> None:
    """Progress lines on stderr, with the time; under torchrun only rank 0 says more than warnings."""
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)


def _pretrain(args: argparse.Namespace) -> int:
    from infra.settings import load_settings
    from model.distributed import shutdown
    from tasks.train.pretrain import pretrain

    settings = load_settings(args.config, parse_overrides(args.set), preset=args.preset)
    configure_logging()
    try:
        summary = pretrain(settings, args.tokens, args.output, resume=args.resume)
    finally:
        shutdown()
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(summary, indent=2))
    return 0


def _generate(args: argparse.Namespace) -> int:
    import torch

    from infra.settings import load_settings
    from infra.storage import Storage
    from model.checkpoint import load_model
    from model.engine import Engine, SamplingParams

    settings = load_settings(args.config, parse_overrides(args.set))
    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but this machine has no CUDA device")
    model, tokenizer, checkpoint = load_model(args.checkpoint, Storage(settings.storage), "cuda" if use_cuda else "cpu")
    prompt = [tokenizer.bos_id, *tokenizer.encode(args.prompt)]
    began = time.perf_counter()
    generation = Engine(model, tokenizer).stream([prompt], params, seed=args.seed)
    sys.stdout.write(args.prompt)
    count = 0
    for event in generation:
        sys.stdout.write(event.text)
        sys.stdout.flush()
        count += 1
    (completion,) = generation.completions
    seconds = time.perf_counter() - began
    sys.stdout.write("\n")
    print(f"[{checkpoint.stage} step {checkpoint.step}: {count} tokens, finish {completion.finish_reason}, "
          f"{count / seconds:.1f} tokens/s]", file=sys.stderr)
    return 0
