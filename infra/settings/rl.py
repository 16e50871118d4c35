"""Settings of the preference and RL stages: one section per stage, each with its own loop.

Every stage's section nests a `train` (the shared loop's TrainSettings) whose defaults suit the
stage, so `--set dpo.train.lr=5e-6` tunes DPO alone; the root `train` section is pretraining's.
The model's shape is never set here: it comes from the checkpoint a stage starts from.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from infra.settings.base import Section
from infra.settings.train import TrainSettings

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
