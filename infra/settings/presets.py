"""Named sets of model and training settings: `--preset cpu-tiny` and friends.

A preset sits just above the defaults: a YAML file, the environment and `--set` all override it
(see `load_settings`). Sizes and rates are chosen for the machine each preset names:

| preset          | layers x width (heads/kv) | context | params* | tokens/step | steps  | lr   |
|-----------------|---------------------------|---------|---------|-------------|--------|------|
| cpu-tiny        | 2 x 128 (4/4)             | 128     | ~1.5M   | 4,096       | 300    | 3e-3 |
| cpu-small       | 4 x 256 (4/4)             | 256     | ~5M     | 4,096       | 1,500  | 2e-3 |
| gpu-gpt2-small  | 12 x 768 (12/12), tied    | 1024    | ~110M   | 524,288     | 19,073 | 6e-4 |
| gpu-1b          | 22 x 2048 (32/4)          | 2048    | ~1.1B   | 2,097,152   | 11,000 | 4e-4 |

(*with a 4,096-token vocabulary for the CPU presets and 32,768 for the GPU ones.)

The CPU presets were sized on this project's 2-core machine (BENCHMARKS.md, "Pretraining"):
cpu-tiny in 6 minutes, cpu-small in 34 (2.285 bits per byte on the real text, below xz -9).
The GPU presets take settings that are published as known to work at those sizes, cited at each. Each preset also sets `sft.train`,
the loop of `crawl2chat sft` on a base of that size (its model is the base's;
bench/bench_sft_quality.py runs the CPU ones on the real conversations).
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu-tiny": {
        "model": {"n_layer": 2, "n_head": 4, "n_kv_head": 4, "n_embd": 128, "seq_len": 128},
        "train": {
            "batch_size": 32, "total_batch_tokens": 4096, "max_steps": 300, "lr": 3e-3, "warmup_steps": 20,
            "schedule": "cosine", "min_lr_ratio": 0.1, "eval_every": 100, "eval_tokens": 32_768,
            "checkpoint_every": 100, "log_every": 10, "sample_tokens": 24,
        },
        "sft": {"train": {
            "batch_size": 16, "max_steps": 150, "lr": 1e-3, "warmup_steps": 10, "eval_every": 50, "eval_tokens": 32_768,
            "checkpoint_every": 50, "log_every": 10, "sample_tokens": 32,
        }},
    },
    "cpu-small": {
        "model": {"n_layer": 4, "n_head": 4, "n_kv_head": 4, "n_embd": 256, "seq_len": 256},
        "train": {
            "batch_size": 16, "total_batch_tokens": 4096, "max_steps": 1500, "lr": 2e-3, "warmup_steps": 50,
            "schedule": "cosine", "min_lr_ratio": 0.1, "eval_every": 250, "eval_tokens": 65_536,
            "checkpoint_every": 250, "log_every": 25, "sample_tokens": 32,
        },
        "sft": {"train": {
            "batch_size": 16, "max_steps": 150, "lr": 5e-4, "warmup_steps": 10, "eval_every": 25, "eval_tokens": 65_536,
            "checkpoint_every": 50, "log_every": 5, "sample_tokens": 48,
        }},
    },
    # GPT-2 small (124M with GPT-2's 50k vocabulary) as reproduced in Karpathy's build-nanogpt
    # / llm.c: AdamW lr 6e-4 (also GPT-3 paper, Table 2.1, "Small"), betas (0.9, 0.95), weight
    # decay 0.1, clip 1.0, 2^19 = 524,288 tokens per step, 715 warmup steps, cosine to 10%,
    # 19,073 steps = 10B tokens. 32 x 1024 tokens per micro-step fits an 80 GB H100 in bf16.
    "gpu-gpt2-small": {
        "model": {"n_layer": 12, "n_head": 12, "n_kv_head": 12, "n_embd": 768, "seq_len": 1024, "tie_embeddings": True},
        "train": {
            "batch_size": 32, "total_batch_tokens": 524_288, "max_steps": 19_073, "lr": 6e-4, "warmup_steps": 715,
            "schedule": "cosine", "min_lr_ratio": 0.1, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95,
            "grad_clip": 1.0, "eval_every": 250, "eval_tokens": 1_048_576, "checkpoint_every": 1000,
            "log_every": 10, "compile": True, "device": "cuda",
        },
        # SFT at a tenth of the pretraining peak, 128 packed rows of 1,024 per step (8 GPUs x 1
        # micro-step or 1 GPU x 8); packed rows have one shape, so compiling pays.
        "sft": {"train": {
            "batch_size": 16, "total_batch_tokens": 131_072, "max_steps": 2000, "lr": 6e-5, "warmup_steps": 50,
            "eval_every": 200, "eval_tokens": 524_288, "checkpoint_every": 500, "log_every": 10, "compile": True,
            "device": "cuda",
        }},
    },
    # TinyLlama 1.1B's shape and recipe (Zhang et al. 2024, arXiv:2401.02385): 22 layers, 2048
    # wide, 32 query / 4 key-value heads, SwiGLU 5632, context 2048; AdamW lr 4e-4 with 2,000
    # warmup steps and cosine to 4e-5, betas (0.9, 0.95), weight decay 0.1, clip 1.0, 2M tokens
    # per step. 11,000 steps = 23B tokens, about Chinchilla's 20 tokens per parameter.
    # 8 x 2048 tokens per micro-step fits an 80 GB GPU; set train.fsdp=true across several.
    "gpu-1b": {
        "model": {"n_layer": 22, "n_head": 32, "n_kv_head": 4, "n_embd": 2048, "seq_len": 2048, "mlp_hidden": 5632},
        "train": {
            "batch_size": 8, "total_batch_tokens": 2_097_152, "max_steps": 11_000, "lr": 4e-4, "warmup_steps": 2000,
            "schedule": "cosine", "min_lr_ratio": 0.1, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95,
            "grad_clip": 1.0, "eval_every": 500, "eval_tokens": 2_097_152, "checkpoint_every": 1000,
            "log_every": 10, "compile": True, "device": "cuda",
        },
        "sft": {"train": {
            "batch_size": 8, "total_batch_tokens": 262_144, "max_steps": 2000, "lr": 4e-5, "warmup_steps": 50,
            "eval_every": 200, "eval_tokens": 1_048_576, "checkpoint_every": 500, "log_every": 10, "compile": True,
            "device": "cuda",
        }},
    },
}


def preset_values(name: str) -> dict[str, dict[str, Any]]:
    """The settings of preset `name`, as nested dicts; an unknown name is a one-line error."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return {section: dict(values) for section, values in PRESETS[name].items()}
