"""The `crawl2chat` command line: every stage and the whole data flow, behind Prefect flows.

    crawl2chat run                     whole data flow on a generated sample crawl
    crawl2chat run --snapshot CC-MAIN-2024-51 --max-warcs 2 --output s3://bucket/run
    crawl2chat filter --input 'crawl/*.warc.gz' --output out/
    crawl2chat dedup --input out/ --output deduped/
    crawl2chat tokenizer train --input deduped/ --output tokens/
    crawl2chat tokenize --input deduped/ --output s3://bucket/tokens
    crawl2chat serve --cron "0 6 * * 1" --snapshot latest --max-warcs 100 --output s3://bucket/cc
    crawl2chat sample-crawl --output crawl/
    crawl2chat blocklist load --from ut1.tar.gz --to lists/
    crawl2chat seaweed --dir .crawl2chat/seaweedfs

Errors a user can fix (a missing input, an empty glob, an unwritable bucket, a bad config) are
reported in one line with a non-zero exit code, never as a stack trace.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from infra.settings import SeaweedSettings
from infra.storage import StorageError
from tasks.inputs import InputError

USER_ERRORS = (InputError, StorageError, FileNotFoundError, ValueError)


def _add_input_args(parser: argparse.ArgumentParser, required_output: bool = True) -> None:
    parser.add_argument("--input", "-i", action="append", dest="inputs", help="WARC path, glob, directory, s3:// or http(s) URI (repeatable)")
    parser.add_argument("--snapshot", help="Common Crawl snapshot id, e.g. CC-MAIN-2024-51, or 'latest' (output goes to <output>/<id>)")
    parser.add_argument("--max-warcs", type=int, help="process at most this many WARC files")
    parser.add_argument("--output", "-o", required=required_output, default=None if required_output else "data/run", help="local directory or s3://bucket/prefix")
    parser.add_argument("--config", help="YAML config file (see README: Configuration)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="override one setting, e.g. filter.language.languages=[\"en\",\"de\"] (repeatable)")


def _add_stage_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", "-i", required=True, dest="input_uri", help="a documents stage (its docs/ parts), local or s3://")
    parser.add_argument("--output", "-o", required=True, help="local directory or s3://bucket/prefix")
    parser.add_argument("--config", help="YAML config file")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`a.b.c=value` pairs into a nested dict; values are parsed as JSON when they can be."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects SECTION.FIELD=VALUE, got {pair!r}")
        dotted, raw = pair.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = overrides
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crawl2chat", description="From Common Crawl WARC files to clean documents and token shards.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="the whole data flow; with no input, on a generated sample crawl")
    _add_input_args(run, required_output=False)

    filter_ = commands.add_parser("filter", help="WARC files -> filtered documents (Parquet) + stats.json")
    _add_input_args(filter_)

    for name, help_text in (
        ("dedup", "documents -> exact and MinHash near-duplicate removal -> documents"),
        ("tokenize", "documents -> BPE token shards + manifest.json (trains the tokenizer if needed)"),
    ):
        stage = commands.add_parser(name, help=help_text)
        _add_stage_args(stage)
        if name == "tokenize":
            stage.add_argument("--tokenizer", help="an existing tokenizer.json to use instead of training one")

    tokenizer = commands.add_parser("tokenizer", help="BPE tokenizer")
    tokenizer_commands = tokenizer.add_subparsers(dest="tokenizer_command", required=True)
    train = tokenizer_commands.add_parser("train", help="train on a sample of documents; report bytes per token")
    _add_stage_args(train)

    serve = commands.add_parser("serve", help="serve the crawl-to-tokens flow as a Prefect deployment (scheduled runs)")
    _add_input_args(serve)
    serve.add_argument("--cron", help="cron schedule, e.g. '0 6 * * 1'; none: run on demand from the UI")
    serve.add_argument("--name", default="crawl-to-tokens")

    sample = commands.add_parser("sample-crawl", help="write a small synthetic crawl of WARC files")
    sample.add_argument("--output", "-o", required=True)
    sample.add_argument("--warcs", type=int, default=2)
    sample.add_argument("--pages", type=int, default=60, help="pages per WARC")
    sample.add_argument("--seed", type=int, default=0)

    blocklist = commands.add_parser("blocklist", help="URL blocklists")
    blocklist_commands = blocklist.add_subparsers(dest="blocklist_command", required=True)
    load = blocklist_commands.add_parser("load", help="import a UT1 blocklist (directory, .tar.gz file or URL) for filter.url.blocklist_path")
    load.add_argument("--from", dest="source", required=True)
    load.add_argument("--to", dest="dest", required=True)

    seaweed = commands.add_parser("seaweed", help="run a local SeaweedFS S3 server in the foreground")
    seaweed.add_argument("--dir", default=SeaweedSettings().data_dir)
    seaweed.add_argument("--port", type=int, default=SeaweedSettings().s3_port)
    return parser


def _print_stage(stats: dict[str, Any]) -> None:
    from flows.report import funnel_text

    print(f"\n== {stats['stage']} -> {stats['output']} ({stats['wall_seconds']} s)")
    print(funnel_text(stats))
    for uri, error in (stats.get("inputs_failed") or {}).items():
        print(f"failed: {uri}: {error}", file=sys.stderr)


def _run_data_flow(args: argparse.Namespace) -> int:
    from flows.crawl_to_tokens import crawl_to_docs, crawl_to_tokens, sample_inputs, snapshot_run, warc_inputs
    from infra.settings import load_settings

    inputs = args.inputs
    if args.command == "run" and not inputs and not args.snapshot:
        sample_dir = Path(args.output if "://" not in args.output else "data") / "sample-crawl"
        inputs = sample_inputs(sample_dir)
        print(f"no input given: generated a sample crawl of {len(inputs)} WARC file(s) in {sample_dir}")
    overrides = parse_overrides(args.set)
    # Resolve (and so validate) inputs and settings before Prefect starts: a typo in a path
    # should cost one line and no flow run.
    settings = load_settings(args.config, overrides)
    output, snapshot = snapshot_run(settings, args.output, args.snapshot)
    uris = warc_inputs(settings, inputs, snapshot, args.max_warcs)
    flow = crawl_to_tokens if args.command == "run" else crawl_to_docs
    result = flow(output=output, inputs=uris, snapshot=snapshot, config_file=args.config, overrides=overrides)
    if args.command == "filter":
        _print_stage(result)
        return 1 if result["inputs_failed"] and not result["inputs_done"] else 0
    _print_stage(result["filter"])
    _print_dedup(result["dedup"], f"{output.rstrip('/')}/deduped")
    _print_tokens(result["tokenize"])
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
    for uri, error in (report.get("failed") or {}).items():
        print(f"failed: {uri}: {error}", file=sys.stderr)


def _run_stage(args: argparse.Namespace) -> int:
    from flows.crawl_to_tokens import dedup_docs, tokenize_docs

    overrides = parse_overrides(args.set)
    if args.command == "dedup":
        stats = dedup_docs(args.input_uri, args.output, args.config, overrides)
        _print_dedup(stats, args.output)
        return 1 if stats.get("files_failed") else 0
    if args.command == "tokenize":
        report = tokenize_docs(args.input_uri, args.output, args.config, overrides, args.tokenizer)
        _print_tokens(report)
        return 1 if report.get("failed") else 0
    # tokenizer train: no Spark, no flow; a sample of documents on this machine.
    from infra.settings import load_settings
    from infra.storage import Storage
    from tasks.jobs.tokenize import train_tokenizer_from_docs

    settings = load_settings(args.config, overrides)
    print(json.dumps(train_tokenizer_from_docs(Storage(settings.storage), args.input_uri, args.output, settings.tokenizer), indent=2))
    return 0


def build_deployment(args: argparse.Namespace):
    """The crawl-to-tokens deployment `serve` runs: its schedule and its parameters. One run at a
    time, so a slow crawl is never processed twice over by overlapping scheduled runs."""
    from flows.crawl_to_tokens import crawl_to_tokens

    parameters = {"output": args.output, "inputs": args.inputs, "snapshot": args.snapshot, "max_warcs": args.max_warcs,
                  "config_file": args.config, "overrides": parse_overrides(args.set)}
    return crawl_to_tokens.to_deployment(
        name=args.name, cron=args.cron, parameters=parameters, concurrency_limit=1, tags=["crawl2chat", "data"]
    )


def _serve(args: argparse.Namespace) -> int:
    from prefect import serve

    serve(build_deployment(args))
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in ("run", "filter"):
        return _run_data_flow(args)
    if args.command in ("dedup", "tokenize", "tokenizer"):
        return _run_stage(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "sample-crawl":
        from tasks.sample_crawl import generate_sample_crawl

        crawl = generate_sample_crawl(args.output, num_warcs=args.warcs, pages_per_warc=args.pages, seed=args.seed)
        print("\n".join(str(path) for path in crawl.warc_paths))
        return 0
    if args.command == "blocklist":
        from tasks.blocklist import import_blocklist

        print(json.dumps(import_blocklist(args.source, args.dest), indent=2))
        return 0
    if args.command == "seaweed":
        from infra.seaweed import SeaweedServer

        with SeaweedServer(args.dir, s3_port=args.port) as server:
            print(f"SeaweedFS S3 on {server.endpoint_url} (Ctrl-C to stop)", flush=True)
            server.process.wait()
        return 0
    raise AssertionError(f"unhandled command {args.command}")


def _prefect_defaults() -> None:
    """Prefect's local server (SQLite) needs more than its 20 s default to start on a busy
    2-core machine, and must not phone home from an offline one. Explicit settings win."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def main(argv: list[str] | None = None) -> int:
    _prefect_defaults()
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        print(f"crawl2chat: error: invalid settings: {problems}", file=sys.stderr)
        return 2
    except USER_ERRORS as error:
        print(f"crawl2chat: error: {str(error).splitlines()[0] if str(error) else type(error).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
