"""The tokenize stage: documents in, token shards and their manifest out (Spark).

    run_tokenize(spark, input_uri, output_uri, settings)

1. Tokenizer: the one given, else `<output>/tokenizer.json` from an earlier run, else one
   trained on the driver from a sample of the documents (`train_tokenizer_from_docs`, which
   also reports compression in bytes per token on held-out documents, and refuses to train on
   too little text). Whatever is used is saved as `<output>/tokenizer.json`; an output made
   with another tokenizer is refused.
2. Shards: one Spark task per document part (tasks/jobs/units.py, so a rerun resumes), each
   batch-encoding its documents, prefixing `<|bos|>`, routing each to train or val by id hash
   (with a floor of about `shards.min_val_docs` val documents on small runs,
   `val_fraction_for`) and writing size-capped shards (model/shards.py).
3. Commit: only when every unit has finished does the driver write `manifest.json`, built from
   the units' progress markers in input order, so a resumed run commits the same manifest as
   an uninterrupted one. With `allow_partial` it is written over the units that finished, and
   its `incomplete` lists what it lacks (this stage's failed units and those of the stages
   before it, from their stats.json).

Progress is trusted only under the same shard settings and tokenizer (`_settings.json`) and for
input parts of the same dedup build: a dedup replanned over a grown input redoes every unit.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq
import xxhash
from pydantic import ValidationError

from infra.lease import hold_lease
from infra.settings import Settings, ShardSettings, StorageSettings, TokenizerSettings
from infra.storage import Storage, StorageError, join
from model.tokenizer import BpeTokenizer
from tasks.formats.docs import list_doc_files, read_batches, read_stage_stats, unit_key
from tasks.jobs.units import Progress, check_settings, run_units
from model.shards import (
    SPLITS,
    TOKENIZER_FILE,
    Manifest,
    ShardInfo,
    ShardWriter,
    SplitInfo,
    TokenizerInfo,
    manifest_uri,
    split_of,
    token_dtype,
)

log = logging.getLogger(__name__)

TOKENIZER_REPORT_FILE = "tokenizer_report.json"


# --- the tokenizer ---------------------------------------------------------------------------


def _texts(storage: Storage, files: list[str]) -> Iterator[str]:
    """Every non-empty document text, visiting files in a fixed pseudo-random order so that a
    sample spreads over snapshots and crawl segments instead of taking the first files only."""
    for uri in sorted(files, key=lambda uri: xxhash.xxh64_intdigest(uri.encode())):
        for batch in read_batches(storage, uri, columns=["text"]):
            yield from (text for text in batch.column("text").to_pylist() if text)


class TooLittleText(ValueError):
    """The documents hold too little text to train a tokenizer worth using."""


def _is_heldout(index: int, fraction: float) -> bool:
    """Every 1/fraction-th document, spread evenly: index i is held out when floor((i+1)f) steps up."""
    return int((index + 1) * fraction) > int(index * fraction)


def train_tokenizer_from_docs(
    storage: Storage, docs_uri: str, out_uri: str, settings: TokenizerSettings
) -> dict[str, Any]:
    """Train on a sample of the documents under `docs_uri`; save `<out_uri>/tokenizer.json`.

    Of the documents read, a `heldout_fraction` (at most `heldout_docs`) is kept out of
    training to measure compression and the others train the BPE, until `sample_docs` have.
    Less than `min_train_bytes` of training text raises `TooLittleText` and saves nothing. The
    report is returned and saved beside the tokenizer; on a small corpus the vocabulary stops
    short of `vocab_size` (no pair left `min_frequency` times), which it reports and logs.
    """
    files = list_doc_files(storage, docs_uri)
    if not files:
        raise StorageError(f"no document Parquet files under {docs_uri}")
    heldout: list[str] = []
    sample = {"docs": 0, "bytes": 0}

    def training_texts() -> Iterator[str]:
        for index, text in enumerate(_texts(storage, files)):
            if len(heldout) < settings.heldout_docs and _is_heldout(index, settings.heldout_fraction):
                heldout.append(text)
                continue
            if sample["docs"] >= settings.sample_docs:
                return
            sample["docs"] += 1
            sample["bytes"] += len(text.encode("utf-8"))
            yield text

    started = time.perf_counter()
    tokenizer = BpeTokenizer.train(training_texts(), settings.vocab_size, settings.min_frequency)
    seconds = time.perf_counter() - started
    if sample["bytes"] < settings.min_train_bytes:
        raise TooLittleText(
            f"only {sample['bytes']:,} bytes of text in {sample['docs']:,} document(s) under {docs_uri} to train "
            f"the tokenizer on (tokenizer.min_train_bytes is {settings.min_train_bytes:,}): give more documents, "
            "or an existing tokenizer with --tokenizer"
        )
    tokenizer_uri = join(out_uri, TOKENIZER_FILE)
    tokenizer.save(tokenizer_uri, storage)
    heldout_bytes = sum(len(text.encode("utf-8")) for text in heldout)
    heldout_tokens = sum(len(ids) for ids in tokenizer.encode_batch(heldout))
    report = {
        "tokenizer_uri": tokenizer_uri,
        "sha256": tokenizer.sha256,
        "vocab_size": tokenizer.vocab_size,
        "vocab_size_requested": settings.vocab_size,
        "train_docs": sample["docs"],
        "train_bytes": sample["bytes"],
        "train_seconds": round(seconds, 3),
        "heldout_docs": len(heldout),
        "heldout_bytes": heldout_bytes,
        "heldout_tokens": heldout_tokens,
        "bytes_per_token": round(heldout_bytes / heldout_tokens, 4) if heldout_tokens else None,
    }
    storage.write_text(join(out_uri, TOKENIZER_REPORT_FILE), json.dumps(report, indent=1, sort_keys=True))
    if tokenizer.vocab_size < settings.vocab_size:
        log.warning(
            "tokenizer: the %s bytes of training text support %d of the %d tokens asked for "
            "(no pair occurs tokenizer.min_frequency=%d times more); more text gives a larger vocabulary",
            f"{sample['bytes']:,}", tokenizer.vocab_size, settings.vocab_size, settings.min_frequency,
        )
    log.info("tokenizer trained: %s", report)
    return report


def _resolve_tokenizer(
    storage: Storage, input_uri: str, output_uri: str, settings: TokenizerSettings, tokenizer_uri: str | None
) -> tuple[BpeTokenizer, dict[str, Any] | None]:
    """The tokenizer this output uses (saved at <output>/tokenizer.json), and a training report
    when it had to be trained."""
    at_output = join(output_uri, TOKENIZER_FILE)
    existing = BpeTokenizer.load(at_output, storage) if storage.exists(at_output) else None
    if tokenizer_uri is not None:
        given = BpeTokenizer.load(tokenizer_uri, storage)
        if existing is not None and existing.sha256 != given.sha256:
            raise ValueError(
                f"{output_uri} already holds shards made with another tokenizer ({existing.sha256[:12]}); "
                "use a fresh output location"
            )
        if existing is None:
            given.save(at_output, storage)
        return given, None
    if existing is not None:
        return existing, None
    report = train_tokenizer_from_docs(storage, input_uri, output_uri, settings)
    return BpeTokenizer.load(at_output, storage), report


# --- the validation split --------------------------------------------------------------------

MAX_VAL_FRACTION = 0.5  # a floor for small runs, never a split that takes most of the data


def val_fraction_for(storage: Storage, files: list[str], settings: ShardSettings) -> float:
    """The share of document ids that go to val: `val_fraction`, raised on small runs so that
    about `min_val_docs` documents do (at most `MAX_VAL_FRACTION`).

    Documents are counted from the parts' Parquet footers, and only until the count shows that
    `val_fraction` alone gives `min_val_docs` (about 10,000 documents at the defaults), so a
    large run reads a footer or two. The same inputs always give the same fraction.
    """
    if settings.min_val_docs <= 0 or settings.val_fraction <= 0:
        return settings.val_fraction
    enough = settings.min_val_docs / settings.val_fraction
    documents = 0
    for uri in files:
        with storage.open_input(uri) as handle:
            documents += pq.ParquetFile(handle).metadata.num_rows
        if documents >= enough:
            return settings.val_fraction
    return min(MAX_VAL_FRACTION, settings.min_val_docs / max(1, documents))


# --- the shards ------------------------------------------------------------------------------

_TOKENIZERS: dict[str, BpeTokenizer] = {}  # per Python worker, so a reused worker parses once


class TokenizeUnit:
    """The per-input-file work of the stage: one docs part in, its shards out, stats returned."""

    def __init__(
        self, tokenizer: BpeTokenizer, storage_settings: StorageSettings, output: str, shards: ShardSettings
    ) -> None:
        self.tokenizer_json, self.tokenizer_sha256 = tokenizer.json, tokenizer.sha256
        self.storage_settings = storage_settings
        self.output = output
        self.shards = shards

    def _tokenizer(self) -> BpeTokenizer:
        if self.tokenizer_sha256 not in _TOKENIZERS:
            _TOKENIZERS[self.tokenizer_sha256] = BpeTokenizer.from_json(self.tokenizer_json)
        return _TOKENIZERS[self.tokenizer_sha256]

    def __call__(self, uri: str, unit: str) -> dict[str, Any]:
        # Spark already runs one task per core; Rust threads on top would only contend.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        tokenizer = self._tokenizer()
        storage = Storage(self.storage_settings)
        counts: Counter = Counter()
        snapshots: set[str] = set()
        settings = self.shards
        dtype = token_dtype(tokenizer.vocab_size)
        writer = ShardWriter(storage, self.output, unit, dtype, settings.shard_tokens, settings.row_group_docs)
        with writer:
            for batch in read_batches(storage, uri, columns=["id", "text", "snapshot"], batch_rows=settings.row_group_docs):
                rows = batch.to_pydict()
                kept = [i for i, text in enumerate(rows["text"]) if text]
                counts["skipped_empty"] += len(rows["text"]) - len(kept)
                snapshots.update(rows["snapshot"][i] for i in kept if rows["snapshot"][i])
                encoded = tokenizer.encode_batch([rows["text"][i] for i in kept])
                for i, ids in zip(kept, encoded):
                    doc_id = rows["id"][i] or ""
                    writer.add(split_of(doc_id, settings.val_fraction), doc_id, [tokenizer.bos_id, *ids])
        return {
            "tokenizer_sha256": tokenizer.sha256,
            "val_fraction": settings.val_fraction,
            "snapshots": sorted(snapshots),
            "counts": dict(counts),
            "shards": {split: [shard.model_dump() for shard in shards] for split, shards in writer.written.items()},
        }


def run_tokenize(
    spark, input_uri: str, output_uri: str, settings: Settings, tokenizer_uri: str | None = None,
    force: bool = False, allow_partial: bool = False, progress: Progress | None = None,
) -> dict[str, Any]:
    """Tokenize the documents under `input_uri` into shards under `output_uri`; commit a manifest.

    Returns a report. When a unit failed, `failed` lists it and no manifest is written (an
    earlier one, if any, stays) unless `allow_partial`: run again to retry just the unfinished units. `progress(done,
    total)` hears of files tokenized while the job runs (tasks/jobs/units.py).
    """
    started = time.perf_counter()
    storage = Storage(settings.storage)
    files = list_doc_files(storage, input_uri)
    if not files:
        raise StorageError(f"no document Parquet files under {input_uri}")
    storage.check_writable(output_uri)
    with hold_lease(storage, output_uri, settings.jobs.lease_seconds, "tokenize") as lease:
        given = BpeTokenizer.load(tokenizer_uri, storage) if tokenizer_uri else None
        shaping = {
            "shards": settings.shards.model_dump(),
            "tokenizer": {"sha256": given.sha256} if given else {"trained_with": settings.tokenizer.model_dump()},
        }
        if check_settings(storage, output_uri, shaping, force) and storage.exists(join(output_uri, TOKENIZER_FILE)):
            storage.delete(join(output_uri, TOKENIZER_FILE))  # forced onto other settings: a new tokenizer
        tokenizer, training = _resolve_tokenizer(storage, input_uri, output_uri, settings.tokenizer, tokenizer_uri)
        upstream = read_stage_stats(storage, input_uri)
        val_fraction = val_fraction_for(storage, files, settings.shards)
        shards = settings.shards.model_copy(update={"val_fraction": val_fraction})
        work = TokenizeUnit(tokenizer, settings.storage, output_uri, shards)
        result = run_units(
            spark, files, work, output_uri, settings.storage,
            shaping=shaping, jobs=settings.jobs, force=force, upstream=upstream.get("build", ""),
            progress=progress,
        )
        incomplete = {
            **upstream.get("incomplete", {}),
            **result.failed,
            **{uri: f"quarantined: {error}" for uri, error in result.quarantined.items()},
        }
        report: dict[str, Any] = {
            "output": output_uri,
            "tokenizer_sha256": tokenizer.sha256,
            "tokenizer_training": training,
            "units": len(files),
            "val_fraction": val_fraction,
            "resumed": result.resumed,
            "redone": result.redone,
            "failed": result.failed,
            "quarantined": result.quarantined,
            "incomplete": incomplete,
        }
        if not result.failed or allow_partial:
            done = [result.stats[unit_key(uri)] for uri in files if unit_key(uri) in result.stats]
            manifest = _manifest(tokenizer, input_uri, val_fraction, done, incomplete)
            lease.check()
            manifest.write(storage, output_uri)  # last: the commit point
            report["manifest"] = manifest_uri(output_uri)
            report["splits"] = {
                name: {"shards": len(info.shards), "docs": info.n_docs, "tokens": info.n_tokens}
                for name, info in manifest.splits.items()
            }
            report["counts"] = dict(sum((Counter(stats["counts"]) for stats in done), Counter()))
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report


def _manifest(
    tokenizer: BpeTokenizer, input_uri: str, val_fraction: float, unit_stats: list[dict[str, Any]], incomplete: dict[str, str]
) -> Manifest:
    stale = {stats["tokenizer_sha256"] for stats in unit_stats} - {tokenizer.sha256}
    if stale:
        raise ValueError(
            f"progress markers were made with another tokenizer ({sorted(stale)[0][:12]}); use a fresh output location"
        )
    _check_val_fraction(val_fraction, unit_stats)
    try:
        splits = {
            split: SplitInfo.of([ShardInfo.model_validate(s) for stats in unit_stats for s in stats["shards"][split]])
            for split in SPLITS
        }
    except ValidationError as error:
        raise ValueError(
            "progress markers were written by an older crawl2chat (no per-row-group counts); use a fresh output location"
        ) from error
    return Manifest(
        created_at=Manifest.now(),
        tokenizer=TokenizerInfo(sha256=tokenizer.sha256, vocab_size=tokenizer.vocab_size, bos_id=tokenizer.bos_id),
        dtype=token_dtype(tokenizer.vocab_size),
        source_uri=input_uri,
        source_snapshots=sorted({snapshot for stats in unit_stats for snapshot in stats["snapshots"]}),
        val_fraction=val_fraction,
        splits=splits,
        incomplete=incomplete,
    )


def _check_val_fraction(val_fraction: float, unit_stats: list[dict[str, Any]]) -> None:
    """Units split under another val fraction (other settings, or fewer documents then) would
    mix two splits in one manifest."""
    other = {stats.get("val_fraction") for stats in unit_stats} - {val_fraction}
    if other:
        raise ValueError(
            f"progress markers were made with val fraction {sorted(other, key=str)[0]}, this run uses {val_fraction:.6g} "
            "(shards.val_fraction or the number of documents changed); use a fresh output location"
        )
