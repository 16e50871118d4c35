"""Prefect flows of the data half: crawl -> filtered documents (-> deduplicated -> token shards).

Each stage is a Prefect task around one Spark job from `tasks/jobs/`; the flow chains them and
publishes every stage's funnel as artifacts, so the Prefect UI shows documents in and out and
why each was dropped. Stages are resumable on their own (progress markers under each stage's
output), so retrying a task or re-running the flow after a crash skips finished work.

Layout of one run's output (local path or s3:// URI):
    <output>/filtered/   docs parts + stats.json
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from flows.report import funnel_text, publish_stage_artifacts
from infra.settings import Settings, load_settings
from infra.spark import spark_session
from infra.storage import Storage, join
from tasks.inputs import InputError, resolve_inputs, snapshot_warc_urls
from tasks.jobs.filter import run_filter
from tasks.sample_crawl import generate_sample_crawl

FILTERED = "filtered"


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - called outside a run (tests, plain Python)
        return logging.getLogger(__name__)


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


@task(name="filter-warcs", retries=1, retry_delay_seconds=5)
def filter_stage(inputs: list[str], output: str, settings: Settings, snapshot: str = "") -> dict[str, Any]:
    stats = run_filter(spark_session(settings.spark), inputs, output, settings, snapshot)
    publish_stage_artifacts("filter", stats)
    _logger().info("filter funnel:\n%s", funnel_text(stats))
    return stats


@flow(name="crawl-to-docs", log_prints=True)
def crawl_to_docs(
    output: str,
    inputs: list[str] | None = None,
    snapshot: str | None = None,
    max_warcs: int | None = None,
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """WARC files (paths, globs, s3:// or a Common Crawl snapshot) -> filtered documents."""
    settings = load_settings(config_file, overrides)
    uris = warc_inputs(settings, inputs, None if inputs else snapshot, max_warcs)
    _logger().info("filtering %d WARC file(s) into %s", len(uris), output)
    return filter_stage(uris, join(output, FILTERED), settings, snapshot or "")


def sample_inputs(output_dir: str | Path, seed: int = 0) -> list[str]:
    """Generate the small built-in sample crawl (used when a run is given no input)."""
    crawl = generate_sample_crawl(output_dir, seed=seed)
    return [str(path) for path in crawl.warc_paths]
