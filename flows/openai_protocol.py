"""OpenAI's chat-completions protocol, as far as our model serves it: requests in, JSON out.

`ChatCompletionRequest` is the body of `POST /v1/chat/completions`; `to_job` checks it and turns
it into what the batch worker runs (the prompt's token ids, SamplingParams, n, seed, stop
strings), raising `ApiError` (HTTP status, OpenAI's error type, param and code) for anything a
client must fix. The builders make the response, chunk, model and error objects in OpenAI's
shapes, so any OpenAI client library reads them.

Supported: roles system (and `developer`, its newer name), user and assistant; content as a
string or a list of `{"type": "text", "text": ...}` parts; temperature (0 to 2, default 1),
top_p, max_tokens / max_completion_tokens, stop (up to 4 strings), n, seed, stream with
stream_options.include_usage, and `top_k` (an extension, as in vLLM). Refused with 400:
other roles (tool, function), other content parts (images, audio), tools and function calls,
logprobs, logit_bias, non-zero presence/frequency penalties and a response_format other than
text. Unknown fields are ignored, as OpenAI's own clients send new ones over time.

Search: with a search index the model may search while it answers. A reply's message then
carries `parts` besides `content` (the text alone): the assistant content in our message format
(model/chat.py), search calls and results included, which a client may send back as that
message's `content` so the model sees its own turn again token for token. Streamed, the
search shows up as it happens in non-standard delta fields: `{"search_query": "..."}` (an empty
one opens a call) and `{"search_results": "..."}`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from model.chat import problem, render_prompt
from model.engine import SamplingParams
from model.reply import Piece, ReplyParser
from model.tokenizer import BpeTokenizer

ROLE_NAMES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
PART_TYPES = {"text", "search", "search_results"}  # OpenAI's text parts, and our search parts
MAX_STOP_STRINGS = 4
DELTA_FIELDS = {"text": "content", "search": "search_query", "search_results": "search_results"}


class ApiError(Exception):
    """A request the server will not run, as OpenAI reports it."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")  # name, refusal, ...

    role: str
    content: Any = None  # a string or a list of parts, checked in to_messages (a clearer error than a union's)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The fields we read; others are ignored (see the module docstring for what is refused)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)  # vLLM's extension; 0 or -1: off
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1)
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None
    logit_bias: dict[str, float] | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None


@dataclass(frozen=True)
class JobSpec:
    """A checked request, ready for the batch worker."""

    prompt: list[int]
    params: SamplingParams
    n: int
    seed: int | None
    stop: list[str]
    stream: bool
    include_usage: bool


def _refuse_unsupported(request: ChatCompletionRequest) -> None:
    unsupported = {
        "tools": bool(request.tools), "functions": bool(request.functions), "logprobs": bool(request.logprobs),
        "logit_bias": bool(request.logit_bias), "presence_penalty": bool(request.presence_penalty),
        "frequency_penalty": bool(request.frequency_penalty),
        "response_format": (request.response_format or {"type": "text"}).get("type") != "text",
    }
    for param, used in unsupported.items():
        if used:
            raise ApiError(400, f"{param} is not supported by this server", param, "unsupported_parameter")


def to_messages(request: ChatCompletionRequest) -> list[dict[str, Any]]:
    """The request's messages in our format, each checked; the first problem is a 400."""
    messages = []
    for i, message in enumerate(request.messages):
        param = f"messages[{i}]"
        role = ROLE_NAMES.get(message.role)
        if role is None:
            raise ApiError(400, f"{param}.role {message.role!r} is not supported (system, developer, user, assistant)",
                           f"{param}.role", "unsupported_role")
        content = message.content
        if content is not None and not isinstance(content, (str, list)):
            raise ApiError(400, f"{param}.content must be a string or a list of content parts", f"{param}.content",
                           "invalid_message")
        if isinstance(content, list):
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind not in PART_TYPES:
                    raise ApiError(400, f"{param}.content[{j}]: part type {kind!r} is not supported (text only)",
                                   f"{param}.content", "unsupported_content")
            content = [{key: value for key, value in part.items() if key in ("type", "text", "query")} for part in content]
        converted = {"role": role, "content": content if content is not None else ""}
        reason = problem([converted], needs_assistant=False)
        if reason:
            raise ApiError(400, f"{param}: {reason.replace('_', ' ')}", f"{param}.content", "invalid_message")
        messages.append(converted)
    return messages


def to_job(request: ChatCompletionRequest, tokenizer: BpeTokenizer, context: int, default_max_tokens: int,
           max_n: int) -> JobSpec:
    """Check a request and render its prompt; every problem is an ApiError."""
    _refuse_unsupported(request)
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if len(stop) > MAX_STOP_STRINGS or not all(stop):
        raise ApiError(400, f"stop takes up to {MAX_STOP_STRINGS} non-empty strings", "stop")
    if request.n > max_n:
        raise ApiError(400, f"n must be at most {max_n} on this server (serve.max_batch_size)", "n")
    prompt = render_prompt(tokenizer, to_messages(request))
    if len(prompt) >= context:
        raise ApiError(400, f"This model's maximum context length is {context} tokens; the messages take {len(prompt)} "
                       "tokens, which leaves no room for a reply", "messages", "context_length_exceeded")
    params = SamplingParams(
        max_tokens=request.max_completion_tokens or request.max_tokens or default_max_tokens,
        temperature=1.0 if request.temperature is None else request.temperature,
        top_k=request.top_k if request.top_k and request.top_k > 0 else None,
        top_p=request.top_p,
    )
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    return JobSpec(prompt, params, request.n, request.seed, stop, request.stream, include_usage)


# -- responses -------------------------------------------------------------------------------------


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, parsers: list[ReplyParser]) -> dict[str, int]:
    completion = sum(parser.tokens for parser in parsers)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


def completion_body(request_id: str, model: str, prompt_tokens: int, parsers: list[ReplyParser]) -> dict[str, Any]:
    """The non-streamed response: one choice per parser."""
    choices = []
    for index, parser in enumerate(parsers):
        message: dict[str, Any] = {"role": "assistant", "content": parser.text}
        if any(part["type"] != "text" for part in parser.parts):
            message["parts"] = parser.parts
        choices.append({"index": index, "message": message, "logprobs": None, "finish_reason": parser.finish_reason})
    return {"id": request_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage(prompt_tokens, parsers)}


def chunk_body(request_id: str, model: str, created: int, choices: list[dict[str, Any]],
               usage_counts: dict[str, int] | None = None) -> dict[str, Any]:
    body = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices}
    if usage_counts is not None:
        body["usage"] = usage_counts
    return body


def delta_choice(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def piece_delta(piece: Piece) -> dict[str, str]:
    """A piece of a streamed reply as a delta: text is `content`, a search its own fields."""
    return {DELTA_FIELDS[piece.kind]: piece.text}


def model_card(model: str, context: int, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "crawl2chat", "max_model_len": context}

