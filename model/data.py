"""Stream token shards into training: documents or fixed-size batches, resumable, DDP-aware.

    stream = TokenStream("s3://bucket/tokens", split="train", rank=r, world_size=w, loop=True)
    steps_per_epoch = stream.batches_per_epoch(batch_size=8, seq_len=1024)
    for inputs, targets in stream.batches(batch_size=8, seq_len=1024): ...
    checkpoint["data"] = stream.state_dict()        # later: stream.load_state_dict(...)

Only the shards that the manifest lists are read (see model/shards.py). The unit of reading is
a Parquet row group (about a thousand documents), fetched from local disk or S3 as it is
needed; the row groups of a split, numbered across its shards in manifest order, are dealt out
round-robin, so rank r of w reads row groups r, r+w, r+2w, ... and never another rank's.

Epochs are the same length on every rank. Ranks hold different numbers of tokens, and a rank
that ran out first would leave the others waiting in their next collective, so an epoch is
`batches_per_epoch(B, T)` batches on every rank: the most that the rank with the fewest tokens
can make, worked out from the manifest's per-row-group token counts, the same on every rank.
A rank's tokens beyond that (at most about one row group's worth) are left out of that epoch.
With `loop=True` the next epoch starts over from the rank's first row group; without, the
stream ends. A split too small for one batch per rank is an error, not an empty loop.

Gradient accumulation: a trainer with P processes that accumulates A micro-batches per step
opens one stream per micro-step, a "slot" of the global batch, with `rank = process * A +
micro_step` and `world_size = P * A` (`slot_streams` does exactly this). The slots, and so the
tokens of every global step, depend only on P * A: 1 process x 2 micro-steps reads what 2
processes x 1 micro-step read, and a slot's state fits either layout. For evaluation, every
process can read the whole val split (rank 0 of 1: the same batches everywhere, so no reduce
is needed, and a small split needs no more row groups than one) or, for a large one, its share
(rank = process, world_size = processes).

Background prefetch: a thread reads the next `prefetch` row groups of the stream's plan (into
the next epoch when looping) while the caller works on the current one, so the model does not
wait on storage; `io_stats` says how often it did. Reading ahead changes nothing else: the
batches and states are the same with any `prefetch`, 0 included (no thread).

The position is the next token not yet handed out: (epoch, shard, row group, row, token within
the row's document) plus the tokens batched so far in this epoch. `state_dict()` names the
shard by its path and the manifest by the sha256 of its bytes; a state from another manifest,
split or rank, or a position that the manifest does not have, is refused with a clear error.
A stream built from a saved state continues exactly where the saved one would have.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from infra.storage import Storage, join
from model.shards import Manifest, manifest_uri
from model.tokenizer import BpeTokenizer

STATE_VERSION = 2
STATE_KEYS = ("version", "manifest_sha256", "split", "rank", "world_size", "epoch", "shard", "row_group", "row",
              "token", "epoch_tokens")

RowGroup = tuple[np.ndarray, np.ndarray]  # flat tokens, row offsets into them (len = rows + 1)


class TokenStream:
    """One rank's share of one split of a manifest, read forward from a saved position."""

    def __init__(
        self,
        location: str,
        split: str = "train",
        storage: Storage | None = None,
        rank: int = 0,
        world_size: int = 1,
        loop: bool = False,
        prefetch: int = 2,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        self.storage = storage or Storage()
        uri = manifest_uri(location)
        self.base = uri.rsplit("/", 1)[0]
        raw = self.storage.read_bytes(uri)
        self.manifest = Manifest.parse(raw, uri)
        self.manifest_sha256 = hashlib.sha256(raw).hexdigest()
        if split not in self.manifest.splits:
            raise ValueError(f"split {split!r} not in manifest (has {sorted(self.manifest.splits)})")
        self.split, self.rank, self.world_size, self.loop = split, rank, world_size, loop
        self.prefetch = prefetch
        shards = self.manifest.splits[split].shards
        self._shards = shards
        self._shard_index = {shard.path: s for s, shard in enumerate(shards)}
        self._shard_uris = [join(self.base, shard.path) for shard in shards]
        every = [(s, g) for s, shard in enumerate(shards) for g in range(shard.n_row_groups)]
        group_tokens = [shards[s].row_group_tokens[g] for s, g in every]
        self._rank_tokens = [sum(group_tokens[r::world_size]) for r in range(world_size)]
        self._plan = every[rank::world_size]  # this rank's (shard, row group) pairs, in order
        self._plan_index = {place: step for step, place in enumerate(self._plan)}
        # The position: _step indexes _plan; _epoch_tokens counts what batches() handed out.
        self.epoch, self._step, self._row, self._token, self._epoch_tokens = 0, 0, 0, 0, 0
        self._group: tuple[int, RowGroup] | None = None  # the current step's row group
        self._file: tuple[int, pq.ParquetFile] | None = None  # used only by the reading thread
        self._executor: ThreadPoolExecutor | None = None
        self._ahead: dict[int, Future[RowGroup]] = {}
        self.io_stats = {"row_groups_read": 0, "stalls": 0, "wait_seconds": 0.0}

    def load_tokenizer(self) -> BpeTokenizer:
        """The tokenizer the shards were made with (checked against the manifest's hash)."""
        info = self.manifest.tokenizer
        tokenizer = BpeTokenizer.load(join(self.base, info.path), self.storage)
        if tokenizer.sha256 != info.sha256:
            raise ValueError(f"tokenizer at {info.path} does not match the manifest's sha256")
        return tokenizer

    @property
    def tokens(self) -> int:
        """The tokens of this rank's share of the split."""
        return self._rank_tokens[self.rank]

    def batches_per_epoch(self, batch_size: int, seq_len: int) -> int:
        """Batches that `batches(batch_size, seq_len)` yields per epoch: the same on every rank."""
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}")
        return min(self._rank_tokens) // (batch_size * seq_len + 1)

    # -- position -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        if self._step < len(self._plan):
            shard, group = self._plan[self._step]
            shard_path: str | None = self._shards[shard].path
        else:
            shard_path, group = None, 0  # past this rank's last row group
        return {
            "version": STATE_VERSION,
            "manifest_sha256": self.manifest_sha256,
            "split": self.split,
            "rank": self.rank,
            "world_size": self.world_size,
            "epoch": self.epoch,
            "shard": shard_path,
            "row_group": group,
            "row": self._row,
            "token": self._token,
            "epoch_tokens": self._epoch_tokens,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state`; anything that does not fit this stream raises ValueError."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            version = state.get("version") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"reader state version {version!r} is not supported (this reader writes {STATE_VERSION})")
        missing = [key for key in STATE_KEYS if key not in state]
        if missing:
            raise ValueError(f"reader state lacks {missing}")
        if state["manifest_sha256"] != self.manifest_sha256:
            raise ValueError(
                f"reader state is for manifest {str(state['manifest_sha256'])[:12]}, this stream reads "
                f"{self.manifest_sha256[:12]}: the token set changed since the state was saved"
            )
        mine = (self.split, self.rank, self.world_size)
        theirs = (state["split"], state["rank"], state["world_size"])
        if theirs != mine:
            raise ValueError(f"state is for (split, rank, world_size) {theirs}, this stream is {mine}")
        epoch, row, token, epoch_tokens = (state[key] for key in ("epoch", "row", "token", "epoch_tokens"))
        if min(epoch, row, token, epoch_tokens) < 0 or epoch_tokens > self.tokens:
            raise ValueError(f"reader state holds an impossible position: {state}")
        if state["shard"] is None:
            if row or token:
                raise ValueError(f"reader state is past the last row group but names row {row}, token {token}")
            step = len(self._plan)
        else:
            step = self._step_of(state["shard"], state["row_group"])
        self._forget_reads()
        self.epoch, self._step, self._row, self._token, self._epoch_tokens = epoch, step, row, token, epoch_tokens
        if step < len(self._plan):
            _, offsets = self._load_group()
            rows = len(offsets) - 1
            if row > rows or (row == rows and token) or (row < rows and token > offsets[row + 1] - offsets[row]):
                raise ValueError(
                    f"reader state points at row {row}, token {token} of row group {state['row_group']} of "
                    f"{state['shard']}, which has {rows} rows there"
                )

    def _step_of(self, shard_path: str, group: int) -> int:
        shard = self._shard_index.get(shard_path)
        if shard is None:
            raise ValueError(f"reader state names shard {shard_path}, which the {self.split} split does not list")
        step = self._plan_index.get((shard, group))
        if step is None:
            raise ValueError(
                f"reader state names row group {group} of {shard_path}, which is not rank {self.rank}'s of "
                f"{self.world_size} (that shard has {self._shards[shard].n_row_groups} row groups)"
            )
        return step

    # -- reading --------------------------------------------------------------------------------

    def documents(self) -> Iterator[np.ndarray]:
        """Each document's tokens (`<|bos|>` first), from the current position to the end of
        this rank's share (then on into the next epoch when looping). Not for DDP training:
        ranks' shares differ in length; use `batches`."""
        while self._ready(next_epoch=self.loop):
            tokens, offsets = self._group[1]
            start, end = offsets[self._row] + self._token, offsets[self._row + 1]
            self._row, self._token = self._row + 1, 0
            yield tokens[start:end]

    def batches(self, batch_size: int, seq_len: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(inputs, targets), each int64 (batch_size, seq_len): B*T+1 consecutive tokens of the
        document stream, targets shifted by one. Documents run on across rows and row groups;
        each epoch is exactly `batches_per_epoch(batch_size, seq_len)` batches."""
        per_epoch = self.batches_per_epoch(batch_size, seq_len)
        if per_epoch == 0:
            raise ValueError(
                f"the {self.split} split is too small for one batch of {batch_size}x{seq_len} tokens per rank: "
                f"the smallest of its {self.world_size} rank share(s) holds {min(self._rank_tokens):,} tokens"
            )
        return self._batches(batch_size, seq_len, per_epoch)

    def _batches(self, batch_size: int, seq_len: int, per_epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        needed = batch_size * seq_len + 1
        limit = per_epoch * needed
        while True:
            chunk = self._take(needed) if self._epoch_tokens + needed <= limit else None
            if chunk is None:  # this epoch's batches are done (or documents() used up the rest)
                if not self.loop:
                    return
                self._start_epoch(self.epoch + 1)
                continue
            self._epoch_tokens += needed
            chunk = chunk.astype(np.int64)
            yield chunk[:-1].reshape(batch_size, seq_len), chunk[1:].reshape(batch_size, seq_len)

    def _start_epoch(self, epoch: int) -> None:
        self.epoch, self._step, self._row, self._token, self._epoch_tokens = epoch, 0, 0, 0, 0

    def _take(self, count: int) -> np.ndarray | None:
        """The next `count` tokens of this epoch, or None (position unchanged) when fewer are left."""
        pieces, missing = [], count
        saved = (self._step, self._row, self._token)
        while missing and self._ready(next_epoch=False):
            tokens, offsets = self._group[1]
            start = offsets[self._row] + self._token
            stop = min(start + missing, len(tokens))
            pieces.append(tokens[start:stop])
            missing -= stop - start
            row = int(np.searchsorted(offsets, stop, side="right")) - 1  # the row that holds `stop`
            self._row, self._token = row, stop - offsets[row]
        if missing:
            self._step, self._row, self._token = saved
            return None
        return np.concatenate(pieces)

    def _ready(self, next_epoch: bool) -> bool:
        """Move to a row with tokens left (the next row group; the next epoch if `next_epoch`);
        False at the end."""
        while True:
            if self._step >= len(self._plan):
                if not (next_epoch and self._plan):
                    return False
                self._start_epoch(self.epoch + 1)
            _, offsets = self._load_group()
            if self._row < len(offsets) - 1:
                if offsets[self._row] + self._token < offsets[self._row + 1]:
                    return True
                self._row, self._token = self._row + 1, 0  # this document is used up
                continue
            self._step, self._row, self._token = self._step + 1, 0, 0

    # -- row groups, read ahead -----------------------------------------------------------------

    def _load_group(self) -> RowGroup:
        """The current step's row group; with prefetch, also queue the next ones."""
        if self._group is not None and self._group[0] == self._step:
            return self._group[1]
        step = self._step
        if self.prefetch == 0:
            started = time.perf_counter()
            group = self._read(step)
            self._count_wait(started)
        else:
            future = self._ahead.pop(step, None) or self._submit(step)
            self._queue_after(step)
            if future.done():
                group = future.result()
            else:
                started = time.perf_counter()
                group = future.result()
                self._count_wait(started)
        self._group = (step, group)
        return group

    def _count_wait(self, started: float) -> None:
        self.io_stats["stalls"] += 1
        self.io_stats["wait_seconds"] += time.perf_counter() - started

    def _submit(self, step: int) -> Future[RowGroup]:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="token-prefetch")
        return self._executor.submit(self._read, step)

    def _queue_after(self, step: int) -> None:
        """Keep the `prefetch` row groups after `step` read or being read, and only those."""
        upcoming = []
        for ahead in range(1, self.prefetch + 1):
            nxt = step + ahead
            if nxt >= len(self._plan):
                if not self.loop:
                    break
                nxt %= len(self._plan)
            if nxt != step and nxt not in upcoming:
                upcoming.append(nxt)
        for stale in set(self._ahead) - set(upcoming):
            self._ahead.pop(stale).cancel()
        for nxt in upcoming:
            if nxt not in self._ahead:
                self._ahead[nxt] = self._submit(nxt)

    def _forget_reads(self) -> None:
        for future in self._ahead.values():
            future.cancel()
        self._ahead.clear()
        self._group = None

    def _read(self, step: int) -> RowGroup:
        """Read one row group (on the prefetch thread when there is one: only ever one reader)."""
        shard, group = self._plan[step]
        if self._file is None or self._file[0] != shard:
            self._file = (shard, pq.ParquetFile(self.storage.open_input(self._shard_uris[shard])))
        column = self._file[1].read_row_group(group, columns=["tokens"]).column("tokens").combine_chunks()
        offsets = column.offsets.to_numpy()
        tokens = column.values.to_numpy()
        self.io_stats["row_groups_read"] += 1
        return tokens[offsets[0] :], offsets - offsets[0]

    def close(self) -> None:
        """Stop reading ahead (the stream stays usable, reading on demand)."""
        self._forget_reads()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> TokenStream:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def slot_streams(
    location: str,
    split: str = "train",
    process_rank: int = 0,
    processes: int = 1,
    accum_steps: int = 1,
    **options: Any,
) -> list[TokenStream]:
    """This process's streams, one per gradient-accumulation micro-step: slot `process_rank *
    accum_steps + micro_step` of `processes * accum_steps` (see the module docstring).
    `options` go to every TokenStream (storage, loop, prefetch)."""
    if accum_steps < 1:
        raise ValueError(f"accum_steps must be >= 1, got {accum_steps}")
    slots = processes * accum_steps
    streams = [
        TokenStream(location, split, rank=process_rank * accum_steps + micro_step, world_size=slots, **options)
        for micro_step in range(accum_steps)
    ]
    if len({stream.manifest_sha256 for stream in streams}) > 1:
        raise ValueError(f"the manifest at {location} changed while its streams were opened; try again")
    return streams
