"""Conversations as SFT micro-batches: loss targets, packing or padding, and a resumable loader.

    examples = [encode_example(tokenizer, conversation) for conversation in conversations]
    loader = SftLoader(examples, "pack", batch_size=8, seq_len=256, seed=0, slot=r, slots=n)
    batch = next(loader)                # Batch: inputs, targets (-1: no loss), doc_ids, tokens
    logits = model(batch.inputs, positions=batch.positions, mask=batch.mask)
    state = loader.state_dict()         # later: loader.load_state_dict(state), exactly there

An `Example` is one rendered conversation (model/chat.py's template) shifted by one: `inputs`
are its tokens but the last, `targets[t]` the token after `inputs[t]` where the assistant wrote
it (its text, its search calls, its `<|im_end|>`) and -1 elsewhere (`<|bos|>`, system and user
turns, every turn header, search results). A conversation of N tokens takes N - 1 positions, so
one of up to `seq_len + 1` tokens fits a row.

Two ways to batch them, equal in what they compute:
- "pack": several conversations per row of `seq_len`, placed by best-fit decreasing (longest
  first, each into the fullest row it still fits, a new row when none; TRL's default
  strategy too), rows shuffled. `doc_ids` numbers the conversations of a row (-1 for the
  unused tail); `positions` restart at 0 at each one and `mask` lets no token attend across
  conversations (model/gpt.py's `document_positions` / `document_mask`), so each computes
  exactly what it computes alone. Rows have one shape, which suits torch.compile.
- "pad": one conversation per row, padded at the end to the longest of its micro-batch;
  conversations are sorted by length and cut into micro-batches of up
  to `batch_size x seq_len` positions each, the same budget as a packed micro-batch (many short
  conversations or few long ones), then the batches shuffled; little is padding. Plain causal
  attention (`mask` None, the fast kernels): padding at the end of a row is never attended to by
  the real tokens before it, and its targets are -1.

bench/bench_sft_packing.py times the two on the real conversations; the default is `sft.batching`.

The loader deals the micro-batches of an epoch out to "slots" as the pretraining reader does:
process p's micro-step m is slot `p * accum_steps + m` of `processes * accum_steps`, and slot s
takes micro-batches s, s + slots, ... of the epoch's plan, every slot the same number (a
remainder of fewer than `slots` micro-batches sits that epoch out). So 1 process x 2 micro-steps
sees what 2 processes x 1 micro-step see. An epoch's plan is a pure function of (examples,
batching, batch size, seq_len, seed, epoch), so the position is just (epoch, index), plus a
fingerprint of all of those: a state saved over other data or settings is refused.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import xxhash
from torch import Tensor

from model.chat import render
from model.gpt import document_mask, document_positions
from model.tokenizer import BpeTokenizer

IGNORE = -1
STATE_VERSION = 1
Batching = Literal["pack", "pad"]
BATCHINGS = ("pack", "pad")


@dataclass(frozen=True)
class Example:
    """One conversation, shifted by one: `targets` is -1 where the assistant did not write the next token."""

    inputs: np.ndarray  # int64 (n,)
    targets: np.ndarray  # int64 (n,)

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def loss_tokens(self) -> int:
        return int((self.targets != IGNORE).sum())


def encode_example(tokenizer: BpeTokenizer, messages: Sequence[Mapping[str, Any]]) -> Example:
    ids, mask = render(tokenizer, messages)
    ids_array, written = np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=bool)
    return Example(ids_array[:-1], np.where(written[1:], ids_array[1:], IGNORE))


@dataclass
class Batch:
    """A micro-batch: (B, T) inputs and targets; `doc_ids` (B, T) for packed rows, else None."""

    inputs: Tensor
    targets: Tensor
    doc_ids: Tensor | None
    tokens: int  # real (not padding) input tokens

    @property
    def positions(self) -> Tensor | None:
        return None if self.doc_ids is None else document_positions(self.doc_ids)

    @property
    def mask(self) -> Tensor | None:
        return None if self.doc_ids is None else document_mask(self.doc_ids)

    @property
    def loss_tokens(self) -> int:
        return int((self.targets != IGNORE).sum())

    def to(self, device: torch.device) -> Batch:
        if device.type != "cuda":
            return self
        move = lambda tensor: tensor.pin_memory().to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.inputs), move(self.targets), None if self.doc_ids is None else move(self.doc_ids), self.tokens)


Rows = list[list[int]]  # rows of a micro-batch, each the indexes of the examples it holds


def best_fit_decreasing(lengths: Sequence[int], capacity: int, order: Sequence[int]) -> Rows:
    """Rows of at most `capacity` tokens holding every example of `order`: longest first, each
    into the row with the least room it still fits in, a new row when none (ties keep `order`)."""
    rows: Rows = []
    room: list[tuple[int, int]] = []  # (free positions, row), sorted
    for index in sorted(order, key=lambda i: -lengths[i]):
        length = lengths[index]
        if length > capacity:
            raise ValueError(f"an example of {length} positions does not fit a row of {capacity}")
        at = bisect.bisect_left(room, (length, -1))
        if at == len(room):
            rows.append([index])
            free, row = capacity - length, len(rows) - 1
        else:
            free, row = room.pop(at)
            rows[row].append(index)
            free -= length
        if free > 0:
            bisect.insort(room, (free, row))
    return rows


def padded_batches(lengths: Sequence[int], batch_size: int, seq_len: int, order: Sequence[int]) -> list[Rows]:
    """Micro-batches of one example per row, shortest first: each takes examples while its rows
    x its longest stay within `batch_size x seq_len` positions (ties keep `order`)."""
    budget = batch_size * seq_len
    batches: list[Rows] = []
    current: Rows = []
    for index in sorted(order, key=lambda i: lengths[i]):
        if lengths[index] > seq_len:
            raise ValueError(f"an example of {lengths[index]} positions does not fit a row of {seq_len}")
        if current and (len(current) + 1) * lengths[index] > budget:
            batches.append(current)
            current = []
        current.append([index])
    return batches + [current] if current else batches


def plan_batches(lengths: Sequence[int], batching: Batching, batch_size: int, seq_len: int,
                 rng: np.random.Generator | None) -> list[Rows]:
    """An epoch's micro-batches (each a list of rows); `rng` None keeps the given order (evaluation)."""
    order = list(rng.permutation(len(lengths))) if rng is not None else list(range(len(lengths)))
    if batching == "pack":
        rows = best_fit_decreasing(lengths, seq_len, order)
        if rng is not None:
            rows = [rows[i] for i in rng.permutation(len(rows))]
        return [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]
    if batching == "pad":
        batches = padded_batches(lengths, batch_size, seq_len, order)
        if rng is not None:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches
    raise ValueError(f"unknown batching {batching!r} (choose {' or '.join(BATCHINGS)})")


def batch_width(examples: Sequence[Example], rows: Rows, batching: Batching, seq_len: int) -> int:
    """Packed rows are `seq_len` wide, padded ones as their longest example."""
    return seq_len if batching == "pack" else max(len(examples[row[0]]) for row in rows)


def collate(examples: Sequence[Example], rows: Rows, batching: Batching, seq_len: int) -> Batch:
    """The tensors of one micro-batch."""
    packed = batching == "pack"
    width = batch_width(examples, rows, batching, seq_len)
    inputs = np.zeros((len(rows), width), dtype=np.int64)
    targets = np.full((len(rows), width), IGNORE, dtype=np.int64)
    doc_ids = np.full((len(rows), width), -1, dtype=np.int64)
    tokens = 0
    for r, row in enumerate(rows):
        at = 0
        for d, index in enumerate(row):
            example = examples[index]
            end = at + len(example)
            inputs[r, at:end], targets[r, at:end], doc_ids[r, at:end] = example.inputs, example.targets, d
            at = end
        tokens += at
    return Batch(torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(doc_ids) if packed else None, tokens)


def fingerprint(examples: Sequence[Example], *settings: Any) -> str:
    """xxh3-64 of every example's tokens and targets, in order, and `settings`."""
    digest = xxhash.xxh3_64(repr(settings).encode())
    for example in examples:
        digest.update(example.inputs.tobytes())
        digest.update(example.targets.tobytes())
    return digest.hexdigest()


class SftLoader:
    """Endless micro-batches of one slot over the epochs of `examples` (see the module docstring)."""

    def __init__(self, examples: Sequence[Example], batching: Batching, batch_size: int, seq_len: int, seed: int,
                 slot: int = 0, slots: int = 1) -> None:
        if not examples:
            raise ValueError("no examples to train on")
        self.examples, self.batching, self.batch_size, self.seq_len, self.seed = examples, batching, batch_size, seq_len, seed
        self.slot, self.slots = slot, slots
        self.lengths = [len(example) for example in examples]
        self.fingerprint = fingerprint(examples, batching, batch_size, seq_len, seed, slots)
        self.epoch, self.index = 0, 0
        self._plan: tuple[int, list[Rows]] | None = None
        if self.batches_per_slot(0) == 0:
            raise ValueError(
                f"the training split gives {len(self.plan(0))} micro-batches of {batch_size} rows per epoch, fewer than "
                f"the {slots} readers (processes x accumulation steps): use more data or a smaller batch"
            )

    def plan(self, epoch: int) -> list[Rows]:
        if self._plan is None or self._plan[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._plan = (epoch, plan_batches(self.lengths, self.batching, self.batch_size, self.seq_len, rng))
        return self._plan[1]

    def batches_per_slot(self, epoch: int) -> int:
        return len(self.plan(epoch)) // self.slots

    def __iter__(self) -> SftLoader:
        return self

    def __next__(self) -> Batch:
        if self.index >= self.batches_per_slot(self.epoch):
            self.epoch, self.index = self.epoch + 1, 0
        rows = self.plan(self.epoch)[self.slot + self.index * self.slots]
        self.index += 1
        return collate(self.examples, rows, self.batching, self.seq_len)

    def state_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "fingerprint": self.fingerprint, "slot": self.slot, "slots": self.slots,
                "epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"SFT loader state {state!r:.80} is not one this loader writes (version {STATE_VERSION})")
        if (state["slot"], state["slots"]) != (self.slot, self.slots):
            raise ValueError(f"SFT loader state is for slot {state['slot']} of {state['slots']}, this is {self.slot} of {self.slots}")
        if state["fingerprint"] != self.fingerprint:
            raise ValueError("SFT loader state was saved over other data or batching settings (its fingerprint differs)")
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
