"""Settings of chat fine-tuning: the SFT stage's loop and batching, and the "I don't know" builder.

`sft.train` is the shared loop's settings (infra/settings/train.py) with SFT's own defaults: a
lower learning rate than pretraining, no weight decay, chat questions as sample prompts. The
model's shape is never set here: an SFT run takes the base checkpoint's config and tokenizer.
`idk` is how `crawl2chat idk build` probes a model with questions of known answer (tasks/chat/idk.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from infra.settings.base import Section
from infra.settings.train import TrainSettings


class SftTrainSettings(TrainSettings):
    """The loop for SFT: the base's knowledge is kept with a gentler rate and no decay toward 0."""

    batch_size: int = Field(8, ge=1)  # rows of seq_len per micro-step; padded: conversations up to that many positions
    max_steps: int = Field(300, ge=1)
    lr: float = Field(5e-4, gt=0)
    warmup_steps: int = Field(10, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)  # TRL's and nanochat's SFT default
    eval_every: int = Field(50, ge=0)
    eval_tokens: int = Field(65_536, ge=1)  # held-out tokens per evaluation (whole conversations)
    sample_prompts: list[str] = ["What is the capital of France?", "Give three tips for staying healthy.", "Who are you?"]
    sample_tokens: int = Field(48, ge=0)  # greedy reply tokens per sample question at each evaluation
    checkpoint_every: int = Field(100, ge=0)


class SftSettings(Section):
    """Supervised fine-tuning on conversations (tasks/train/sft.py)."""

    train: SftTrainSettings = Field(default_factory=SftTrainSettings)
    # pack: several conversations per row, attention kept inside each (rows of one shape, for
    # torch.compile); pad: one conversation per row, similar lengths together, plain causal
    # attention. Both take batch_size x seq_len positions per micro-batch; bench/bench_sft_packing.py
    # times them on the real conversations.
    batching: Literal["pack", "pad"] = "pack"
    val_fraction: float = Field(0.05, ge=0, lt=1)  # conversations held out for val_loss, by content hash; 0: none


class IdkSettings(Section):
    """Probing a model with questions of known answer: how many samples, drawn how, judged how."""

    samples: int = Field(4, ge=1)  # answers sampled per question
    temperature: float = Field(0.7, ge=0)
    top_k: int | None = Field(50, ge=1)
    max_tokens: int = Field(48, ge=1)  # reply budget per sample
    known_fraction: float = Field(0.75, gt=0, le=1)  # at least this share of samples right: the model knows it
    heldout_fraction: float = Field(0.2, ge=0, lt=1)  # questions kept out of the training set, by hash, for `idk eval`
    batch_size: int = Field(32, ge=1)  # questions per engine call
    seed: int = 0
