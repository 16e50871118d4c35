"""Stream token shards into training: documents or fixed-size batches, resumable, DDP-aware.

    stream = TokenStream("s3://bucket/tokens", split="train", rank=r, world_size=w)
    for inputs, targets in stream.batches(batch_size=8, seq_len=1024): ...
    checkpoint["data"] = stream.state_dict()        # later: stream.load_state_dict(...)

Only the shards that the manifest lists are read (see model/shards.py). The unit of reading is
a Parquet row group (about a thousand documents), fetched from local disk or S3 as it is
needed; the row groups of a split, numbered across its shards in manifest order, are dealt out
round-robin, so rank r of w reads row groups r, r+w, r+2w, ... and never another rank's.

The position is the next token not yet handed out: (epoch, shard, row group, row, token within
the row's document). A stream built from a saved state continues exactly where the saved one
would have, batch for batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from infra.storage import Storage, join
from model.tokenizer import BpeTokenizer
from model.shards import Manifest, manifest_uri

STATE_VERSION = 1


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
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.storage = storage or Storage()
        self.base = manifest_uri(location).rsplit("/", 1)[0]
        self.manifest = Manifest.read(self.storage, location)
        if split not in self.manifest.splits:
            raise ValueError(f"split {split!r} not in manifest (has {sorted(self.manifest.splits)})")
        self.split, self.rank, self.world_size, self.loop = split, rank, world_size, loop
        shards = self.manifest.splits[split].shards
        every = [(s, g) for s, shard in enumerate(shards) for g in range(shard.n_row_groups)]
        self._plan = every[rank::world_size]  # this rank's (shard, row group) pairs, in order
        self._shard_uris = [join(self.base, shard.path) for shard in shards]
        self.epoch, self._step, self._row, self._token = 0, 0, 0, 0  # _step indexes _plan
        self._file: tuple[int, pq.ParquetFile] | None = None
        self._group: tuple[int, np.ndarray, np.ndarray] | None = None  # step, flat tokens, row offsets

    def load_tokenizer(self) -> BpeTokenizer:
        """The tokenizer the shards were made with (checked against the manifest's hash)."""
        info = self.manifest.tokenizer
        tokenizer = BpeTokenizer.load(join(self.base, info.path), self.storage)
        if tokenizer.sha256 != info.sha256:
            raise ValueError(f"tokenizer at {info.path} does not match the manifest's sha256")
        return tokenizer

    # -- position -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        shard, group = self._plan[self._step] if self._step < len(self._plan) else (len(self._shard_uris), 0)
        return {
            "version": STATE_VERSION,
            "split": self.split,
            "rank": self.rank,
            "world_size": self.world_size,
            "epoch": self.epoch,
            "shard": shard,
            "row_group": group,
            "row": self._row,
            "token": self._token,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = (self.split, self.rank, self.world_size)
        theirs = (state["split"], state["rank"], state["world_size"])
        if theirs != mine:
            raise ValueError(f"state is for (split, rank, world_size) {theirs}, this stream is {mine}")
        place = (state["shard"], state["row_group"])
        self._step = self._plan.index(place) if place in self._plan else len(self._plan)
        self.epoch, self._row, self._token = state["epoch"], state["row"], state["token"]

    # -- reading --------------------------------------------------------------------------------

    def documents(self) -> Iterator[np.ndarray]:
        """Each document's tokens (`<|bos|>` first), from the current position on."""
        while self._ready():
            _, tokens, offsets = self._group
            start, end = offsets[self._row] + self._token, offsets[self._row + 1]
            self._row, self._token = self._row + 1, 0
            yield tokens[start:end]

    def batches(self, batch_size: int, seq_len: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(inputs, targets), each int64 (batch_size, seq_len): B*T+1 consecutive tokens of the
        document stream, targets shifted by one. Documents run on across rows; a final part
        batch is dropped."""
        needed = batch_size * seq_len + 1
        while (chunk := self._take(needed)) is not None:
            chunk = chunk.astype(np.int64)
            yield chunk[:-1].reshape(batch_size, seq_len), chunk[1:].reshape(batch_size, seq_len)

    def _take(self, count: int) -> np.ndarray | None:
        pieces, missing = [], count
        saved = (self.epoch, self._step, self._row, self._token)
        while missing and self._ready():
            _, tokens, offsets = self._group
            start = offsets[self._row] + self._token
            stop = min(start + missing, len(tokens))
            pieces.append(tokens[start:stop])
            missing -= stop - start
            row = int(np.searchsorted(offsets, stop, side="right")) - 1  # the row that holds `stop`
            self._row, self._token = row, stop - offsets[row]
        if missing:
            self.epoch, self._step, self._row, self._token = saved  # not enough left: stay put
            return None
        return np.concatenate(pieces)

    def _ready(self) -> bool:
        """Move to a row with tokens left (next row group, next epoch when looping); False at the end."""
        while True:
            if self._step >= len(self._plan):
                if not (self.loop and self._plan):
                    return False
                self.epoch, self._step, self._row, self._token = self.epoch + 1, 0, 0, 0
            _, _, offsets = self._load_group()
            if self._row < len(offsets) - 1:
                if offsets[self._row] + self._token < offsets[self._row + 1]:
                    return True
                self._row, self._token = self._row + 1, 0  # this document is used up
                continue
            self._step, self._row, self._token = self._step + 1, 0, 0

    def _load_group(self) -> tuple[int, np.ndarray, np.ndarray]:
        if self._group is None or self._group[0] != self._step:
            shard, group = self._plan[self._step]
            if self._file is None or self._file[0] != shard:
                self._file = (shard, pq.ParquetFile(self.storage.open_input(self._shard_uris[shard])))
            column = self._file[1].read_row_group(group, columns=["tokens"]).column("tokens").combine_chunks()
            offsets = column.offsets.to_numpy()
            tokens = column.values.to_numpy()
            self._group = (self._step, tokens[offsets[0] :], offsets - offsets[0])
        return self._group
