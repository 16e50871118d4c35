"""The reward model: an SFT model with a scalar head, trained on preference pairs (Bradley-Terry).

    summary = train_reward(settings, base_uri="runs/sft", data_specs=["harmless-base_test.jsonl.gz"],
                           output_uri="runs/reward", resume=True)
    judge = RewardModel.load("runs/reward")          # model/heads.py
    judge.score(conversation)                        # sigmoid(r), in [0, 1]

The model is the base's (a training checkpoint or an exported directory: its config, tokenizer
and weights) with a new `score` head (model/heads.py); r is the head's scalar at the last token
of a conversation, the `<|im_end|>` that closes the reply.

Data: pairs in any preference format (tasks/chat/pairs.py), each side rendered whole
([*prompt, reply]) with the chat template. A pair longer than the context loses its prompt's
earliest turns (`fit_pair`), one whose last user turn and replies alone do not fit is skipped
as `too_long`; both are counted in `<output>/data_report.json` with every file's funnel.
Held out: `reward.val_fraction` of the pairs by content hash (xxh64 of the pair's JSON), so the
split does not depend on file order. With `reward.parts` > 1 the rest is cut into parts by a
second hash and the run trains on part `reward.part` alone: two reward models on parts 0 and 1
of 2 never see each other's pairs (one judges a PPO run against the other) and are evaluated on
the same held-out pairs.

Loss per pair (the mean over pairs, LossOutput's contract):
`-log sigmoid(r_chosen - r_rejected - reward.margin) + reward.center_coef * (r_chosen + r_rejected)^2`;
the centring term (Eisenstein et al. 2023, TRL's `center_rewards_coefficient`) keeps rewards
near 0, since Bradley-Terry only sees differences. Logged per step: train_accuracy,
train_margin (r_chosen - r_rejected), train_chosen, train_rejected; on eval lines (step 0,
every `train.eval_every`, the end): val_loss, `val_accuracy` (the share of held-out pairs with
r_chosen > r_rejected; chance is 0.5), val_margin. Checkpoints, metrics.jsonl and exact resume are
model/trainer.py's, run with `settings.reward.train`; each micro-step's reader (model/sampler.py)
goes into every checkpoint.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
import xxhash
from torch import Tensor

from infra.settings import RewardSettings, Settings
from infra.storage import Storage, join
from model.chat import render
from model.checkpoint import CheckpointError, latest_pointer
from model.distributed import Distributed, all_reduce_sum, init_distributed
from model.export import load_for_inference
from model.heads import ScoredGPT, last_values, right_padded
from model.sampler import EpochSampler
from model.tokenizer import BpeTokenizer
from model.trainer import LossOutput, Trainer, sequence_length
from tasks.chat.errors import ChatDataError
from tasks.chat.pairs import PreferencePair, fit_pair, load_pairs

log = logging.getLogger(__name__)

STAGE = "reward"
DATA_REPORT = "data_report.json"


# -- data ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedPair:
    chosen: list[int]
    rejected: list[int]


def encode_pair(tokenizer: BpeTokenizer, pair: PreferencePair) -> EncodedPair:
    return EncodedPair(render(tokenizer, [*pair.prompt, pair.chosen])[0], render(tokenizer, [*pair.prompt, pair.rejected])[0])


def pair_key(pair: PreferencePair, seed: int = 0) -> int:
    return xxhash.xxh64_intdigest(json.dumps(pair.to_row(), sort_keys=True, ensure_ascii=False).encode(), seed)


def split_pairs(pairs: Sequence[PreferencePair], val_fraction: float, parts: int = 1, part: int = 0,
                ) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, val): val is the pairs whose hash falls in the lowest `val_fraction` of the range,
    in hash order; train is part `part` of `parts` of the others (by a second hash), in file order."""
    threshold = int(val_fraction * 2**64)
    keyed = [(pair_key(pair), pair) for pair in pairs]
    val = [pair for _, pair in sorted((item for item in keyed if item[0] < threshold), key=lambda item: item[0])]
    train = [pair for key, pair in keyed if key >= threshold and pair_key(pair, seed=1) % parts == part]
    return train, val


@dataclass
class RewardData:
    train: list[EncodedPair]
    val: list[EncodedPair]
    report: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """xxh64 over every rendered pair, train then val: equal exactly when the data is."""
        digest = xxhash.xxh64()
        for pair in self.train + self.val:
            digest.update(json.dumps([pair.chosen, pair.rejected]).encode())
        return f"{len(self.train)}+{len(self.val)} pairs, xxh64 {digest.hexdigest()}"


def fit_pairs(tokenizer: BpeTokenizer, pairs: Sequence[PreferencePair], max_tokens: int) -> tuple[list[PreferencePair], Counter]:
    """The pairs that fit `max_tokens` (prompts shortened where needed), and the counts of what
    was shortened (`prompt_trimmed`) and dropped (`too_long`)."""
    kept, counts = [], Counter()
    for pair in pairs:
        fitted = fit_pair(tokenizer, pair, max_tokens)
        if fitted is None:
            counts["too_long"] += 1
            continue
        if fitted is not pair:
            counts["prompt_trimmed"] += 1
        kept.append(fitted)
    return kept, counts


def load_reward_data(specs: Sequence[str], tokenizer: BpeTokenizer, seq_len: int, settings: RewardSettings,
                     fmt: str = "auto", storage: Storage | None = None) -> RewardData:
    """Pairs from `specs`, fitted to `seq_len`, split, rendered; every skip counted."""
    loaded = load_pairs(specs, fmt, storage)
    pairs, counts = fit_pairs(tokenizer, loaded.pairs, seq_len)
    if not pairs:
        raise ChatDataError(f"no preference pair fits the context of {seq_len} tokens ({len(loaded.pairs)} read, all too long)")
    train, val = split_pairs(pairs, settings.val_fraction, settings.parts, settings.part)
    if not train or not val:
        raise ChatDataError(f"{len(pairs)} usable pairs give {len(train)} to train on and {len(val)} to hold out "
                            f"(reward.val_fraction={settings.val_fraction}, part {settings.part} of {settings.parts}): give more pairs")
    report = {
        "files": [report.stats() for report in loaded.reports],
        "context": {"max_tokens": seq_len, "read": len(loaded.pairs), "kept": len(pairs), **counts},
        "split": {"val_fraction": settings.val_fraction, "parts": settings.parts, "part": settings.part,
                  "train": len(train), "val": len(val)},
    }
    for file in loaded.reports:
        log.info("%s: %s format, %d pairs kept of %d rows", file.uri, file.format, file.kept, file.funnel["read"].docs_in)
    return RewardData([encode_pair(tokenizer, p) for p in train], [encode_pair(tokenizer, p) for p in val], report)


@dataclass
class PairBatch:
    ids: Tensor  # (2B, T): the chosen sides, then the rejected ones, right-padded
    lengths: Tensor  # (2B,)

    @property
    def pairs(self) -> int:
        return len(self.ids) // 2


def collate_pairs(pairs: Sequence[EncodedPair], device: torch.device | str = "cpu") -> PairBatch:
    return PairBatch(*right_padded([p.chosen for p in pairs] + [p.rejected for p in pairs], device))


# -- the loss and evaluation -----------------------------------------------------------------------


def bradley_terry(module: torch.nn.Module, batch: PairBatch, margin: float = 0.0, center_coef: float = 0.0) -> LossOutput:
    """The summed pairwise loss of the batch, with sums of accuracy, margin and both rewards."""
    rewards = last_values(module(batch.ids), batch.lengths)
    chosen, rejected = rewards[: batch.pairs], rewards[batch.pairs :]
    difference = chosen - rejected
    losses = -F.logsigmoid(difference - margin)
    if center_coef:
        losses = losses + center_coef * (chosen + rejected).pow(2)
    metrics = {"accuracy": (difference > 0).sum(), "margin": difference.detach().sum(),
               "chosen": chosen.detach().sum(), "rejected": rejected.detach().sum()}
    return LossOutput(loss=losses.sum(), count=batch.pairs, tokens=int(batch.lengths.sum()), metrics=metrics)


@torch.no_grad()
def evaluate_pairs(model: torch.nn.Module, pairs: Sequence[EncodedPair], batch_size: int, settings: RewardSettings,
                   dist: Distributed, autocast) -> dict[str, float]:
    """val_loss, val_accuracy and val_margin over `pairs`, shared round-robin by rank."""
    mine = list(pairs[dist.rank :: dist.world_size])
    sums = torch.zeros(4, dtype=torch.float64, device=dist.device)  # loss, correct, margin, pairs
    for start in range(0, len(mine), batch_size):
        with autocast():
            out = bradley_terry(model, collate_pairs(mine[start : start + batch_size], dist.device), settings.margin, settings.center_coef)
        sums += torch.stack([out.loss.double(), out.metrics["accuracy"].double(), out.metrics["margin"].double(),
                             torch.tensor(float(out.count), dtype=torch.float64, device=dist.device)])
    loss, correct, margin, count = all_reduce_sum(sums).tolist()
    return {"val_loss": loss / count, "val_accuracy": correct / count, "val_margin": margin / count}


# -- the stage -------------------------------------------------------------------------------------


def train_reward(settings: Settings, base_uri: str, data_specs: Sequence[str], output_uri: str, fmt: str = "auto",
                 resume: bool = False) -> dict[str, Any]:
    """Train a reward model from `base_uri` on the pairs of `data_specs`; checkpoints,
    metrics.jsonl and data_report.json under `output_uri`. With `resume`, continue there."""
    s, train = settings.reward, settings.reward.train
    storage = Storage(settings.storage)
    dist = init_distributed(train.device)
    if train.fsdp:
        raise ValueError("the reward stage runs data-parallel (DDP); reward.train.fsdp is not supported")
    base, tokenizer = load_for_inference(base_uri, storage)
    seq_len = sequence_length(train, base.config)
    data = load_reward_data(data_specs, tokenizer, seq_len, s, fmt, storage)
    val = data.val[: s.max_val_pairs]

    torch.manual_seed(train.seed)
    model = ScoredGPT.from_gpt(base.to(dist.device), seed=train.seed).train()
    info = {"base": base_uri, "params": model.config.num_params() + model.config.n_embd, "seq_len": seq_len,
            "world_size": dist.world_size, "train_pairs": len(data.train), "val_pairs": len(val),
            "inputs": {"base": base_uri, "data": data.fingerprint(), "reward": s.model_dump(exclude={"train"})}}
    trainer = Trainer(model, train, dist=dist, run=output_uri, stage=STAGE, tokenizer=tokenizer, storage=storage,
                      config=model.config, meta=info)
    sampler = EpochSampler(len(data.train), train.seed, slot=dist.rank, slots=dist.world_size)
    saved = trainer.begin(resume)
    if saved is not None:
        try:
            sampler.load_state_dict(saved[dist.rank])
        except (ValueError, KeyError, TypeError, IndexError) as error:
            raise CheckpointError(f"cannot resume {output_uri}: {error}") from error
    if dist.is_main:
        storage.write_text(join(output_uri, DATA_REPORT), json.dumps(data.report, indent=1))
        log.info("%s: %s parameters from %s; %d train / %d val pairs (%s); %d process(es) x %d pairs per step",
                 STAGE, f"{info['params']:,}", base_uri, len(data.train), len(val),
                 ", ".join(f"{k} {v}" for k, v in data.report["context"].items()), dist.world_size, train.batch_size)

    def next_batch(micro_step: int) -> PairBatch:
        return collate_pairs([data.train[i] for i in sampler.take(train.batch_size)], dist.device)

    summary = trainer.fit(
        lambda module, batch: bradley_terry(module, batch, s.margin, s.center_coef), next_batch,
        data_state=sampler.state_dict,
        evaluate=lambda step: evaluate_pairs(trainer.model, val, train.batch_size, s, dist, trainer.autocast),
    )
    pointer = latest_pointer(storage, output_uri)
    summary.update({key: value for key, value in info.items() if key != "inputs"})
    summary["checkpoint"] = join(output_uri, "checkpoints", pointer["path"]) if pointer else None
    summary["data_report"] = join(output_uri, DATA_REPORT)
    return summary
