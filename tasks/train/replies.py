"""What the sampling stages (PPO, best-of-N) share: replies to prompts, scored with the guards applied.

    done = generate_replies(engine, prompts, SamplingParams(max_tokens=64, temperature=0))
    scores = guarded_scores(reward, prompts, done, tokenizer, unfinished_reward=0.0)

A reply counts as finished only when it closed its turn: the engine stopped on `<|im_end|>`
(not on `<|bos|>`, not at the length limit). An unfinished reply is not shown to the scorer's
judgement: it gets `unfinished_reward` (no reward, by default), so a policy cannot earn reward
by rambling until it is cut off.
"""

from __future__ import annotations

from collections.abc import Sequence

from model.chat import render_prompt
from model.engine import Completion, Engine, SamplingParams
from model.heads import Scorer
from model.tokenizer import IM_END, BpeTokenizer
from tasks.chat.prompts import Prompt


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
