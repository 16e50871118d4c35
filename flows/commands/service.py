"""The service commands: the local stack, the deployments in their work pools, backfills.

    crawl2chat up [--spark] [--gpu | --no-gpu]   Prefect server and UI, SeaweedFS, a worker per pool (+ Spark)
    crawl2chat status | down
    crawl2chat deploy --output s3://crawl2chat/cc [--cron "0 6 * * 1"] [--max-warcs N] [--dedup-across]
    crawl2chat backfill --snapshots CC-MAIN-2024-10,CC-MAIN-2024-18 --output s3://crawl2chat/cc [--dedup-across]
    crawl2chat backfill --from 2024-01-01 --to 2024-06-30 --output s3://crawl2chat/cc

Which Prefect server the flow commands report to is decided in one place, `prefect_server`:
the one PREFECT_API_URL (or the active Prefect profile) names; else, with `--ephemeral`,
Prefect's own temporary server; else the local stack, started when it is not running, so a run
stays in the UI at http://127.0.0.1:4200 after the command ends.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager

from flows.cli import add_config_args, parse_overrides
from infra.services import SERVER, Stack, ServiceState
from infra.settings import Settings, load_settings


def configured_api_url() -> str | None:
    """The Prefect API the user chose (environment, then profile or a test harness), if any."""
    from prefect.settings import PREFECT_API_URL

    return os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value() or None


def stack_of(settings: Settings) -> Stack:
    return Stack(settings.services, settings.seaweed, api_url=configured_api_url())


@contextmanager
def prefect_server(settings: Settings, ephemeral: bool = False, start: bool = True, gpu: bool | None = None) -> Iterator[str | None]:
    """Run the block's flows against the chosen Prefect server; yields its UI address (None for
    Prefect's temporary one). `start=False` uses the local stack only if it is already up."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = configured_api_url()
    if configured:
        # (set again: an environment variable set after Prefect was imported is not yet seen)
        with temporary_settings(updates={PREFECT_API_URL: configured}):
            yield configured.removesuffix("/").removesuffix("/api")
        return
    stack = stack_of(settings)
    if ephemeral or (not start and stack.process_of(SERVER) is None):
        yield None
        return
    if start:
        _announce_start(stack, settings, gpu)
        stack.up(spark=settings.services.spark, gpu=gpu)
    print(f"Prefect UI: {stack.ui_url} (the run stays there; `crawl2chat status` / `down`)", flush=True)
    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        yield stack.ui_url


def _announce_start(stack: Stack, settings: Settings, gpu: bool | None) -> None:
    missing = [s.name for s in stack.services(settings.services.spark, gpu) if stack.process_of(s.name) is None]
    if missing:
        print(f"starting the local stack ({', '.join(missing)}); `crawl2chat down` stops it", flush=True)


# --- up, status, down ------------------------------------------------------------------------


def _print_states(stack: Stack, states: list[ServiceState]) -> None:
    for state in states:
        pid = f"pid {state.pid}" if state.pid else ""
        print(f"{state.name:<16}{state.state:<11}{state.url:<34}{pid}")
    running = {state.name for state in states if state.state in ("running", "external")}
    print()
    if SERVER in running:
        print(f"Prefect UI      {stack.ui_url}")
    if "seaweedfs" in running:
        print(f"S3 (SeaweedFS)  {stack.s3_url}")
    if "spark-master" in running:
        print(f"Spark master    {stack.spark_master_url} (UI http://{stack.settings.host}:{stack.settings.spark_master_ui_port})")
    if running and stack.env_file.exists():
        print(f"Point a shell at it: set -a; . {stack.env_file}; set +a")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, parse_overrides(args.set))


def _up(args: argparse.Namespace) -> int:
    settings = _settings(args)
    stack = stack_of(settings)
    states = stack.up(spark=args.spark or settings.services.spark, gpu=args.gpu)
    _print_states(stack, states)
    return 0


def _status(args: argparse.Namespace) -> int:
    stack = stack_of(_settings(args))
    states = stack.status()
    _print_states(stack, states)
    return 0 if all(state.state in ("running", "external") for state in states) else 1


def _down(args: argparse.Namespace) -> int:
    stopped = stack_of(_settings(args)).down()
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


# --- deploy, backfill ------------------------------------------------------------------------


def _deploy(args: argparse.Namespace) -> int:
    from flows.deploy import deploy_all, deployments_by_pool

    overrides = parse_overrides(args.set)
    settings = load_settings(args.config, overrides)
    cron = None if args.no_schedule else (args.cron or settings.services.schedule_cron)
    by_pool = deployments_by_pool(
        settings.services, args.output, cron, max_warcs=args.max_warcs, dedup_across=args.dedup_across,
        config_file=args.config, overrides=overrides,
    )
    with prefect_server(settings, gpu=args.gpu) as ui:
        names = deploy_all(settings.services, by_pool)
    print("deployed: " + ", ".join(names))
    print(f"schedule of new-snapshots/scheduled: {cron or 'none (run it from the UI)'}")
    if configured_api_url():
        print("the server is yours: start a worker per pool with `crawl2chat up` where the flows should run")
    print(f"Prefect UI: {ui}/deployments")
    return 0


def _backfill(args: argparse.Namespace) -> int:
    from flows.backfill import backfill, check_snapshots, resolve_snapshots

    overrides = parse_overrides(args.set)
    settings = load_settings(args.config, overrides)
    snapshots = [s for s in args.snapshots.split(",") if s.strip()] if args.snapshots else None
    # Resolved (and checked) before any flow run: a typo costs one line, not a failed run.
    chosen = resolve_snapshots(settings, snapshots, args.since, args.until)
    check_snapshots(args.output, chosen, args.dedup_across, args.max_warcs, args.config, overrides)
    print(f"snapshots: {', '.join(chosen)} -> {args.output}/<snapshot>/", flush=True)
    with prefect_server(settings, ephemeral=args.ephemeral):
        summary = backfill(
            output=args.output, snapshots=chosen, dedup_across=args.dedup_across, max_warcs=args.max_warcs,
            config_file=args.config, overrides=overrides,
        )
    print(f"\n{'snapshot':<18}{'status':<14}{'documents':>10}{'tokens':>12}{'dup. of earlier':>16}")
    for snapshot, entry in summary["snapshots"].items():
        status = "processed" if snapshot in summary["processed"] else "already done"
        print(f"{snapshot:<18}{status:<14}{entry['documents']:>10}{entry['tokens']:>12}{entry['index_duplicates']:>16}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    up = commands.add_parser("up", help="start the local stack: Prefect server and UI, SeaweedFS, a worker per work pool")
    up.add_argument("--spark", action="store_true", help="also a Spark standalone master and worker (spark://127.0.0.1:7077)")
    _add_gpu_args(up)
    add_config_args(up)
    up.set_defaults(handler=_up)

    status = commands.add_parser("status", help="each service of the local stack: running, unhealthy or stopped")
    add_config_args(status)
    status.set_defaults(handler=_status)

    down = commands.add_parser("down", help="stop what `crawl2chat up` started")
    add_config_args(down)
    down.set_defaults(handler=_down)

    deploy = commands.add_parser("deploy", help="create the Prefect deployments in their work pools (starts the stack if needed)")
    deploy.add_argument("--output", "-o", required=True, help="where snapshots go, one folder each (s3://bucket/prefix or a local path)")
    deploy.add_argument("--cron", help="schedule of the new-snapshots deployment (default: services.schedule_cron)")
    deploy.add_argument("--no-schedule", action="store_true", help="no schedule: run everything from the UI")
    deploy.add_argument("--max-warcs", type=int, help="process at most this many WARC files per snapshot")
    deploy.add_argument("--dedup-across", action="store_true", help="deduplicate each snapshot against the earlier ones")
    _add_gpu_args(deploy)
    add_config_args(deploy)
    deploy.set_defaults(handler=_deploy)

    backfill = commands.add_parser("backfill", help="one crawl-to-tokens per Common Crawl snapshot, skipping those done")
    backfill.add_argument("--snapshots", help="comma-separated ids, e.g. CC-MAIN-2024-10,CC-MAIN-2024-18")
    backfill.add_argument("--from", dest="since", metavar="YYYY-MM-DD", help="crawls listed in collinfo.json from this date")
    backfill.add_argument("--to", dest="until", metavar="YYYY-MM-DD", help="... up to this date")
    backfill.add_argument("--output", "-o", required=True, help="local directory or s3://bucket/prefix; a folder per snapshot")
    backfill.add_argument("--max-warcs", type=int, help="process at most this many WARC files per snapshot")
    backfill.add_argument("--dedup-across", action="store_true", help="drop documents already kept by an earlier snapshot")
    backfill.add_argument("--ephemeral", action="store_true", help="use a temporary Prefect server instead of the local stack")
    add_config_args(backfill)
    backfill.set_defaults(handler=_backfill)


def _add_gpu_args(parser: argparse.ArgumentParser) -> None:
    gpu = parser.add_mutually_exclusive_group()
    gpu.add_argument("--gpu", dest="gpu", action="store_true", default=None, help="start the GPU pool's worker")
    gpu.add_argument("--no-gpu", dest="gpu", action="store_false", help="never start the GPU pool's worker")
