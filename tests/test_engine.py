"""The sampler: cached decoding equals recomputing the whole sequence, a batch of prompts of
different lengths equals each prompt alone, stop tokens / budget / context end rows as they
should, seeded sampling repeats, top-k=1 is greedy, log-probabilities are what the docstring
says, streaming yields what `generate` returns, and the search-tool loop feeds a real result
back into a model that was trained here to copy it."""

from __future__ import annotations

import random

import pytest
import torch

from infra.settings.train import ModelSettings
from model.engine import Engine, SamplingParams
from model.gpt import GPT, GPTConfig
from model.tokenizer import BOS, IM_END, RESULT_END, RESULT_START, SEARCH_END, SEARCH_START, BpeTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = ["apple", "river", "stone", "cloud", "tiger", "lemon", "piano", "rocket", "garden", "silver",
         "winter", "orange", "candle", "forest", "bridge", "planet"]


@pytest.fixture(scope="module")
def tokenizer(one_thread) -> BpeTokenizer:
    return BpeTokenizer.train([" ".join(WORDS * 3) + " Q A"] * 20, vocab_size=400)


def _model(tokenizer: BpeTokenizer, seq_len: int = 64, seed: int = 1, **overrides) -> GPT:
    settings = ModelSettings(**{"n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 64, "seq_len": seq_len, **overrides})
    return GPT(GPTConfig.from_settings(settings, tokenizer.vocab_size), seed=seed).eval()


@pytest.fixture(scope="module")
def model(tokenizer) -> GPT:
    return _model(tokenizer)


def _prompt(length: int, seed: int, tokenizer: BpeTokenizer) -> list[int]:
    rng = random.Random(seed)
    return [tokenizer.bos_id] + [rng.randrange(10, tokenizer.vocab_size) for _ in range(length - 1)]


@torch.no_grad()
def _greedy_without_cache(model: GPT, prompt: list[int], steps: int) -> list[int]:
    """The reference: the whole sequence through the plain forward at every step."""
    ids = list(prompt)
    for _ in range(steps):
        ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]


NO_STOP = SamplingParams(max_tokens=20, temperature=0, stop=())


def test_greedy_with_the_cache_equals_recomputing_everything(model, tokenizer):
    engine = Engine(model, tokenizer)
    for seed, length in ((0, 5), (1, 17)):
        prompt = _prompt(length, seed, tokenizer)
        (completion,) = engine.generate([prompt], NO_STOP)
        assert completion.tokens == _greedy_without_cache(model, prompt, 20)
        assert completion.finish_reason == "length" and not any(completion.forced)


def test_a_batch_of_different_lengths_equals_each_prompt_alone(model, tokenizer):
    engine = Engine(model, tokenizer)
    prompts = [_prompt(n, seed, tokenizer) for seed, n in enumerate((3, 11, 1, 7))]
    params = [NO_STOP, SamplingParams(max_tokens=6, temperature=0, stop=()), NO_STOP, NO_STOP]
    batched = engine.generate(prompts, params)
    for prompt, param, together in zip(prompts, params, batched):
        (alone,) = engine.generate([prompt], param)
        assert together.tokens == alone.tokens
        assert together.logprobs == pytest.approx(alone.logprobs, abs=1e-4)
    assert len(batched[1].tokens) == 6


def test_every_row_gets_the_whole_context_whatever_the_others_lengths(tokenizer):
    model = _model(tokenizer, seq_len=24)
    engine = Engine(model, tokenizer)
    short, long = _prompt(2, 0, tokenizer), _prompt(20, 1, tokenizer)
    params = SamplingParams(max_tokens=100, temperature=0, stop=())
    batched = engine.generate([long, short], params)
    assert [len(c.tokens) for c in batched] == [4, 22]  # up to the model's 24 tokens each
    assert all(c.finish_reason == "length" for c in batched)
    assert batched[1].tokens == _greedy_without_cache(model, short, 22)


def test_stop_tokens_budget_and_context(model, tokenizer):
    engine = Engine(model, tokenizer)
    prompt = _prompt(4, 3, tokenizer)
    free = engine.generate([prompt], NO_STOP)[0].tokens
    stop_at = free[2]
    first = free.index(stop_at)
    (stopped,) = engine.generate([prompt], SamplingParams(max_tokens=20, temperature=0, stop=(stop_at,)))
    assert stopped.finish_reason == "stop" and stopped.tokens == free[: first + 1]
    assert stopped.text == tokenizer.decode(free[:first])  # the stop token is not in the text
    (budget,) = engine.generate([prompt], SamplingParams(max_tokens=5, temperature=0, stop=()))
    assert budget.finish_reason == "length" and budget.tokens == free[:5]
    near_full = _prompt(model.config.seq_len - 3, 4, tokenizer)
    (context,) = engine.generate([near_full], NO_STOP)
    assert context.finish_reason == "length" and len(context.tokens) == 3


def test_im_end_and_bos_stop_by_default(tokenizer):
    engine = Engine(_model(tokenizer), tokenizer)
    assert {engine.token_id(t) for t in SamplingParams().stop} == {tokenizer.special_ids[IM_END], tokenizer.bos_id}
    with pytest.raises(ValueError, match="unknown stop token"):
        engine.generate([[tokenizer.bos_id]], SamplingParams(stop=("<|nope|>",)))


def test_seeded_sampling_repeats_and_top_k_1_is_greedy(model, tokenizer):
    engine = Engine(model, tokenizer)
    prompts = [_prompt(6, 5, tokenizer), _prompt(9, 6, tokenizer)]
    hot = SamplingParams(max_tokens=15, temperature=1.5, stop=())
    first = engine.generate(prompts, hot, seed=7)
    again = engine.generate(prompts, hot, seed=7)
    other = engine.generate(prompts, hot, seed=8)
    assert [c.tokens for c in first] == [c.tokens for c in again]
    assert [c.tokens for c in first] != [c.tokens for c in other]
    greedy = [c.tokens for c in engine.generate(prompts, NO_STOP)]
    top1 = engine.generate(prompts, SamplingParams(max_tokens=20, temperature=1.5, top_k=1, stop=()), seed=3)
    tiny_p = engine.generate(prompts, SamplingParams(max_tokens=20, temperature=1.0, top_p=1e-6, stop=()), seed=4)
    assert [c.tokens for c in top1] == greedy == [c.tokens for c in tiny_p]


def test_top_k_and_top_p_keep_only_the_likeliest_tokens(model, tokenizer):
    engine = Engine(model, tokenizer)
    prompt = _prompt(5, 9, tokenizer)
    for params in (SamplingParams(max_tokens=12, temperature=2.0, top_k=3, stop=()),
                   SamplingParams(max_tokens=12, temperature=2.0, top_p=0.3, stop=())):
        (completion,) = engine.generate([prompt], params, seed=11)
        ids = list(prompt)
        for token in completion.tokens:
            with torch.no_grad():
                probs = (model(torch.tensor([ids]))[0, -1] / 2.0).softmax(-1)
            ordered = probs.argsort(descending=True).tolist()
            if params.top_k:
                assert token in ordered[: params.top_k]
            else:  # the nucleus: tokens before this one hold less than p of the mass
                assert probs[ordered[: ordered.index(token)]].sum() < params.top_p
            ids.append(token)


def test_logprobs_are_the_temperature_scaled_distribution(model, tokenizer):
    engine = Engine(model, tokenizer)
    prompt = _prompt(7, 10, tokenizer)
    for temperature in (0.0, 0.7):
        params = SamplingParams(max_tokens=8, temperature=temperature, top_k=5, stop=())
        (completion,) = engine.generate([prompt], params, seed=2)
        with torch.no_grad():
            logits = model(torch.tensor([prompt + completion.tokens]))[0, len(prompt) - 1 : -1]
        expected = (logits / (temperature or 1.0)).log_softmax(-1).gather(1, torch.tensor(completion.tokens)[:, None])
        assert completion.logprobs == pytest.approx(expected.squeeze(1).tolist(), abs=1e-4)


def test_num_samples_prefills_once_and_samples_independently(model, tokenizer):
    engine = Engine(model, tokenizer)
    prompts = [_prompt(4, 12, tokenizer), _prompt(8, 13, tokenizer)]
    greedy = engine.generate(prompts, NO_STOP, num_samples=3)
    assert [(c.prompt, c.sample) for c in greedy] == [(p, s) for p in range(2) for s in range(3)]
    for p, prompt in enumerate(prompts):
        alone = _greedy_without_cache(model, prompt, 20)
        assert all(c.tokens == alone for c in greedy if c.prompt == p)
    sampled = engine.generate(prompts, SamplingParams(max_tokens=10, temperature=2.0, stop=()), num_samples=4, seed=0)
    assert len({tuple(c.tokens) for c in sampled if c.prompt == 0}) > 1


def test_streaming_yields_what_generate_returns(model, tokenizer):
    engine = Engine(model, tokenizer)
    prompts = [_prompt(3, 14, tokenizer), _prompt(6, 15, tokenizer)]
    params = SamplingParams(max_tokens=12, temperature=1.0, stop=(BOS,))
    generation = engine.stream(prompts, params, num_samples=2, seed=5)
    with pytest.raises(RuntimeError, match="not finished"):
        generation.completions
    events = list(generation)
    assert torch.is_grad_enabled()  # inference mode stays inside the engine between yields
    completions = generation.completions
    assert completions == engine.generate(prompts, params, num_samples=2, seed=5)
    for completion in completions:
        mine = [e for e in events if (e.prompt, e.sample) == (completion.prompt, completion.sample)]
        assert [e.token for e in mine] == completion.tokens
        assert "".join(e.text for e in mine) == completion.text
        assert [e.finish_reason for e in mine] == [None] * (len(mine) - 1) + [completion.finish_reason]


def test_bad_requests_are_one_line_errors(model, tokenizer):
    engine = Engine(model, tokenizer)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        engine.generate([[tokenizer.bos_id], []])
    with pytest.raises(ValueError, match="leaves no room in the model's context of 64"):
        engine.generate([[tokenizer.bos_id] * 64])
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)


# --- the search tool ------------------------------------------------------------------------


def _tool_sequence(tokenizer: BpeTokenizer, question: int, answer: int) -> list[int]:
    """<|bos|> Q word <|search_start|> word <|search_end|> <|result_start|> found <|result_end|> A found <|im_end|>"""
    s = tokenizer.special_ids
    q, a = tokenizer.encode(" Q"), tokenizer.encode(" A")
    return [tokenizer.bos_id, *q, question, s[SEARCH_START], question, s[SEARCH_END],
            s[RESULT_START], answer, s[RESULT_END], *a, answer, s[IM_END]]


@pytest.fixture(scope="module")
def tool_model(tokenizer) -> GPT:
    """A tiny model trained here (a few seconds) to search for the question word and then copy
    whatever the search returned: it can only answer right if the result reached its context."""
    words = [tokenizer.encode(" " + word) for word in WORDS]
    assert all(len(ids) == 1 for ids in words)
    words = [ids[0] for ids in words]
    torch.manual_seed(0)
    model = _model(tokenizer, seq_len=32, seed=2).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    rng = random.Random(0)
    for _ in range(150):
        batch = torch.tensor([_tool_sequence(tokenizer, rng.choice(words), rng.choice(words)) for _ in range(32)])
        loss = model(batch[:, :-1], batch[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_the_engine_runs_the_search_and_the_model_reads_the_result(tool_model, tokenizer):
    engine = Engine(tool_model, tokenizer)
    special = tokenizer.special_ids
    queries: list[str] = []
    answers = {" " + word: " " + WORDS[(i + 5) % len(WORDS)] for i, word in enumerate(WORDS)}

    def search(query: str) -> str:
        queries.append(query)
        return answers[query]

    prompts = [[tokenizer.bos_id, *tokenizer.encode(" Q" + word)] for word in answers]
    completions = engine.generate(prompts, SamplingParams(max_tokens=16, temperature=0), tools={"search": search})
    assert sorted(queries) == sorted(answers)
    for word, completion in zip(answers, completions):
        found = tokenizer.encode(answers[word])[0]
        assert completion.finish_reason == "stop"
        assert completion.tool_calls[0].query == word and completion.tool_calls[0].result == answers[word]
        start = completion.tokens.index(special[RESULT_START])
        assert completion.tokens[start : start + 3] == [special[RESULT_START], found, special[RESULT_END]]
        assert completion.forced == [start <= i < start + 3 for i in range(len(completion.tokens))]
        assert completion.tokens[-2:] == [found, special[IM_END]]  # the model copied the result it was fed
        assert completion.text.endswith(f"<|result_start|>{answers[word]}<|result_end|> A{answers[word]}")


def test_without_tools_the_markers_are_ordinary_tokens(tool_model, tokenizer):
    engine = Engine(tool_model, tokenizer)
    (completion,) = engine.generate([[tokenizer.bos_id, *tokenizer.encode(" Q apple")]], SamplingParams(max_tokens=6, temperature=0))
    assert completion.tool_calls == [] and not any(completion.forced)
    assert tokenizer.special_ids[SEARCH_START] in completion.tokens


def test_a_long_or_failing_result_is_cut_to_the_context_or_reported(tool_model, tokenizer):
    engine = Engine(tool_model, tokenizer)
    prompt = [tokenizer.bos_id, *tokenizer.encode(" Q apple")]
    (long,) = engine.generate([prompt], SamplingParams(max_tokens=100, temperature=0), tools={"search": lambda q: " stone" * 100})
    call = long.tool_calls[0]
    assert call.truncated and long.finish_reason == "length" and len(prompt) + len(long.tokens) == 32
    assert long.tokens[-1] == tokenizer.special_ids[RESULT_END] and call.result == " stone" * (32 - len(prompt) - 5)

    def broken(query: str) -> str:
        raise OSError("index offline")

    (failed,) = engine.generate([prompt], SamplingParams(max_tokens=30, temperature=0), tools={"search": broken})
    assert failed.tool_calls[0].error == "OSError: index offline"
    assert "<|result_start|>error: OSError: index offline<|result_end|>" in failed.text


def test_streamed_text_never_splits_a_character(tool_model, tokenizer):
    """A result in other scripts is forced in as byte-level tokens, a character's bytes in
    separate tokens: each event carries only whole characters."""
    engine = Engine(tool_model, tokenizer)
    result = " café 東京"  # fits the 32-token context of the tool model
    assert any(tokenizer.decode([t]).endswith("\ufffd") for t in tokenizer.encode(result))  # really split
    generation = engine.stream([[tokenizer.bos_id, *tokenizer.encode(" Q apple")]], SamplingParams(max_tokens=60, temperature=0),
                               tools={"search": lambda query: result})
    events = list(generation)
    forced = [event for event in events if event.forced]
    assert len(forced) == len(tokenizer.encode(result)) + 2 and all("\ufffd" not in event.text for event in forced)
    assert "".join(event.text for event in forced) == f"<|result_start|>{result}<|result_end|>"
    assert "".join(event.text for event in events) == generation.completions[0].text
