"""DPO: learn from preference pairs directly, with a frozen reference and no reward model.

    summary = dpo(settings, policy_uri="runs/sft", data=["pairs.jsonl"], output_uri="runs/dpo", resume=True)

Data: `tasks.chat.pairs.load_pairs` (HH-RLHF, LLaMA-Factory, TRL layouts; bad or over-long pairs
counted by reason). Each pair becomes two sequences, the prompt plus either reply, rendered with
the chat template; the reply's tokens (its content and `<|im_end|>`, as SFT's loss mask has it)
are what the log-probabilities sum over. Held-out pairs for `val_*`: `--val-data`, or a seeded
`dpo.val_fraction` of the data (at most `dpo.max_val_pairs`).

The reference is the starting policy. Its log-probabilities of every pair are computed once,
before the first step (from a frozen copy of the starting weights, dropped once done), and
stored with the run (`<output>/reference_logps.pt`) under a key over the pairs' token ids, the
reference's weights (the SHA-256 of its weights file) and the precision; a resume loads them
instead of recomputing, a changed key recomputes them, and a run resumed on other pairs is
refused. So no reference model sits in memory while training.

Loss per pair (`dpo.loss`, see infra/settings/rl.py): with d = (log pi(y_c) - log ref(y_c)) -
(log pi(y_r) - log ref(y_r)), "sigmoid" is -(1 - e) log sigmoid(beta d) - e log sigmoid(-beta d)
(e = dpo.label_smoothing; 0 is DPO, above 0 conservative DPO) and "ipo" is
(d_avg - 1 / (2 beta))^2 with per-token averaged log-ratios. The step's loss is the mean over its
pairs (the trainer's count is pairs). Logged per step (means over the step's pairs):
`train_reward_chosen` and `train_reward_rejected` (the implicit rewards beta x log-ratio),
`train_margin` (their difference) and `train_accuracy` (the share of pairs whose chosen reward is
the higher; a tie counts half, so the untrained policy reads 0.5, the chance line). Eval lines
hold the same over the held-out pairs: `val_loss`, `val_reward_chosen`, `val_reward_rejected`,
`val_margin`, `val_accuracy`.

Order: pair i of the run is element i of an endless stream of seeded permutations (one per
epoch), and step s takes elements [s x P, (s + 1) x P) for P pairs per step (processes x
micro-steps x batch), so the position is the step and resume is exact; one process with two
micro-steps computes what two processes with one each compute.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from infra.settings import Settings
from infra.storage import Storage, join
from model.chat import render, render_prompt
from model.checkpoint import CheckpointError, latest_pointer
from model.distributed import Distributed, all_reduce_sum, barrier, gather_objects, init_distributed
from model.rl import masked_sum, token_logprobs
from model.tokenizer import BpeTokenizer
from model.trainer import LossOutput, Trainer, sequence_length, uses_bf16
from tasks.chat.pairs import PreferencePair, load_pairs
from tasks.train.policy import checkpoint_meta, frozen_copy, load_policy

log = logging.getLogger(__name__)

STAGE = "dpo"
REFERENCE_FILE = "reference_logps.pt"


@dataclass(frozen=True)
class EncodedPair:
    """Both sides as token ids with a mask of the reply's tokens (1 on what the loss sums)."""

    chosen: list[int]
    chosen_mask: list[int]
    rejected: list[int]
    rejected_mask: list[int]


def encode_pair(tokenizer: BpeTokenizer, pair: PreferencePair) -> EncodedPair:
    prompt = render_prompt(tokenizer, pair.prompt)
    sides = []
    for reply in (pair.chosen, pair.rejected):
        ids, mask = render(tokenizer, [*pair.prompt, reply])
        if ids[: len(prompt)] != prompt:  # the template renders a prompt the same whatever follows
            raise AssertionError("the chat template rendered the prompt differently before a reply")
        sides.append((ids, [0] * len(prompt) + mask[len(prompt) :]))
    (chosen, chosen_mask), (rejected, rejected_mask) = sides
    return EncodedPair(chosen, chosen_mask, rejected, rejected_mask)


def collate(pairs: list[EncodedPair], device: torch.device) -> tuple[Tensor, Tensor, int]:
    """(ids, mask), each (2B, T): the chosen sides, then the rejected, right-padded with 0;
    and the number of real (unpadded) tokens."""
    sequences = [(p.chosen, p.chosen_mask) for p in pairs] + [(p.rejected, p.rejected_mask) for p in pairs]
    width = max(len(ids) for ids, _ in sequences)
    ids = torch.zeros(len(sequences), width, dtype=torch.long)
    mask = torch.zeros(len(sequences), width, dtype=torch.bool)
    for row, (tokens, reply) in enumerate(sequences):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(reply)] = torch.tensor(reply, dtype=torch.bool)
    return ids.to(device), mask.to(device), sum(len(tokens) for tokens, _ in sequences)


def sequence_logps(model: torch.nn.Module, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per sequence: the summed log-probability of its masked tokens (float32), and their count."""
    targets = mask[:, 1:]
    return masked_sum(token_logprobs(model, ids), targets, dim=1), targets.sum(1).float()


def dpo_loss(logps: Tensor, ref_logps: Tensor, counts: Tensor, beta: float, loss: str,
             label_smoothing: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """Per-pair losses and the implicit rewards (chosen, rejected). `logps`, `ref_logps`,
    `counts` are (B, 2): column 0 the chosen side, 1 the rejected."""
    log_ratios = logps - ref_logps
    rewards = beta * log_ratios.detach()
    if loss == "ipo":
        averaged = log_ratios / counts.clamp(min=1)
        per_pair = (averaged[:, 0] - averaged[:, 1] - 1 / (2 * beta)).pow(2)
    else:
        logits = beta * (log_ratios[:, 0] - log_ratios[:, 1])
        per_pair = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return per_pair, rewards[:, 0], rewards[:, 1]


def pair_metrics(per_pair: Tensor, chosen: Tensor, rejected: Tensor) -> dict[str, Tensor]:
    """Sums over the pairs of what DPO logs (means once the loop divides by the pair count)."""
    margin = chosen - rejected
    accuracy = (margin > 0).double() + 0.5 * (margin == 0).double()
    return {"reward_chosen": chosen.sum(), "reward_rejected": rejected.sum(), "margin": margin.sum(),
            "accuracy": accuracy.sum(), "loss": per_pair.detach().sum()}


# -- the reference's log-probabilities, computed once per run --------------------------------------


def reference_key(train: list[EncodedPair], val: list[EncodedPair], weights_sha256: str, bf16: bool) -> str:
    digest = hashlib.sha256(f"{weights_sha256}|bf16={bf16}|".encode())
    for pair in [*train, None, *val]:
        digest.update(b"|" if pair is None else json.dumps([pair.chosen, pair.chosen_mask, pair.rejected,
                                                             pair.rejected_mask]).encode())
    return digest.hexdigest()


@torch.no_grad()
def compute_reference(model: torch.nn.Module, pairs: list[EncodedPair], batch_size: int, dist: Distributed,
                      autocast) -> Tensor:
    """(N, 2) float64 summed log-probabilities of every pair's sides under `model`; the pairs
    are shared round-robin by rank and gathered, so every rank returns the whole table."""
    mine: list[tuple[int, list[float]]] = []
    indices = list(range(dist.rank, len(pairs), dist.world_size))
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        ids, mask, _ = collate([pairs[i] for i in chunk], dist.device)
        with autocast():
            sums, _ = sequence_logps(model, ids, mask)
        sums = sums.double().cpu().view(2, len(chunk)).T
        mine += [(i, row.tolist()) for i, row in zip(chunk, sums)]
    table = torch.zeros(len(pairs), 2, dtype=torch.float64)
    for part in gather_objects(mine):
        for i, values in part:
            table[i] = torch.tensor(values, dtype=torch.float64)
    return table


def stored_reference(storage: Storage, output_uri: str, key: str) -> dict[str, Tensor] | None:
    """The run's stored reference table when there is one under `key`, else None."""
    uri = join(output_uri, REFERENCE_FILE)
    if not storage.exists(uri):
        return None
    stored = torch.load(io.BytesIO(storage.read_bytes(uri)), weights_only=True)
    if stored.get("key") != key:
        log.warning("%s: %s was made for other pairs or another reference; it will be recomputed", STAGE, uri)
        return None
    log.info("%s: reference log-probabilities loaded from %s", STAGE, uri)
    return stored


def store_reference(storage: Storage, output_uri: str, table: dict[str, Tensor], is_main: bool) -> None:
    if is_main:
        buffer = io.BytesIO()
        torch.save(table, buffer)
        storage.write_bytes(join(output_uri, REFERENCE_FILE), buffer.getvalue())
    barrier()


# -- the stage --------------------------------------------------------------------------------------


class PairStream:
    """Element i of an endless sequence of seeded permutations of range(n), one per epoch."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._epoch, self._order = -1, torch.arange(n)

    def __getitem__(self, i: int) -> int:
        epoch, position = divmod(i, self.n)
        if epoch != self._epoch:
            self._order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
            self._epoch = epoch
        return int(self._order[position])


def _split_pairs(pairs: list[PreferencePair], fraction: float, limit: int, seed: int) -> tuple[list, list]:
    count = min(limit, math.ceil(len(pairs) * fraction)) if fraction > 0 else 0
    if count == 0:
        return pairs, []
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    held = set(order[:count])
    return [p for i, p in enumerate(pairs) if i not in held], [pairs[i] for i in sorted(held)]


def dpo(settings: Settings, policy_uri: str, data: list[str], output_uri: str, val_data: list[str] | None = None,
        resume: bool = False) -> dict[str, Any]:
    """Train `policy_uri`'s model on the preference pairs in `data`; checkpoints and logs under
    `output_uri`. With `resume`, continue from the newest checkpoint there (if any)."""
    s, train = settings.dpo, settings.dpo.train
    storage = Storage(settings.storage)
    dist = init_distributed(train.device)
    policy = load_policy(policy_uri, storage, dist.device)
    model, tokenizer = policy.model, policy.tokenizer
    seq_len = sequence_length(train, model.config)

    loaded = load_pairs(data, s.format, storage, tokenizer, max_tokens=seq_len)
    if val_data:
        train_pairs, val_pairs = loaded.pairs, load_pairs(val_data, s.format, storage, tokenizer, max_tokens=seq_len).pairs
    else:
        train_pairs, val_pairs = _split_pairs(loaded.pairs, s.val_fraction, s.max_val_pairs, train.seed)
    if not train_pairs:
        raise ValueError(f"no training pairs left after holding out {len(val_pairs)} for validation")
    encoded_train = [encode_pair(tokenizer, pair) for pair in train_pairs]
    encoded_val = [encode_pair(tokenizer, pair) for pair in val_pairs]
    skipped = {report.uri: report.stats()["steps"] for report in loaded.reports}

    bf16 = uses_bf16(train, dist.device)
    key = reference_key(encoded_train, encoded_val, policy.weights_sha256, bf16)
    pairs_per_step = train.batch_size * s.accum_steps * dist.world_size
    info = {**policy.describe(), "train_pairs": len(encoded_train), "val_pairs": len(encoded_val),
            "pairs_per_step": pairs_per_step, "loss": s.loss, "beta": s.beta, "reference_key": key, "files": skipped}
    trainer = Trainer(model, train, dist=dist, run=output_uri, stage=STAGE, tokenizer=tokenizer, storage=storage,
                      flops_per_token=model.config.flops_per_token(), meta=info)
    if dist.is_main:
        log.info("%s: %d training pairs, %d held out; %d pairs per step (%d process(es) x %d micro-step(s) x %d); "
                 "loss %s, beta %g", STAGE, len(encoded_train), len(encoded_val), pairs_per_step, dist.world_size,
                 s.accum_steps, train.batch_size, s.loss, s.beta)
        if len(encoded_train) < pairs_per_step:
            log.warning("%s: fewer training pairs (%d) than pairs per step (%d): pairs repeat within a step",
                        STAGE, len(encoded_train), pairs_per_step)

    saved_key = checkpoint_meta(storage, output_uri).get("reference_key") if resume else None
    if saved_key not in (None, key):
        raise CheckpointError(f"{output_uri} was trained on other pairs or from another policy; resume with the same "
                              "--policy, --data and settings, or use a fresh output")
    reference = stored_reference(storage, output_uri, key)
    starting_weights = frozen_copy(model) if reference is None else None  # begin() may load a later step's
    saved = trainer.begin(resume)
    if reference is None:
        log.info("%s: computing the reference log-probabilities of %d pairs", STAGE, len(encoded_train) + len(encoded_val))
        reference = {"key": key,
                     "train": compute_reference(starting_weights, encoded_train, s.ref_batch_size, dist, trainer.autocast),
                     "val": compute_reference(starting_weights, encoded_val, s.ref_batch_size, dist, trainer.autocast)}
        store_reference(storage, output_uri, reference, dist.is_main)
        del starting_weights
    if saved is not None and saved[dist.rank] is not None and saved[dist.rank]["pairs_per_step"] != pairs_per_step:
        raise CheckpointError(f"the checkpoint under {output_uri} took {saved[dist.rank]['pairs_per_step']} pairs per "
                              f"step; this run takes {pairs_per_step}: resume with the same batch, accum_steps and processes")
    stream = PairStream(len(encoded_train), train.seed)
    ref_train = reference["train"]

    def next_batch(micro_step: int) -> tuple[Tensor, Tensor, Tensor, int]:
        slot = dist.rank * s.accum_steps + micro_step
        start = trainer.step * pairs_per_step + slot * train.batch_size
        chosen = [stream[i] for i in range(start, start + train.batch_size)]
        ids, mask, tokens = collate([encoded_train[i] for i in chosen], dist.device)
        return ids, mask, ref_train[chosen].to(dist.device), tokens

    def loss_fn(module: torch.nn.Module, batch: tuple[Tensor, Tensor, Tensor, int]) -> LossOutput:
        return _pair_loss(module, *batch, s)

    def evaluate(step: int) -> dict[str, float]:
        return evaluate_pairs(trainer.model, encoded_val, reference["val"], s, dist, trainer.autocast)

    summary = trainer.fit(loss_fn, next_batch, accum_steps=s.accum_steps, evaluate=evaluate if encoded_val else None,
                          data_state=lambda: {"reference_key": key, "pairs_per_step": pairs_per_step,
                                              "pairs_seen": trainer.step * pairs_per_step})
    pointer = latest_pointer(storage, output_uri)
    summary.update({key_: value for key_, value in info.items() if key_ != "files"})
    summary["checkpoint"] = join(output_uri, "checkpoints", pointer["path"]) if pointer else None
    return summary


def _pair_loss(module: torch.nn.Module, ids: Tensor, mask: Tensor, ref: Tensor, tokens: int, s) -> LossOutput:
    sums, counts = sequence_logps(module, ids, mask)
    pairs = ids.shape[0] // 2
    logps, counts = sums.view(2, pairs).T, counts.view(2, pairs).T
    per_pair, chosen, rejected = dpo_loss(logps.double(), ref.double(), counts, s.beta, s.loss, s.label_smoothing)
    metrics = pair_metrics(per_pair, chosen, rejected)
    metrics.pop("loss")
    return LossOutput(loss=per_pair.sum(), count=pairs, tokens=tokens, metrics=metrics)


@torch.no_grad()
def evaluate_pairs(model: torch.nn.Module, pairs: list[EncodedPair], ref: Tensor, s, dist: Distributed,
                   autocast) -> dict[str, float]:
    """val_* over the held-out pairs, shared round-robin by rank."""
    names = ("loss", "reward_chosen", "reward_rejected", "margin", "accuracy")
    sums = torch.zeros(len(names) + 1, dtype=torch.float64, device=dist.device)
    indices = list(range(dist.rank, len(pairs), dist.world_size))
    for start in range(0, len(indices), s.train.batch_size):
        chunk = indices[start : start + s.train.batch_size]
        ids, mask, tokens = collate([pairs[i] for i in chunk], dist.device)
        with autocast():
            out = _pair_loss(model, ids, mask, ref[chunk].to(dist.device), tokens, s)
        sums[0] += out.loss.double()
        sums[1:-1] += torch.stack([torch.as_tensor(out.metrics[name]).double() for name in names[1:]])
        sums[-1] += len(chunk)
    totals = all_reduce_sum(sums).tolist()
    count = max(totals[-1], 1.0)
    return {f"val_{name}": value / count for name, value in zip(names, totals)}
