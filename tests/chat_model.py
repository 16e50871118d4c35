"""A tiny chat model that answers a few fixed conversations, for the chat and server tests.

`build_chat_model(root)` writes, in a few seconds on one core:
- a docs stage of three documents and its tantivy search index (tasks/search), the real thing;
- a checkpoint (model/checkpoint.py) of a 2-layer GPT trained here with the chat template and
  the assistant-only loss mask (model/chat.py) on CONVERSATIONS until it answers each of them
  word for word under greedy decoding, which the builder checks before it returns.

The conversations make behaviour testable from outside: a reply that depends on an earlier
turn (the user's name), one that depends on the system prompt (the pirate), a refusal when the
name was never given (what /clear must lead to), and a search call whose results are what the
real index returns for its query (top_k 1, 200 characters: pass the same settings to chat and
serve-model), after which it answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from infra.settings import SearchSettings
from infra.settings.train import ModelSettings
from infra.storage import Storage
from model.chat import render, render_prompt
from model.checkpoint import model_tensors, save_checkpoint
from model.engine import Engine, SamplingParams
from model.gpt import GPT, GPTConfig
from model.reply import ReplyParser
from model.tokenizer import BpeTokenizer
from tasks.formats.docs import docs_uri, documents_to_table, write_table
from tasks.pipeline import Document
from tasks.search.build import build_index
from tasks.search.index import SearchIndex
from tasks.search.results import search_tool

SEARCH_SETTINGS = {"top_k": 1, "result_chars": 200}  # as `--set search.top_k=1 --set search.result_chars=200`
SEARCH_QUERY = "eiffel tower finished"
SEARCH_QUESTION = "When was the Eiffel Tower finished?"
SEARCH_ANSWER = "It was finished in 1889."

DOCUMENTS = [
    Document(id="eiffel", url="https://example.org/eiffel-tower", language="en",
             text="Eiffel Tower\nThe Eiffel Tower in Paris was finished in 1889 for the World's Fair. It is made of iron."),
    Document(id="river", url="https://example.org/seine", language="en",
             text="The Seine\nThe Seine is a river that flows through Paris to the sea."),
    Document(id="bread", url="https://example.org/bread", language="en",
             text="Bread\nBread is baked from flour, water and yeast in an oven."),
]

# (system prompt or None, [(user, assistant), ...]); the expected greedy replies.
SINGLE = {
    "hello": "Hello! How can I help you today?",
    "What is the capital of France?": "The capital of France is Paris.",
    "What color is the sky?": "The sky is blue.",
    "Count to three.": "One, two, three.",
    "What is my name?": "I do not know your name yet.",
}
PIRATE_SYSTEM, PIRATE_REPLY = "You are a pirate.", "Arr, ahoy matey!"
NAMES = ["Alice", "Bob"]
ENDLESS_QUESTION = "Laugh forever."  # answered "ha ha ha ..." with no end: for long generations


def _conversations(search_results: str) -> list[list[dict]]:
    conversations = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in SINGLE.items()]
    conversations.append([{"role": "system", "content": PIRATE_SYSTEM}, {"role": "user", "content": "hello"},
                          {"role": "assistant", "content": PIRATE_REPLY}])
    for name in NAMES:
        conversations.append([
            {"role": "user", "content": f"My name is {name}."},
            {"role": "assistant", "content": f"Nice to meet you, {name}."},
            {"role": "user", "content": "What is my name?"},
            {"role": "assistant", "content": f"Your name is {name}."},
        ])
    conversations.append([
        {"role": "user", "content": SEARCH_QUESTION},
        {"role": "assistant", "content": [
            {"type": "search", "query": SEARCH_QUERY},
            {"type": "search_results", "text": search_results},
            {"type": "text", "text": SEARCH_ANSWER},
        ]},
    ])
    return conversations


@dataclass(frozen=True)
class ChatModel:
    checkpoint: str  # a run folder: its newest checkpoint
    docs: str  # the docs stage; the index sits next to it (<docs>/search-index)
    search_results: str  # what the index returns for SEARCH_QUERY with SEARCH_SETTINGS
    seq_len: int
    num_params: int


def build_chat_model(root: Path, steps: int = 200, seq_len: int = 192) -> ChatModel:
    storage = Storage()
    docs = str(root / "docs")
    write_table(storage, docs_uri(docs, "part0"), documents_to_table(DOCUMENTS), 10)
    build_index(docs, settings=SearchSettings(), storage=storage)
    index = SearchIndex.open(docs, storage, SearchSettings(**SEARCH_SETTINGS))
    results = search_tool(index)(SEARCH_QUERY)
    assert "1889" in results, results

    conversations = _conversations(results)
    texts = [str(m["content"]) for c in conversations for m in c] + [d.text for d in DOCUMENTS] + [results]
    tokenizer = BpeTokenizer.train(texts * 4 + ["user assistant system", " ha" * 20] * 4, vocab_size=512)
    rendered = [render(tokenizer, c) for c in conversations]
    endless_ids, endless_mask = render(tokenizer, [{"role": "user", "content": ENDLESS_QUESTION},
                                                   {"role": "assistant", "content": "ha" + " ha" * 200}])
    rendered.append((endless_ids[: seq_len // 2], endless_mask[: seq_len // 2]))  # no <|im_end|>: it never stops
    width = max(len(ids) for ids, _ in rendered)
    assert width <= seq_len, f"a conversation has {width} tokens, over the context of {seq_len}"
    inputs = torch.zeros(len(rendered), width - 1, dtype=torch.long)
    targets = torch.full((len(rendered), width - 1), -1, dtype=torch.long)
    for row, (ids, mask) in enumerate(rendered):
        ids_t = torch.tensor(ids)
        inputs[row, : len(ids) - 1] = ids_t[:-1]
        targets[row, : len(ids) - 1] = torch.where(torch.tensor(mask[1:]) == 1, ids_t[1:], -1)

    settings = ModelSettings(n_layer=2, n_head=4, n_kv_head=2, n_embd=64, seq_len=seq_len)
    model = GPT(GPTConfig.from_settings(settings, tokenizer.vocab_size), seed=3).train()
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=steps, pct_start=0.1)
    for _ in range(steps):
        loss = model(inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()

    _check_replies(model, tokenizer, conversations, search_tool(index))
    run = str(root / "run")
    save_checkpoint(storage, run, steps, model_tensors(model), model.config, tokenizer, "sft",
                    meta={"purpose": "tests: a tiny model that answers fixed conversations"}, final=True)
    return ChatModel(run, docs, results, seq_len, model.config.num_params())


def _check_replies(model: GPT, tokenizer: BpeTokenizer, conversations: list[list[dict]], search) -> None:
    """Every assistant turn, given what came before it, comes back word for word (greedy), read
    the way the chat and the server read replies."""
    prompts, expected = [], []
    for conversation in conversations:
        for i, message in enumerate(conversation):
            if message["role"] == "assistant":
                prompts.append(render_prompt(tokenizer, conversation[:i]))
                expected.append(message["content"])
    parsers = [ReplyParser(tokenizer) for _ in prompts]
    for event in Engine(model, tokenizer).stream(prompts, SamplingParams(max_tokens=96, temperature=0), tools={"search": search}):
        parsers[event.row].feed(event)
    wrong = [f"{want!r} -> {parser.content!r}" for parser, want in zip(parsers, expected) if parser.content != want]
    endless = render_prompt(tokenizer, [{"role": "user", "content": ENDLESS_QUESTION}])
    (laugh,) = Engine(model, tokenizer).generate([endless], SamplingParams(max_tokens=120, temperature=0))
    if laugh.finish_reason != "length" or set(laugh.text.split()) != {"ha"}:
        wrong.append(f"{ENDLESS_QUESTION!r} -> {laugh.text[:60]!r}... ({laugh.finish_reason})")
    assert not wrong, "the tiny chat model did not learn its conversations: " + "; ".join(wrong)
