"""Rejection sampling (best-of-N): N replies per prompt, the reward model keeps the best, SFT on those.

    summary = best_of_n(settings, policy_uri="runs/sft", reward="runs/reward", prompt_specs=["prompts.jsonl"],
                        output_uri="runs/best-of-n", resume=True)

The recipe of Llama 2's rejection-sampling rounds (Touvron et al. 2023, section 3.2.3) and
Llama 3's: sample, keep the highest-scoring reply, fine-tune on the kept replies.

1. Selection. The training prompts (all but the `best_of_n.eval_prompts` of lowest hash) go in
   batches of `best_of_n.prompts_per_batch`; the engine samples `best_of_n.samples` replies per
   prompt (each prompt prefilled once), the reward (a reward model or any Scorer) scores them,
   and among the replies that closed their turn the best is kept (a prompt none of whose
   samples finished is counted and left out). Batch b is sampled with a seed made from
   `best_of_n.seed` and b and written to `<output>/selection/batch-<b>.jsonl` when done, so a
   rerun skips finished batches and samples the same replies for the others; the run's inputs
   (policy, reward, prompts, settings) are in `<output>/selection/config.json` and a rerun over
   other inputs is refused. Then `<output>/winners.jsonl` (the kept conversations, in the
   `messages` layout `crawl2chat sft --data` reads) and `<output>/selection.json`: how many
   prompts and replies, and the mean score of the kept replies against the mean of all
   finished samples (`kept_reward_mean`, `sample_reward_mean`).
2. Fine-tuning on the winners, with `best_of_n.train`: next-token loss on what the assistant
   wrote, padded rows of `train.batch_size` conversations, through the shared loop
   (checkpoints, metrics.jsonl, exact resume). This is a small stand-in for the SFT stage
   (tasks/train/sft.py, not on this branch yet): the winners file is SFT's input format, so
   `crawl2chat sft --base <policy> --data <output>/winners.jsonl` does the same step there.
   Eval lines (step 0 and the end) carry `val_reward_mean`: the reward's mean score of the
   policy's greedy replies to the held-out prompts, before and after; the summary has both.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import torch
import xxhash
from torch import Tensor

from infra.settings import BestOfNSettings, Settings
from infra.storage import Storage, join
from model.chat import render
from model.checkpoint import CheckpointError, latest_pointer
from model.distributed import Distributed, all_reduce_sum, barrier
from model.engine import Engine, SamplingParams
from model.gpt import GPT
from model.heads import RewardModel, Scorer, right_padded
from model.sampler import EpochSampler
from model.tokenizer import BpeTokenizer
from model.trainer import LossOutput, Trainer
from tasks.chat.conversations import write_conversations
from tasks.chat.prompts import Prompt, prompt_key
from tasks.train.replies import closed_turn, generate_replies, guarded_scores, start_sampling

log = logging.getLogger(__name__)

STAGE = "best-of-n"
SELECTION_DIR = "selection"
WINNERS_FILE = "winners.jsonl"
SELECTION_REPORT = "selection.json"


# -- 1. selection --------------------------------------------------------------------------------


def select_batch(engine: Engine, reward: Scorer, prompts: Sequence[Prompt], s: BestOfNSettings, seed: int) -> list[dict[str, Any]]:
    """One row per prompt: its best finished reply and score, the mean over its finished samples."""
    params = SamplingParams(max_tokens=s.max_new_tokens, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p)
    done = generate_replies(engine, prompts, params, num_samples=s.samples, seed=seed)
    scores = guarded_scores(reward, prompts, done, engine.tokenizer)
    rows = []
    for p, prompt in enumerate(prompts):
        candidates = [(scores[i], done[i]) for i in range(p * s.samples, (p + 1) * s.samples) if closed_turn(done[i], engine.tokenizer)]
        best = max(candidates, key=lambda item: item[0], default=None)
        rows.append({
            "prompt": prompt, "finished": len(candidates), "samples": s.samples,
            "reply": best[1].text if best else None, "score": best[0] if best else None,
            "mean_score": sum(score for score, _ in candidates) / len(candidates) if candidates else None,
        })
    return rows


def _batch_uri(output_uri: str, batch: int) -> str:
    return join(output_uri, SELECTION_DIR, f"batch-{batch:05d}.jsonl")


def run_selection(storage: Storage, output_uri: str, engine: Engine, reward: Scorer, prompts: Sequence[Prompt],
                  s: BestOfNSettings, inputs: dict[str, Any], resume: bool, dist: Distributed) -> list[dict[str, Any]]:
    """Every training prompt's selection row, batch files written or reused (see the module docstring)."""
    config_uri = join(output_uri, SELECTION_DIR, "config.json")
    if storage.exists(config_uri):
        saved = json.loads(storage.read_text(config_uri))
        if not resume:
            raise ValueError(f"{output_uri} already holds a best-of-n run: pass --resume, or use a fresh output")
        if saved != json.loads(json.dumps(inputs)):
            differ = [key for key in sorted(set(saved) | set(inputs)) if saved.get(key) != json.loads(json.dumps(inputs.get(key)))]
            raise CheckpointError(f"{output_uri} was selected from other inputs ({', '.join(differ)} differ): use a fresh output")
    elif dist.is_main:
        storage.write_text(config_uri, json.dumps(inputs, indent=1))
    batches = range(0, len(prompts), s.prompts_per_batch)
    for b, start in enumerate(batches):
        uri = _batch_uri(output_uri, b)
        if b % dist.world_size != dist.rank or storage.exists(uri):
            continue
        rows = select_batch(engine, reward, prompts[start : start + s.prompts_per_batch], s, seed=s.seed * 1_000_003 + b)
        storage.write_text(uri, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        kept = [row["score"] for row in rows if row["score"] is not None]
        log.info("%s: batch %d/%d selected: %d of %d prompts kept, best %.4f vs mean %.4f", STAGE, b + 1, len(batches), len(kept),
                 len(rows), sum(kept) / max(len(kept), 1),
                 sum(row["mean_score"] for row in rows if row["mean_score"] is not None) / max(len(kept), 1))
    barrier()
    return [json.loads(line) for b in range(len(batches)) for line in storage.read_text(_batch_uri(output_uri, b)).splitlines()]


def selection_report(rows: Sequence[dict[str, Any]], s: BestOfNSettings) -> dict[str, Any]:
    kept = [row for row in rows if row["reply"] is not None]
    finished = sum(row["finished"] for row in rows)
    return {
        "prompts": len(rows), "samples_per_prompt": s.samples, "replies": len(rows) * s.samples, "finished_replies": finished,
        "kept": len(kept), "no_finished_reply": len(rows) - len(kept),
        "kept_reward_mean": sum(row["score"] for row in kept) / len(kept) if kept else None,
        # the mean over every finished sample, as if one had been drawn at random
        "sample_reward_mean": sum(row["mean_score"] * row["finished"] for row in kept) / finished if finished else None,
    }


# -- 2. fine-tuning on the winners ---------------------------------------------------------------------


def lm_rows(tokenizer: BpeTokenizer, conversations: Sequence[list[dict]], device: torch.device) -> tuple[Tensor, Tensor]:
    """(inputs, targets) of padded rows: targets are the next tokens the assistant wrote, -1 elsewhere."""
    rendered = [render(tokenizer, conversation) for conversation in conversations]
    ids, _ = right_padded([row for row, _ in rendered])
    masks, _ = right_padded([mask for _, mask in rendered])
    targets = torch.where(masks[:, 1:] == 1, ids[:, 1:], -1)
    return ids[:, :-1].to(device), targets.to(device)


def lm_loss(module: torch.nn.Module, batch: tuple[Tensor, Tensor]) -> LossOutput:
    inputs, targets = batch
    count = int((targets != -1).sum())
    return LossOutput(loss=module(inputs, targets) * count, count=count, tokens=inputs.numel())


class GreedyCheck:
    """The reward's mean score of greedy replies to the held-out prompts (eval lines)."""

    def __init__(self, model: GPT, tokenizer: BpeTokenizer, reward: Scorer, prompts: list[Prompt], s: BestOfNSettings,
                 dist: Distributed) -> None:
        self.engine, self.reward, self.prompts, self.s, self.dist = Engine(model, tokenizer), reward, prompts, s, dist
        self.values: dict[int, float] = {}

    def __call__(self, step: int) -> dict[str, float]:
        mine = self.prompts[self.dist.rank :: self.dist.world_size]
        sums = torch.zeros(2, dtype=torch.float64, device=self.dist.device)
        if mine:
            done = generate_replies(self.engine, mine, SamplingParams(max_tokens=self.s.max_new_tokens, temperature=0.0))
            sums += torch.tensor([sum(guarded_scores(self.reward, mine, done, self.engine.tokenizer)), len(mine)],
                                 dtype=torch.float64, device=self.dist.device)
        total, count = all_reduce_sum(sums).tolist()
        self.values[step] = total / count
        return {"val_reward_mean": total / count}


# -- the stage ---------------------------------------------------------------------------------------


def best_of_n(settings: Settings, policy_uri: str, reward: str | Scorer, prompt_specs: Sequence[str], output_uri: str,
              fmt: str = "auto", resume: bool = False) -> dict[str, Any]:
    """Select the best of N replies per prompt under `reward`, then fine-tune `policy_uri` on
    them; everything under `output_uri`. With `resume`, reuse what a killed run finished."""
    s, train = settings.best_of_n, settings.best_of_n.train
    storage = Storage(settings.storage)
    start = start_sampling(s, "best_of_n", policy_uri, prompt_specs, fmt, storage)
    dist, policy, tokenizer, seq_len = start.dist, start.policy, start.tokenizer, start.seq_len
    loaded, train_prompts, held_out = start.loaded, start.train_prompts, start.held_out
    scorer = RewardModel.load(reward, storage, dist.device) if isinstance(reward, str) else reward
    reward_name = scorer.name if isinstance(scorer, RewardModel) else f"{scorer.__module__}.{getattr(scorer, '__qualname__', '?')}"
    digest = xxhash.xxh64("".join(prompt_key(p) for p in loaded.prompts).encode()).hexdigest()
    inputs = {"policy": policy_uri, "reward": reward_name, "prompts": f"{len(loaded.prompts)} prompts, xxh64 {digest}",
              "best_of_n": s.model_dump(exclude={"train"})}

    rows = run_selection(storage, output_uri, Engine(policy.eval(), tokenizer), scorer, train_prompts, s, inputs, resume, dist)
    report = selection_report(rows, s)
    winners = [[*row["prompt"], {"role": "assistant", "content": row["reply"]}] for row in rows if row["reply"] is not None]
    if not winners:
        raise ValueError(f"none of the {len(rows)} prompts got a reply that closed its turn in {s.samples} samples: "
                         "raise best_of_n.max_new_tokens, or start from a model that ends its turns")
    if dist.is_main:
        write_conversations(join(output_uri, WINNERS_FILE), winners, storage)
        storage.write_text(join(output_uri, SELECTION_REPORT), json.dumps(report, indent=1))
    log.info("%s: %d of %d prompts kept; reward of the kept %.4f against %.4f for a random finished sample", STAGE,
             report["kept"], report["prompts"], report["kept_reward_mean"], report["sample_reward_mean"])

    torch.manual_seed(train.seed)
    model = policy.train()
    info = {"policy": policy_uri, "reward": reward_name, "params": model.config.num_params(), "winners": len(winners),
            "held_out_prompts": len(held_out), "inputs": inputs}
    trainer = Trainer(model, train, dist=dist, run=output_uri, stage=STAGE, tokenizer=tokenizer, storage=storage,
                      config=model.config, meta=info)
    sampler = EpochSampler(len(winners), train.seed, slot=dist.rank, slots=dist.world_size)
    saved = trainer.begin(resume)
    if saved is not None:
        try:
            sampler.load_state_dict(saved[dist.rank])
        except (ValueError, KeyError, TypeError, IndexError) as error:
            raise CheckpointError(f"cannot resume {output_uri}: {error}") from error
    check = GreedyCheck(model, tokenizer, scorer, held_out, s, dist)

    def next_batch(micro_step: int) -> tuple[Tensor, Tensor]:
        return lm_rows(tokenizer, [winners[i] for i in sampler.take(train.batch_size)], dist.device)

    summary = trainer.fit(lm_loss, next_batch, data_state=sampler.state_dict, evaluate=check if held_out else None)
    pointer = latest_pointer(storage, output_uri)
    summary.update({key: value for key, value in info.items() if key != "inputs"})
    summary.update({"selection": report, "winners_file": join(output_uri, WINNERS_FILE)})
    if check.values:
        before = next((r["val_reward_mean"] for r in trainer.metrics.records if r["step"] == 0 and "val_reward_mean" in r), None)
        summary.update(greedy_reward_before=before, greedy_reward_after=check.values[max(check.values)])
    summary["checkpoint"] = join(output_uri, "checkpoints", pointer["path"]) if pointer else None
    return summary
