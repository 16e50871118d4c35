"""Learning from preferences: the reward model, PPO, best-of-N rejection sampling and RLAIF labelling.

    crawl2chat reward --base runs/sft --data harmless-base_test.jsonl.gz --output runs/reward
    crawl2chat reward --base runs/sft --data pairs.jsonl --output runs/judge --set reward.parts=2 --set reward.part=1
    crawl2chat ppo --policy runs/sft --reward runs/reward --prompts prompts.jsonl --output runs/ppo [--judge runs/judge]
    crawl2chat best-of-n --policy runs/sft --reward runs/reward --prompts prompts.jsonl --output runs/best-of-n
    crawl2chat label --judge http://127.0.0.1:8000/v1 --data pairs.jsonl --output ai-pairs.jsonl
    crawl2chat label --judge runs/reward --data pairs.jsonl --output ai-pairs.jsonl

Checkpoints (`--base`, `--policy`, `--reward`, `--judge`) are a run's output (its newest
complete checkpoint) or one checkpoint folder, local or s3://; `--base` and `--policy` may also
be an exported Hugging Face directory. `--data` and `--prompts` take files, globs or folders in
any of the chat data formats, auto-detected per file (`--format` forces one). Every training
stage takes `--resume` and torchrun; progress goes to stderr, the summary (or the labelling
report) to stdout as JSON. The settings are `reward.*`, `ppo.*`, `best_of_n.*` and `label.*`
(infra/settings/rl.py), each training stage with its own loop settings (`ppo.train.lr`, ...).
"""

from __future__ import annotations

import argparse

from flows.cli import add_config_args, parse_overrides
from flows.commands.train import run_training_command

CHECKPOINT_HELP = "a run's output or one checkpoint folder, local or s3://"


def register(commands: argparse._SubParsersAction) -> None:
    reward = commands.add_parser("reward", help="train a reward model on preference pairs (Bradley-Terry)")
    reward.add_argument("--base", required=True, help=f"the SFT model to start from: {CHECKPOINT_HELP}, or an exported directory")
    reward.add_argument("--data", required=True, nargs="+", action="extend", help="preference pairs: files, globs or folders")
    _common(reward)
    reward.set_defaults(handler=_reward)

    ppo = commands.add_parser("ppo", help="PPO against a reward model, KL-penalised to the starting policy")
    ppo.add_argument("--policy", required=True, help=f"the SFT model to improve: {CHECKPOINT_HELP}, or an exported directory")
    ppo.add_argument("--reward", required=True, help=f"the reward model: {CHECKPOINT_HELP}")
    ppo.add_argument("--prompts", required=True, nargs="+", action="extend", help="prompts: files, globs or folders (pairs files too)")
    ppo.add_argument("--judge", help=f"a held-out reward model checked every eval step: {CHECKPOINT_HELP}")
    _common(ppo)
    ppo.set_defaults(handler=_ppo)

    best = commands.add_parser("best-of-n", help="rejection sampling: keep the best of N replies per prompt, fine-tune on them")
    best.add_argument("--policy", required=True, help=f"the model to sample from and fine-tune: {CHECKPOINT_HELP}, or an exported directory")
    best.add_argument("--reward", required=True, help=f"the reward model that picks: {CHECKPOINT_HELP}")
    best.add_argument("--prompts", required=True, nargs="+", action="extend", help="prompts: files, globs or folders (pairs files too)")
    _common(best)
    best.set_defaults(handler=_best_of_n)

    label = commands.add_parser("label", help="RLAIF: order preference pairs with an AI judge")
    label.add_argument("--judge", required=True, help=f"an OpenAI-compatible endpoint (http://host:port[/v1]) or a reward model: {CHECKPOINT_HELP}")
    label.add_argument("--data", required=True, nargs="+", action="extend", help="the pairs to label: files, globs or folders")
    label.add_argument("--output", "-o", required=True, help="the labelled pairs (TRL layout, .jsonl), local or s3://")
    label.add_argument("--format", default="auto", help="auto (per file) or a pair format name")
    label.add_argument("--resume", action="store_true", help="reuse the verdicts an earlier run already got")
    add_config_args(label)
    label.set_defaults(handler=_label)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", required=True, help="where checkpoints, metrics.jsonl and reports go, local or s3://")
    parser.add_argument("--format", default="auto", help="auto (per file) or a format name")
    parser.add_argument("--resume", action="store_true", help="continue from the output's newest checkpoint, if any")
    add_config_args(parser)


def _run(args: argparse.Namespace, stage) -> int:
    from infra.settings import load_settings

    settings = load_settings(args.config, parse_overrides(args.set))
    return run_training_command(lambda: stage(settings))


def _reward(args: argparse.Namespace) -> int:
    from tasks.train.reward import train_reward

    return _run(args, lambda settings: train_reward(settings, args.base, args.data, args.output, args.format, args.resume))


def _ppo(args: argparse.Namespace) -> int:
    from tasks.train.ppo import ppo

    return _run(args, lambda settings: ppo(settings, args.policy, args.reward, args.prompts, args.output, args.judge, args.format,
                                           args.resume))


def _best_of_n(args: argparse.Namespace) -> int:
    from tasks.train.best_of_n import best_of_n

    return _run(args, lambda settings: best_of_n(settings, args.policy, args.reward, args.prompts, args.output, args.format,
                                                 args.resume))


def _label(args: argparse.Namespace) -> int:
    from tasks.chat.label import label_pairs

    return _run(args, lambda settings: label_pairs(settings, args.judge, args.data, args.output, args.format, args.resume))
