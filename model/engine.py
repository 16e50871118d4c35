"""The sampler every later stage uses: batched generation with the KV cache, streaming, tool calls.

    engine = Engine(model, tokenizer)
    completions = engine.generate([prompt_ids, other_ids], SamplingParams(max_tokens=64, temperature=0))
    for event in engine.stream([prompt_ids], SamplingParams(temperature=0.8, top_p=0.95), seed=1):
        print(event.text, end="", flush=True)                 # one TokenEvent per new token per row
    groups = engine.generate([prompt_ids], params, num_samples=8)  # GRPO / best-of-N: prefill once

How it runs: the prompts are left-padded into one batch and prefilled in one forward pass
(`attention_mask` keeps padding out, per-row positions start each prompt at 0), and with
`num_samples` G the prefilled cache is copied G times instead of running the prompt again. Then
one token per row per step through the cache. Rows that finish leave the batch (their cache rows
are dropped); when the cache is full, leading columns that only hold padding of the remaining
rows are forgotten, so every row gets the whole context whatever the others' lengths.

A row finishes with `finish_reason`:
- "stop": it sampled one of its stop tokens (default `<|im_end|>` and `<|bos|>`); the stop token
  is the last of `tokens` (RL needs it: a closed turn) but not part of `text`;
- "length": it reached `max_tokens` completion tokens (sampled and forced together), or its
  prompt plus completion filled the model's context, which is a hard limit.
A caller may also end a row early with `Generation.cancel(row)` (a stop string it matched in
the text, a client gone); that row reads "stop" and leaves the batch at the next step.

Log-probabilities: `logprobs[i]` is log p(tokens[i] | everything before it) under the model's
distribution scaled by the row's temperature, softmax(logits / T), *before* top-k/top-p
truncation (with T = 0, greedy, under softmax(logits), T = 1). This is the distribution that the
RL stages recompute with gradients (PPO's ratio, KL to the reference), and it is defined for
every token, forced ones included; the probability under the truncated sampling distribution is
higher by its renormalisation. `forced[i]` marks tokens the engine put in (tool results) rather
than sampled; trainers give those no loss.

Tools: with `tools={"search": fn}` (fn(query: str) -> str, injected by the caller: model/ knows
nothing of the search index), a row that samples `<|search_start|>` collects the tokens it
samples up to `<|search_end|>`, the engine decodes them and calls fn(query), then feeds
`<|result_start|>` + the result's tokens + `<|result_end|>` into that row as forced tokens, one
per step, while the other rows keep sampling; then the row continues sampling. The result text
is encoded as ordinary text (special-token strings in it cannot forge turns) and truncated to
what is left of the row's context and budget. A tool that raises is reported to the model as
"error: ..." and logged; the call is recorded in `Completion.tool_calls`. The tool runs
synchronously in the sampling loop.

Sampling draws from one seeded `torch.Generator` for the batch, so a call is reproducible for
a given seed, batch and device (the same prompt in another batch draws other random numbers;
greedy decoding does not depend on the batch).
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from model.gpt import GPT, KVCache, attention_mask
from model.tokenizer import BOS, IM_END, RESULT_END, RESULT_START, SEARCH_END, SEARCH_START, BpeTokenizer

log = logging.getLogger(__name__)

FinishReason = Literal["stop", "length"]
DEFAULT_STOP = (IM_END, BOS)
Tool = Callable[[str], str]


@dataclass(frozen=True)
class SamplingParams:
    """How one prompt is continued. `stop` holds special-token strings or token ids."""

    max_tokens: int = 256
    temperature: float = 1.0  # 0: greedy
    top_k: int | None = None  # keep the k likeliest tokens
    top_p: float | None = None  # keep the smallest set of tokens whose probability reaches p
    stop: tuple[str | int, ...] = DEFAULT_STOP

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class ToolCall:
    name: str
    query: str
    result: str  # the text fed back to the model (after any truncation)
    truncated: bool = False
    error: str | None = None


@dataclass(frozen=True)
class TokenEvent:
    """One new token of one row, as streamed. `row` = prompt * num_samples + sample."""

    row: int
    prompt: int
    sample: int
    token: int
    logprob: float
    forced: bool
    text: str  # text that became decodable with this token ("" mid-character and for stop tokens)
    finish_reason: FinishReason | None  # set on a row's last event


@dataclass
class Completion:
    """A finished row: its completion tokens (stop token included), their log-probabilities
    and forced flags, why it ended, its decoded text (stop token excluded), its tool calls."""

    prompt: int
    sample: int
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    forced: list[bool] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)


def sample_next(
    logits: Tensor, temperature: Tensor, top_k: Tensor, top_p: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Next tokens (B,) and the log-probabilities (B, V) of softmax(logits / T) before truncation.

    Per row: T = 0 is greedy (argmax); otherwise top-k (0: off), then top-p (1: off) on what
    top-k left, renormalised, then one draw from `generator`.
    """
    greedy = temperature == 0
    scaled = logits / torch.where(greedy, torch.ones_like(temperature), temperature)[:, None]
    logprobs = scaled.log_softmax(dim=-1)
    choice = logits.argmax(dim=-1)
    if bool(greedy.all()):
        return choice, logprobs
    if bool((top_k > 0).any() or (top_p < 1).any()):
        ordered, order = scaled.sort(dim=-1, descending=True)
        rank = torch.arange(ordered.shape[-1], device=logits.device)
        outside_k = (top_k[:, None] > 0) & (rank[None] >= top_k[:, None])
        ordered = ordered.masked_fill(outside_k, float("-inf"))
        probs = ordered.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # the first token always stays (0 < p)
        ordered = ordered.masked_fill(mass_before >= top_p[:, None], float("-inf"))
        scaled = torch.empty_like(scaled).scatter_(-1, order, ordered)
    drawn = torch.multinomial(scaled.softmax(dim=-1), 1, generator=generator).squeeze(1)
    return torch.where(greedy, choice, drawn), logprobs


class _Row:
    """One row's progress: what it produced, what is queued to force into it, its text so far."""

    def __init__(self, engine: Engine, prompt: int, sample: int, row: int, prompt_len: int, params: SamplingParams,
                 tools: Mapping[str, Tool]) -> None:
        self.engine, self.params, self.tools = engine, params, tools
        self.row, self.prompt_len = row, prompt_len
        self.completion = Completion(prompt=prompt, sample=sample)
        self.stop_ids = {engine.token_id(stop) for stop in params.stop}
        self.queue: deque[int] = deque()  # forced tokens still to feed
        self.query: list[int] | None = None  # the search query being sampled, when inside one
        self.undecoded: list[int] = []  # tokens whose text is not out yet (an incomplete character)

    @property
    def length(self) -> int:
        return self.prompt_len + len(self.completion.tokens)

    def room(self) -> int:
        """Tokens this row may still add: the smaller of its budget and the model's context."""
        return min(self.params.max_tokens - len(self.completion.tokens), self.engine.context - self.length)

    def add(self, token: int, logprob: float, forced: bool) -> TokenEvent:
        done = self.completion
        done.tokens.append(token)
        done.logprobs.append(logprob)
        done.forced.append(forced)
        if not forced and token in self.stop_ids:
            done.finish_reason = "stop"
        else:
            self.undecoded.append(token)
            if not forced and self.tools:
                self._follow_tool_protocol(token)
            if self.room() <= 0:
                done.finish_reason = "length"
        text = self._text(final=done.finish_reason is not None)
        done.text += text
        return TokenEvent(self.row, done.prompt, done.sample, token, logprob, forced, text, done.finish_reason)

    def _text(self, final: bool) -> str:
        if not self.undecoded:
            return ""
        text = self.engine.tokenizer.decode(self.undecoded)
        # The rest of a multi-byte character may be in the next token(s): a UTF-8 character
        # has at most 4 bytes, so after 4 tokens what does not decode never will.
        if text.endswith("\ufffd") and not final and len(self.undecoded) < 4:
            return ""
        self.undecoded = []
        return text

    def _follow_tool_protocol(self, token: int) -> None:
        ids = self.engine.special
        if token == ids[SEARCH_START]:
            self.query = []
        elif self.query is None:
            return
        elif token == ids[SEARCH_END]:
            query, self.query = self.engine.tokenizer.decode(self.query), None
            self._call("search", query)
        else:
            self.query.append(token)

    def _call(self, name: str, query: str) -> None:
        tool = self.tools.get(name)
        room = self.room()
        if tool is None or room < 2:  # no tool by that name, or no room for even the two markers
            return
        error = None
        try:
            result = str(tool(query))
        except Exception as exc:  # noqa: BLE001 - a failing tool is the model's problem to read, not a crash
            error = f"{type(exc).__name__}: {exc}"
            log.warning("tool %s(%r) failed: %s", name, query, error)
            result = f"error: {error}"
        ids = self.engine.special
        result_ids = self.engine.tokenizer.encode(result)
        truncated = len(result_ids) > room - 2
        result_ids = result_ids[: room - 2]
        if truncated:
            result = self.engine.tokenizer.decode(result_ids)
        self.queue.extend([ids[RESULT_START], *result_ids, ids[RESULT_END]])
        self.completion.tool_calls.append(ToolCall(name, query, result, truncated, error))


class Generation:
    """One call's stream: iterate for TokenEvents (in step order); `completions` once it ends."""

    def __init__(self, events: Iterator[TokenEvent], rows: list[_Row]) -> None:
        self._events, self._rows = events, rows

    def __iter__(self) -> Iterator[TokenEvent]:
        return self._events

    def cancel(self, row: int) -> None:
        """End row `row` now, as a stop would (finish_reason "stop"): a caller's stop string
        matched, or nobody reads the row any more. It leaves the batch before the next step;
        events of the current step already made may still come. Call it from the thread that
        iterates; a finished row is left as it is."""
        completion = self._rows[row].completion
        if completion.finish_reason is None:
            completion.finish_reason = "stop"

    @property
    def completions(self) -> list[Completion]:
        """Every row's Completion, prompt-major (all samples of prompt 0 first)."""
        unfinished = [row.row for row in self._rows if row.completion.finish_reason is None]
        if unfinished:
            raise RuntimeError(f"generation not finished (rows {unfinished[:5]}); iterate it to the end first")
        return [row.completion for row in self._rows]


class Engine:
    """Generation for one model and its tokenizer. The model is used as it is (device, dtype);
    on CUDA an fp32 model runs under bf16 autocast with a bf16 cache."""

    def __init__(self, model: GPT, tokenizer: BpeTokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.context = model.config.seq_len
        self.special = tokenizer.special_ids

    def token_id(self, token: str | int) -> int:
        if isinstance(token, int):
            return token
        if token not in self.special:
            raise ValueError(f"unknown stop token {token!r} (special tokens: {', '.join(self.special)})")
        return self.special[token]

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams] = SamplingParams(),
        *,
        num_samples: int = 1,
        seed: int | None = 0,
        tools: Mapping[str, Tool] | None = None,
    ) -> list[Completion]:
        """Complete every prompt `num_samples` times; Completions prompt-major."""
        generation = self.stream(prompts, params, num_samples=num_samples, seed=seed, tools=tools)
        for _ in generation:
            pass
        return generation.completions

    def stream(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams] = SamplingParams(),
        *,
        num_samples: int = 1,
        seed: int | None = 0,
        tools: Mapping[str, Tool] | None = None,
    ) -> Generation:
        """Like `generate`, but as a Generation that yields each new token as it is made.
        `params` is one SamplingParams for all prompts or one per prompt; `seed` None draws a
        fresh one."""
        prompts = [list(map(int, prompt)) for prompt in prompts]
        per_prompt = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
        if not prompts:
            raise ValueError("no prompts to complete")
        if len(per_prompt) != len(prompts):
            raise ValueError(f"{len(per_prompt)} SamplingParams for {len(prompts)} prompts")
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        for i, prompt in enumerate(prompts):
            if not prompt:
                raise ValueError(f"prompt {i} is empty (a base model's prompt starts with <|bos|>)")
            if len(prompt) >= self.context:
                raise ValueError(
                    f"prompt {i} has {len(prompt)} tokens, which leaves no room in the model's context of {self.context}"
                )
        rows = [
            _Row(self, p, s, p * num_samples + s, len(prompts[p]), per_prompt[p], tools or {})
            for p in range(len(prompts)) for s in range(num_samples)
        ]
        return Generation(self._run(prompts, rows, num_samples, seed), rows)

    def _run(self, prompts: list[list[int]], rows: list[_Row], num_samples: int, seed: int | None) -> Iterator[TokenEvent]:
        # Every yield happens outside inference mode and autocast: both are thread-wide switches,
        # and the caller's code runs between our yields.
        model = self.model
        device = model.embed_tokens.weight.device
        autocast = device.type == "cuda" and model.embed_tokens.weight.dtype == torch.float32
        cache_dtype = torch.bfloat16 if autocast else model.embed_tokens.weight.dtype
        generator = torch.Generator(device=device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)

        @contextlib.contextmanager
        def computing() -> Iterator[None]:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                yield

        # Prefill: the prompts left-padded into one batch, each row's positions starting at 0.
        width = max(map(len, prompts))
        capacity = min(self.context, width + max(row.params.max_tokens for row in rows))
        with computing():
            ids = torch.zeros(len(prompts), width, dtype=torch.long)
            valid = torch.zeros(len(prompts), width, dtype=torch.bool)
            for i, prompt in enumerate(prompts):
                ids[i, width - len(prompt) :] = torch.tensor(prompt)
                valid[i, width - len(prompt) :] = True
            ids, valid = ids.to(device), valid.to(device)
            cache = KVCache(model.config, len(prompts), capacity, device, cache_dtype)
            positions = (valid.cumsum(1) - 1).clamp(min=0)
            logits = model(ids, positions=positions, mask=attention_mask(valid, width), cache=cache)[:, -1].float()
            if num_samples > 1:  # one prefill per prompt, its cache copied for every sample
                copies = torch.arange(len(prompts), device=device).repeat_interleave(num_samples)
                cache.select(copies)
                valid, logits = valid[copies], logits[copies]
        active = list(range(len(rows)))  # batch position -> index into rows
        knobs = self._knobs(rows, active, device)

        while True:
            with computing():
                sampled, logprobs = sample_next(logits, *knobs, generator)
                queued = [rows[r].queue.popleft() if rows[r].queue else None for r in active]
                chosen = [s if q is None else q for s, q in zip(sampled.tolist(), queued)]
                tokens = torch.tensor(chosen, device=device)
                token_logprobs = logprobs.gather(1, tokens[:, None]).squeeze(1).tolist()
                events = [rows[r].add(chosen[b], token_logprobs[b], queued[b] is not None) for b, r in enumerate(active)]
            yield from events

            keep = [b for b, r in enumerate(active) if rows[r].completion.finish_reason is None]
            if not keep:
                return
            with computing():
                if len(keep) < len(active):
                    index = torch.tensor(keep, device=device)
                    cache.select(index)
                    valid, tokens = valid[index], tokens[index]
                    active = [active[b] for b in keep]
                    knobs = self._knobs(rows, active, device)
                if cache.length == cache.capacity:  # full: forget the columns that are padding in every row left
                    padding = int(valid.any(0).int().argmax())
                    if padding == 0:
                        raise RuntimeError("KV cache full while a row still has room (a bug in the engine)")
                    cache.drop_front(padding)
                    valid = valid[:, padding:]
                valid = torch.cat([valid, torch.ones(len(active), 1, dtype=torch.bool, device=device)], 1)
                positions = torch.tensor([[rows[r].length - 1] for r in active], device=device)
                logits = model(tokens[:, None], positions=positions, mask=attention_mask(valid, 1), cache=cache)[:, -1].float()

    @staticmethod
    def _knobs(rows: list[_Row], active: list[int], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """The active rows' temperature, top-k (0: off) and top-p (1: off), as tensors."""
        params = [rows[r].params for r in active]
        return (
            torch.tensor([p.temperature for p in params], device=device),
            torch.tensor([p.top_k or 0 for p in params], device=device),
            torch.tensor([p.top_p if p.top_p is not None else 1.0 for p in params], device=device),
        )
