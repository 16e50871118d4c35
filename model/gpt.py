"""The GPT: a decoder-only transformer whose weights map one-to-one onto Qwen3ForCausalLM.

    config = GPTConfig.from_settings(settings.model, vocab_size=tokenizer.vocab_size)
    model = GPT(config)                      # weights initialised from config.seed, on the CPU
    loss = model(inputs, targets)            # next-token cross-entropy (targets == -1 ignored)
    logits = model(inputs)                   # (B, T, vocab)

The architecture is Qwen3's, so that export to Hugging Face is a renaming and nothing else
(model/export.py): token embedding; per layer RMSNorm -> attention -> residual, RMSNorm ->
SwiGLU MLP -> residual; final RMSNorm; linear head (optionally tied to the embedding). Attention
is grouped-query (`n_kv_head` key/value heads shared by `n_head` query heads), with RMSNorm on
each head's queries and keys (QK-norm; off maps onto Llama) and rotary position embeddings in
Hugging Face's half-rotation layout, computed through
`torch.nn.functional.scaled_dot_product_attention`, which picks the flash kernels on GPU.
Parameter names are those of transformers' Qwen3 modules without the `model.` prefix.

Three ways in, for the three kinds of caller:
- training: plain causal attention over (B, T) tokens (`is_causal`, the fast path);
- packed rows (SFT): `positions` restart at each document and `mask` keeps attention inside it
  (`document_mask`), so a packed row computes exactly what its documents would alone;
- generation: a `KVCache` of earlier keys and values, with `positions` and a `mask` over the
  cached keys for batches of prompts of different lengths (`attention_mask`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from infra.settings.train import ModelSettings
from model.loss import linear_cross_entropy


class GPTConfig(BaseModel):
    """Everything that fixes the network's shape: the model settings, resolved, plus the vocabulary."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vocab_size: int
    n_layer: int
    n_head: int
    n_kv_head: int
    n_embd: int
    seq_len: int
    mlp_hidden: int
    tie_embeddings: bool
    qk_norm: bool
    rope_theta: float
    norm_eps: float
    init_std: float

    @classmethod
    def from_settings(cls, settings: ModelSettings, vocab_size: int) -> GPTConfig:
        values = settings.model_dump()
        values["mlp_hidden"] = values["mlp_hidden"] or 64 * math.ceil(8 * settings.n_embd / 3 / 64)
        return cls(vocab_size=vocab_size, **values)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def num_params(self) -> int:
        """Parameters, counting a tied embedding once."""
        c, hd = self.n_embd, self.head_dim
        attention = c * hd * (2 * self.n_head + 2 * self.n_kv_head) + (2 * hd if self.qk_norm else 0)
        block = attention + 3 * c * self.mlp_hidden + 2 * c
        head = 0 if self.tie_embeddings else self.vocab_size * c
        return self.vocab_size * c + self.n_layer * block + c + head

    def flops_per_token(self) -> int:
        """Training FLOPs per token at full context (forward + backward): 6 per weight of every
        matrix multiply (the embedding lookup is not one, the head is) plus attention's own
        12 * layers * heads * head_dim * seq_len, as in PaLM's appendix and nanochat."""
        matmul_weights = self.num_params() - self.vocab_size * self.n_embd + (self.vocab_size * self.n_embd if self.tie_embeddings else 0)
        return 6 * matmul_weights + 12 * self.n_layer * self.n_head * self.head_dim * self.seq_len


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale, computed in float32 as Hugging Face does."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding in the half-rotation layout (the first half of each head pairs with the second)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        self.layer, self.n_head, self.n_kv_head, self.head_dim = layer, config.n_head, config.n_kv_head, config.head_dim
        c, hd = config.n_embd, config.head_dim
        self.q_proj = nn.Linear(c, config.n_head * hd, bias=False)
        self.k_proj = nn.Linear(c, config.n_kv_head * hd, bias=False)
        self.v_proj = nn.Linear(c, config.n_kv_head * hd, bias=False)
        self.o_proj = nn.Linear(config.n_head * hd, c, bias=False)
        self.q_norm = RMSNorm(hd, config.norm_eps) if config.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(hd, config.norm_eps) if config.qk_norm else nn.Identity()

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, cache: KVCache | None) -> Tensor:
        batch, length, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(batch, length, self.n_head, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(batch, length, self.n_kv_head, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        first_chunk = cache is None or cache.length == 0
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        if mask is None and not first_chunk and length > 1:  # a later chunk of a prompt: causal with an offset
            mask = attention_mask(torch.ones(batch, k.shape[2], dtype=torch.bool, device=x.device), length)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None and first_chunk and length > 1,
            enable_gqa=self.n_kv_head != self.n_head,
        )
        return self.o_proj(y.transpose(1, 2).reshape(batch, length, -1))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.n_embd, config.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(config.n_embd, config.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(config.mlp_hidden, config.n_embd, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.n_embd, config.norm_eps)
        self.self_attn = Attention(config, layer)
        self.post_attention_layernorm = RMSNorm(config.n_embd, config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, cache: KVCache | None) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.n_embd)
        self.layers = nn.ModuleList(Block(config, layer) for layer in range(config.n_layer))
        self.norm = RMSNorm(config.n_embd, config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        inverse_frequency = 1.0 / config.rope_theta ** (torch.arange(0, config.head_dim, 2, dtype=torch.float32) / config.head_dim)
        angles = torch.arange(config.seq_len, dtype=torch.float32)[:, None] * inverse_frequency
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("rope_cos", angles.cos(), persistent=False)  # (seq_len, head_dim)
        self.register_buffer("rope_sin", angles.sin(), persistent=False)
        self.init_weights(seed)

    @torch.no_grad()
    def init_weights(self, seed: int) -> None:
        """GPT-2's scheme from one seed: normal(0, init_std) for matrices and embeddings, the two
        projections back into the residual stream scaled by 1/sqrt(2 * layers), norms at one.
        Drawn on the CPU in parameter order, so a seed gives the same model on any device."""
        generator = torch.Generator().manual_seed(seed)
        std = self.config.init_std
        for name, parameter in self.named_parameters():
            if name.endswith("norm.weight"):
                parameter.fill_(1.0)
                continue
            scale = 1 / math.sqrt(2 * self.config.n_layer) if name.endswith(("o_proj.weight", "down_proj.weight")) else 1.0
            values = torch.empty(parameter.shape, dtype=torch.float32).normal_(0.0, std * scale, generator=generator)
            parameter.copy_(values)

    def hidden_states(
        self, idx: Tensor, positions: Tensor | None = None, mask: Tensor | None = None, cache: KVCache | None = None
    ) -> Tensor:
        """The final-norm hidden states (B, T, n_embd): what the head (or a reward/value head) reads."""
        length = idx.shape[1]
        if positions is None:
            start = cache.length if cache is not None else 0
            if start + length > self.config.seq_len:
                raise ValueError(f"sequence of {start + length} tokens is longer than the model's context of {self.config.seq_len}")
            cos, sin = self.rope_cos[start : start + length], self.rope_sin[start : start + length]
        else:
            if int(positions.max()) >= self.config.seq_len:
                raise ValueError(f"position {int(positions.max())} is beyond the model's context of {self.config.seq_len}")
            cos, sin = self.rope_cos[positions].unsqueeze(1), self.rope_sin[positions].unsqueeze(1)  # (B, 1, T, hd)
        x = self.embed_tokens(idx)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for block in self.layers:
            x = block(x, cos, sin, mask, cache)
        if cache is not None:
            cache.advance(length)
        return self.norm(x)

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        positions: Tensor | None = None,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """Logits (B, T, vocab), or with `targets` the mean cross-entropy over targets != -1
        (fused with the head, model/loss.py: the full logits are never made)."""
        hidden = self.hidden_states(idx, positions, mask, cache)
        if targets is None:
            return self.lm_head(hidden)
        return linear_cross_entropy(hidden.flatten(0, 1), self.lm_head.weight, targets.flatten(), ignore_index=-1)


class KVCache:
    """Keys and values of earlier positions, preallocated for `max_len` tokens of `batch` rows.

    Each attention layer writes its new keys/values with `update` and attends over everything
    cached so far; the model calls `advance` once per forward, after the last layer.
    """

    def __init__(self, config: GPTConfig, batch: int, max_len: int, device: torch.device | str, dtype: torch.dtype) -> None:
        if max_len > config.seq_len:
            raise ValueError(f"a cache of {max_len} tokens is longer than the model's context of {config.seq_len}")
        shape = (config.n_layer, batch, config.n_kv_head, max_len, config.head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        end = self.length + k.shape[2]
        if end > self.keys.shape[3]:
            raise ValueError(f"the cache holds {self.keys.shape[3]} tokens; {end} do not fit")
        self.keys[layer, :, :, self.length : end] = k
        self.values[layer, :, :, self.length : end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, length: int) -> None:
        self.length += length

    def select(self, rows: Tensor) -> None:
        """Keep only `rows` of the batch (finished rows dropped, or one prompt copied G times)."""
        self.keys, self.values = self.keys[:, rows], self.values[:, rows]

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def drop_front(self, count: int) -> None:
        """Forget the first `count` cached positions, making room at the end. For left-padded
        batches: once the rows that needed them are gone, the leading columns hold only padding.
        (Positions are per row and explicit there, so nothing else shifts.)"""
        kept = self.length - count
        self.keys[:, :, :, :kept] = self.keys[:, :, :, count : self.length].clone()
        self.values[:, :, :, :kept] = self.values[:, :, :, count : self.length].clone()
        self.length = kept


def attention_mask(valid: Tensor, q_len: int) -> Tensor:
    """(B, 1, q_len, K) boolean attention mask for the last `q_len` of K key positions: causal,
    and only over keys where `valid` (B, K) is True (padding is not). Every query also sees
    itself, so a padding query attends to something and its row never turns into NaN."""
    keys = valid.shape[1]
    causal = torch.ones(q_len, keys, dtype=torch.bool, device=valid.device).tril(keys - q_len)
    mask = causal[None] & valid[:, None, :]
    mask[:, torch.arange(q_len), torch.arange(keys - q_len, keys)] = True
    return mask[:, None]


def document_mask(doc_ids: Tensor) -> Tensor:
    """(B, 1, T, T) causal mask that never crosses from one document of a packed row into another."""
    same = doc_ids[:, :, None] == doc_ids[:, None, :]
    causal = torch.ones(doc_ids.shape[1], doc_ids.shape[1], dtype=torch.bool, device=doc_ids.device).tril()
    return (same & causal)[:, None]


def document_positions(doc_ids: Tensor) -> Tensor:
    """Positions (B, T) that restart at 0 where each document of a packed row begins."""
    length = doc_ids.shape[1]
    index = torch.arange(length, device=doc_ids.device).expand_as(doc_ids)
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    first = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
    return index - first
