"""What the sampling stages (PPO, best-of-N) share: their start, replies to prompts, scored with the guards applied.

    start = start_sampling(settings.ppo, "ppo", policy_uri, prompt_specs, fmt, storage)

    done = generate_replies(engine, prompts, SamplingParams(max_tokens=64, temperature=0))
    scores = guarded_scores(reward, prompts, done, tokenizer, unfinished_reward=0.0)

A reply counts as finished only when it closed its turn: the engine stopped on `<|im_end|>`
(not on `<|bos|>`, not at the length limit). An unfinished reply is not shown to the scorer's
judgement: it gets `unfinished_reward` (no reward, by default), so a policy cannot earn reward
by rambling until it is cut off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from infra.storage import Storage
from model.chat import render_prompt
from model.distributed import Distributed, init_distributed
from model.engine import Completion, Engine, SamplingParams
from model.export import load_for_inference
from model.gpt import GPT
from model.heads import Scorer
from model.tokenizer import IM_END, BpeTokenizer
from model.trainer import sequence_length
from tasks.chat.prompts import Prompt, PromptData, hold_out, load_prompts


@dataclass
class SamplingStart:
    """A sampling stage's policy on its device, its context, and its prompts split for training
    and held-out evaluation."""

    dist: Distributed
    policy: GPT
    tokenizer: BpeTokenizer
    seq_len: int
    loaded: PromptData
    train_prompts: list[Prompt]
    held_out: list[Prompt]


def start_sampling(section: Any, stage: str, policy_uri: str, prompt_specs: Sequence[str], fmt: str,
                   storage: Storage) -> SamplingStart:
    """Load the policy and the prompts that fit before `section.max_new_tokens` of reply; hold
    out `section.eval_prompts`. One-line errors for what the user can fix."""
    train = section.train
    dist = init_distributed(train.device)
    if train.fsdp:
        raise ValueError(f"{stage} samples from the whole policy on every process: {stage}.train.fsdp is not supported")
    policy, tokenizer = load_for_inference(policy_uri, storage, dist.device)
    seq_len = sequence_length(train, policy.config)
    if section.max_new_tokens >= seq_len:
        raise ValueError(f"{stage}.max_new_tokens ({section.max_new_tokens}) leaves no room for a prompt in the context of {seq_len}")
    loaded = load_prompts(prompt_specs, fmt, storage, tokenizer, max_tokens=seq_len - section.max_new_tokens)
    train_prompts, held_out = hold_out(loaded.prompts, section.eval_prompts)
    if not train_prompts:
        raise ValueError(f"{len(loaded.prompts)} usable prompts leave none to sample from after the "
                         f"{section.eval_prompts} held out ({stage}.eval_prompts)")
    return SamplingStart(dist, policy, tokenizer, seq_len, loaded, train_prompts, held_out)


def generate_replies(engine: Engine, prompts: Sequence[Prompt], params: SamplingParams, num_samples: int = 1,
                     seed: int | None = 0) -> list[Completion]:
    """`num_samples` replies per prompt (prompt-major), each prompt prefilled once."""
    ids = [render_prompt(engine.tokenizer, prompt) for prompt in prompts]
    return engine.generate(ids, params, num_samples=num_samples, seed=seed)


def closed_turn(completion: Completion, tokenizer: BpeTokenizer) -> bool:
    return completion.finish_reason == "stop" and bool(completion.tokens) and completion.tokens[-1] == tokenizer.special_ids[IM_END]


def conversations_of(prompts: Sequence[Prompt], completions: Sequence[Completion]) -> list[list[dict]]:
    """Each completion as the conversation it ends: its prompt plus the reply's text."""
    return [[*prompts[c.prompt], {"role": "assistant", "content": c.text}] for c in completions]


def guarded_scores(scorer: Scorer, prompts: Sequence[Prompt], completions: Sequence[Completion], tokenizer: BpeTokenizer,
                   unfinished_reward: float = 0.0) -> list[float]:
    """The scorer's score for every finished reply, `unfinished_reward` for the others."""
    finished = [i for i, c in enumerate(completions) if closed_turn(c, tokenizer)]
    scores = [unfinished_reward] * len(completions)
    if finished:
        for i, score in zip(finished, scorer(conversations_of(prompts, [completions[i] for i in finished]))):
            scores[i] = float(score)
    return scores
