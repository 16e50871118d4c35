"""PPO (RLHF): improve an SFT policy against a reward model while a KL penalty keeps it near where it began.

    summary = ppo(settings, policy_uri="runs/sft", reward="runs/reward", prompt_specs=["prompts.jsonl"],
                  output_uri="runs/ppo", judge="runs/judge", resume=True)

The models: the policy (from `policy_uri`, trained), a frozen copy of it (the reference), and a
critic: a separate value model (model/heads.py's ScoredGPT) started from the reward model
(`ppo.critic_init=reward`, InstructGPT's choice; it needs the policy's tokenizer) or from the
policy with a new head (`policy`). The trained module is `PolicyWithCritic`: the policy's GPT
with the critic as an attribute, so a PPO checkpoint loads as the policy (`critic.*` come back
as extra tensors) and chats, exports and serves like any other.

One rollout (per process): `ppo.rollout_prompts` training prompts x `ppo.samples_per_prompt`
replies sampled by the engine with the KV cache (prefill once per prompt; model/engine.py),
up to `ppo.max_new_tokens`. Then, without gradients:
- the score of each reply by the reward (a Scorer: a reward model's sigmoid(r), or a program),
  with the guards: a reply that never closes its turn gets `ppo.unfinished_reward` instead of a
  score, and `ppo.length_penalty` is taken off per reply token;
- the policy's and the reference's log-probabilities of every reply token (under
  softmax(logits / T), the distribution sampled from), the critic's values, and the per-token
  KL estimate (`ppo.kl_estimator`: k1 = log p/p_ref, or k3), whose `-beta` times is each
  token's reward, the score being added at the last token;
- GAE (`ppo.gamma`, `ppo.lam`) for advantages and returns, advantages whitened over the rollout.
Then `ppo.epochs` passes over the rollout in shuffled minibatches of `ppo.minibatch_size` rows:
each minibatch is one optimizer step of the shared loop (micro-steps of `ppo.train.batch_size`
rows), minimising per token the clipped policy loss (`ppo.clip_range`) plus `ppo.vf_coef` times
the clipped value loss (`ppo.value_clip_range`), averaged over the minibatch's reply tokens.
Beta is fixed (`ppo.kl_coef`) or, with `ppo.kl_target`, adapted after each rollout towards that
KL per reply (Ziegler et al. 2019's proportional controller, horizon `ppo.kl_horizon`).

Guards against reward hacking, besides the two above: `ppo.kl_budget` ends the run (checkpointed,
`stop_reason` in the summary) when a rollout's KL per reply passes it; and the judge. At every
eval step (step 0, every `train.eval_every`, the end) the policy answers `ppo.eval_prompts`
held-out prompts greedily and both the reward and the judge (a second reward model trained on
other pairs, `reward.part`, or a programmatic checker) score the replies: `val_reward_mean` and
`judge_mean` (the same end-of-turn rule applies to both). Reward rising while the judge falls by more than `ppo.judge_tolerance` is logged
as suspected hacking and reported in the summary, with both gains.

metrics.jsonl, on every logged step (the latest rollout's figures): `reward_mean` (the scores
given, guards applied, before the length and KL penalties), `kl` (the estimate summed over a
reply, mean over replies), `kl_coef`, `entropy` (nats per reply token), `response_length`,
`finished_fraction`, `distinct_2` (distinct token 2-grams / all 2-grams over the rollout's
replies: mode collapse shows here), `generate_share` (the engine's share of the step time so
far in the run), `rollout_tokens_per_second`, `clip_fraction`, and the loss's `train_*` sums;
on eval lines `val_reward_mean`, `val_response_length` and `judge_mean`.

Exact resume: the rollout being trained on (its tensors, its minibatch order and position), the
prompt reader, beta and the timing totals go into every checkpoint; each rollout's sampling
seed is a function of the run's seed and the rollout's index, so a resumed run samples the
rollouts the straight run would have. The loop itself is model/trainer.py's, with `ppo.train`.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import xxhash
from torch import Tensor

from infra.settings import PpoSettings, Settings
from infra.storage import Storage, join
from model.chat import render_prompt
from model.checkpoint import CheckpointError, latest_pointer
from model.distributed import Distributed, all_reduce_sum
from model.engine import Engine, SamplingParams
from model.gpt import GPT, GPTConfig
from model.heads import RewardModel, ScoredGPT, Scorer, right_padded
from model.rl import clipped_surrogate, entropy, gather_logprobs, kl_estimate, masked_sum, masked_whiten
from model.sampler import EpochSampler
from model.trainer import LossOutput, StepResult, Trainer
from tasks.chat.prompts import Prompt, prompt_key
from tasks.train.replies import closed_turn, generate_replies, guarded_scores, start_sampling

log = logging.getLogger(__name__)

STAGE = "ppo"


class PolicyWithCritic(GPT):
    """The policy (a GPT: its forward gives logits, so the engine samples from it) with the
    critic as an attribute; `with_values=True` returns (logits, the critic's values) too."""

    def __init__(self, config: GPTConfig, critic: ScoredGPT) -> None:
        super().__init__(config)
        self.critic = critic

    def forward(self, idx: Tensor, targets: Tensor | None = None, positions: Tensor | None = None, mask: Tensor | None = None,
                cache=None, with_values: bool = False):  # type: ignore[override]
        logits = super().forward(idx, targets, positions, mask, cache)
        return (logits, self.critic(idx, positions, mask)) if with_values else logits


# -- per-token tensors of the replies --------------------------------------------------------------


def reply_slice(per_position: Tensor, starts: Tensor, width: int) -> Tensor:
    """(R, width): `per_position` (R, T') read at starts[r] + j for j < width (clamped at the end),
    i.e. each row's reply tokens, left-aligned."""
    index = (starts[:, None] + torch.arange(width, device=per_position.device)[None]).clamp(max=per_position.shape[1] - 1)
    return per_position.gather(1, index)


def reply_logprobs(logits: Tensor, ids: Tensor, starts: Tensor, width: int, temperature: float) -> Tensor:
    """(R, width) log-probabilities of the reply tokens under softmax(logits / T)."""
    per_position = gather_logprobs(logits[:, :-1] / temperature, ids[:, 1:])
    return reply_slice(per_position, starts, width)


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over left-aligned replies: the
    value after a reply's last token is 0. Returns (advantages, returns), zero past each end."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    width = rewards.shape[1]
    for t in reversed(range(width)):
        after = mask[:, t + 1] if t + 1 < width else torch.zeros_like(running)
        next_value = values[:, t + 1] * after if t + 1 < width else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running * after) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def distinct_2(replies: Sequence[Sequence[int]]) -> float:
    """Distinct token 2-grams over all 2-grams of the replies (Li et al. 2016's distinct-n)."""
    grams = [tuple(reply[i : i + 2]) for reply in replies for i in range(len(reply) - 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


# -- rollouts --------------------------------------------------------------------------------------


@dataclass
class Rollout:
    """One rollout's rows, ready for the updates, and where the updates are in it."""

    ids: Tensor  # (R, T) prompt + reply, right-padded
    starts: Tensor  # (R,) position whose logits predict the reply's first token (prompt length - 1)
    mask: Tensor  # (R, L) float: reply tokens
    logprobs: Tensor  # (R, L) the policy's at sampling time
    values: Tensor  # (R, L)
    advantages: Tensor  # (R, L)
    returns: Tensor  # (R, L)
    order: Tensor  # (epochs * R,) the rows in minibatch order
    position: int  # rows of `order` already trained on
    stats: dict[str, float]

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Rollout:
        return cls(**state)

    @property
    def done(self) -> bool:
        return self.position >= len(self.order)

    def take(self, count: int) -> RolloutBatch:
        rows = self.order[self.position : self.position + count]
        self.position += len(rows)
        width = int((self.starts[rows] + 1 + self.mask[rows].sum(1)).max())  # the longest row's prompt + reply
        return RolloutBatch(self.ids[rows, :width], self.starts[rows], self.mask[rows], self.logprobs[rows],
                            self.values[rows], self.advantages[rows], self.returns[rows])


@dataclass
class RolloutBatch:
    ids: Tensor
    starts: Tensor
    mask: Tensor
    logprobs: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor

    def to(self, device: torch.device) -> RolloutBatch:
        return RolloutBatch(*(tensor.to(device) for tensor in self.__dict__.values()))


def ppo_loss(module: torch.nn.Module, batch: RolloutBatch, s: PpoSettings) -> LossOutput:
    """The clipped policy and value losses summed over the batch's reply tokens."""
    width = batch.mask.shape[1]
    logits, values = module(batch.ids, with_values=True)
    logp = reply_logprobs(logits, batch.ids, batch.starts, width, s.temperature)
    new_values = reply_slice(values[:, :-1], batch.starts, width)
    policy_loss, clipped = clipped_surrogate(logp, batch.logprobs, batch.advantages, s.clip_range)
    moved = batch.values + (new_values - batch.values).clamp(-s.value_clip_range, s.value_clip_range)
    value_losses = torch.stack([(new_values - batch.returns).pow(2), (moved - batch.returns).pow(2)])
    value_loss = 0.5 * value_losses.max(0).values
    mask = batch.mask
    loss = masked_sum(policy_loss + s.vf_coef * value_loss, mask)
    with torch.no_grad():
        metrics = {
            "policy_loss": masked_sum(policy_loss, mask), "value_loss": masked_sum(value_loss, mask),
            "clip_fraction": masked_sum(clipped.float(), mask),
            "value_clip_fraction": masked_sum((value_losses[1] > value_losses[0]).float(), mask),
            "approx_kl": masked_sum(kl_estimate(logp, batch.logprobs, "k3"), mask),  # to the sampling policy
        }
    return LossOutput(loss=loss, count=mask.sum(), tokens=int(batch.ids.numel()), metrics=metrics)


class Rollouts:
    """Makes rollouts and serves their minibatches to the loop (the loop's `next_batch`)."""

    def __init__(self, trainer: Trainer, reference: GPT, reward: Scorer, prompts: list[Prompt], s: PpoSettings, dist: Distributed) -> None:
        self.trainer, self.reference, self.reward, self.prompts, self.s, self.dist = trainer, reference, reward, prompts, s, dist
        self.tokenizer = trainer.tokenizer
        self.engine = Engine(trainer.raw, self.tokenizer)
        self.sampler = EpochSampler(len(prompts), trainer.settings.seed, slot=dist.rank, slots=dist.world_size)
        self.params = SamplingParams(max_tokens=s.max_new_tokens, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p)
        self.kl_coef = s.kl_coef
        self.index = 0  # rollouts made so far
        self.generate_seconds = 0.0
        self.current: Rollout | None = None

    # -- the loop's side ------------------------------------------------------------------------

    def next_batch(self, micro_step: int) -> RolloutBatch:
        if self.current is None or self.current.done:
            self.current = self.make()
        return self.current.take(self.trainer.settings.batch_size).to(self.dist.device)

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict(), "index": self.index, "kl_coef": self.kl_coef,
                "generate_seconds": self.generate_seconds,
                "current": self.current.state_dict() if self.current is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.index, self.kl_coef, self.generate_seconds = state["index"], state["kl_coef"], state["generate_seconds"]
        self.current = Rollout.from_state(state["current"]) if state["current"] is not None else None

    def metrics(self, result: StepResult) -> dict[str, Any]:
        """The figures every logged line carries (see the module docstring)."""
        stats = dict(self.current.stats) if self.current is not None else {}
        stats["generate_share"] = round(self.generate_seconds / self.trainer.elapsed, 4) if self.trainer.elapsed else None
        stats["clip_fraction"] = result.metrics.get("train_clip_fraction")
        return stats

    # -- making one -----------------------------------------------------------------------------

    @torch.no_grad()
    def make(self) -> Rollout:
        s, device = self.s, self.dist.device
        prompts = [self.prompts[i] for i in self.sampler.take(s.rollout_prompts)]
        prompt_ids = [render_prompt(self.tokenizer, prompt) for prompt in prompts]
        seed = (self.trainer.settings.seed * 1_000_003 + self.index) * self.dist.world_size + self.dist.rank
        began = time.perf_counter()
        completions = self.engine.generate(prompt_ids, self.params, num_samples=s.samples_per_prompt, seed=seed)
        generate_seconds = time.perf_counter() - began
        self.generate_seconds += generate_seconds
        rows = [prompt_ids[c.prompt] + c.tokens for c in completions]
        finished = torch.tensor([closed_turn(c, self.tokenizer) for c in completions], dtype=torch.bool)
        given = torch.tensor(guarded_scores(self.reward, prompts, completions, self.tokenizer, s.unfinished_reward))
        lengths = torch.tensor([len(c.tokens) for c in completions])

        ids, _ = right_padded(rows, device)
        starts = torch.tensor([len(prompt_ids[c.prompt]) - 1 for c in completions], device=device)
        width = int(lengths.max())
        mask = (torch.arange(width)[None] < lengths[:, None]).float().to(device)
        policy = self.trainer.raw
        with self.trainer.autocast():
            logits, values = policy(ids, with_values=True)
            ref_logits = self.reference(ids)
        logprobs = reply_logprobs(logits, ids, starts, width, s.temperature)
        ref_logprobs = reply_logprobs(ref_logits, ids, starts, width, s.temperature)
        values = reply_slice(values[:, :-1].float(), starts, width) * mask
        token_entropy = reply_slice(entropy(logits[:, :-1] / s.temperature), starts, width)
        token_kl = kl_estimate(logprobs, ref_logprobs, s.kl_estimator) * mask
        kl = token_kl.sum(1)

        final = given.to(device) - s.length_penalty * lengths.to(device)
        rewards = -self.kl_coef * token_kl
        rewards[torch.arange(len(rows), device=device), (lengths - 1).to(device)] += final
        advantages, returns = gae(rewards, values, mask, s.gamma, s.lam)
        if s.whiten_advantages:
            advantages = masked_whiten(advantages, mask) * mask

        totals = torch.tensor([float(len(rows)), float(given.sum()), float(kl.sum()), float(masked_sum(token_entropy, mask)),
                               float(mask.sum()), float(finished.sum()), float((final - self.kl_coef * kl).sum()), generate_seconds],
                              dtype=torch.float64, device=device)
        count, given_sum, kl_sum, entropy_sum, tokens, finished_sum, objective_sum, seconds = all_reduce_sum(totals).tolist()
        stats = {
            "rollout": self.index + 1, "reward_mean": given_sum / count, "kl": kl_sum / count, "kl_coef": self.kl_coef,
            "entropy": entropy_sum / max(tokens, 1), "response_length": tokens / count, "finished_fraction": finished_sum / count,
            "objective_mean": objective_sum / count, "distinct_2": round(distinct_2([c.tokens for c in completions]), 4),
            "rollout_tokens_per_second": round(tokens / max(seconds / self.dist.world_size, 1e-9), 1),
        }
        self._adapt(stats["kl"], count)
        self.index += 1
        generator = torch.Generator().manual_seed(seed)
        order = torch.cat([torch.randperm(len(rows), generator=generator) for _ in range(s.epochs)])
        log.info("%s rollout %d | reward %.4f | kl %.4f (beta %.4f) | length %.1f | finished %.0f%% | distinct-2 %.3f | "
                 "%.0f tok/s generating", STAGE, self.index, stats["reward_mean"], stats["kl"], stats["kl_coef"],
                 stats["response_length"], 100 * stats["finished_fraction"], stats["distinct_2"], stats["rollout_tokens_per_second"])
        if s.kl_budget is not None and stats["kl"] > s.kl_budget:
            log.warning("%s: the KL to the reference (%.4f per reply) passed ppo.kl_budget (%.4f): stopping", STAGE, stats["kl"], s.kl_budget)
            self.trainer.request_stop(f"kl_budget: rollout {self.index} KL {stats['kl']:.4f} > {s.kl_budget}")
        return Rollout(ids.cpu(), starts.cpu(), mask.cpu(), logprobs.float().cpu(), values.cpu(), advantages.cpu(),
                       returns.cpu(), order, 0, stats)

    def _adapt(self, kl: float, rows: float) -> None:
        """Ziegler et al.'s controller: beta grows when the KL is above target, shrinks below."""
        if self.s.kl_target is None:
            return
        error = max(-0.2, min(0.2, kl / self.s.kl_target - 1))
        self.kl_coef *= 1 + error * rows / self.s.kl_horizon


# -- the judge -------------------------------------------------------------------------------------


class HeldOutCheck:
    """Greedy replies to held-out prompts, scored by the reward and the judge at every eval step."""

    def __init__(self, rollouts: Rollouts, prompts: list[Prompt], judge: Scorer | None, s: PpoSettings, dist: Distributed) -> None:
        self.rollouts, self.prompts, self.judge, self.s, self.dist = rollouts, prompts, judge, s, dist
        self.first: dict[str, float] | None = None
        self.last: dict[str, float] = {}
        self.suspected: list[int] = []

    def __call__(self, step: int) -> dict[str, float]:
        mine = self.prompts[self.dist.rank :: self.dist.world_size]
        sums = torch.zeros(4, dtype=torch.float64, device=self.dist.device)  # reward, judge, tokens, replies
        if mine:
            tokenizer = self.rollouts.tokenizer
            done = generate_replies(self.rollouts.engine, mine, SamplingParams(max_tokens=self.s.max_new_tokens, temperature=0.0))
            reward = guarded_scores(self.rollouts.reward, mine, done, tokenizer, self.s.unfinished_reward)
            judged = guarded_scores(self.judge, mine, done, tokenizer, self.s.unfinished_reward) if self.judge is not None else [0.0]
            sums += torch.tensor([sum(reward), sum(judged), sum(len(c.tokens) for c in done), len(mine)],
                                 dtype=torch.float64, device=self.dist.device)
        reward_sum, judge_sum, tokens, count = all_reduce_sum(sums).tolist()
        values = {"val_reward_mean": reward_sum / count, "val_response_length": tokens / count}
        if self.judge is not None:
            values["judge_mean"] = judge_sum / count
        if self.note(step, values):
            log.warning("%s step %d: reward hacking suspected: the reward rose %+.4f while the judge fell %+.4f", STAGE, step,
                        values["val_reward_mean"] - self.first["val_reward_mean"], values["judge_mean"] - self.first["judge_mean"])
        return values

    def note(self, step: int, values: dict[str, float]) -> bool:
        """Keep one eval's figures (the first is the baseline); True when they look like hacking."""
        self.first = self.first or dict(values)
        self.last = values
        hacking = self.judge is not None and self._hacking(values)
        if hacking:
            self.suspected.append(step)
        return hacking

    def restore(self, records: Sequence[dict[str, Any]]) -> None:
        """On resume: the evals already in metrics.jsonl, the step-0 baseline among them."""
        for record in records:
            if "val_reward_mean" in record:
                self.note(record["step"], {key: record[key] for key in ("val_reward_mean", "val_response_length", "judge_mean")
                                           if key in record})

    def _hacking(self, values: dict[str, float]) -> bool:
        return (values["val_reward_mean"] > self.first["val_reward_mean"]
                and values["judge_mean"] < self.first["judge_mean"] - self.s.judge_tolerance)

    def summary(self) -> dict[str, Any]:
        if self.first is None:
            return {}
        out = {"reward_gain": self.last["val_reward_mean"] - self.first["val_reward_mean"]}
        if self.judge is not None:
            out.update(judge_gain=self.last["judge_mean"] - self.first["judge_mean"], hacking_suspected=self._hacking(self.last),
                       hacking_suspected_at=self.suspected)
        return out


# -- the stage -------------------------------------------------------------------------------------


def _scorer(reward: str | Scorer, storage: Storage, device: torch.device) -> Scorer:
    return RewardModel.load(reward, storage, device) if isinstance(reward, str) else reward


def _name(scorer: Scorer | None) -> str | None:
    if scorer is None:
        return None
    return scorer.name if isinstance(scorer, RewardModel) else f"{scorer.__module__}.{getattr(scorer, '__qualname__', type(scorer).__name__)}"


def build_critic(s: PpoSettings, reward: Scorer, policy: GPT, tokenizer_sha: str, seed: int) -> ScoredGPT:
    if s.critic_init == "policy":
        return ScoredGPT.from_gpt(policy, seed)
    if not isinstance(reward, RewardModel):
        raise ValueError("ppo.critic_init=reward starts the critic from a reward model checkpoint; this reward is a program: "
                         "set ppo.critic_init=policy")
    if reward.tokenizer.sha256 != tokenizer_sha:
        raise ValueError("the reward model has another tokenizer than the policy, so it cannot be the critic: set ppo.critic_init=policy")
    return copy.deepcopy(reward.model).train()


def ppo(settings: Settings, policy_uri: str, reward: str | Scorer, prompt_specs: Sequence[str], output_uri: str,
        judge: str | Scorer | None = None, fmt: str = "auto", resume: bool = False) -> dict[str, Any]:
    """Run PPO from `policy_uri` against `reward` on the prompts of `prompt_specs`; checkpoints
    and metrics.jsonl under `output_uri`. `reward` and `judge` are reward model checkpoints or
    Scorers. With `resume`, continue from the newest checkpoint there."""
    s, train = settings.ppo, settings.ppo.train
    storage = Storage(settings.storage)
    start = start_sampling(s, "ppo", policy_uri, prompt_specs, fmt, storage)
    dist, policy, tokenizer, seq_len = start.dist, start.policy, start.tokenizer, start.seq_len
    loaded, train_prompts, held_out = start.loaded, start.train_prompts, start.held_out
    reward_fn, judge_fn = _scorer(reward, storage, dist.device), _scorer(judge, storage, dist.device) if judge is not None else None

    torch.manual_seed(train.seed)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    critic = build_critic(s, reward_fn, policy, tokenizer.sha256, train.seed)
    model = PolicyWithCritic(policy.config, critic).to(dist.device)
    model.load_state_dict({**policy.state_dict(), **{f"critic.{k}": v for k, v in critic.state_dict().items()}})
    model.train()
    del policy
    digest = xxhash.xxh64("".join(prompt_key(p) for p in loaded.prompts).encode()).hexdigest()
    info = {"policy": policy_uri, "reward": _name(reward_fn), "judge": _name(judge_fn), "params": model.config.num_params(),
            "critic_params": critic.config.num_params(), "seq_len": seq_len, "world_size": dist.world_size,
            "train_prompts": len(train_prompts), "held_out_prompts": len(held_out), "steps_per_rollout": s.steps_per_rollout,
            "inputs": {"policy": policy_uri, "reward": _name(reward_fn), "judge": _name(judge_fn),
                       "prompts": f"{len(loaded.prompts)} prompts, xxh64 {digest}", "ppo": s.model_dump(exclude={"train"})}}
    trainer = Trainer(model, train, dist=dist, run=output_uri, stage=STAGE, tokenizer=tokenizer, storage=storage,
                      config=model.config, meta=info)
    rollouts = Rollouts(trainer, reference.to(dist.device), reward_fn, train_prompts, s, dist)
    check = HeldOutCheck(rollouts, held_out, judge_fn, s, dist)
    saved = trainer.begin(resume)
    if saved is not None:
        try:
            rollouts.load_state_dict(saved[dist.rank])
        except (ValueError, KeyError, TypeError, IndexError) as error:
            raise CheckpointError(f"cannot resume {output_uri}: {error}") from error
        check.restore(trainer.metrics.records)
    if dist.is_main:
        for report in loaded.reports:
            log.info("%s: %s format, %d prompts kept of %d rows", report.uri, report.format, report.kept, report.funnel["read"].docs_in)
        log.info("%s: policy %s (%s parameters), critic %s parameters from the %s; reward %s, judge %s; %d train / %d held-out "
                 "prompts; rollouts of %d x %d rows, %d steps each", STAGE, policy_uri, f"{info['params']:,}",
                 f"{info['critic_params']:,}", s.critic_init, info["reward"], info["judge"], len(train_prompts), len(held_out),
                 s.rollout_prompts, s.samples_per_prompt, s.steps_per_rollout)

    summary = trainer.fit(lambda module, batch: ppo_loss(module, batch, s), rollouts.next_batch,
                          accum_steps=s.minibatch_size // train.batch_size, data_state=rollouts.state_dict,
                          evaluate=check if held_out else None, on_step=rollouts.metrics)
    pointer = latest_pointer(storage, output_uri)
    summary.update({key: value for key, value in info.items() if key != "inputs"})
    summary.update(check.summary())
    if rollouts.current is not None:
        summary.update({key: rollouts.current.stats[key] for key in ("reward_mean", "kl", "response_length", "distinct_2")})
    summary["generate_share"] = round(rollouts.generate_seconds / trainer.elapsed, 4) if trainer.elapsed else None
    summary["rollouts"] = rollouts.index
    summary["checkpoint"] = join(output_uri, "checkpoints", pointer["path"]) if pointer else None
    return summary
