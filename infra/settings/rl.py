"""Settings of the preference and RL stages: one section per stage, each with its own loop.

Learning from preferences: the reward model, PPO, best-of-N and RLAIF labelling
(tasks/train/reward.py, ppo.py, best_of_n.py, tasks/chat/label.py); learning from pairs and
checkable rewards directly: DPO and GRPO (tasks/train/dpo.py, grpo.py). Every stage's section
nests a `train` (the shared loop's TrainSettings) whose defaults suit the stage, so
`--set dpo.train.lr=5e-6` tunes DPO alone; the root `train` section is pretraining's. The
model's shape is never set here: it comes from the checkpoint a stage starts from.
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


# -- DPO ------------------------------------------------------------------------------------------


class DpoTrainSettings(TrainSettings):
    """DPO's loop: `batch_size` is pairs per micro-step (each a chosen and a rejected sequence).
    TRL's DPOConfig defaults are lr 1e-6 and beta 0.1 for billion-parameter models; small
    models take larger steps."""

    batch_size: int = Field(8, ge=1)
    max_steps: int = Field(200, ge=1)
    lr: float = Field(1e-5, gt=0)
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    eval_every: int = Field(25, ge=0)
    sample_tokens: int = Field(0, ge=0)
    log_every: int = Field(5, ge=1)


class DpoSettings(Section):
    """Direct preference optimisation (Rafailov et al. 2023) and IPO (Azar et al. 2023).

    loss "sigmoid": -(1 - e) log sigmoid(beta * d) - e log sigmoid(-beta * d), where d is the
    chosen reply's log-ratio to the reference minus the rejected one's, summed over the reply's
    tokens, and e = label_smoothing (0: plain DPO; > 0: conservative DPO, labels flipped with
    probability e). loss "ipo": (d / n - 1 / (2 beta))^2 with each side's log-ratio averaged over
    its tokens (as TRL does, confirmed there with IPO's authors)."""

    beta: float = Field(0.1, gt=0)
    loss: Literal["sigmoid", "ipo"] = "sigmoid"
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    accum_steps: int = Field(1, ge=1)  # micro-steps per optimizer step: pairs per step = batch x accum x processes
    val_fraction: float = Field(0.1, ge=0, lt=1)  # pairs held out for val_* when no --val-data is given
    max_val_pairs: int = Field(512, ge=1)
    format: str = "auto"  # the pairs' format (tasks/chat/pairs.py), auto-detected per file
    ref_batch_size: int = Field(16, ge=1)  # pairs per forward when precomputing the reference log-probabilities
    train: DpoTrainSettings = Field(default_factory=DpoTrainSettings)

    @model_validator(mode="after")
    def _ipo_has_no_smoothing(self) -> DpoSettings:
        if self.loss == "ipo" and self.label_smoothing:
            raise ValueError("dpo.label_smoothing applies to the sigmoid loss only (conservative DPO), not to ipo")
        if self.train.total_batch_tokens is not None:
            raise ValueError("dpo counts pairs, not tokens: set dpo.accum_steps instead of dpo.train.total_batch_tokens")
        return self


# -- GRPO -----------------------------------------------------------------------------------------


class ArithmeticSettings(Section):
    """The arithmetic word-problem generator's difficulty dial (tasks/verifiable/arithmetic.py)."""

    min_operand: int = Field(1, ge=0)
    max_operand: int = Field(9, ge=1)  # operand size: 9 single digits, 99 two, ...
    steps: int = Field(1, ge=1, le=6)  # operations per problem: 1 is "a + b", 2 "a + b - c", ...
    operations: list[Literal["+", "-", "*"]] = ["+"]
    holdout: Literal["text", "operands"] = "text"  # what never repeats between train and val problems
    val_percent: int = Field(10, ge=1, le=50)  # share of the problem space kept for validation

    @model_validator(mode="after")
    def _range(self) -> ArithmeticSettings:
        if self.min_operand > self.max_operand:
            raise ValueError(f"grpo.arithmetic.min_operand ({self.min_operand}) is above max_operand ({self.max_operand})")
        if not self.operations:
            raise ValueError("grpo.arithmetic.operations is empty: choose from +, -, *")
        return self


class GrpoTrainSettings(TrainSettings):
    """GRPO's loop: `batch_size` is sequences (completions) per micro-step."""

    batch_size: int = Field(16, ge=1)
    max_steps: int = Field(100, ge=1)
    lr: float = Field(1e-5, gt=0)
    schedule: Literal["cosine", "wsd", "constant"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    eval_every: int = Field(25, ge=0)
    sample_tokens: int = Field(0, ge=0)
    log_every: int = Field(1, ge=1)


class GrpoSettings(Section):
    """Group relative policy optimisation (Shao et al. 2024) on tasks with checkable answers.

    Per rollout, `prompts_per_rollout` prompts (per process) get `group_size` samples each; a
    sample's advantage is its reward minus its group's mean, divided by the group's standard
    deviation (scale_rewards "group"), the whole batch's ("batch") or nothing ("none": Dr. GRPO).
    The loss per token is -min(r A, clip(r, 1 - clip_low, 1 + clip_high) A) + beta * k3 KL to the
    reference, r the probability ratio to the sampling policy; it is averaged per sequence then
    over sequences (loss_type "grpo"), over every token of the step (DAPO's token-level "dapo",
    TRL's default), or summed and divided by sequences x max_new_tokens (Dr. GRPO's "dr_grpo",
    no length normalisation). The Dr. GRPO option is loss_type=dr_grpo with scale_rewards=none;
    DAPO's asymmetric clip is clip_high=0.28. Each rollout batch serves `minibatches` x `epochs`
    optimizer steps (1 x 1: on-policy, the ratio is exactly 1)."""

    task: Literal["arithmetic", "gsm8k"] = "arithmetic"
    group_size: int = Field(8, ge=2)  # G samples per prompt
    prompts_per_rollout: int = Field(8, ge=1)  # per process
    minibatches: int = Field(1, ge=1)  # optimizer steps per pass over a rollout batch
    epochs: int = Field(1, ge=1)  # passes over each rollout batch (mu in the GRPO paper)
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)
    loss_type: Literal["grpo", "dapo", "dr_grpo"] = "dapo"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    clip_low: float = Field(0.2, gt=0, lt=1)
    clip_high: float = Field(0.2, gt=0)
    beta: float = Field(0.0, ge=0)  # KL coefficient; 0: no reference model is loaded
    mask_truncated: bool = False  # DAPO's overlong filtering: replies cut at max_new_tokens get no loss
    format_weight: float = Field(0.1, ge=0)  # reward for a well-formed final answer line, right or wrong
    require_stop: bool = True  # a reply that never closes its turn earns nothing
    system_prompt: str | None = None
    instruction: str = ""  # appended to every question, e.g. " End with a line '#### <answer>'."
    val_problems: int = Field(200, ge=1)  # held-out problems per evaluation (greedy)
    log_completions: bool = False  # every rollout's rows (text, ids, rewards) to <output>/completions/
    arithmetic: ArithmeticSettings = Field(default_factory=ArithmeticSettings)
    train: GrpoTrainSettings = Field(default_factory=GrpoTrainSettings)

    @model_validator(mode="after")
    def _tokens_are_not_the_batch(self) -> GrpoSettings:
        if self.train.total_batch_tokens is not None:
            raise ValueError("grpo counts sequences: size a step with grpo.prompts_per_rollout, group_size and minibatches")
        return self
