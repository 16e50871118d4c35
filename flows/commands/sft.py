"""The chat fine-tuning commands: SFT, and the "I don't know" data it can learn from.

    crawl2chat sft --base runs/base --data alpaca.json oasst.jsonl idk.jsonl:2 --output runs/sft --preset cpu-small
    crawl2chat sft --base s3://bucket/base --data s3://bucket/chat/ --output s3://bucket/sft --resume \
        --set sft.train.max_steps=2000 --set sft.batching=pad
    torchrun --nproc-per-node 8 -m flows.cli sft --base ... --data ... --output ...
    crawl2chat idk build --model runs/sft --qa qa.jsonl --output idk.jsonl [--samples 4]
    crawl2chat idk eval --model runs/sft-idk --qa idk.probes.jsonl

`sft` logs each data file's kept and skipped rows as it loads them, writes them all to
`<output>/data_report.json`, prints their funnels on stderr at the end and the run's summary as
JSON on stdout. The model is always the base's: `model.*` and `train.*` settings (pretraining's)
are refused here; the loop's settings are `sft.train.*`. `idk build` prints the funnel of
verdicts and what it wrote; `idk eval` prints refusal rate and accuracy per group, and with
`--json` the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys

from flows.cli import add_config_args, parse_overrides
from flows.commands.train import run_training_command


def register(commands: argparse._SubParsersAction) -> None:
    sft = commands.add_parser("sft", help="fine-tune a base checkpoint on conversations (also under torchrun)")
    sft.add_argument("--base", required=True, help="the checkpoint to start from: a run's output, one checkpoint folder, or an exported directory")
    sft.add_argument("--data", required=True, nargs="+", action="extend", metavar="FILE[:WEIGHT]",
                     help="conversation files, globs or folders, local or s3://, each with an optional :WEIGHT (repeats per conversation)")
    sft.add_argument("--output", "-o", required=True, help="where checkpoints, metrics.jsonl, samples.jsonl and data_report.json go")
    sft.add_argument("--format", default="auto", help="auto (per file) or one of messages, sharegpt, alpaca, oasst, hh")
    sft.add_argument("--preset", help="named settings whose sft values apply: cpu-tiny, cpu-small, gpu-gpt2-small, gpu-1b")
    sft.add_argument("--resume", action="store_true", help="continue from the output's newest checkpoint, if any")
    add_config_args(sft)
    sft.set_defaults(handler=_sft)

    idk = commands.add_parser("idk", help='"I don\'t know" data: probe a model with questions of known answer')
    idk_commands = idk.add_subparsers(dest="idk_command", required=True)
    build = idk_commands.add_parser("build", help="sample answers, judge them, write refusals where the model is reliably wrong")
    build.add_argument("--model", required=True, help="a checkpoint (run output or folder) or an exported directory")
    build.add_argument("--qa", required=True, nargs="+", action="extend", help="question files: `chat-data qa` output or {question, answer} rows")
    build.add_argument("--output", "-o", required=True, help="the conversations (.jsonl), local or s3://")
    build.add_argument("--probes", help="where every question's verdict and replies go (default: <output>.probes.jsonl)")
    build.add_argument("--samples", type=int, help="replies sampled per question (default: idk.samples)")
    build.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_config_args(build)
    build.set_defaults(handler=_idk_build)

    evaluate = idk_commands.add_parser("eval", help="refusal rate and accuracy of a model on questions of known answer")
    evaluate.add_argument("--model", required=True, help="a checkpoint (run output or folder) or an exported directory")
    evaluate.add_argument("--qa", required=True, nargs="+", action="extend", help="question files (a probes file gives per-group figures)")
    evaluate.add_argument("--samples", type=int, default=1, help="replies per question (default 1)")
    evaluate.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    evaluate.add_argument("--json", action="store_true", help="print the figures as JSON")
    evaluate.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_config_args(evaluate)
    evaluate.set_defaults(handler=_idk_eval)


def _sft(args: argparse.Namespace) -> int:
    from flows.report import funnel_text
    from infra.settings import load_settings
    from infra.storage import Storage
    from tasks.train.sft import sft

    overrides = parse_overrides(args.set)
    foreign = sorted(set(overrides) & {"model", "train"})
    if foreign:
        raise ValueError(f"sft takes its model from --base and its loop from sft.train.*: {foreign[0]}.* settings do not apply")
    settings = load_settings(args.config, overrides, preset=args.preset)

    def print_funnels(summary: dict) -> None:
        report = json.loads(Storage(settings.storage).read_text(summary["data_report"]))
        for stats in report["files"]:
            print(f"\n== {stats['input']} ({stats['format']})\n{funnel_text(stats)}", file=sys.stderr)

    return run_training_command(lambda: sft(settings, args.base, args.data, args.output, args.format, resume=args.resume),
                                report=print_funnels)


def _load(args: argparse.Namespace):
    import torch

    from infra.settings import load_settings
    from infra.storage import Storage
    from model.export import load_for_inference

    settings = load_settings(args.config, parse_overrides(args.set))
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but this machine has no CUDA device")
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    storage = Storage(settings.storage)
    model, tokenizer = load_for_inference(args.model, storage, device)
    return settings, storage, model, tokenizer


def _idk_build(args: argparse.Namespace) -> int:
    from flows.report import funnel_text
    from tasks.chat.conversations import write_conversations
    from tasks.chat.idk import idk_conversations, probe, probes_uri, read_questions, write_probes

    settings, storage, model, tokenizer = _load(args)
    idk = settings.idk if args.samples is None else settings.idk.model_copy(update={"samples": args.samples})
    questions, funnel = read_questions(storage, args.qa)
    probes = probe(model, tokenizer, questions, idk)
    conversations, made = idk_conversations(probes)
    probes_file = args.probes or probes_uri(args.output)
    write_probes(storage, probes_file, probes)
    if not conversations:
        raise ValueError(f"no training conversation: every one of the {len(probes)} questions was uncertain or held out "
                         f"(probes in {probes_file})")
    write_conversations(args.output, conversations, storage)
    funnel.merge(made)
    written = made["write"].counts
    print(funnel_text({"steps": funnel.to_dict()}))
    print(f"\n{len(conversations)} conversations -> {args.output} ({written['idk']} \"I don't know\", {written['answer']} answers); "
          f"{len(probes)} probes -> {probes_file}")
    return 0


def _idk_eval(args: argparse.Namespace) -> int:
    from tasks.chat.idk import evaluate, read_questions

    settings, storage, model, tokenizer = _load(args)
    questions, _ = read_questions(storage, args.qa)
    results = evaluate(model, tokenizer, questions, settings.idk, samples=args.samples, temperature=args.temperature)
    if args.json:
        print(json.dumps(results["groups"], indent=2))
        return 0
    print(f"{'group':<20} {'questions':>9} {'replies':>8} {'accuracy':>9} {'refusal':>8} {'wrong':>7}")
    for group, figures in results["groups"].items():
        print(f"{group:<20} {figures['questions']:>9} {figures['replies']:>8} {figures['accuracy']:>9.1%} "
              f"{figures['refusal_rate']:>8.1%} {figures['wrong_rate']:>7.1%}")
    return 0
