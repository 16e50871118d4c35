"""Token shards: their Parquet format and names, the writer, and the manifest that commits them.

A tokenized output directory (local or s3://) looks like this:

    <output>/tokenizer.json                        the tokenizer (its sha256 is in the manifest)
    <output>/train/shard-<unit>-<seq>.parquet      token shards, zstd, row groups of documents
    <output>/val/shard-<unit>-<seq>.parquet        the held-out split, chosen by document id
    <output>/_progress/<unit>.json                 per input file: done, with its shard list
    <output>/manifest.json                         written last: the commit point

A shard row is one document: `id` (string), `tokens` (`<|bos|>` first; uint16 when the
vocabulary fits, else int32) and `n_tokens` (int32). Shard names depend only on the input file
(`unit`) and a sequence number, so redoing a unit overwrites its shards instead of adding new
ones. Readers open only the shards that `manifest.json` lists, and the driver writes it after
every unit has finished, so a crashed run never exposes a half-written set: there is either
no manifest or the previous, complete one.

A shard is streamed out a row group at a time (`Storage.create_output`: a local temporary file
or an S3 multipart upload), so a writer holds one row group and one upload part per open shard,
whatever the shard's size, and the shard appears only when it is complete.

Manifest schema 2 (schema 1 is refused with a message saying what to do) adds, per shard, the
documents and tokens of every row group (so each DDP rank of a trainer can work out, from the
manifest alone, how many batches every other rank can make; see model/data.py), and the
`val_fraction` that the run actually used.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from pydantic import BaseModel, ConfigDict, Field, model_validator

from infra.storage import AtomicOutput, Storage, join

SCHEMA_VERSION = 2
MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
SPLITS = ("train", "val")

TokenDtype = Literal["uint16", "int32"]


def token_dtype(vocab_size: int) -> TokenDtype:
    return "uint16" if vocab_size <= 2**16 else "int32"


def shard_schema(dtype: TokenDtype) -> pa.Schema:
    token = pa.from_numpy_dtype(np.dtype(dtype))
    return pa.schema([("id", pa.string()), ("tokens", pa.list_(token)), ("n_tokens", pa.int32())])


def shard_path(split: str, unit: str, seq: int) -> str:
    """A shard's path relative to the output directory."""
    return f"{split}/shard-{unit}-{seq:05d}.parquet"


def split_of(doc_id: str, val_fraction: float) -> str:
    """'val' for a stable `val_fraction` of document ids, else 'train' (same answer on every run)."""
    return "val" if xxhash.xxh64_intdigest(doc_id.encode("utf-8")) < val_fraction * 2**64 else "train"


def manifest_uri(location: str) -> str:
    """The manifest of an output directory, or `location` itself when it names a .json file."""
    return location if location.endswith(".json") else join(location, MANIFEST_FILE)


# --- the manifest ----------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ShardInfo(_Model):
    path: str  # relative to the manifest's directory
    n_docs: int
    n_tokens: int
    n_row_groups: int
    row_group_docs: list[int]  # per row group, in file order
    row_group_tokens: list[int]

    @model_validator(mode="after")
    def _row_groups_add_up(self) -> ShardInfo:
        if not len(self.row_group_docs) == len(self.row_group_tokens) == self.n_row_groups:
            raise ValueError(f"{self.path}: per-row-group counts do not match n_row_groups={self.n_row_groups}")
        if sum(self.row_group_docs) != self.n_docs or sum(self.row_group_tokens) != self.n_tokens:
            raise ValueError(f"{self.path}: per-row-group counts do not add up to n_docs and n_tokens")
        return self


class SplitInfo(_Model):
    n_docs: int
    n_tokens: int
    shards: list[ShardInfo]

    @classmethod
    def of(cls, shards: list[ShardInfo]) -> SplitInfo:
        return cls(n_docs=sum(s.n_docs for s in shards), n_tokens=sum(s.n_tokens for s in shards), shards=shards)


class TokenizerInfo(_Model):
    path: str = TOKENIZER_FILE  # relative to the manifest's directory
    sha256: str
    vocab_size: int
    bos_id: int


class Manifest(_Model):
    schema_version: Literal[2] = SCHEMA_VERSION
    created_at: str
    tokenizer: TokenizerInfo
    dtype: TokenDtype
    source_uri: str
    source_snapshots: list[str]
    val_fraction: float  # the share of document ids routed to val (after the small-run floor)
    splits: dict[str, SplitInfo]
    # Inputs whose documents are missing (a run that went on with --allow-partial), with why:
    # this stage's failed units and those the stages before it recorded. Empty: complete.
    incomplete: dict[str, str] = Field(default_factory=dict)

    @staticmethod
    def now() -> str:
        return datetime.now(timezone.utc).isoformat(timespec="seconds")

    def write(self, storage: Storage, output: str) -> None:
        storage.write_text(manifest_uri(output), self.model_dump_json(indent=1))

    @classmethod
    def read(cls, storage: Storage, location: str) -> Manifest:
        return cls.parse(storage.read_bytes(manifest_uri(location)), location)

    @classmethod
    def parse(cls, data: bytes, location: str = "manifest.json") -> Manifest:
        """The manifest in `data`; an older or newer schema is refused in one line."""
        try:
            version = json.loads(data).get("schema_version")
        except (ValueError, AttributeError) as error:
            raise ValueError(f"{location}: not a token manifest ({error})") from error
        if version == 1:
            raise ValueError(
                f"{location} has manifest schema 1, which lacks the per-row-group token counts that "
                f"training needs: tokenize the documents again into a fresh output location"
            )
        if version != SCHEMA_VERSION:
            raise ValueError(f"{location} has manifest schema {version!r}; this crawl2chat reads {SCHEMA_VERSION}")
        return cls.model_validate_json(data)


# --- writing shards --------------------------------------------------------------------------


class _OpenShard:
    """One shard being written: its streamed output, its Parquet writer, and the pending row group."""

    def __init__(self, storage: Storage, output: str, path: str, schema: pa.Schema) -> None:
        self.path = path
        self.output: AtomicOutput = storage.create_output(join(output, path))
        self.writer = pq.ParquetWriter(self.output, schema, compression="zstd")
        self.ids: list[str] = []
        self.tokens: list[np.ndarray] = []
        self.n_tokens = 0  # including the pending row group
        self.row_group_docs: list[int] = []
        self.row_group_tokens: list[int] = []

    def info(self) -> ShardInfo:
        return ShardInfo(
            path=self.path, n_docs=sum(self.row_group_docs), n_tokens=self.n_tokens,
            n_row_groups=len(self.row_group_docs), row_group_docs=self.row_group_docs,
            row_group_tokens=self.row_group_tokens,
        )


class ShardWriter:
    """Writes one unit's tokenized documents into per-split shards of about `shard_tokens` each.

    A shard is closed (and committed) as soon as it holds `shard_tokens` tokens, so every shard
    but a unit's last one per split has at least that many. Rows are grouped `row_group_docs`
    at a time, and a row group also ends where its shard does; each finished row group goes
    straight out to storage. Use as a context manager: on an exception the shards still open
    are aborted, never committed half-full.
    """

    def __init__(
        self, storage: Storage, output: str, unit: str, dtype: TokenDtype, shard_tokens: int, row_group_docs: int
    ) -> None:
        self.storage, self.output, self.unit = storage, output, unit
        self.dtype = np.dtype(dtype)
        self.schema = shard_schema(dtype)
        self.shard_tokens = max(1, shard_tokens)
        self.row_group_docs = max(1, row_group_docs)
        self.written: dict[str, list[ShardInfo]] = {split: [] for split in SPLITS}
        self._open: dict[str, _OpenShard] = {}

    def add(self, split: str, doc_id: str, tokens: np.ndarray | list[int]) -> None:
        shard = self._open.get(split)
        if shard is None:
            path = shard_path(split, self.unit, len(self.written[split]))
            shard = self._open[split] = _OpenShard(self.storage, self.output, path, self.schema)
        shard.ids.append(doc_id)
        shard.tokens.append(np.asarray(tokens, dtype=self.dtype))
        shard.n_tokens += len(tokens)
        full = shard.n_tokens >= self.shard_tokens
        if full or len(shard.ids) >= self.row_group_docs:
            self._flush_row_group(shard)
        if full:
            self._finish(split)

    def close(self) -> dict[str, list[ShardInfo]]:
        """Commit the shards still open; return every shard written, per split, in order."""
        for split in list(self._open):
            self._finish(split)
        return self.written

    def abort(self) -> None:
        """Drop the shards still open (the committed ones stay)."""
        for shard in self._open.values():
            shard.output.abort()
        self._open.clear()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is None:
            self.close()
        else:
            self.abort()

    def _flush_row_group(self, shard: _OpenShard) -> None:
        if not shard.ids:
            return
        lengths = np.fromiter((len(t) for t in shard.tokens), dtype=np.int32, count=len(shard.tokens))
        offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        tokens = pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(shard.tokens)))
        table = pa.Table.from_arrays([pa.array(shard.ids, pa.string()), tokens, pa.array(lengths)], schema=self.schema)
        shard.writer.write_table(table, row_group_size=len(shard.ids))
        shard.row_group_docs.append(len(shard.ids))
        shard.row_group_tokens.append(int(offsets[-1]))
        shard.ids, shard.tokens = [], []

    def _finish(self, split: str) -> None:
        shard = self._open[split]
        self._flush_row_group(shard)
        shard.writer.close()
        shard.output.commit()
        del self._open[split]
        self.written[split].append(shard.info())
