"""The training half's commands: the train flow, pretraining, and sampling from a checkpoint.

    crawl2chat train --output data/run                       # the stages after `run --data-only`
    crawl2chat train --output s3://bucket/run --tokens s3://bucket/cc/tokens --rl dpo --until dpo --processes 8
    crawl2chat pretrain --tokens data/run/tokens --output data/base --preset cpu-tiny
    crawl2chat pretrain --tokens s3://bucket/tokens --output s3://bucket/base --resume --set train.max_steps=2000
    torchrun --nproc-per-node 8 -m flows.cli pretrain --tokens ... --output ... --preset gpu-gpt2-small
    crawl2chat generate --checkpoint data/base --prompt "Once upon a time" --max-tokens 64 --temperature 0

`train` runs the `train` flow (flows/train.py) against the Prefect server `run` uses: each stage
into `<output>/<stage>/`, skipped when done, resumed when interrupted, refused in one line (exit
2) when its record says it was made from other inputs or settings, unless `--force`.
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
from collections.abc import Callable

from flows.cli import add_config_args, parse_overrides


def add_training_args(parser: argparse.ArgumentParser, preset_default: str | None = None, with_force: bool = True) -> None:
    """The options of the training stages that `run` and `train` share (`run` has its own --force)."""
    parser.add_argument("--rl", default="ppo", help="after SFT: ppo (a reward model, then PPO), dpo or grpo")
    parser.add_argument("--until", metavar="STAGE", help="stop after this stage (pretrain, sft, reward, ppo, dpo, grpo)")
    parser.add_argument("--preset", default=preset_default,
                        help=f"named training settings: cpu-tiny, cpu-small, gpu-gpt2-small, gpu-1b (default: {preset_default})")
    parser.add_argument("--processes", type=int, help="processes per stage (torchrun); default: one per GPU, else one")
    if with_force:
        parser.add_argument("--force", action="store_true", help="retrain stages recorded as made from other inputs or settings")


def register(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="the training stages as one flow: pretrain -> sft -> reward -> ppo (or dpo, grpo)")
    train.add_argument("--output", "-o", required=True, help="the run's folder: <output>/<stage>/ per stage, local or s3://")
    train.add_argument("--tokens", help="a tokenize stage's output (default: <output>/tokens)")
    train.add_argument("--sft-data", nargs="+", action="extend", metavar="FILE[:WEIGHT]", help="SFT conversations (default: made from --docs)")
    train.add_argument("--pairs", nargs="+", action="extend", help="preference pairs for reward and dpo (default: made from --docs)")
    train.add_argument("--prompts", nargs="+", action="extend", help="prompts for ppo (default: made from --docs)")
    train.add_argument("--docs", help="the documents chat data is made from when not given (default: <output>/deduped)")
    train.add_argument("--ephemeral", action="store_true", help="report to a temporary Prefect server instead of the local stack")
    add_training_args(train)
    add_config_args(train)
    train.set_defaults(handler=_train)

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


def run_training_command(stage: Callable[[], dict], report: Callable[[dict], None] | None = None) -> int:
    """The body every training command shares, alone or under torchrun: logging set up, `stage`
    run inside the process group (model.distributed.process_group: a finished rank waits for its
    peers, a failing one leaves at once), then on rank 0 only `report` and the summary as JSON."""
    from model.distributed import process_group

    configure_logging()
    with process_group():
        summary = stage()
    if os.environ.get("RANK", "0") == "0":
        if report is not None:
            report(summary)
        print(json.dumps(summary, indent=2))
    return 0


def preflight_training(args: argparse.Namespace, output: str, overrides: dict, inputs: dict | None = None):
    """What can be refused before any flow starts, in one line: bad settings, an unknown stage, a
    stage command this installation lacks, a stage recorded as made from other inputs."""
    from flows.credentials import run_settings
    from flows.stages import check_commands, pipeline, preflight
    from flows.train import known_inputs
    from infra.storage import Storage

    settings = run_settings(args.config, overrides, args.preset)
    stages = pipeline(args.rl, args.until)
    check_commands(stages)
    storage = Storage(settings.storage)
    preflight(stages, output, known_inputs(storage, output, inputs or {}), settings, storage, args.force)
    return settings


def print_training(result: dict, report: dict | None, settings) -> None:
    from infra.settings import SearchSettings
    from infra.storage import join

    print(f"\n== train -> {result['output']}")
    print(f"{'stage':<10}{'status':<10}{'steps':>7}  checkpoint")
    for name, stage in result["stages"].items():
        print(f"{name:<10}{stage['status']:<10}{stage.get('steps') or 0:>7}  {stage.get('checkpoint')}")
    if report:
        print(f"report card: {report['uri']} (and the report-card artifact of the run in the Prefect UI)")
    last = join(result["output"], result["last"])
    command = f"crawl2chat chat --checkpoint {last}"
    if result["last"] != "pretrain" and result.get("chat_data"):
        command += f" --search-index {result['chat_data']['docs']}"
        defaults = SearchSettings()
        for field in ("top_k", "result_chars"):
            if getattr(settings.search, field) != getattr(defaults, field):
                command += f" --set search.{field}={getattr(settings.search, field)}"
    print(f"talk to it: {command}")


def _train(args: argparse.Namespace) -> int:
    from flows.commands.service import prefect_server
    from flows.train import train

    overrides = parse_overrides(args.set)
    given = {"tokens": args.tokens, "sft_data": args.sft_data, "pairs": args.pairs, "prompts": args.prompts}
    settings = preflight_training(args, args.output, overrides, given)
    with prefect_server(settings, ephemeral=args.ephemeral, start=True):
        result = train(output=args.output, tokens=args.tokens, sft_data=args.sft_data, pairs=args.pairs,
                       prompts=args.prompts, docs=args.docs, rl=args.rl, until=args.until, preset=args.preset,
                       processes=args.processes, force=args.force, config_file=args.config, overrides=overrides)
    print_training(result, result.get("report"), settings)
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from infra.settings import load_settings
    from tasks.train.pretrain import pretrain

    settings = load_settings(args.config, parse_overrides(args.set), preset=args.preset)
    return run_training_command(lambda: pretrain(settings, args.tokens, args.output, resume=args.resume))


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
