"""GRPO: reinforcement learning on tasks whose answers can be checked (DeepSeekMath / R1's recipe).

    summary = grpo(settings, policy_uri="runs/sft", task="arithmetic", output_uri="runs/grpo", resume=True)

One rollout: `grpo.prompts_per_rollout` problems per process (tasks/verifiable), rendered as chat
prompts, each sampled `grpo.group_size` times through the engine (prefilled once per prompt,
model/engine.py), every reply scored by the strict checker (tasks/verifiable/rewards.py:
correct + format_weight x well-formed, nothing for a reply that never closes its turn). A
reply's advantage is its reward against its group's (infra/settings/rl.py says how it is scaled);
every one of its sampled tokens carries it. The rollout then feeds `minibatches` x `epochs`
optimizer steps, each a pass of micro-batches of `grpo.train.batch_size` sequences through the
clipped objective (model/rl.py `clipped_surrogate`) with a k3 KL penalty to the starting policy
when `grpo.beta` > 0 (with beta 0 no reference is loaded). Log-probabilities are those of
softmax(logits / temperature), the distribution the engine sampled from. With one update per
rollout the ratio is exactly 1 (the sampling policy is the policy: its log-probabilities are the
current ones, detached); with more, the sampling policy's are computed once, before the first.

Logged every step (metrics.jsonl), for the rollout the step learned from: `reward_mean`,
`reward_std`, `correct_rate`, `format_rate`, `response_length` (tokens, stop token included),
`truncated_rate` (replies cut at max_new_tokens), `distinct_2` (model/rl.py `distinct_n` over the
replies' tokens, per process then averaged), `zero_advantage_groups` (the share of groups whose
replies all scored alike: they teach nothing), `generate_share` (the share of the step's time
spent in the engine), `rollout_tokens_per_second`; and over the step's tokens: `entropy` (of
the sampling distribution), `clip_fraction` (tokens where the clip took the gradient away) and
`kl` (k3 estimate to the reference; null with beta 0). Eval lines (step 0, every
`grpo.train.eval_every`, the end): greedy replies to the held-out problems, `val_accuracy`,
`val_format_rate`, `val_response_length`, and three of them with their scores in samples.jsonl.

With `grpo.log_completions`, every rollout's rows go to `<output>/completions/rollout-<k>-rank-<r>.jsonl`
(one file per rollout and process, so nothing is rewritten): the question, gold answer, reply,
finish reason, reward, advantage, and the prompt's and reply's token ids with the reply's
sampling log-probabilities, enough to replay a rollout exactly (bench/bench_rl_vs_trl.py does).

Exact resume: the problems of rollout k are a pure function of k (arithmetic: generated from the
seed; files: a seeded permutation per epoch) and so is the engine's sampling seed, so a
checkpoint holds the rollout count and, when it falls inside a rollout's steps, that rollout
itself; the trainer restores weights, optimizer and RNGs. A run is resumed only under the same
task, data, starting policy and grpo settings (its loop settings aside).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import xxhash
from torch import Tensor

from infra.settings import Settings
from infra.storage import Storage, join
from model.chat import render_prompt
from model.checkpoint import CheckpointError, latest_pointer
from model.distributed import Distributed, all_reduce_sum, init_distributed
from model.engine import Completion, Engine, SamplingParams
from model.rl import clipped_surrogate, distinct_n, entropy, gather_logprobs, kl_estimate, masked_sum
from model.trainer import JsonlLog, LossOutput, StepResult, Trainer, sequence_length
from tasks.train.policy import checkpoint_meta, frozen_copy, load_policy
from tasks.verifiable.arithmetic import ArithmeticProblems
from tasks.verifiable.gsm8k import read_problems
from tasks.verifiable.problems import FileProblems, Problem, ProblemSet, split_held_out
from tasks.verifiable.rewards import score

log = logging.getLogger(__name__)

STAGE = "grpo"
SAMPLES_FILE = "samples.jsonl"
COMPLETIONS_DIR = "completions"
EVAL_BATCH = 64  # held-out prompts per engine call
ROLLOUT_STATS = ("reward_mean", "reward_std", "correct_rate", "format_rate", "response_length", "truncated_rate",
                 "distinct_2", "zero_advantage_groups")


def group_advantages(rewards: Tensor, scale: str, batch_std: float | None = None, eps: float = 1e-4) -> Tensor:
    """(P, G) advantages of (P, G) rewards: minus the group mean, divided by the group's
    standard deviation ("group", unbiased, as TRL and DeepSeekMath), by `batch_std` ("batch"),
    or not at all ("none", Dr. GRPO); eps keeps a group that scored alike at 0."""
    centred = rewards - rewards.mean(1, keepdim=True)
    if scale == "none":
        return centred
    std = rewards.std(1, keepdim=True) if scale == "group" else torch.tensor(batch_std or 0.0, dtype=rewards.dtype)
    return centred / (std + eps)


def aggregate(per_token: Tensor, mask: Tensor, loss_type: str, max_new_tokens: int) -> tuple[Tensor, Tensor | int]:
    """A micro-batch's (loss sum, count) for the trainer, which divides the step's sums: the
    step's loss is then the mean over sequences of each one's token mean ("grpo"), the mean over
    every token of the step ("dapo"), or the token sum over sequences x max_new_tokens ("dr_grpo")."""
    if loss_type == "grpo":
        return (masked_sum(per_token, mask, 1) / mask.sum(1).clamp(min=1)).sum(), per_token.shape[0]
    if loss_type == "dapo":
        return masked_sum(per_token, mask), mask.sum()
    return masked_sum(per_token, mask), per_token.shape[0] * max_new_tokens


@dataclass
class Rollout:
    """One rollout batch as padded tensors: sequences (prompt + reply) and what the loss needs."""

    ids: Tensor  # (N, L) long, right-padded with 0
    mask: Tensor  # (N, L - 1) bool: the reply's sampled tokens, as targets of ids[:, 1:]
    lengths: Tensor  # (N,) real tokens per row
    advantages: Tensor  # (N,)
    old_logps: Tensor | None  # (N, L - 1): the sampling policy's, when a rollout feeds several updates
    ref_logps: Tensor | None  # (N, L - 1): the reference's, when beta > 0
    rewards: list[float] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return {"ids": self.ids, "mask": self.mask, "lengths": self.lengths, "advantages": self.advantages,
                "old_logps": self.old_logps, "ref_logps": self.ref_logps, "rewards": list(self.rewards),
                "stats": dict(self.stats)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Rollout:
        return cls(**state)

    def rows(self, index: Tensor, device: torch.device) -> tuple[Tensor, ...]:
        """The rows `index` trimmed to their longest: (ids, mask, advantages, old, ref) on `device`."""
        width = int(self.lengths[index].max())

        def take(tensor: Tensor | None, columns: int) -> Tensor | None:
            return None if tensor is None else tensor[index, :columns].to(device)

        return (take(self.ids, width), take(self.mask, width - 1), self.advantages[index].to(device),
                take(self.old_logps, width - 1), take(self.ref_logps, width - 1))


class StepStats:
    """Token-level sums of one optimizer step on this process (entropy, kl, clipped, tokens)."""

    NAMES = ("entropy", "kl", "clipped", "tokens")

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(len(self.NAMES), dtype=torch.float64, device=self.device)

    def add(self, **values: Tensor) -> None:
        self.sums += torch.stack([values[name].detach().double() for name in self.NAMES])

    def means(self) -> dict[str, float]:
        entropy_sum, kl_sum, clipped_sum, tokens = all_reduce_sum(self.sums.clone()).tolist()
        tokens = max(tokens, 1.0)
        return {"entropy": entropy_sum / tokens, "kl": kl_sum / tokens, "clip_fraction": clipped_sum / tokens}


def _problem_set(settings: Settings, task: str, data: list[str] | None, val_data: list[str] | None,
                 storage: Storage, keep) -> tuple[ProblemSet, list[Problem], dict[str, Any]]:
    """The task's problems, its held-out list, and what identifies them (for the resume key)."""
    g = settings.grpo
    if data is None and val_data:
        raise ValueError("--val-data goes with --data")
    if data is None:
        if task == "gsm8k":
            raise ValueError("--task gsm8k needs --data: GSM8K rows ({question, answer ending '#### <n>'}), e.g. train.jsonl.gz")
        problems = ArithmeticProblems(g.arithmetic, seed=settings.grpo.train.seed)
        return problems, problems.val(g.val_problems), {"generator": g.arithmetic.model_dump()}
    rows, report = read_problems(data, storage)
    if val_data:
        train_rows, (val_rows, val_report) = rows, read_problems(val_data, storage)
        report.update(val_report)
    else:
        train_rows, val_rows = split_held_out(rows, g.val_problems, settings.grpo.train.seed)
    train_rows, val_rows = keep(train_rows), keep(val_rows)[: g.val_problems]
    digest = hashlib.sha256(json.dumps([[p.question, p.answer] for p in [*train_rows, *val_rows]]).encode()).hexdigest()
    return FileProblems(train_rows, val_rows, settings.grpo.train.seed), val_rows, {"problems_sha256": digest,
                                                                                  "files": report}


def grpo(settings: Settings, policy_uri: str, output_uri: str, task: str | None = None, data: list[str] | None = None,
         val_data: list[str] | None = None, resume: bool = False) -> dict[str, Any]:
    """Train `policy_uri`'s model with GRPO on `task` (default grpo.task); checkpoints and logs
    under `output_uri`. With `resume`, continue from the newest checkpoint there (if any)."""
    g, train = settings.grpo, settings.grpo.train
    task = task or g.task
    if train.fsdp:
        raise ValueError("grpo samples with the whole model on every process: train.fsdp is not supported (use DDP)")
    storage = Storage(settings.storage)
    dist = init_distributed(train.device)
    policy = load_policy(policy_uri, storage, dist.device)
    model, tokenizer = policy.model, policy.tokenizer
    seq_len = sequence_length(train, model.config)
    G, P = g.group_size, g.prompts_per_rollout
    rollout_rows = P * G
    if rollout_rows % g.minibatches or (rollout_rows // g.minibatches) % train.batch_size:
        raise ValueError(f"a rollout of {P} prompts x {G} samples = {rollout_rows} sequences does not split into "
                         f"grpo.minibatches={g.minibatches} of micro-batches of grpo.train.batch_size={train.batch_size}")
    accum = rollout_rows // g.minibatches // train.batch_size
    updates_per_rollout = g.minibatches * g.epochs

    def prompt_of(problem: Problem) -> list[int]:
        return render_prompt(tokenizer, problem.messages(g.system_prompt, g.instruction))

    too_long: list[int] = []

    def fits(problems: list[Problem]) -> list[Problem]:
        kept = [p for p in problems if len(prompt_of(p)) + g.max_new_tokens <= seq_len]
        too_long.append(len(problems) - len(kept))
        return kept

    problems, val_problems, identity = _problem_set(settings, task, data, val_data, storage, fits)
    if sum(too_long):
        log.warning("%s: %d problems skipped (too_long: prompt + grpo.max_new_tokens over the context of %d)",
                    STAGE, sum(too_long), seq_len)
    task_key = hashlib.sha256(json.dumps({"task": task, **identity, "grpo": g.model_dump(exclude={"train", "log_completions"}),
                                          "policy": policy.weights_sha256, "world_size": dist.world_size},
                                         sort_keys=True, default=str).encode()).hexdigest()
    saved_key = checkpoint_meta(storage, output_uri).get("task_key") if resume else None
    if saved_key not in (None, task_key):
        raise CheckpointError(f"{output_uri} was trained on another task, data, policy or grpo settings; resume with "
                              "the same ones, or use a fresh output")

    reference = frozen_copy(model) if g.beta > 0 else None
    info = {**policy.describe(), "task": task, "task_key": task_key, "group_size": G, "prompts_per_rollout": P,
            "sequences_per_step": rollout_rows // g.minibatches * dist.world_size, "accum_steps": accum,
            "updates_per_rollout": updates_per_rollout, "val_problems": len(val_problems),
            "skipped_too_long": sum(too_long), "world_size": dist.world_size}
    trainer = Trainer(model, train, dist=dist, run=output_uri, stage=STAGE, tokenizer=tokenizer, storage=storage,
                      flops_per_token=model.config.flops_per_token(), meta=info)
    if dist.is_main:
        log.info("%s: task %s; %d process(es) x %d prompts x %d samples per rollout, %d update(s) per rollout of %d "
                 "micro-step(s) x %d sequences; loss %s, advantages scaled by %s, clip [%g, %g], beta %g; %d held-out "
                 "problems", STAGE, task, dist.world_size, P, G, updates_per_rollout, accum, train.batch_size,
                 g.loss_type, g.scale_rewards, 1 - g.clip_low, 1 + g.clip_high, g.beta, len(val_problems))

    sampling = SamplingParams(max_tokens=g.max_new_tokens, temperature=g.temperature, top_k=g.top_k, top_p=g.top_p)
    state: dict[str, Any] = {"rollouts": 0, "consumed": 0, "rollout": None}
    saved = trainer.begin(resume)
    if saved is not None and saved[dist.rank] is not None:
        mine = saved[dist.rank]
        state = {"rollouts": mine["rollouts"], "consumed": mine["consumed"],
                 "rollout": Rollout.from_state(mine["rollout"]) if mine["rollout"] is not None else None}
    stats = StepStats(dist.device)
    clock = {"step_began": 0.0, "generate": 0.0}

    @torch.no_grad()
    def logps_of(module: torch.nn.Module, ids: Tensor, lengths: Tensor) -> Tensor:
        """(N, L - 1) log-probabilities under softmax(logits / T), in micro-batches."""
        out = torch.zeros(ids.shape[0], ids.shape[1] - 1)
        for start in range(0, ids.shape[0], train.batch_size):
            rows = torch.arange(start, min(start + train.batch_size, ids.shape[0]))
            width = int(lengths[rows].max())
            chunk = ids[rows, :width].to(dist.device)
            with trainer.autocast():
                logits = module(chunk)[:, :-1].float() / g.temperature
            out[rows, : width - 1] = gather_logprobs(logits, chunk[:, 1:]).cpu()
        return out

    def make_rollout(k: int) -> Rollout:
        first = (k * dist.world_size + dist.rank) * P
        batch = [problems.train(first + i) for i in range(P)]
        prompts = [prompt_of(problem) for problem in batch]
        began = time.perf_counter()
        seed = xxhash.xxh3_64_intdigest(f"{train.seed}:rollout:{k}:rank:{dist.rank}".encode()) % 2**62
        completions = Engine(trainer.raw, tokenizer).generate(prompts, sampling, num_samples=G, seed=seed)
        seconds = time.perf_counter() - began
        clock["generate"] += seconds
        rollout = assemble(batch, prompts, completions, seconds)
        if g.log_completions:
            log_rollout(k, batch, prompts, completions, rollout)
        return rollout

    def log_rollout(k: int, batch: list[Problem], prompts: list[list[int]], completions: list[Completion],
                    rollout: Rollout) -> None:
        rows = [{"step": trainer.step + 1, "rollout": k, "prompt": c.prompt, "sample": c.sample,
                 "question": batch[c.prompt].question, "gold": batch[c.prompt].answer, "reply": c.text,
                 "finish_reason": c.finish_reason, "reward": reward, "advantage": float(rollout.advantages[row]),
                 "prompt_ids": prompts[c.prompt], "completion_ids": c.tokens, "logprobs": c.logprobs}
                for row, (c, reward) in enumerate(zip(completions, rollout.rewards))]
        uri = join(output_uri, COMPLETIONS_DIR, f"rollout-{k:06d}-rank-{dist.rank}.jsonl")
        storage.write_text(uri, "".join(json.dumps(row) + "\n" for row in rows))

    def assemble(batch: list[Problem], prompts: list[list[int]], completions: list[Completion],
                 seconds: float) -> Rollout:
        scores = [score(c.text, c.finish_reason, batch[c.prompt].answer, g.require_stop) for c in completions]
        rewards = torch.tensor([s.reward(g.format_weight) for s in scores], dtype=torch.float64).view(P, G)
        batch_std = None
        if g.scale_rewards == "batch":
            n, total, squares = all_reduce_sum(torch.tensor([rewards.numel(), rewards.sum(), rewards.pow(2).sum()],
                                                            dtype=torch.float64, device=dist.device)).tolist()
            batch_std = max((squares - total * total / n) / max(n - 1, 1), 0.0) ** 0.5
        advantages = group_advantages(rewards, g.scale_rewards, batch_std).flatten().float()
        lengths = torch.tensor([len(prompts[c.prompt]) + len(c.tokens) for c in completions])
        ids = torch.zeros(len(completions), int(lengths.max()), dtype=torch.long)
        mask = torch.zeros(len(completions), ids.shape[1] - 1, dtype=torch.bool)
        for row, c in enumerate(completions):
            start = len(prompts[c.prompt])
            ids[row, : lengths[row]] = torch.tensor(prompts[c.prompt] + c.tokens)
            if not (g.mask_truncated and c.finish_reason == "length"):
                mask[row, start - 1 : start - 1 + len(c.tokens)] = torch.tensor([not f for f in c.forced])
        old = logps_of(trainer.raw, ids, lengths) if updates_per_rollout > 1 else None
        ref = logps_of(reference, ids, lengths) if reference is not None else None
        stop_ids = {tokenizer.special_ids[t] for t in sampling.stop if isinstance(t, str)}
        replies = [[t for t in c.tokens if t not in stop_ids] for c in completions]
        produced = float(sum(len(c.tokens) for c in completions))
        local = torch.tensor([
            rewards.sum(), rewards.pow(2).sum(), sum(s.correct for s in scores), sum(s.formatted for s in scores),
            produced, sum(c.finish_reason == "length" for c in completions), distinct_n(replies, 2),
            float((rewards.max(1).values == rewards.min(1).values).sum()), float(len(completions)), float(P), 1.0,
            seconds, produced,
        ], dtype=torch.float64, device=dist.device)
        (reward_sum, reward_squares, correct, formatted, tokens, truncated, distinct, zero_groups, n, groups, ranks,
         gen_seconds, gen_tokens) = all_reduce_sum(local).tolist()
        mean = reward_sum / n
        rollout_stats = {
            "reward_mean": mean, "reward_std": max(reward_squares / n - mean * mean, 0.0) ** 0.5,
            "correct_rate": correct / n, "format_rate": formatted / n, "response_length": tokens / n,
            "truncated_rate": truncated / n, "distinct_2": distinct / ranks, "zero_advantage_groups": zero_groups / groups,
            "rollout_tokens_per_second": gen_tokens / max(gen_seconds / ranks, 1e-9),
        }
        return Rollout(ids, mask, lengths, advantages, old, ref, rewards.flatten().tolist(), rollout_stats)

    def rows_for(k: int, update: int, micro_step: int) -> Tensor:
        epoch, minibatch = divmod(update, g.minibatches)
        order = torch.arange(rollout_rows)
        if g.minibatches > 1:  # a fresh split into minibatches each epoch
            generator = torch.Generator().manual_seed(xxhash.xxh3_64_intdigest(f"{train.seed}:{k}:{epoch}".encode()) % 2**62)
            order = torch.randperm(rollout_rows, generator=generator)
        size = rollout_rows // g.minibatches
        start = minibatch * size + micro_step * train.batch_size
        return order[start : start + train.batch_size]

    def next_batch(micro_step: int) -> tuple[Tensor, ...]:
        if micro_step == 0:
            clock["step_began"], clock["generate"] = time.perf_counter(), 0.0
            if state["rollout"] is None:
                state["rollout"] = make_rollout(state["rollouts"])
                state["rollouts"] += 1
                state["consumed"] = 0
        rollout: Rollout = state["rollout"]
        return rollout.rows(rows_for(state["rollouts"] - 1, state["consumed"], micro_step), dist.device)

    def loss_fn(module: torch.nn.Module, batch: tuple[Tensor, ...]) -> LossOutput:
        ids, mask, advantages, old, ref = batch
        logits = module(ids)[:, :-1].float() / g.temperature
        logp = gather_logprobs(logits, ids[:, 1:])
        per_token, clipped = clipped_surrogate(logp, logp.detach() if old is None else old, advantages[:, None],
                                               g.clip_low, g.clip_high)
        kl = kl_estimate(logp, ref, "k3") if ref is not None else torch.zeros_like(logp)
        if ref is not None:
            per_token = per_token + g.beta * kl
        loss, count = aggregate(per_token, mask, g.loss_type, g.max_new_tokens)
        with torch.no_grad():
            stats.add(entropy=entropy(logits.detach()[mask]).sum(), kl=masked_sum(kl, mask),
                      clipped=masked_sum(clipped.double(), mask), tokens=mask.sum())
        return LossOutput(loss=loss, count=count, tokens=int(ids.numel()))

    def on_step(result: StepResult) -> dict[str, Any]:
        rollout: Rollout = state["rollout"]
        state["consumed"] += 1
        if state["consumed"] == updates_per_rollout:
            state["rollout"] = None
        step_seconds = time.perf_counter() - clock["step_began"]
        token_stats = stats.means()
        stats.reset()
        return {**rollout.stats, **token_stats, "kl": token_stats["kl"] if reference is not None else None,
                "generate_share": clock["generate"] / max(step_seconds, 1e-9)}

    samples = JsonlLog(storage, join(output_uri, SAMPLES_FILE), dist.is_main)
    samples.resume_at(trainer.step)

    def evaluate(step: int) -> dict[str, float]:
        values = evaluate_problems(trainer.raw, tokenizer, val_problems, prompt_of, g, dist)
        for sample in values.pop("samples"):
            samples.add({"step": step, **sample}, flush=False)
        samples.flush()
        return values

    def data_state() -> dict[str, Any]:
        rollout = state["rollout"]
        return {"task_key": task_key, "rollouts": state["rollouts"], "consumed": state["consumed"],
                "rollout": rollout.state_dict() if rollout is not None else None}

    summary = trainer.fit(loss_fn, next_batch, accum_steps=accum, data_state=data_state, evaluate=evaluate,
                          on_step=on_step)
    pointer = latest_pointer(storage, output_uri)
    summary.update({key: value for key, value in info.items()})
    summary["checkpoint"] = join(output_uri, "checkpoints", pointer["path"]) if pointer else None
    return summary


@torch.no_grad()
def evaluate_problems(model, tokenizer, problems: list[Problem], prompt_of, g, dist: Distributed) -> dict[str, Any]:
    """Greedy replies to the held-out problems (shared round-robin by rank): val_accuracy,
    val_format_rate, val_response_length, and the first three replies as samples."""
    mine = problems[dist.rank :: dist.world_size]
    params = SamplingParams(max_tokens=g.max_new_tokens, temperature=0.0)
    engine = Engine(model, tokenizer)
    sums = torch.zeros(4, dtype=torch.float64, device=dist.device)  # correct, formatted, tokens, count
    samples = []
    for start in range(0, len(mine), EVAL_BATCH):
        chunk = mine[start : start + EVAL_BATCH]
        for problem, completion in zip(chunk, engine.generate([prompt_of(p) for p in chunk], params)):
            result = score(completion.text, completion.finish_reason, problem.answer, g.require_stop)
            sums += torch.tensor([result.correct, result.formatted, len(completion.tokens), 1.0],
                                 dtype=torch.float64, device=dist.device)
            if len(samples) < 3 and dist.is_main:
                samples.append({"question": problem.question, "reply": completion.text, "gold": problem.answer,
                                "answer": result.answer, "correct": result.correct})
    correct, formatted, tokens, count = all_reduce_sum(sums).tolist()
    count = max(count, 1.0)
    return {"val_accuracy": correct / count, "val_format_rate": formatted / count,
            "val_response_length": tokens / count, "samples": samples}
