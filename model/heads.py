"""A GPT with a scalar head (a reward model's score, PPO's value), and `RewardModel`, the scorer.

    model = ScoredGPT.from_gpt(sft_model, seed=0)  # a new head on an SFT model (or from_checkpoint)
    values = model(ids)                          # (B, T): one scalar per position
    rewards = last_values(values, lengths)       # (B,): each row's scalar at its last real token

    judge = RewardModel.load("runs/reward")      # a reward stage's checkpoint
    judge.score([{"role": "user", ...}, {"role": "assistant", ...}])   # sigmoid(r), in [0, 1]
    judge.scores(conversations)                  # batched; a RewardModel is a Scorer

`ScoredGPT` is a GPT whose `score` (Linear n_embd -> 1, no bias) reads the final-norm hidden
states; its forward returns the scalar at every position. A reward model reads it at the last
token of a conversation (the `<|im_end|>` closing the reply); PPO's critic reads it at every
position of the reply (the value of the state before each token). The state_dict keeps GPT's
names at the top level plus `score.weight`, the layout of transformers'
Qwen3ForSequenceClassification, so `model.checkpoint.load_weights` reads a reward checkpoint as
a GPT too and hands back the head. The language-model head is kept (so the checkpoint stays a
loadable GPT) but frozen: a reward model never trains it (unless it is tied to the embedding).

A `Scorer` is any function from conversations (each ending in an assistant reply) to scores in
[0, 1]: a RewardModel, or a programmatic check; PPO, best-of-N and labelling take either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from infra.storage import Storage
from model.chat import ConversationError, problem
from model.checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint, load_weights
from model.gpt import GPT, GPTConfig
from model.tokenizer import BpeTokenizer

SCORE_WEIGHT = "score.weight"
Conversation = Sequence[Mapping[str, Any]]
Scorer = Callable[[Sequence[Conversation]], list[float]]


class ScoredGPT(GPT):
    """A GPT plus a scalar head over its hidden states (see the module docstring)."""

    def __init__(self, config: GPTConfig, seed: int = 0) -> None:
        super().__init__(config, seed)
        self.score = nn.Linear(config.n_embd, 1, bias=False)
        self.init_score(seed)
        if not config.tie_embeddings:
            self.lm_head.weight.requires_grad_(False)

    @torch.no_grad()
    def init_score(self, seed: int) -> None:
        """normal(0, 1 / sqrt(n_embd + 1)), as TRL initialises a reward head: scores of order 1."""
        generator = torch.Generator().manual_seed(seed)
        std = 1 / math.sqrt(self.config.n_embd + 1)
        self.score.weight.copy_(torch.empty(self.score.weight.shape).normal_(0.0, std, generator=generator))

    def forward(self, idx: Tensor, positions: Tensor | None = None, mask: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """(B, T) float32: the head's scalar at every position."""
        return self.score(self.hidden_states(idx, positions, mask)).squeeze(-1).float()

    @classmethod
    def from_gpt(cls, model: GPT, seed: int = 0) -> ScoredGPT:
        """A language model's weights with a fresh head drawn from `seed` (a reward model
        started from an SFT model, a critic started from the policy), on the model's device."""
        scored = cls(model.config, seed).to(model.embed_tokens.weight.device)
        missing, unexpected = scored.load_state_dict(model.state_dict(), strict=False)
        if unexpected or missing != [SCORE_WEIGHT]:
            raise ValueError(f"not a plain GPT's weights (missing {missing[:3]}, unexpected {unexpected[:3]})")
        return scored

    @classmethod
    def from_checkpoint(cls, checkpoint: LoadedCheckpoint) -> ScoredGPT:
        """A reward model checkpoint's GPT and score head; another stage's checkpoint is an error."""
        if SCORE_WEIGHT not in checkpoint.tensors:
            raise CheckpointError(f"{checkpoint.uri} is a {checkpoint.stage} checkpoint without a score head, "
                                  "not a reward model: train one with `crawl2chat reward`")
        model = cls(checkpoint.config)
        load_weights(model, checkpoint.tensors)
        return model


def last_values(values: Tensor, lengths: Tensor) -> Tensor:
    """(B,) each row's value at its last real token; rows are right-padded to `values`' width."""
    return values.gather(1, (lengths - 1).clamp(min=0)[:, None].to(values.device)).squeeze(1)


def right_padded(rows: Sequence[Sequence[int]], device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """(ids (B, T) padded with 0 on the right, lengths (B,)): under causal attention the padding
    after a row's end changes nothing before it."""
    lengths = torch.tensor([len(row) for row in rows])
    ids = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return ids.to(device), lengths.to(device)


class RewardModel:
    """Scores conversations that end in an assistant reply: `sigmoid(r)` in [0, 1], where r is
    the reward model's scalar at the reply's closing `<|im_end|>`. A conversation longer than
    the model's context keeps its last `seq_len` tokens (the reply, and as much before it as fits)."""

    def __init__(self, model: ScoredGPT, tokenizer: BpeTokenizer, batch_size: int = 16, name: str = "reward") -> None:
        self.model, self.tokenizer, self.batch_size, self.name = model.eval(), tokenizer, batch_size, name
        self.device = model.embed_tokens.weight.device

    @classmethod
    def load(cls, uri: str, storage: Storage | None = None, device: str | torch.device = "cpu", batch_size: int = 16) -> RewardModel:
        checkpoint = load_checkpoint(storage or Storage(), uri)
        model = ScoredGPT.from_checkpoint(checkpoint)
        return cls(model.to(device), checkpoint.tokenizer, batch_size, name=uri)

    def encode(self, conversation: Conversation) -> list[int]:
        """The conversation's ids (its last `seq_len`). The reply may be empty: a policy that closes
        its turn at once has said nothing, which is a reply to score (low), not malformed input."""
        if not conversation or conversation[-1].get("role") != "assistant" or not isinstance(conversation[-1].get("content"), (str, list)):
            raise ConversationError("a reward model scores conversations that end in an assistant reply")
        reason = problem(conversation[:-1], needs_assistant=False) if len(conversation) > 1 else None
        if reason:
            raise ConversationError(f"not a usable conversation: {reason}")
        return self.tokenizer.encode_chat(conversation)[-self.model.config.seq_len :]

    @torch.no_grad()
    def rewards(self, conversations: Sequence[Conversation]) -> list[float]:
        """The raw scalars r (any real number; their differences are log-odds of preference)."""
        encoded = [self.encode(conversation) for conversation in conversations]
        out: list[float] = []
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        for start in range(0, len(encoded), self.batch_size):
            ids, lengths = right_padded(encoded[start : start + self.batch_size], self.device)
            with autocast:
                out += last_values(self.model(ids), lengths).float().tolist()
        return out

    def scores(self, conversations: Sequence[Conversation]) -> list[float]:
        """sigmoid(r) per conversation, in [0, 1]."""
        return torch.sigmoid(torch.tensor(self.rewards(conversations), dtype=torch.float64)).tolist() if conversations else []

    __call__ = scores

    def score(self, conversation: Conversation) -> float:
        """One conversation's sigmoid(r), in [0, 1]."""
        return self.scores([conversation])[0]
