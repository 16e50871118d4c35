"""Which items a reader takes next, epoch after epoch, resumable to the item: for stages whose data
is a list in memory (preference pairs, prompts, kept replies) rather than token shards.

    sampler = EpochSampler(len(pairs), seed=0, slot=rank * accum + micro_step, slots=world * accum)
    batch = [pairs[i] for i in sampler.take(8)]
    state = sampler.state_dict()            # into the checkpoint; load_state_dict(state) continues there

Every epoch is a fresh permutation of all items drawn from (seed, epoch); slot s of S reads
items s, s + S, s + 2S, ... of it, so S readers see disjoint shares and, as with pretraining's
readers, one process with two micro-steps reads what two processes with one read. A take that
runs past the end of an epoch continues into the next one.
"""

from __future__ import annotations

from typing import Any

import torch


class EpochSampler:
    def __init__(self, size: int, seed: int, slot: int = 0, slots: int = 1) -> None:
        if size < slots:
            raise ValueError(f"{size} items cannot be shared by {slots} readers (processes x accumulation steps)")
        self.size, self.seed, self.slot, self.slots = size, seed, slot, slots
        self.epoch, self.position = 0, 0
        self._share = self._order(0)

    def _order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=generator)[self.slot :: self.slots].tolist()

    def take(self, count: int) -> list[int]:
        taken: list[int] = []
        while len(taken) < count:
            if self.position == len(self._share):
                self.epoch, self.position = self.epoch + 1, 0
                self._share = self._order(self.epoch)
            end = min(len(self._share), self.position + count - len(taken))
            taken += self._share[self.position : end]
            self.position = end
        return taken

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "seed": self.seed, "slot": self.slot, "slots": self.slots,
                "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = (self.size, self.seed, self.slot, self.slots)
        saved = (state["size"], state["seed"], state["slot"], state["slots"])
        if saved != mine:
            raise ValueError(f"the saved reader is for other data (items, seed, slot, slots {saved}, this run has {mine})")
        self.epoch, self.position = state["epoch"], state["position"]
        self._share = self._order(self.epoch)
