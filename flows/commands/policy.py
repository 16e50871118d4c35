"""The policy-optimisation commands that need no reward model: DPO on preference pairs, GRPO on
tasks with checkable answers.

    crawl2chat dpo --policy runs/sft --data hh.jsonl.gz --output runs/dpo [--val-data held.jsonl] [--resume]
    crawl2chat dpo --policy runs/sft --data pairs.jsonl --output runs/ipo --set dpo.loss=ipo --set dpo.beta=0.5
    crawl2chat grpo --policy runs/sft --task arithmetic --output runs/grpo --set grpo.arithmetic.max_operand=99
    crawl2chat grpo --policy runs/sft --task gsm8k --data gsm8k/train.jsonl.gz --val-data gsm8k/test.jsonl.gz --output runs/grpo
    torchrun --nproc-per-node 8 -m flows.cli grpo --policy ... --task gsm8k --data ... --output ...

`--policy` takes a run's output (its newest complete checkpoint) or one checkpoint folder.
Settings are the `dpo.*` and `grpo.*` sections (infra/settings/rl.py), each with its own loop
under `dpo.train.*` / `grpo.train.*`. Progress goes to stderr; the summary is printed as JSON
on stdout when training ends.
"""

from __future__ import annotations

import argparse

from flows.cli import add_config_args, parse_overrides
from flows.commands.train import run_training_command


def register(commands: argparse._SubParsersAction) -> None:
    dpo = commands.add_parser("dpo", help="direct preference optimisation (or IPO) from preference pairs")
    dpo.add_argument("--policy", required=True, help="the starting checkpoint (also the frozen reference), local or s3://")
    dpo.add_argument("--data", required=True, nargs="+", action="extend",
                     help="preference pairs: files, globs or folders (HH-RLHF, LLaMA-Factory, TRL layouts; auto-detected)")
    dpo.add_argument("--val-data", nargs="+", action="extend", help="held-out pairs (default: dpo.val_fraction of --data)")
    dpo.add_argument("--output", "-o", required=True, help="where checkpoints, metrics.jsonl and the reference log-probabilities go")
    dpo.add_argument("--resume", action="store_true", help="continue from the output's newest checkpoint, if any")
    add_config_args(dpo)
    dpo.set_defaults(handler=_dpo)

    grpo = commands.add_parser("grpo", help="group relative policy optimisation on a task with checkable answers")
    grpo.add_argument("--policy", required=True, help="the starting checkpoint (also the reference when grpo.beta > 0)")
    grpo.add_argument("--task", choices=["arithmetic", "gsm8k"], help="default: grpo.task")
    grpo.add_argument("--data", nargs="+", action="extend",
                      help="problems as {question, answer ending '#### <n>'} rows (GSM8K's layout); needed for gsm8k")
    grpo.add_argument("--val-data", nargs="+", action="extend",
                      help="held-out problems (default: grpo.val_problems rows held out of --data, or generated)")
    grpo.add_argument("--output", "-o", required=True, help="where checkpoints, metrics.jsonl and samples.jsonl go")
    grpo.add_argument("--resume", action="store_true", help="continue from the output's newest checkpoint, if any")
    add_config_args(grpo)
    grpo.set_defaults(handler=_grpo)


def _run(stage, args: argparse.Namespace, **kwargs) -> int:
    from infra.settings import load_settings

    settings = load_settings(args.config, parse_overrides(args.set))
    return run_training_command(
        lambda: stage(settings, args.policy, output_uri=args.output, val_data=args.val_data, resume=args.resume, **kwargs))


def _dpo(args: argparse.Namespace) -> int:
    from tasks.train.dpo import dpo

    return _run(dpo, args, data=args.data)


def _grpo(args: argparse.Namespace) -> int:
    from tasks.train.grpo import grpo

    return _run(grpo, args, task=args.task, data=args.data)
