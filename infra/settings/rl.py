"""Settings of learning from preferences: the reward model, PPO, best-of-N and RLAIF labelling.

Every training stage has its own `train` (the shared loop's settings, infra/settings/train.py)
with defaults for its kind of work, so `--set ppo.train.lr=1e-5` touches PPO alone. The model's
shape is never set here: each stage takes the shape and tokenizer of the checkpoint it starts
from. The stages are tasks/train/reward.py, ppo.py, best_of_n.py and tasks/chat/label.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from infra.settings.base import Section
from infra.settings.train import TrainSettings

# The written rubric an AI judge gets (`crawl2chat label`), after Constitutional AI's and
# MT-Bench's pairwise prompts: what makes a reply better, and the one answer format we parse.
DEFAULT_RUBRIC = (
    "You are judging two replies an AI assistant might give to the conversation below. "
    "The better reply is the one that is more helpful (it answers what was asked, correctly and "
    "completely), more honest (it does not make things up and says when it does not know) and more "
    "harmless (it does not help with anything dangerous, illegal or unkind, and declines politely "
    "instead). Do not prefer a reply for being longer, and do not let the order of the replies "
    "influence you. Answer with [[A]] if reply A is better or [[B]] if reply B is better, and nothing else."
)


class RewardTrainSettings(TrainSettings):
    """The loop for the reward model: pairs per micro-step, a fine-tuning rate, no decay."""

    batch_size: int = Field(8, ge=1)  # preference pairs per micro-step (2x sequences)
    max_steps: int = Field(200, ge=1)
    lr: float = Field(1e-4, gt=0)
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    eval_every: int = Field(50, ge=0)
    checkpoint_every: int = Field(100, ge=0)
    log_every: int = Field(10, ge=1)
    sample_tokens: int = Field(0, ge=0)  # a reward model writes nothing


class RewardSettings(Section):
    """The reward model: Bradley-Terry on preference pairs (tasks/train/reward.py)."""

    train: RewardTrainSettings = Field(default_factory=RewardTrainSettings)
    margin: float = Field(0.0, ge=0)  # loss -log sigmoid(r_chosen - r_rejected - margin)
    center_coef: float = Field(0.0, ge=0)  # + c * (r_chosen + r_rejected)^2 keeps rewards near 0 (TRL suggests 0.01)
    val_fraction: float = Field(0.1, gt=0, lt=1)  # pairs held out for val_accuracy, by content hash
    max_val_pairs: int = Field(2000, ge=1)  # evaluation looks at the first this many held-out pairs
    # Train on one part of the (non-held-out) pairs, by a second hash: two reward models on
    # parts 0 and 1 of 2 never see each other's pairs, so one can judge a PPO run on the other.
    parts: int = Field(1, ge=1)
    part: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _part_exists(self) -> RewardSettings:
        if self.part >= self.parts:
            raise ValueError(f"reward.part ({self.part}) must be below reward.parts ({self.parts})")
        return self


class PpoTrainSettings(TrainSettings):
    """The loop for PPO: one step is one minibatch update; a gentle, constant rate."""

    batch_size: int = Field(8, ge=1)  # rollout rows per micro-step
    max_steps: int = Field(64, ge=1)  # optimizer steps (minibatch updates), a multiple of the steps per rollout
    lr: float = Field(1e-5, gt=0)
    schedule: Literal["cosine", "wsd", "constant"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    eval_every: int = Field(16, ge=0)  # the held-out judge's cadence (steps)
    checkpoint_every: int = Field(0, ge=0)
    log_every: int = Field(1, ge=1)
    sample_tokens: int = Field(0, ge=0)


class PpoSettings(Section):
    """PPO against a reward model (tasks/train/ppo.py): rollouts, the KL penalty, GAE, clipping, guards."""

    train: PpoTrainSettings = Field(default_factory=PpoTrainSettings)
    # Rollouts: prompts x samples rows per process, sampled by the engine with the KV cache.
    rollout_prompts: int = Field(16, ge=1)  # prompts per rollout, per process
    samples_per_prompt: int = Field(1, ge=1)
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(1.0, gt=0)  # the policy's distribution is softmax(logits / T), in training too
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    # Updates: each rollout is cut into minibatches of this many rows (per process), `epochs` times over.
    minibatch_size: int = Field(8, ge=1)  # rows per optimizer step; micro-steps = minibatch_size / train.batch_size
    epochs: int = Field(2, ge=1)
    clip_range: float = Field(0.2, gt=0)  # the policy ratio is clipped to [1 - eps, 1 + eps]
    value_clip_range: float = Field(0.2, gt=0)  # values move at most this far from the rollout's per update
    vf_coef: float = Field(0.1, ge=0)  # value loss weight in the one loss the shared loop minimises
    gamma: float = Field(1.0, gt=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    whiten_advantages: bool = True
    critic_init: Literal["reward", "policy"] = "reward"  # the value model starts as the reward model, or as the policy
    # The KL penalty to the frozen reference, per token, in the reward.
    kl_estimator: Literal["k1", "k3"] = "k1"
    kl_coef: float = Field(0.05, ge=0)  # beta (its start, when adaptive)
    kl_target: float | None = Field(None, gt=0)  # adaptive beta towards this KL per reply (Ziegler et al. 2019)
    kl_horizon: int = Field(10_000, ge=1)  # the adaptive controller's horizon, in rollout rows
    # Guards against reward hacking.
    kl_budget: float | None = Field(None, gt=0)  # stop the run when a rollout's KL per reply exceeds this
    length_penalty: float = Field(0.0, ge=0)  # subtracted from the score per reply token
    unfinished_reward: float = Field(0.0)  # the score of a reply that never closes its turn (<|im_end|>)
    eval_prompts: int = Field(32, ge=0)  # held-out prompts (by hash) the judge checks at every eval step
    judge_tolerance: float = Field(0.02, ge=0)  # a judge drop beyond this while the reward rises is reported as hacking

    @model_validator(mode="after")
    def _minibatches_fit(self) -> PpoSettings:
        rows = self.rollout_prompts * self.samples_per_prompt
        if rows % self.minibatch_size:
            raise ValueError(f"ppo.minibatch_size ({self.minibatch_size}) must divide the rollout's rows "
                             f"(ppo.rollout_prompts x ppo.samples_per_prompt = {rows})")
        if self.minibatch_size % self.train.batch_size:
            raise ValueError(f"ppo.train.batch_size ({self.train.batch_size}) must divide ppo.minibatch_size ({self.minibatch_size})")
        if self.train.max_steps % self.steps_per_rollout:
            raise ValueError(f"ppo.train.max_steps ({self.train.max_steps}) must be a multiple of the steps per rollout "
                             f"({self.steps_per_rollout} = epochs x rows / minibatch_size)")
        return self

    @property
    def steps_per_rollout(self) -> int:
        return self.epochs * self.rollout_prompts * self.samples_per_prompt // self.minibatch_size


class BestOfNTrainSettings(TrainSettings):
    """The loop for fine-tuning on the kept replies: SFT's rates."""

    batch_size: int = Field(8, ge=1)  # conversations per micro-step
    max_steps: int = Field(100, ge=1)
    lr: float = Field(5e-4, gt=0)
    warmup_steps: int = Field(5, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    eval_every: int = Field(0, ge=0)
    checkpoint_every: int = Field(50, ge=0)
    log_every: int = Field(10, ge=1)
    sample_tokens: int = Field(0, ge=0)


class BestOfNSettings(Section):
    """Rejection sampling (tasks/train/best_of_n.py): N replies per prompt, the best kept, SFT on those."""

    train: BestOfNTrainSettings = Field(default_factory=BestOfNTrainSettings)
    samples: int = Field(8, ge=2)  # N
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(0.95, gt=0, le=1)
    prompts_per_batch: int = Field(16, ge=1)  # prompts per engine call; also the unit a rerun resumes from
    eval_prompts: int = Field(32, ge=0)  # held-out prompts (by hash) whose greedy replies are scored before and after
    seed: int = 0


class LabelSettings(Section):
    """RLAIF (tasks/chat/label.py): an AI judge orders the two replies of each pair."""

    rubric: str = DEFAULT_RUBRIC
    both_orders: bool = True  # ask with the replies swapped too, and keep only verdicts that agree (no position bias)
    model: str | None = None  # the endpoint's model name; None: the first the server lists at /v1/models
    max_tokens: int = Field(16, ge=1)  # the judge's answer budget
    temperature: float = Field(0.0, ge=0)
    concurrency: int = Field(8, ge=1)  # requests in flight (our server batches them)
    timeout_seconds: float = Field(120.0, gt=0)
    retries: int = Field(2, ge=0)  # per request, on connection errors and 5xx
    save_every: int = Field(64, ge=1)  # pairs between saves of the verdicts a rerun reuses
    batch_size: int = Field(16, ge=1)  # pairs per forward when the judge is a reward model checkpoint
