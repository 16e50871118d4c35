"""Tiny policies for the DPO and GRPO tests (and the GRPO benchmark's warm start), built in seconds.

- `save_policy(run, model, tokenizer)`: a checkpoint as any stage writes it (model/checkpoint.py);
- `sft_warm_start(model, tokenizer, conversations, steps)`: a few steps of supervised learning on
  chat conversations with the assistant-only loss mask (model/chat.py), the plain loop of
  tests/chat_model.py, so a policy starts out knowing a task's answer format;
- `arithmetic_policy(root, ...)`: a tokenizer trained on the arithmetic generator's problems and
  a 2-layer GPT warm-started on worked solutions of training problems: a policy that writes
  `#### <n>` answers and gets some of them right, for GRPO to improve.
"""

from __future__ import annotations

from pathlib import Path

import torch

from infra.settings.rl import ArithmeticSettings
from infra.settings.train import ModelSettings
from infra.storage import Storage
from model.chat import render
from model.checkpoint import model_tensors, save_checkpoint
from model.gpt import GPT, GPTConfig
from model.tokenizer import BpeTokenizer
from tasks.verifiable.arithmetic import ArithmeticProblems


def save_policy(run: str, model: GPT, tokenizer: BpeTokenizer, stage: str = "sft") -> str:
    save_checkpoint(Storage(), run, 0, model_tensors(model), model.config, tokenizer, stage,
                    meta={"purpose": "tests: a tiny starting policy"}, final=True)
    return run


def tiny_gpt(tokenizer: BpeTokenizer, seq_len: int = 128, layers: int = 2, width: int = 64, seed: int = 0) -> GPT:
    settings = ModelSettings(n_layer=layers, n_head=4, n_kv_head=2, n_embd=width, seq_len=seq_len)
    return GPT(GPTConfig.from_settings(settings, tokenizer.vocab_size), seed=seed)


def sft_warm_start(model: GPT, tokenizer: BpeTokenizer, conversations: list[list[dict]], steps: int,
                   lr: float = 3e-3, batch_size: int = 32, seed: int = 0) -> GPT:
    """`steps` AdamW steps on random batches of `conversations`, loss on assistant tokens only."""
    rendered = [render(tokenizer, conversation) for conversation in conversations]
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        rows = torch.randint(len(rendered), (batch_size,), generator=generator).tolist()
        width = max(len(rendered[row][0]) for row in rows) - 1
        inputs = torch.zeros(batch_size, width, dtype=torch.long)
        targets = torch.full((batch_size, width), -1, dtype=torch.long)
        for i, row in enumerate(rows):
            ids, mask = (torch.tensor(part) for part in rendered[row])
            inputs[i, : len(ids) - 1] = ids[:-1]
            targets[i, : len(ids) - 1] = torch.where(mask[1:] == 1, ids[1:], -1)
        loss = model(inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model


def arithmetic_policy(root: Path, settings: ArithmeticSettings, warm_steps: int, seed: int = 0,
                      examples: int = 400) -> str:
    """A checkpoint of a tiny GPT warm-started on `examples` worked training problems."""
    problems = ArithmeticProblems(settings, seed=seed)
    train = [problems.train(i) for i in range(examples)]
    texts = [f"{p.question}\n{p.solution}" for p in train] + ["user assistant system"] * 20
    tokenizer = BpeTokenizer.train(texts, vocab_size=320)
    model = tiny_gpt(tokenizer, seed=seed)
    torch.manual_seed(seed)
    sft_warm_start(model, tokenizer, [p.conversation() for p in train], warm_steps, seed=seed)
    return save_policy(str(root / "policy"), model, tokenizer)
