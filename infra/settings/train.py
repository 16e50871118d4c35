"""Settings of the training half: the model's shape and the training loop.

`model` has few dials (layers, heads, key/value heads, width, context); everything else about
the network is derived in `model/gpt.py` (head size, MLP width) or comes from the tokenizer
(vocabulary). `train` is the loop every trainer shares: batch, schedule, optimizer, evaluation,
checkpoints. Presets (`--preset cpu-tiny`, ...) are named sets of these values, applied under a
YAML file, the environment and `--set`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from infra.settings.base import Section


class ModelSettings(Section):
    """A decoder-only transformer that maps one-to-one onto Hugging Face's Qwen3ForCausalLM."""

    n_layer: int = Field(4, ge=1)
    n_head: int = Field(4, ge=1)
    n_kv_head: int = Field(4, ge=1)  # grouped-query attention when below n_head
    n_embd: int = Field(256, ge=8)
    seq_len: int = Field(256, ge=8)  # the context the model is trained for (and the most it can see)
    mlp_hidden: int | None = None  # None: 8/3 * n_embd rounded up to a multiple of 64 (SwiGLU's usual width)
    tie_embeddings: bool = False  # share the token embedding with the output head
    qk_norm: bool = True  # RMSNorm on queries and keys per head (Qwen3); False maps onto Llama
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-6
    init_std: float = 0.02

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelSettings:
        if self.n_embd % self.n_head:
            raise ValueError(f"model.n_embd ({self.n_embd}) must be a multiple of model.n_head ({self.n_head})")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"model.n_head ({self.n_head}) must be a multiple of model.n_kv_head ({self.n_kv_head})")
        if (self.n_embd // self.n_head) % 2:
            raise ValueError("model.n_embd / model.n_head (the head size) must be even for rotary embeddings")
        return self


class TrainSettings(Section):
    """The loop every trainer shares; each stage has its own copy with its own defaults."""

    batch_size: int = Field(8, ge=1)  # sequences per micro-step per process
    seq_len: int | None = Field(None, ge=8)  # training sequence length; None: the model's context (model.seq_len)
    total_batch_tokens: int | None = Field(None, ge=1)  # tokens per optimizer step; None: one micro-step per process
    max_steps: int = Field(100, ge=1)
    optimizer: Literal["adamw", "muon"] = "adamw"  # muon: torch.optim.Muon for the blocks' matrices, AdamW for the rest
    lr: float = Field(3e-3, gt=0)
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_steps: int = Field(10, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)  # the final learning rate, as a fraction of lr
    decay_fraction: float = Field(0.2, gt=0, le=1)  # wsd: the last share of the steps, decaying linearly
    weight_decay: float = Field(0.1, ge=0)  # on matrices only (embeddings and head included), never on norms
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip: float = Field(1.0, ge=0)  # 0 switches clipping off
    eval_every: int = Field(50, ge=0)  # steps; 0: only at the end
    eval_tokens: int = Field(65_536, ge=1)  # validation tokens per evaluation
    sample_prompts: list[str] = ["The meaning of life is", "Once upon a time,", "The capital of France is"]
    sample_tokens: int = Field(32, ge=0)  # greedy tokens per sample prompt at each evaluation; 0: none
    checkpoint_every: int = Field(0, ge=0)  # steps; 0: only at the end
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(10, ge=1)
    compile: bool = False  # torch.compile the training forward
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when there is one
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    fsdp: bool = False  # shard parameters, gradients and optimizer state (FSDP2) instead of replicating (DDP)
    peak_flops: float | None = Field(None, gt=0)  # per device, for MFU; None: known GPUs (H100/H200, A100)
    seed: int = 0
