"""The `crawl2chat` command line: one entry point, commands grouped by domain in `flows/commands/`.

    crawl2chat run                     whole data flow on a generated sample crawl
    crawl2chat run --snapshot CC-MAIN-2024-51 --max-warcs 2 --output s3://bucket/run
    crawl2chat filter | dedup | tokenize | tokenizer train     one data stage
    crawl2chat serve --cron "0 6 * * 1" --snapshot latest --output s3://bucket/cc
    crawl2chat sample-crawl | blocklist load | seaweed
    crawl2chat pretrain --tokens data/run/tokens --output data/base --preset cpu-tiny
    crawl2chat generate --checkpoint data/base --prompt "Once upon a time"
    crawl2chat up | status | down      the local stack: Prefect server + UI, SeaweedFS, workers, Spark
    crawl2chat deploy --output s3://crawl2chat/cc                  deployments in their work pools
    crawl2chat backfill --snapshots CC-MAIN-2024-10,CC-MAIN-2024-18 --output s3://crawl2chat/cc
    crawl2chat chat --checkpoint runs/sft | serve-model --checkpoint runs/sft     talk to a model

Each module in `COMMAND_MODULES` adds its sub-commands with `register(commands)` and gives each
a `handler(args) -> exit code`. Errors a user can fix (a missing input, an empty glob, an
unwritable bucket, a bad config, an output that another run holds or that was made under other
settings) are reported here in one line with exit code 2, never as a stack trace. A stage whose
units failed ends with exit code 1 and the list of what failed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any

from pydantic import ValidationError

from infra.services import ServiceError
from infra.storage import StorageError
from tasks.jobs.units import UnitsFailed
from tasks.readers.inputs import InputError

USER_ERRORS = (InputError, StorageError, ServiceError, FileNotFoundError, ValueError)

COMMAND_MODULES = [
    "flows.commands.data",
    "flows.commands.export",
    "flows.commands.chat_data",
    "flows.commands.train",
    "flows.commands.service",
    "flows.commands.chat",
]


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


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """`--config FILE` and repeatable `--set SECTION.FIELD=VALUE`, shared by every command."""
    parser.add_argument("--config", help="YAML config file (see README: Configuration)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
        help='override one setting, e.g. filter.language.languages=["en","de"] (repeatable)',
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crawl2chat", description="From Common Crawl WARC files to a chat model.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    return parser


def _prefect_defaults() -> None:
    """Prefect's local server (SQLite) needs more than its 20 s default to start on a busy
    2-core machine, and must not phone home from an offline one. Explicit settings win."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def main(argv: list[str] | None = None) -> int:
    _prefect_defaults()
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        print(f"crawl2chat: error: invalid settings: {problems}", file=sys.stderr)
        return 2
    except UnitsFailed as error:
        print(f"crawl2chat: error: {error}", file=sys.stderr)
        for uri, problem in error.failed.items():
            print(f"failed: {uri}: {problem}", file=sys.stderr)
        return 1
    except USER_ERRORS as error:
        print(f"crawl2chat: error: {str(error).splitlines()[0] if str(error) else type(error).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
