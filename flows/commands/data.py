"""The main command and the data half's: crawl to chat model, each data stage, serving, utilities.

    crawl2chat run                     crawl to chat model on a generated sample crawl (crawl-to-chat)
    crawl2chat run --data-only         the data flow alone (crawl-to-tokens)
    crawl2chat run --snapshot CC-MAIN-2024-51 --max-warcs 2 --output s3://bucket/run --rl dpo
    crawl2chat filter --input 'crawl/*.warc.gz' --output out/          (writes out/filtered/)
    crawl2chat dedup --input out/filtered --output deduped/
    crawl2chat tokenizer train --input deduped/ --output tokens/
    crawl2chat tokenize --input deduped/ --output s3://bucket/tokens
    crawl2chat serve --cron "0 6 * * 1" --snapshot latest --max-warcs 100 --output s3://bucket/cc
    crawl2chat sample-crawl --output crawl/
    crawl2chat blocklist load --from ut1.tar.gz --to lists/
    crawl2chat seaweed --dir .crawl2chat/seaweedfs

`run`, `filter`, `dedup` and `tokenize` take `--force` (redo work made stale by other settings
or changed inputs, instead of refusing it) and `--allow-partial` (go on without failed units).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from flows.cli import add_config_args, parse_overrides
from infra.settings import SeaweedSettings


def _add_run_policy_args(parser: argparse.ArgumentParser) -> None:
    """What a rerun may do with earlier work that no longer matches, and with failed units."""
    parser.add_argument("--force", action="store_true",
                        help="redo work done under other settings or on inputs that changed since (default: refuse)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="go on without units that failed (default: stop, exit 1); the stats and manifest list them")


def _add_input_args(parser: argparse.ArgumentParser, required_output: bool = True) -> None:
    parser.add_argument("--input", "-i", action="append", dest="inputs", help="WARC path, glob, directory, s3:// or http(s) URI (repeatable)")
    parser.add_argument("--snapshot", help="Common Crawl snapshot id, e.g. CC-MAIN-2024-51, or 'latest' (output goes to <output>/<id>)")
    parser.add_argument("--max-warcs", type=int, help="process at most this many WARC files")
    parser.add_argument("--output", "-o", required=required_output, default=None if required_output else "data/run", help="local directory or s3://bucket/prefix")
    add_config_args(parser)


def _add_stage_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", "-i", required=True, dest="input_uri", help="a documents stage (its docs/ parts), local or s3://")
    parser.add_argument("--output", "-o", required=True, help="local directory or s3://bucket/prefix")
    add_config_args(parser)


def register(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="crawl to chat model (with no input, on a generated sample crawl)")
    _add_input_args(run, required_output=False)
    run.add_argument("--ephemeral", action="store_true", help="report to a temporary Prefect server instead of the local stack")
    run.add_argument("--data-only", action="store_true", help="the data flow alone: WARC files to token shards")
    _add_run_policy_args(run)
    from flows.commands.train import add_training_args

    add_training_args(run, preset_default="cpu-tiny", with_force=False)  # --force: the run policy's, for every stage
    run.set_defaults(handler=_run_data_flow)

    filter_ = commands.add_parser("filter", help="WARC files -> filtered documents (Parquet) + stats.json")
    _add_input_args(filter_)
    _add_run_policy_args(filter_)
    filter_.set_defaults(handler=_run_data_flow)

    for name, help_text in (
        ("dedup", "documents -> exact and MinHash near-duplicate removal -> documents"),
        ("tokenize", "documents -> BPE token shards + manifest.json (trains the tokenizer if needed)"),
    ):
        stage = commands.add_parser(name, help=help_text)
        _add_stage_args(stage)
        _add_run_policy_args(stage)
        stage.set_defaults(handler=_run_stage)
        if name == "tokenize":
            stage.add_argument("--tokenizer", help="an existing tokenizer.json to use instead of training one")

    tokenizer = commands.add_parser("tokenizer", help="BPE tokenizer")
    tokenizer_commands = tokenizer.add_subparsers(dest="tokenizer_command", required=True)
    train = tokenizer_commands.add_parser("train", help="train on a sample of documents; report bytes per token")
    _add_stage_args(train)
    train.set_defaults(handler=_run_stage)

    serve = commands.add_parser("serve", help="serve the crawl-to-tokens flow as a Prefect deployment (scheduled runs)")
    _add_input_args(serve)
    serve.add_argument("--cron", help="cron schedule, e.g. '0 6 * * 1'; none: run on demand from the UI")
    serve.add_argument("--name", default="crawl-to-tokens")
    serve.set_defaults(handler=_serve)

    sample = commands.add_parser("sample-crawl", help="write a small synthetic crawl of WARC files")
    sample.add_argument("--output", "-o", required=True)
    sample.add_argument("--warcs", type=int, default=2)
    sample.add_argument("--pages", type=int, default=60, help="pages per WARC")
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(handler=_sample_crawl)

    blocklist = commands.add_parser("blocklist", help="URL blocklists")
    blocklist_commands = blocklist.add_subparsers(dest="blocklist_command", required=True)
    load = blocklist_commands.add_parser("load", help="import a UT1 blocklist (directory, .tar.gz file or URL) for filter.url.blocklist_path")
    load.add_argument("--from", dest="source", required=True)
    load.add_argument("--to", dest="dest", required=True)
    load.set_defaults(handler=_blocklist_load)

    seaweed = commands.add_parser("seaweed", help="run a local SeaweedFS S3 server in the foreground")
    seaweed.add_argument("--dir", default=SeaweedSettings().data_dir)
    seaweed.add_argument("--port", type=int, default=SeaweedSettings().s3_port)
    seaweed.set_defaults(handler=_seaweed)


def _print_stage(stats: dict[str, Any]) -> None:
    from flows.report import funnel_text

    print(f"\n== {stats['stage']} -> {stats['output']} ({stats['wall_seconds']} s)")
    print(funnel_text(stats))
    _print_problems(stats)


def _print_problems(stats: dict[str, Any]) -> None:
    for uri, error in (stats.get("inputs_failed") or {}).items():
        print(f"failed: {uri}: {error}", file=sys.stderr)
    for uri, error in (stats.get("inputs_quarantined") or {}).items():
        print(f"quarantined: {uri}: {error}", file=sys.stderr)


def _run_data_flow(args: argparse.Namespace) -> int:
    from flows.commands.service import prefect_server
    from flows.credentials import run_settings
    from flows.crawl_to_tokens import crawl_to_docs, crawl_to_tokens, sample_inputs, snapshot_run, warc_inputs

    inputs = args.inputs
    if args.command == "run" and not inputs and not args.snapshot:
        sample_dir = Path(args.output if "://" not in args.output else "data") / "sample-crawl"
        inputs = sample_inputs(sample_dir)
        print(f"no input given: generated a sample crawl of {len(inputs)} WARC file(s) in {sample_dir}")
    overrides = parse_overrides(args.set)
    # Resolve (and so validate) inputs and settings before Prefect starts: a typo in a path
    # should cost one line and no flow run. Credentials in --set are refused here, in one line.
    settings = run_settings(args.config, overrides)
    output, snapshot = snapshot_run(settings, args.output, args.snapshot)
    uris = warc_inputs(settings, inputs, snapshot, args.max_warcs)
    if args.command == "run" and not args.data_only:
        return _run_crawl_to_chat(args, settings, output, uris, snapshot, overrides, sample=not args.inputs and not args.snapshot)
    flow = crawl_to_tokens if args.command == "run" else crawl_to_docs
    # `run` uses the local stack (starting it), so the run stays in the UI; `filter` uses it if it is up.
    with prefect_server(settings, ephemeral=getattr(args, "ephemeral", False), start=args.command == "run"):
        result = flow(output=output, inputs=uris, snapshot=snapshot, config_file=args.config, overrides=overrides,
                      force=args.force, allow_partial=args.allow_partial)
    if args.command == "filter":
        _print_stage(result)
        return 0
    _print_stage(result["filter"])
    _print_dedup(result["dedup"], f"{output.rstrip('/')}/deduped")
    _print_tokens(result["tokenize"])
    return 0


def _run_crawl_to_chat(args: argparse.Namespace, settings, output: str, uris: list[str], snapshot: str | None,
                       overrides: dict[str, Any], sample: bool) -> int:
    """`crawl2chat run`: the crawl-to-chat flow; on the sample crawl with its embedded settings."""
    from flows.commands.service import prefect_server
    from flows.commands.train import preflight_training, print_training
    from flows.crawl_to_chat import SAMPLE_RUN, crawl_to_chat
    from infra.settings import merge_settings

    if sample:
        overrides = merge_settings(SAMPLE_RUN, overrides)
    settings = preflight_training(args, output, overrides)
    with prefect_server(settings, ephemeral=args.ephemeral, start=True):
        result = crawl_to_chat(output=output, inputs=uris, snapshot=snapshot, rl=args.rl, until=args.until,
                               preset=args.preset, processes=args.processes, force=args.force,
                               allow_partial=args.allow_partial, config_file=args.config, overrides=overrides)
    data = result["data"]
    _print_stage(data["filter"])
    _print_dedup(data["dedup"], f"{output.rstrip('/')}/deduped")
    _print_tokens(data["tokenize"])
    print_training(result["train"], result["report"], settings)
    return 0


def _print_dedup(stats: dict[str, Any], output: str) -> None:
    from flows.report import dedup_report

    _print_stage({"stage": "dedup", **dedup_report(stats, output)})


def _print_tokens(report: dict[str, Any]) -> None:
    from flows.report import tokenize_report

    summary = tokenize_report(report)
    print(f"\n== tokenize -> {summary['output']} ({summary['wall_seconds']} s)")
    for key, value in summary["totals"].items():
        print(f"{key:<20}{value}")
    _print_problems(summary)


def _run_stage(args: argparse.Namespace) -> int:
    from flows.credentials import run_settings
    from infra.storage import Storage, StorageError
    from tasks.formats.docs import list_doc_files

    overrides = parse_overrides(args.set)
    settings = run_settings(args.config, overrides)  # refuses credentials in --set
    # Check the input before Prefect starts: a wrong --input costs one line and no flow run.
    if not list_doc_files(Storage(settings.storage), args.input_uri):
        raise StorageError(f"no document files (docs/*.parquet) under {args.input_uri}")
    from flows.crawl_to_tokens import dedup_docs, tokenize_docs  # Prefect, only once the input is known good

    if args.command == "dedup":
        stats = dedup_docs(args.input_uri, args.output, args.config, overrides, args.force, args.allow_partial)
        _print_dedup(stats, args.output)
        return 0
    if args.command == "tokenize":
        report = tokenize_docs(args.input_uri, args.output, args.config, overrides, args.tokenizer, args.force, args.allow_partial)
        _print_tokens(report)
        return 0
    # tokenizer train: no Spark, no flow; a sample of documents on this machine.
    from tasks.jobs.tokenize import train_tokenizer_from_docs

    print(json.dumps(train_tokenizer_from_docs(Storage(settings.storage), args.input_uri, args.output, settings.tokenizer), indent=2))
    return 0


def build_deployment(args: argparse.Namespace):
    """The crawl-to-tokens deployment `serve` runs: its schedule and its parameters (flows/deploy.py
    builds it, as it builds those `crawl2chat deploy` puts in the work pools)."""
    from flows.deploy import crawl_to_tokens_deployment

    overrides = parse_overrides(args.set)  # checked for credentials where the deployment is made
    parameters = {"output": args.output, "inputs": args.inputs, "snapshot": args.snapshot, "max_warcs": args.max_warcs,
                  "config_file": args.config, "overrides": overrides}
    return crawl_to_tokens_deployment(args.name, parameters, args.cron)


def _serve(args: argparse.Namespace) -> int:
    from prefect import serve

    serve(build_deployment(args))
    return 0


def _sample_crawl(args: argparse.Namespace) -> int:
    from tasks.samples.crawl import generate_sample_crawl

    crawl = generate_sample_crawl(args.output, num_warcs=args.warcs, pages_per_warc=args.pages, seed=args.seed)
    print("\n".join(str(path) for path in crawl.warc_paths))
    return 0


def _blocklist_load(args: argparse.Namespace) -> int:
    from tasks.filters.blocklist import import_blocklist

    print(json.dumps(import_blocklist(args.source, args.dest), indent=2))
    return 0


def _seaweed(args: argparse.Namespace) -> int:
    from infra.seaweed import SeaweedServer

    with SeaweedServer(args.dir, s3_port=args.port) as server:
        print(f"SeaweedFS S3 on {server.endpoint_url} (Ctrl-C to stop)", flush=True)
        server.process.wait()
    return 0
