"""Per-token quantities the preference and RL trainers share (DPO, PPO, GRPO, reward scoring),
the clipped policy objective of PPO and GRPO, and rollout statistics.

Conventions: a batch of sequences is `ids` (B, T); `mask` (B, T) marks the tokens a loss or a
statistic covers (the reply a policy produced, never the prompt, padding or tool results).
Log-probabilities are those of `ids[:, t]` given `ids[:, :t]`, so position 0 has none: every
per-token tensor here is (B, T - 1) and lines up with `ids[:, 1:]` and `mask[:, 1:]`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor


def gather_logprobs(logits: Tensor, targets: Tensor) -> Tensor:
    """log softmax(logits)[targets], computed as logit - logsumexp so the full log-softmax is
    never materialised (the vocabulary dimension is the big one)."""
    logits = logits.float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def token_logprobs(model: torch.nn.Module, ids: Tensor, **forward_kwargs) -> Tensor:
    """(B, T - 1) log-probabilities the model gives each next token of `ids`."""
    logits = model(ids, **forward_kwargs)
    return gather_logprobs(logits[:, :-1], ids[:, 1:])


def entropy(logits: Tensor) -> Tensor:
    """Per-position entropy (nats) of the distributions `logits` (..., vocab) stand for."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def kl_estimate(logp: Tensor, ref_logp: Tensor, kind: Literal["k1", "k2", "k3"] = "k3") -> Tensor:
    """Per-token estimate of KL(policy || reference) from samples of the policy (Schulman's
    estimators): k1 = log r, unbiased but noisy and can be negative; k2 = (log r)^2 / 2;
    k3 = (r' - 1) - log r' with r' = p_ref / p, unbiased and never negative (the low-variance
    one GRPO uses). Here log r = logp - ref_logp."""
    log_ratio = logp - ref_logp
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return log_ratio.pow(2) / 2
    return torch.expm1(-log_ratio) + log_ratio


def masked_sum(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() if dim is None else (values * mask).sum(dim)


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `values` where `mask` is set (over everything, or along `dim`); 0 where empty."""
    count = mask.to(values.dtype).sum() if dim is None else mask.to(values.dtype).sum(dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1)


def masked_whiten(values: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalise `values` to unit variance (and zero mean) over the masked entries."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean).pow(2), mask)
    whitened = (values - mean) * torch.rsqrt(variance + eps)
    return whitened if shift_mean else whitened + mean


# -- policy-gradient pieces (GRPO, PPO) and rollout statistics ---------------------------------


def clipped_surrogate(logp: Tensor, old_logp: Tensor, advantages: Tensor, clip_low: float,
                      clip_high: float | None = None) -> tuple[Tensor, Tensor]:
    """PPO's clipped objective per token, as a loss to minimise, and where the clip is active.

    loss = -min(r A, clip(r, 1 - clip_low, 1 + clip_high) A) with r = exp(logp - old_logp);
    `advantages` broadcasts against `logp` ((B, 1) for one advantage per sequence). A token is
    clipped where the clipped term is the one taken and its gradient is zero: r below
    1 - clip_low with A < 0, or above 1 + clip_high with A > 0 (DAPO's asymmetric clip is
    clip_high > clip_low; it defaults to clip_low)."""
    clip_high = clip_low if clip_high is None else clip_high
    ratio = torch.exp(logp - old_logp)
    loss = -torch.minimum(ratio * advantages, ratio.clamp(1 - clip_low, 1 + clip_high) * advantages)
    clipped = ((ratio < 1 - clip_low) & (advantages < 0)) | ((ratio > 1 + clip_high) & (advantages > 0))
    return loss, clipped


def distinct_n(sequences: Sequence[Sequence[Hashable]], n: int = 2) -> float:
    """Distinct n-grams over all n-grams of `sequences` (Li et al. 2016's distinct-n), pooled:
    1.0 when no n-gram repeats anywhere, towards 0 as replies collapse onto one. The RL stages
    pass each reply's token ids (its stop token left out); 0.0 when no reply has n tokens."""
    grams = [tuple(sequence[i : i + n]) for sequence in sequences for i in range(len(sequence) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0
