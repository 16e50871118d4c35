"""Many Common Crawl snapshots, one crawl-to-tokens run each: backfills and the new-crawl schedule.

    backfill(output, snapshots=["CC-MAIN-2024-10", "CC-MAIN-2024-18"])    # or since=/until= dates
    new_snapshots(output)       # the crawls in collinfo.json newer than the newest one done

Each snapshot gets its own folder, `<output>/<snapshot id>/` (filtered/, deduped/, tokens/), and
runs as a `crawl-to-tokens` subflow, oldest first. The record of what is done is
`<output>/_snapshots.json`: a snapshot is added (the file rewritten atomically) only after its
token manifest is committed, with the fingerprint of the settings it was made with. A snapshot in
the record under the same fingerprint is skipped; one made under other settings is refused
rather than mixed. A crash mid-snapshot leaves it out of the record, and the next run resumes it
from its stages' progress markers.

With `dedup_across`, every snapshot is also deduplicated against the index of the documents the
snapshots before it kept (`<output>/_dedup_index/`, see tasks/dedup/index.py) and adds its own,
so a page published again in a later crawl is dropped there. The index holds what was processed
before, so backfill in chronological order (as these flows do) to keep the earliest copy.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from prefect import flow, get_run_logger

from flows.crawl_to_tokens import TOKENS, crawl_to_tokens
from infra.settings import Settings, load_settings
from infra.storage import Storage, join
from model.shards import manifest_uri
from tasks.readers.inputs import InputError, check_snapshot_id, list_snapshots, snapshot_week

RECORD_FILE = "_snapshots.json"
INDEX_DIR = "_dedup_index"
# What a snapshot's output depends on. Where services run (storage endpoint, Spark master, the
# local stack) does not change it, so a run moved to a cluster still counts as done.
_NOT_IN_FINGERPRINT = {"storage", "spark", "seaweed", "services", "config_file"}


# --- choosing snapshots ----------------------------------------------------------------------


def parse_date(text: str | dt.date | None) -> dt.date | None:
    if text is None or isinstance(text, dt.date):
        return text
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InputError(f"invalid date {text!r}: expected YYYY-MM-DD") from None


def select_snapshots(available: list[str], since: dt.date | None, until: dt.date | None) -> list[str]:
    """The snapshots among `available` whose crawl started between `since` and `until` (inclusive)."""
    if since and until and since > until:
        raise InputError(f"--from {since} is after --to {until}")
    return sorted(s for s in available if (not since or snapshot_week(s) >= since) and (not until or snapshot_week(s) <= until))


def resolve_snapshots(settings: Settings, snapshots: list[str] | None, since: str | None, until: str | None) -> list[str]:
    """Explicit ids (checked), or the crawls in collinfo.json within the dates; oldest first."""
    if snapshots and (since or until):
        raise InputError("give either snapshot ids or --from/--to dates, not both")
    if snapshots:
        return sorted({check_snapshot_id(snapshot.strip()) for snapshot in snapshots})
    if not (since or until):
        raise InputError("no snapshots given: pass --snapshots CC-MAIN-YYYY-WW,... or --from/--to dates")
    first, last = parse_date(since), parse_date(until)  # a typo is caught before any download
    available = list_snapshots(settings.input.collinfo_url, settings.input.http_timeout_seconds)
    chosen = select_snapshots(available, first, last)
    if not chosen:
        raise InputError(f"no snapshot in {settings.input.collinfo_url} started between {since or 'the first'} and {until or 'now'}")
    return chosen


# --- the record ------------------------------------------------------------------------------


def read_record(storage: Storage, output: str) -> dict[str, dict[str, Any]]:
    """Snapshot id -> what was recorded when its tokens were committed ({} when none yet)."""
    uri = join(output, RECORD_FILE)
    if not storage.exists(uri):
        return {}
    return json.loads(storage.read_text(uri))["snapshots"]


def record_snapshot(storage: Storage, output: str, snapshot: str, entry: dict[str, Any]) -> None:
    """Add one snapshot to the record. Read again just before the (atomic) write, so a record
    another run wrote meanwhile keeps its entries."""
    record = read_record(storage, output)
    record[snapshot] = entry
    storage.write_text(join(output, RECORD_FILE), json.dumps({"snapshots": dict(sorted(record.items()))}, indent=2))


def fingerprint(settings: Settings, max_warcs: int | None) -> str:
    """A hash of everything a snapshot's output depends on: the data settings and the WARC limit."""
    relevant = settings.model_dump(mode="json", exclude=_NOT_IN_FINGERPRINT)
    payload = json.dumps({"settings": relevant, "max_warcs": max_warcs}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def check_record(record: dict[str, dict[str, Any]], snapshots: list[str], made_with: str, output: str) -> None:
    """Refuse to call a snapshot done that was made under other settings (or to mix the two)."""
    other = [snapshot for snapshot in snapshots if snapshot in record and record[snapshot]["fingerprint"] != made_with]
    if other:
        raise InputError(
            f"{', '.join(other)} in {output} were made with other settings; use another --output for these settings"
        )


# --- the flows -------------------------------------------------------------------------------


def _with_index(overrides: dict[str, Any] | None, output: str) -> dict[str, Any]:
    overrides = json.loads(json.dumps(overrides or {}))  # a deep copy
    overrides.setdefault("dedup", {}).update({"index_uri": join(output, INDEX_DIR), "update_index": True})
    return overrides


def check_snapshots(
    output: str, snapshots: list[str], dedup_across: bool, max_warcs: int | None,
    config_file: str | None, overrides: dict[str, Any] | None,
) -> tuple[dict[str, Any] | None, str, dict[str, dict[str, Any]]]:
    """The overrides each snapshot's run gets, their fingerprint and the record so far; raises
    when a snapshot was done under other settings. The CLI calls it before any flow starts."""
    run_overrides = _with_index(overrides, output) if dedup_across else overrides
    settings = load_settings(config_file, run_overrides)
    made_with = fingerprint(settings, max_warcs)
    record = read_record(Storage(settings.storage), output)
    check_record(record, snapshots, made_with, output)
    return run_overrides, made_with, record


def process_snapshots(
    output: str, snapshots: list[str], dedup_across: bool, max_warcs: int | None,
    config_file: str | None, overrides: dict[str, Any] | None,
) -> dict[str, Any]:
    """Run crawl-to-tokens for each snapshot not yet in the record, oldest first; record each."""
    logger = get_run_logger()
    run_overrides, made_with, record = check_snapshots(output, snapshots, dedup_across, max_warcs, config_file, overrides)
    storage = Storage(load_settings(config_file, run_overrides).storage)
    storage.check_writable(output)
    summary: dict[str, Any] = {"output": output, "processed": [], "skipped": [], "snapshots": {}}
    for snapshot in sorted(snapshots):
        if snapshot in record:
            logger.info("%s is done (in %s), skipping it", snapshot, join(output, RECORD_FILE))
            summary["skipped"].append(snapshot)
            summary["snapshots"][snapshot] = record[snapshot]
            continue
        folder = join(output, snapshot)
        logger.info("crawl-to-tokens for %s into %s", snapshot, folder)
        result = crawl_to_tokens.with_options(flow_run_name=f"crawl-to-tokens-{snapshot}")(
            output=folder, snapshot=snapshot, max_warcs=max_warcs, config_file=config_file, overrides=run_overrides
        )
        manifest = manifest_uri(join(folder, TOKENS))
        if not storage.exists(manifest):  # the commit point: without it, nothing is recorded
            raise RuntimeError(f"{snapshot}: no token manifest at {manifest}; rerun to resume it")
        splits = result["tokenize"].get("splits", {})
        entry = {
            "output": folder,
            "manifest": manifest,
            "fingerprint": made_with,
            "dedup_across": dedup_across,
            "documents": sum(split["docs"] for split in splits.values()),
            "tokens": sum(split["tokens"] for split in splits.values()),
            "index_duplicates": result["dedup"].get("index_duplicates", 0),
            "completed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        record_snapshot(storage, output, snapshot, entry)
        summary["processed"].append(snapshot)
        summary["snapshots"][snapshot] = entry
    _publish(summary)
    return summary


def _publish(summary: dict[str, Any]) -> None:
    from prefect.artifacts import create_table_artifact

    rows = [
        {"snapshot": snapshot, "status": "processed" if snapshot in summary["processed"] else "already done",
         "documents": entry["documents"], "tokens": entry["tokens"], "index_duplicates": entry["index_duplicates"],
         "output": entry["output"]}
        for snapshot, entry in summary["snapshots"].items()
    ]
    if rows:
        create_table_artifact(rows, key="snapshots", description=f"snapshots under {summary['output']}")


@flow(name="backfill", log_prints=True)
def backfill(
    output: str,
    snapshots: list[str] | None = None,
    since: str | None = None,
    until: str | None = None,
    dedup_across: bool = False,
    max_warcs: int | None = None,
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One crawl-to-tokens per snapshot (ids, or crawls started between two YYYY-MM-DD dates)."""
    chosen = resolve_snapshots(load_settings(config_file, overrides), snapshots, since, until)
    return process_snapshots(output, chosen, dedup_across, max_warcs, config_file, overrides)


def pending_snapshots(available: list[str], done: set[str]) -> list[str]:
    """The crawls newer than the newest one done; with none done, the newest crawl alone (older
    ones are a backfill's business, not a schedule's)."""
    if not done:
        return available[-1:]
    newest = max(done)
    return [snapshot for snapshot in available if snapshot > newest]


@flow(name="new-snapshots", log_prints=True)
def new_snapshots(
    output: str,
    dedup_across: bool = False,
    max_warcs: int | None = None,
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The scheduled crawl: reads Common Crawl's list of crawls and processes those not yet done."""
    settings = load_settings(config_file, overrides)
    available = list_snapshots(settings.input.collinfo_url, settings.input.http_timeout_seconds)
    pending = pending_snapshots(available, set(read_record(Storage(settings.storage), output)))
    get_run_logger().info("%d crawl(s) listed, new: %s", len(available), ", ".join(pending) or "none")
    return process_snapshots(output, pending, dedup_across, max_warcs, config_file, overrides)
