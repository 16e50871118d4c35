"""The export command: a checkpoint to a Hugging Face directory that transformers, vLLM and
llama.cpp's converter load with no code of ours (model/export.py says what is in it).

    crawl2chat export-hf --checkpoint runs/base --output hf/base
    crawl2chat export-hf --checkpoint s3://bucket/runs/sft/checkpoints/step-00001000 --output hf/sft --dtype bfloat16
"""

from __future__ import annotations

import argparse

from flows.cli import add_config_args, parse_overrides


def register(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export-hf", help="checkpoint -> Hugging Face directory (config.json, model.safetensors, tokenizer)")
    export.add_argument("--checkpoint", required=True, help="a run's output (its newest complete checkpoint) or one checkpoint folder, local or s3://")
    export.add_argument("--output", "-o", required=True, help="the directory to write (created if absent; our files in it are replaced)")
    export.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="dtype of the exported weights")
    add_config_args(export)
    export.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from infra.settings import load_settings
    from infra.storage import Storage
    from model.export import export_checkpoint

    settings = load_settings(args.config, parse_overrides(args.set))
    summary = export_checkpoint(args.checkpoint, args.output, Storage(settings.storage), args.dtype)
    print(
        f"exported {summary['stage']} step {summary['step']} ({summary['parameters']:,} parameters) from {summary['checkpoint']}\n"
        f"  -> {summary['output']}: {summary['architecture']}, {summary['dtype']}; "
        f"load with AutoModelForCausalLM.from_pretrained({summary['output']!r})"
    )
    return 0
