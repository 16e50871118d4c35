"""Tiny models and data with a known preference, for the reward, PPO, best-of-N and labelling tests.

The preference is separable and checkable by a program: a reply is good when it says one of
GOOD ("good", "great", "nice") and bad when it says one of BAD. `build_world(root)` writes, in
a few seconds on one core:
- a tokenizer over the words below and the chat markers;
- `policy`: an "SFT" checkpoint of a 2-layer GPT trained here on conversations whose replies are
  2-6 filler words with, a third of the time each, a GOOD or a BAD word among them, always
  closed with `<|im_end|>`: sampling it gives varied replies of all three kinds;
- `pairs.jsonl`: preference pairs (TRL layout) whose chosen reply has a GOOD word and whose
  rejected one a BAD word, otherwise alike; `prompts.jsonl`: prompts (TRL's prompt-only layout).

`sentiment(text)` is the programmatic truth: +1 per GOOD word, -1 per BAD word.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from infra.settings.train import ModelSettings
from infra.storage import Storage
from model.chat import render
from model.checkpoint import model_tensors, save_checkpoint
from model.gpt import GPT, GPTConfig
from model.tokenizer import BpeTokenizer

GOOD = ("good", "great", "nice")
BAD = ("bad", "awful", "poor")
FILLER = ("the", "cat", "dog", "sun", "tree", "red", "blue", "runs", "sits", "is", "very", "a", "big", "small", "old")
TOPICS = ("cats", "dogs", "trees", "the sun", "rivers", "bread", "music", "rain", "boats", "stars", "cars", "birds")
TARGET = "good"  # PPO's programmatic reward counts this word


def sentiment(text: str) -> int:
    words = text.replace(",", " ").replace(".", " ").split()
    return sum(word in GOOD for word in words) - sum(word in BAD for word in words)


def prompt_of(topic: str) -> list[dict]:
    return [{"role": "user", "content": f"Tell me about {topic}."}]


def reply(rng: random.Random, kind: str | None) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(2, 5))]
    if kind is not None:
        words.insert(rng.randint(0, len(words)), rng.choice(GOOD if kind == "good" else BAD))
    return " ".join(words)


def train_chat_model(tokenizer: BpeTokenizer, conversations: list[list[dict]], steps: int, seq_len: int = 96,
                     width: int = 64, seed: int = 0, lr: float = 1e-2) -> GPT:
    """A 2-layer GPT trained with the chat template on what the assistant writes (full batch)."""
    rendered = [render(tokenizer, conversation) for conversation in conversations]
    length = max(len(ids) for ids, _ in rendered)
    assert length <= seq_len, f"a conversation has {length} tokens, over the context of {seq_len}"
    inputs = torch.zeros(len(rendered), length - 1, dtype=torch.long)
    targets = torch.full((len(rendered), length - 1), -1, dtype=torch.long)
    for row, (ids, mask) in enumerate(rendered):
        ids_t = torch.tensor(ids)
        inputs[row, : len(ids) - 1] = ids_t[:-1]
        targets[row, : len(ids) - 1] = torch.where(torch.tensor(mask[1:]) == 1, ids_t[1:], -1)
    settings = ModelSettings(n_layer=2, n_head=4, n_kv_head=2, n_embd=width, seq_len=seq_len)
    model = GPT(GPTConfig.from_settings(settings, tokenizer.vocab_size), seed=seed).train()
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    for _ in range(steps):
        loss = model(inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def make_tokenizer(extra_texts: tuple[str, ...] = ()) -> BpeTokenizer:
    words = " ".join(GOOD + BAD + FILLER)
    texts = [words, *(f"Tell me about {topic}." for topic in TOPICS), "user assistant system", *extra_texts]
    return BpeTokenizer.train(texts * 8, vocab_size=400)


def preference_pairs(rng: random.Random, count: int) -> list[dict]:
    rows = []
    for _ in range(count):
        filler = [rng.choice(FILLER) for _ in range(rng.randint(2, 5))]
        where = rng.randint(0, len(filler))
        chosen, rejected = list(filler), list(filler)
        chosen.insert(where, rng.choice(GOOD))
        rejected.insert(rng.randint(0, len(filler)), rng.choice(BAD))
        rows.append({"prompt": prompt_of(rng.choice(TOPICS)), "chosen": [{"role": "assistant", "content": " ".join(chosen)}],
                     "rejected": [{"role": "assistant", "content": " ".join(rejected)}]})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@dataclass(frozen=True)
class World:
    root: Path
    tokenizer: BpeTokenizer
    policy: str  # a run folder holding the "SFT" checkpoint
    pairs: str  # preference pairs, TRL layout
    prompts: str  # prompts, TRL prompt-only layout


def build_world(root: Path, steps: int = 80) -> World:
    rng = random.Random(0)
    tokenizer = make_tokenizer()
    conversations = []
    for i in range(48):
        kind = ("good", "bad", None)[i % 3]
        conversations.append([*prompt_of(rng.choice(TOPICS)), {"role": "assistant", "content": reply(rng, kind)}])
    model = train_chat_model(tokenizer, conversations, steps, seed=1)
    policy = str(root / "policy")
    save_checkpoint(Storage(), policy, steps, model_tensors(model), model.config, tokenizer, "sft",
                    meta={"purpose": "tests: a tiny policy whose replies are filler words, good, bad or neither"}, final=True)
    pairs = write_jsonl(root / "pairs.jsonl", preference_pairs(rng, 240))
    prompts = write_jsonl(root / "prompts.jsonl", [{"prompt": prompt_of(f"{topic} {i}")} for i in range(6) for topic in TOPICS])
    return World(root, tokenizer, policy, pairs, prompts)


def _reply_words(conversation: list[dict]) -> list[str]:
    return conversation[-1]["content"].split()


def positive(conversations: list[list[dict]]) -> list[float]:
    """1 for a reply that says more GOOD than BAD words, else 0: the programmatic reward."""
    return [float(sentiment(conversation[-1]["content"]) > 0) for conversation in conversations]


def wordy(conversations: list[list[dict]]) -> list[float]:
    """A reward with a length bias: the more words the better, up to 12 (hackable by length)."""
    return [min(1.0, len(_reply_words(conversation)) / 12) for conversation in conversations]


def concise(conversations: list[list[dict]]) -> list[float]:
    """The preference `wordy` stands in for: up to 6 words is best, every word more costs a sixth."""
    return [max(0.0, 1 - max(0, len(_reply_words(conversation)) - 6) / 6) for conversation in conversations]


JUDGE_RUBRIC = "Better: [[A]] or [[B]]?"  # `label.rubric` for the tiny judge: the default rubric is longer than its context


def judge_questions(topics: tuple[str, ...]) -> list[list[dict]]:
    """Every one-word pair (a GOOD word against a BAD one) about `topics`, in both orders, as the
    conversation `crawl2chat label` sends a judge plus the right verdict."""
    from tasks.chat.label import judge_messages

    rows = []
    for topic in topics:
        for good in GOOD:
            for bad in BAD:
                rows.append([*judge_messages(prompt_of(topic), good, bad, JUDGE_RUBRIC), {"role": "assistant", "content": "[[A]]"}])
                rows.append([*judge_messages(prompt_of(topic), bad, good, JUDGE_RUBRIC), {"role": "assistant", "content": "[[B]]"}])
    return rows


def build_judge(root: Path, topics: tuple[str, ...] = TOPICS[:3], steps: int = 200) -> str:
    """A run folder with a tiny chat model that answers the labelling question for one-word
    replies, [[A]] or [[B]] for the reply with the GOOD word, learnt from pairs about `topics`
    (it generalises to the other topics: the verdict depends only on the two reply words)."""
    tokenizer = make_tokenizer(extra_texts=(JUDGE_RUBRIC, "[Conversation]\nUser: \n\n[Reply A]\n\n\n[Reply B]\n", "[[A]] [[B]]"))
    model = train_chat_model(tokenizer, judge_questions(topics), steps, seq_len=64, seed=2, lr=5e-3)
    judge = str(root / "judge")
    save_checkpoint(Storage(), judge, steps, model_tensors(model), model.config, tokenizer, "sft",
                    meta={"purpose": "tests: a tiny AI judge of one-word replies"}, final=True)
    return judge
