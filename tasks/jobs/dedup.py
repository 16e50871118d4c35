"""The dedup stage: exact and MinHash near-duplicate removal over a docs stage, on Spark.

    run_dedup(spark, input_uri, output_uri, settings) -> stats

1. Sketch: one task per input docs file reads it and emits a sketch row per document
   (tasks.dedup.sketch); the rows are cached, never collected.
2. Plan, in Spark SQL, within each snapshot (`dedup.per_snapshot`, FineWeb's choice): exact duplicates
   of the normalised text, then optionally of the URL, keep one each; then near duplicates among
   the rest: LSH band rows (plus matching rows of the earlier-snapshot index), star edges,
   optional verification, connected components (tasks.dedup.lsh, .components, .index), and one
   document kept per component (`keep`: smallest id or longest text; an indexed document always).
   The removed documents go to <output>/removed/part-<unit>.parquet (row, id, cluster_id,
   kept_id, reason), written per input file by a task holding that file's group: the driver
   never holds them. This folder is both the plan the next step applies and the inspection log.
3. Rewrite: per input file (tasks.jobs.units, resumable), read it, drop its removed rows, write
   <output>/docs/part-<unit>.parquet. 4. <output>/stats.json.

A rerun after a crash skips what is done: the plan when <output>/_dedup_plan.json was made over
the same input files (same sizes and mtimes) and settings, and the files with a valid progress
marker. Inputs that grew (a new docs part: a larger --max-warcs, a new WARC) are replanned over
the union, which names a new `build` and redoes every rewrite (and, downstream, tokenizing);
an input part that changed or vanished since the plan, or other settings, are refused with one
line unless `force`. (Plans are deterministic, so a replanned run removes the same documents.)
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark import StorageLevel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from infra.lease import hold_lease
from infra.settings import DedupSettings, Settings, StorageSettings
from infra.storage import Storage, StorageError, join
from tasks.dedup.components import connected_components
from tasks.dedup.index import read_index, run_tag, write_index
from tasks.dedup.lsh import band_rows, bucket, candidate_edges, verify_edges
from tasks.dedup.sketch import sketch_documents
from tasks.formats.docs import (
    DOCS_DIR, PROGRESS_DIR, STATS_FILE, docs_uri, list_doc_files, read_stage_stats, unit_key, write_table,
)
from tasks.jobs.units import Progress, StaleProgress, check_settings, run_units, settings_sha

log = logging.getLogger(__name__)

REMOVED_DIR = "removed"
PLAN_FILE = "_dedup_plan.json"
ROW_GROUP_ROWS = 2_000
_REMOVED_COLUMNS = ["file", "row", "id", "cluster_id", "kept_id", "reason"]
_REMOVED_SCHEMA = pa.schema(
    [
        ("row", pa.int32()),  # position in its input file
        ("id", pa.string()),
        ("cluster_id", pa.int64()),  # the smallest document key of its cluster (negative: indexed)
        ("kept_id", pa.string()),  # the document kept over this one where it was removed
        ("reason", pa.string()),  # exact, duplicate_url, near, near_index
    ]
)


def removed_uri(output: str, unit: str) -> str:
    return join(output, REMOVED_DIR, f"part-{unit}.parquet")


def dedup_shaping(settings: Settings) -> dict[str, Any]:
    """The settings that shape the dedup stage's output."""
    return {"dedup": settings.dedup.model_dump()}


def run_dedup(
    spark, input_uri: str, output_uri: str, settings: Settings, force: bool = False, progress: Progress | None = None
) -> dict[str, Any]:
    """Deduplicate the docs stage at `input_uri` into `output_uri`; return (and write) the stats.

    Failed files are listed in the stats (`files_failed`), not raised: the caller decides.
    `progress(done, total)` hears of files rewritten (the last phase) while the job runs.
    """
    started = time.perf_counter()
    storage = Storage(settings.storage)
    files = list_doc_files(storage, input_uri)
    if not files:
        raise StorageError(f"no document files (docs/*.parquet) under {input_uri}")
    storage.check_writable(output_uri)
    with hold_lease(storage, output_uri, settings.jobs.lease_seconds, "dedup") as lease:
        shaping = dedup_shaping(settings)
        check_settings(storage, output_uri, shaping, force)
        fingerprints = {uri: entry.fingerprint for uri, entry in storage.stat_many(files).items()}
        plan = _reusable_plan(storage, output_uri, fingerprints, settings_sha(shaping), force)
        if plan is None:
            plan = _replan(spark, storage, files, fingerprints, output_uri, settings, settings_sha(shaping))
        rewrite = functools.partial(_rewrite_file, settings.storage, output_uri)
        units = run_units(
            spark, files, rewrite, output_uri, settings.storage,
            shaping=shaping, jobs=settings.jobs, force=force, upstream=plan["build"], progress=progress,
        )
        stats = {
            **plan["figures"],
            "build": plan["build"],
            "documents_out": sum(unit["docs_out"] for unit in units.stats.values()),
            "files": len(files),
            "files_resumed": units.resumed,
            "files_redone": units.redone,
            "files_failed": units.failed,
            "files_quarantined": units.quarantined,
            "incomplete": {
                **read_stage_stats(storage, input_uri).get("incomplete", {}),
                **units.failed,
                **{uri: f"quarantined: {error}" for uri, error in units.quarantined.items()},
            },
            "wall_seconds": round(time.perf_counter() - started, 3),
        }
        stats["seconds"] = {**plan["figures"]["seconds"], "rewrite": round(units.seconds, 3)}
        if units.failed:
            log.error("dedup: %d files failed, rerun to retry them: %s", len(units.failed), units.failed)
        lease.check()
        storage.write_text(join(output_uri, STATS_FILE), json.dumps(stats, indent=2))
    return stats


def _reusable_plan(
    storage: Storage, output: str, fingerprints: dict[str, dict], sha: str, force: bool
) -> dict[str, Any] | None:
    """The saved plan if it was made over these very input files and settings; None to replan
    (no plan yet, or the input grew); StaleProgress when planned inputs changed (unless force)."""
    uri = join(output, PLAN_FILE)
    if not storage.exists(uri):
        return None
    plan = json.loads(storage.read_text(uri))
    if plan.get("settings_sha") != sha or "build" not in plan:
        return None  # other settings (already refused or forced by check_settings) or an old format
    planned: dict[str, dict] = plan["inputs"]
    problems = [
        f"{part} changed since dedup planned it (size {before['size']} -> {fingerprints[part]['size']})"
        if part in fingerprints else f"{part} is gone since dedup planned it"
        for part, before in planned.items()
        if fingerprints.get(part) != before
    ]
    if problems:
        if not force:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise StaleProgress(f"{output}: {problems[0]}{more}; use a fresh output, or --force to redo it")
        log.warning("--force: replanning dedup of %s: %s", output, problems[0])
        return None
    added = fingerprints.keys() - planned.keys()
    if added:
        log.info("dedup input grew by %d file(s): replanning over all %d", len(added), len(fingerprints))
        return None
    return plan


def _replan(
    spark, storage: Storage, files: list[str], fingerprints: dict[str, dict], output: str, settings: Settings, sha: str
) -> dict[str, Any]:
    """Plan from scratch; the new plan's `build` makes every rewrite unit redo itself."""
    plan_uri = join(output, PLAN_FILE)
    if storage.exists(plan_uri):  # first, so a crash mid-replan cannot leave an old plan beside new lists
        storage.delete(plan_uri)
    figures = _plan(spark, files, output, settings)
    current = {unit_key(uri) for uri in files}
    for entry in storage.list(join(output, DOCS_DIR), ".parquet"):  # parts of inputs no longer there
        if entry.uri.rsplit("/", 1)[-1].removeprefix("part-").removesuffix(".parquet") not in current:
            storage.delete(entry.uri)
    for entry in storage.list(join(output, PROGRESS_DIR), ".json"):
        if entry.uri.rsplit("/", 1)[-1].removesuffix(".json") not in current:
            storage.delete(entry.uri)
    build = hashlib.sha256(json.dumps([sha, sorted(fingerprints.items())], default=str).encode()).hexdigest()[:16]
    plan = {"build": build, "settings_sha": sha, "inputs": fingerprints, "figures": figures}
    storage.write_text(plan_uri, json.dumps(plan))
    return plan


# --- plan -----------------------------------------------------------------------------------


def _keep_order(keep: str) -> list:
    by_id = [F.asc_nulls_last("id"), F.asc("key")]
    return [F.desc("length"), *by_id] if keep == "longest" else by_id


class _Cache:
    """The DataFrames a plan persists, released together when it is done."""

    def __init__(self) -> None:
        self.frames: list[DataFrame] = []

    def __call__(self, frame: DataFrame) -> DataFrame:
        self.frames.append(frame.persist(StorageLevel.MEMORY_AND_DISK))
        return frame

    def release(self) -> None:
        for frame in self.frames:
            frame.unpersist()


def _keep_one(docs: DataFrame, hash_column: str, keep: str, reason: str, cache: _Cache) -> tuple[DataFrame, DataFrame]:
    """Split `docs` into (removed rows, survivors): one survivor per (scope, hash), chosen by `keep`.

    A null hash (empty text, no URL) matches nothing: such a document is its own group.
    """
    alone = F.when(F.col(hash_column).isNull(), F.col("key"))
    window = Window.partitionBy("scope", hash_column, alone).orderBy(*_keep_order(keep))
    ranked = cache(
        docs.withColumn("_rank", F.row_number().over(window))
        .withColumn("cluster_id", F.first("key").over(window))
        .withColumn("kept_id", F.first("id").over(window))
    )
    removed = ranked.where(F.col("_rank") > 1).withColumn("reason", F.lit(reason)).select(*_REMOVED_COLUMNS)
    survivors = ranked.where(F.col("_rank") == 1).drop("_rank", "cluster_id", "kept_id")
    return removed, survivors


def _size_histogram(size_counts: dict[int, int]) -> dict[str, int]:
    """Cluster sizes 2-10 as they are, larger ones in power-of-two bins ("11-16", "17-32", ...)."""
    bins: Counter = Counter()
    for size, count in size_counts.items():
        if size <= 10:
            bins[str(size)] += count
        else:
            upper = 1 << (size - 1).bit_length()
            bins[f"{max(11, upper // 2 + 1)}-{upper}"] += count
    return dict(sorted(bins.items(), key=lambda item: int(item[0].split("-")[0])))


def _near_duplicates(
    spark, docs: DataFrame, settings: Settings, tag: str, cache: _Cache
) -> tuple[DataFrame, dict[str, Any]]:
    """Removed rows for the near duplicates among `docs`, and the figures for the stats."""
    dedup = settings.dedup
    bands = band_rows(docs)
    index = read_index(spark, settings.storage, dedup.index_uri, tag) if dedup.index_uri else None
    if index is not None:  # indexed documents join every scope in which their band keys occur
        scoped = index.crossJoin(F.broadcast(docs.select("scope").distinct()))
        indexed = scoped.select(bucket("scope", "band", "band_key"), "key")
        bands = bands.unionByName(indexed.join(bands.select("bucket").distinct(), "bucket", "left_semi"))
    edges = candidate_edges(bands)
    if dedup.verify_threshold is not None:
        edges = verify_edges(edges, docs, dedup.verify_threshold)
    assignments, rounds = connected_components(edges, dedup.max_iterations)
    members = cache(
        assignments.where(F.col("node") >= 0).join(
            docs.select(F.col("key").alias("node"), "key", "file", "row", "id", "length"), "node"
        )
    )
    local = members.where(F.col("root") >= 0)
    window = Window.partitionBy("root").orderBy(*_keep_order(dedup.keep))
    near = (
        local.withColumn("_rank", F.row_number().over(window))
        .withColumn("kept_id", F.first("id").over(window))
        .where(F.col("_rank") > 1)
        .select("file", "row", "id", F.col("root").alias("cluster_id"), "kept_id", F.lit("near").alias("reason"))
    )
    removed = near
    if index is not None:
        indexed_ids = index.select(F.col("key").alias("root"), F.col("id").alias("kept_id")).dropDuplicates(["root"])
        against_index = (
            members.where(F.col("root") < 0)
            .join(indexed_ids, "root", "left")
            .select("file", "row", "id", F.col("root").alias("cluster_id"), "kept_id", F.lit("near_index").alias("reason"))
        )
        removed = near.unionByName(against_index)
    sizes = local.groupBy("root").count().groupBy(F.col("count").alias("size")).count().collect()
    figures = {
        "near_duplicate_clusters": sum(row["count"] for row in sizes),
        "index_clusters": members.where(F.col("root") < 0).select("root").distinct().count() if index is not None else 0,
        "cluster_size_histogram": _size_histogram({row["size"]: row["count"] for row in sizes}),
        "component_rounds": rounds,
    }
    return removed, figures


def _write_removed_lists(
    spark, removed: DataFrame, files: list[str], output: str, storage_settings: StorageSettings
) -> dict[str, int]:
    """<output>/removed/part-<unit>.parquet for every input file with removals, one task per file.

    Returns the number of removed documents per reason (a few numbers per file come back).
    """
    file_uris = spark.createDataFrame(list(enumerate(files)), "file int, uri string")

    def write_file_list(table: pa.Table) -> pa.Table:
        uri = table.column("uri")[0].as_py()
        rows = table.sort_by("row").select(_REMOVED_SCHEMA.names).cast(_REMOVED_SCHEMA)
        write_table(Storage(storage_settings), removed_uri(output, unit_key(uri)), rows, ROW_GROUP_ROWS)
        reasons = Counter(rows.column("reason").to_pylist())
        return pa.table({"reason": list(reasons), "removed": list(reasons.values())})

    written = removed.join(F.broadcast(file_uris), "file").groupBy("file", "uri").applyInArrow(
        write_file_list, "reason string, removed long"
    )
    totals = written.groupBy("reason").agg(F.sum("removed").alias("removed")).collect()
    return {row["reason"]: row["removed"] for row in totals}


def _plan(spark, files: list[str], output: str, settings: Settings) -> dict[str, Any]:
    """Decide which documents go; write the removed lists (and the index update); return figures."""
    dedup: DedupSettings = settings.dedup
    cache = _Cache()
    clock = time.perf_counter()
    with_signature = dedup.near and dedup.verify_threshold is not None
    sketches = cache(
        sketch_documents(spark, files, settings.storage, dedup, with_signature).withColumn(
            "scope", F.col("snapshot") if settings.dedup.per_snapshot else F.lit("")
        )
    )
    totals = sketches.agg(
        F.count("*").alias("documents"),
        F.count(F.when(F.col("text_hash").isNull(), 1)).alias("empty"),
        F.count(F.when(F.col("shingles") == 0, 1)).alias("too_short"),
        F.count(F.when(F.col("char_shingles"), 1)).alias("char_shingled"),
    ).first()
    seconds = {"sketch": round(time.perf_counter() - clock, 3)}
    clock = time.perf_counter()

    survivors, removed_parts = sketches, []
    if dedup.exact:
        removed, survivors = _keep_one(survivors, "text_hash", dedup.keep, "exact", cache)
        removed_parts.append(removed)
    if dedup.exact_urls:
        removed, survivors = _keep_one(survivors, "url_hash", dedup.keep, "duplicate_url", cache)
        removed_parts.append(removed)
    figures: dict[str, Any] = {"near_duplicate_clusters": 0, "index_clusters": 0, "cluster_size_histogram": {}}
    tag = run_tag(output)
    if dedup.near:
        removed, figures = _near_duplicates(spark, survivors, settings, tag, cache)
        removed_parts.append(removed)
    storage = Storage(settings.storage)
    for stale in storage.list(join(output, REMOVED_DIR), ".parquet"):  # from an earlier, different plan
        storage.delete(stale.uri)
    removed = cache(functools.reduce(DataFrame.unionByName, removed_parts)) if removed_parts else None
    by_reason = _write_removed_lists(spark, removed, files, output, settings.storage) if removed else {}
    seconds["plan"] = round(time.perf_counter() - clock, 3)
    clock = time.perf_counter()
    index_rows = 0
    if dedup.index_uri and dedup.update_index:
        kept = sketches.join(removed.select("file", "row"), ["file", "row"], "left_anti") if removed else sketches
        indexable = kept.where(F.col("bands").isNotNull() & F.col("id").isNotNull())
        kept_bands = indexable.select("id", "snapshot", F.posexplode("bands").alias("band", "band_key"))
        kept_count = totals["documents"] - totals["too_short"] - sum(by_reason.values())
        index_rows = write_index(kept_bands, settings.storage, dedup.index_uri, tag, kept_count * dedup.num_bands)
    seconds["index"] = round(time.perf_counter() - clock, 3)
    cache.release()
    return {
        "documents_in": totals["documents"],
        "empty": totals["empty"],
        "too_short": totals["too_short"],
        "char_shingled": totals["char_shingled"],
        "exact_duplicates": by_reason.get("exact", 0),
        "url_duplicates": by_reason.get("duplicate_url", 0),
        "near_duplicates": by_reason.get("near", 0),
        "index_duplicates": by_reason.get("near_index", 0),
        **figures,
        "index_rows_written": index_rows,
        "seconds": seconds,
    }


# --- rewrite --------------------------------------------------------------------------------


def _rewrite_file(storage_settings: StorageSettings, output: str, uri: str, unit: str) -> dict[str, Any]:
    """One unit of step 3: copy the input docs file without its removed rows."""
    storage = Storage(storage_settings)
    with storage.open_input(uri) as handle:
        table = pq.read_table(handle)
    keep = np.ones(table.num_rows, dtype=bool)
    reasons: Counter = Counter()
    listing = removed_uri(output, unit)
    if storage.exists(listing):
        with storage.open_input(listing) as handle:
            removed = pq.read_table(handle, columns=["row", "id", "reason"])
        rows = removed.column("row").to_numpy()
        if table.column("id").take(rows).to_pylist() != removed.column("id").to_pylist():
            raise ValueError(f"{uri} changed since dedup planned it; delete {output} and rerun")
        keep[rows] = False
        reasons.update(removed.column("reason").to_pylist())
    write_table(storage, docs_uri(output, unit), table.filter(pa.array(keep)), ROW_GROUP_ROWS)
    return {"docs_in": table.num_rows, "docs_out": int(keep.sum()), "removed": dict(reasons)}
