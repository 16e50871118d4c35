"""Prefect flows of the data half: crawl -> filtered documents -> deduplicated -> token shards.

Each stage is a Prefect task around one Spark job from `tasks/jobs/`; the flows chain them and
publish every stage's funnel as artifacts, so the Prefect UI shows documents in and out and why
each was dropped, and a progress artifact per stage that moves while its job runs (WARC files
filtered, files rewritten by dedup, files tokenized, each of its total: flows/progress.py).
Flows and tasks take the config file and overrides, never a loaded `Settings`, and load their
settings with `run_settings` (flows/credentials.py): credentials come from the environment or a
Prefect Secret block, never from parameters, which Prefect stores and shows. Stages are
resumable on their own (progress markers under each stage's output), so retrying a task or
re-running the flow after a crash skips finished work.

A stage with a failed unit fails its task (`UnitsFailed`, listing what failed; Prefect retries
it once, which redoes only the failed units) and so the flow run: nothing partial goes on to the
next stage unless the run says `allow_partial`, and then every stage's stats and the manifest
record what they lack. `force` redoes work that settings or inputs have made stale instead of
refusing it. A flow holds a lease on its output, so a second run on it stops at once.

Layout of one run's output (local path or s3:// URI):
    <output>/filtered/   docs parts + stats.json          (crawl-to-docs)
    <output>/deduped/    docs parts + stats.json + removed/ (dedup)
    <output>/tokens/     tokenizer.json + train/ val/ shards + manifest.json (tokenize)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from flows.credentials import refuse_credentials, run_settings
from flows.progress import ProgressArtifact
from flows.report import dedup_report, funnel_text, publish_stage_artifacts, tokenize_report
from infra.lease import LeaseHeld, hold_lease
from infra.settings import Settings
from infra.spark import spark_session
from infra.storage import Storage, join
from tasks.jobs.dedup import run_dedup
from tasks.jobs.filter import run_filter
from tasks.jobs.tokenize import run_tokenize
from tasks.jobs.units import StaleProgress, UnitsFailed
from tasks.readers.inputs import InputError, latest_snapshot, resolve_inputs, snapshot_warc_urls
from tasks.samples.crawl import generate_sample_crawl

FILTERED = "filtered"
DEDUPED = "deduped"
TOKENS = "tokens"


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - called outside a run (tests, plain Python)
        return logging.getLogger(__name__)


def snapshot_run(settings: Settings, output: str, snapshot: str | None) -> tuple[str, str | None]:
    """For `--snapshot latest` (scheduled runs): the newest Common Crawl snapshot, written to its
    own folder under `output`, so each new crawl gets a fresh run and a rerun resumes it."""
    if snapshot != "latest":
        return output, snapshot
    resolved = latest_snapshot(settings.input.collinfo_url, settings.input.http_timeout_seconds)
    return join(output, resolved), resolved


def warc_inputs(settings: Settings, inputs: list[str] | None, snapshot: str | None, max_warcs: int | None) -> list[str]:
    """The WARC URIs to process: explicit inputs, or the first `max_warcs` of a snapshot."""
    if snapshot:
        return snapshot_warc_urls(
            snapshot, settings.input.commoncrawl_base_url, max_warcs or settings.input.max_warcs, settings.input.http_timeout_seconds
        )
    if not inputs:
        raise InputError("no input given: pass --input PATH/GLOB/s3://... or --snapshot CC-MAIN-YYYY-WW")
    uris = resolve_inputs(inputs, Storage(settings.storage))
    limit = max_warcs or settings.input.max_warcs
    return uris[:limit] if limit else uris


Overrides = dict[str, Any] | None


def worth_retrying(task, task_run, state) -> bool:
    """Prefect retries a stage whose units failed (only they are redone), never one refused for a
    reason a retry cannot change: another run holds the output, or it was made under other
    settings or from other input."""
    try:
        state.result()
    except (LeaseHeld, StaleProgress, InputError):
        return False
    except Exception:  # noqa: BLE001 - anything else may pass
        return True
    return True


def require_complete(stage: str, failed: dict[str, str], allow_partial: bool) -> None:
    """Fail the stage (and so the flow run) when units failed, unless partial results may go on."""
    if failed and not allow_partial:
        raise UnitsFailed(stage, failed)
    if failed:
        _logger().warning("%s: going on without %d failed unit(s) (--allow-partial)", stage, len(failed))


@task(name="filter-warcs", retries=1, retry_delay_seconds=5, retry_condition_fn=worth_retrying)
def filter_stage(
    inputs: list[str], output: str, config_file: str | None, overrides: Overrides, snapshot: str = "",
    force: bool = False, allow_partial: bool = False,
) -> dict[str, Any]:
    settings = run_settings(config_file, overrides)
    progress = ProgressArtifact("filter-progress", "filter: WARC files done")
    stats = run_filter(spark_session(settings.spark), inputs, output, settings, snapshot, force, progress.update)
    publish_stage_artifacts("filter", stats)
    _logger().info("filter funnel:\n%s", funnel_text(stats))
    require_complete("filter", stats["inputs_failed"], allow_partial)
    return stats


@task(name="dedup-docs", retries=1, retry_delay_seconds=5, retry_condition_fn=worth_retrying)
def dedup_stage(
    input_uri: str, output: str, config_file: str | None, overrides: Overrides, force: bool = False,
    allow_partial: bool = False,
) -> dict[str, Any]:
    settings = run_settings(config_file, overrides)
    progress = ProgressArtifact("dedup-progress", "dedup: document files rewritten")
    stats = run_dedup(spark_session(settings.spark), input_uri, output, settings, force, progress.update)
    report = dedup_report(stats, output)
    publish_stage_artifacts("dedup", report)
    _logger().info("dedup funnel:\n%s", funnel_text(report))
    require_complete("dedup", stats["files_failed"], allow_partial)
    return stats


@task(name="tokenize-docs", retries=1, retry_delay_seconds=5, retry_condition_fn=worth_retrying)
def tokenize_stage(
    input_uri: str, output: str, config_file: str | None, overrides: Overrides, tokenizer_uri: str | None = None,
    force: bool = False, allow_partial: bool = False,
) -> dict[str, Any]:
    settings = run_settings(config_file, overrides)
    progress = ProgressArtifact("tokenize-progress", "tokenize: document files tokenized")
    report = run_tokenize(
        spark_session(settings.spark), input_uri, output, settings, tokenizer_uri, force, allow_partial, progress.update
    )
    publish_stage_artifacts("tokenize", tokenize_report(report))
    _logger().info("tokenize: %s", json.dumps(tokenize_report(report)["totals"]))
    require_complete("tokenize", report["failed"], allow_partial)
    return report


@flow(name="crawl-to-docs", log_prints=True)
def crawl_to_docs(
    output: str,
    inputs: list[str] | None = None,
    snapshot: str | None = None,
    max_warcs: int | None = None,
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    allow_partial: bool = False,
) -> dict[str, Any]:
    """WARC files (paths, globs, s3://, a Common Crawl snapshot or `latest`) -> filtered documents."""
    settings = run_settings(config_file, overrides)
    output, snapshot = snapshot_run(settings, output, snapshot)
    uris = warc_inputs(settings, inputs, None if inputs else snapshot, max_warcs)
    _logger().info("filtering %d WARC file(s) into %s", len(uris), output)
    return filter_stage(uris, join(output, FILTERED), config_file, overrides, snapshot or "", force, allow_partial)


@flow(name="crawl-to-tokens", log_prints=True)
def crawl_to_tokens(
    output: str,
    inputs: list[str] | None = None,
    snapshot: str | None = None,
    max_warcs: int | None = None,
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    tokenizer_uri: str | None = None,
    force: bool = False,
    allow_partial: bool = False,
) -> dict[str, Any]:
    """The whole data half: WARC files -> filtered -> deduplicated documents -> token shards."""
    settings = run_settings(config_file, overrides)
    output, snapshot = snapshot_run(settings, output, snapshot)
    storage = Storage(settings.storage)
    with hold_lease(storage, output, settings.jobs.lease_seconds, "crawl-to-tokens"):
        filtered = crawl_to_docs(output, inputs, snapshot, max_warcs, config_file, overrides, force, allow_partial)
        deduped = dedup_stage(join(output, FILTERED), join(output, DEDUPED), config_file, overrides, force, allow_partial)
        tokens = tokenize_stage(
            join(output, DEDUPED), join(output, TOKENS), config_file, overrides, tokenizer_uri, force, allow_partial
        )
    return {"filter": filtered, "dedup": deduped, "tokenize": tokens}


@flow(name="dedup-docs", log_prints=True)
def dedup_docs(
    input_uri: str, output: str, config_file: str | None = None, overrides: dict[str, Any] | None = None,
    force: bool = False, allow_partial: bool = False,
) -> dict[str, Any]:
    """Exact and MinHash near-duplicate removal of a documents stage."""
    refuse_credentials(overrides)
    return dedup_stage(input_uri, output, config_file, overrides, force, allow_partial)


@flow(name="tokenize-docs", log_prints=True)
def tokenize_docs(
    input_uri: str, output: str, config_file: str | None = None, overrides: dict[str, Any] | None = None,
    tokenizer_uri: str | None = None, force: bool = False, allow_partial: bool = False,
) -> dict[str, Any]:
    """Documents -> BPE token shards and manifest (training the tokenizer if none is given)."""
    refuse_credentials(overrides)
    return tokenize_stage(input_uri, output, config_file, overrides, tokenizer_uri, force, allow_partial)


def sample_inputs(output_dir: str | Path, seed: int = 0) -> list[str]:
    """Generate the small built-in sample crawl (used when a run is given no input)."""
    crawl = generate_sample_crawl(output_dir, seed=seed)
    return [str(path) for path in crawl.warc_paths]
