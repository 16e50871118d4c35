"""The model server: an OpenAI-compatible HTTP API and a web chat page, for `crawl2chat serve-model`.

    POST /v1/chat/completions   OpenAI's chat completions, streamed (server-sent events) or not
    GET  /v1/models             the one model served (and /v1/models/{id})
    GET  /health                {"status": "ok"} once the server takes requests
    GET  /metrics               the batch worker's counters (batches, rows, batch sizes seen, tokens)
    GET  /                      the web chat page (flows/static/chat.html: one file, no CDN)

FastAPI on uvicorn: they come with Prefect already, validate the request body with the same
pydantic as our settings, and stream with Starlette's StreamingResponse; OpenAI's own protocol
is in flows/openai_protocol.py. It binds 127.0.0.1 unless told otherwise (`serve.host`).

How requests are batched: one worker thread owns the model (model/batcher.py). The HTTP handlers
run on uvicorn's event loop: each checks its request and renders the prompt, submits a job and
awaits its tokens on an asyncio queue of its own, which the worker fills (with
`call_soon_threadsafe`) as each decoding step ends. The worker takes every job waiting when it
is free, up to `serve.max_batch_size` rows (choices), and decodes them as one batch of the
engine; requests that come meanwhile wait for the next batch, and an idle worker waits
`serve.batch_window_ms` for requests arriving together. Each request gets its reply (or its
stream ends) as soon as its own choices end, not the whole batch.

Limits: batches are static (the engine decodes a batch from prefill to its last row; nothing joins
one mid-way), so under load a request may wait for the running batch's longest reply; a request
with a `seed` runs in a batch of its own, since the engine's random stream is per batch; more
than `serve.max_queued_requests` waiting requests get 503 at once.

Errors: a request that is malformed (bad JSON, missing or empty messages, an unknown role, a
parameter out of range, a Content-Length over `serve.max_request_bytes`), refers to another model, or is
too long for the context gets a 4xx with OpenAI's error body `{"error": {"message", "type",
"param", "code"}}`; a failure inside generation ends the affected requests with a 500 (or an
error event in their stream) and the worker carries on. A client that disconnects mid-stream
has its job cancelled: its rows leave the batch at the next step.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from flows.openai_protocol import (
    ApiError,
    ChatCompletionRequest,
    chunk_body,
    completion_body,
    delta_choice,
    error_body,
    model_card,
    new_id,
    piece_delta,
    to_job,
    usage,
)
from infra.settings import ServeSettings
from model.batcher import BatchWorker, Job, JobEnd, JobToken, QueueFull
from model.engine import Engine, Tool
from model.reply import Piece, ReplyParser

log = logging.getLogger(__name__)
PAGE = Path(__file__).with_name("static") / "chat.html"
DONE = "data: [DONE]\n\n"


class GenerationFailed(RuntimeError):
    """The batch running a request failed; the message says how."""


def _sse(body: Mapping[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False, separators=(',', ':'))}\n\n"


def _error_response(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                    code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, kind, param, code), status_code=status)


def _validation_message(error: RequestValidationError) -> tuple[str, str | None]:
    """The first problem of a body pydantic refused, as (message, param)."""
    first = error.errors()[0]
    if first.get("type") == "json_invalid":
        return f"the request body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')})", None
    where = [part for part in first.get("loc", ()) if part != "body"]
    if not where and first.get("type") in ("model_attributes_type", "dict_type", "missing"):
        return "the request body must be a JSON object (Content-Type: application/json)", None
    param = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in where).lstrip(".") or None
    return (f"{param}: {first['msg']}" if param else f"the request body: {first['msg']}"), param


async def _job_pieces(queue: asyncio.Queue, job: Job, parsers: list[ReplyParser]) -> AsyncIterator[tuple[int, list[Piece], bool]]:
    """(choice, new pieces, whether that choice just ended) as the worker's tokens arrive."""
    finished = [False] * len(parsers)
    while not all(finished):
        item = await queue.get()
        if isinstance(item, JobEnd):
            if item.error:
                raise GenerationFailed(item.error)
            for choice, parser in enumerate(parsers):  # choices cancelled by a stop string end here
                if not finished[choice]:
                    finished[choice] = True
                    yield choice, parser.finish(), True
            return
        assert isinstance(item, JobToken)
        choice, parser = item.choice, parsers[item.choice]
        if finished[choice]:
            continue
        pieces = parser.feed(item.event)
        if parser.stopped:  # a stop string matched: the rest of this choice is not wanted
            job.cancel(choice)
            parser.finish()
        finished[choice] = parser.finish_reason is not None
        yield choice, pieces, finished[choice]


class BodyLimit:
    """413 for a body whose Content-Length is over the limit, before it is read. Plain ASGI:
    Starlette's BaseHTTPMiddleware would sit between a stream and the client's disconnect."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.limit:
                response = _error_response(413, f"the request body has {int(length)} bytes; this server takes up to "
                                           f"{self.limit} (serve.max_request_bytes)", code="request_too_large")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(engine: Engine, settings: ServeSettings, model_name: str, tools: Mapping[str, Tool] | None = None) -> FastAPI:
    """The server's app; its lifespan starts and stops the batch worker."""
    worker = BatchWorker(engine, settings.max_batch_size, settings.batch_window_ms / 1000, settings.max_queued_requests,
                         dict(tools or {}))
    started = int(time.time())
    tokenizer, context = engine.tokenizer, engine.context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker.start()
        try:
            yield
        finally:
            worker.close()

    app = FastAPI(title="crawl2chat model server", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.worker = worker

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return _error_response(error.status, error.message, error.kind, error.param, error.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(error)
        return _error_response(400, message, param=param)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return _error_response(error.status_code, f"{request.method} {request.url.path}: {error.detail}", kind)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return _error_response(500, f"internal error: {type(error).__name__}", "server_error")

    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_name}

    @app.get("/metrics")
    async def metrics() -> dict[str, Any]:
        return {"model": model_name, **worker.stats()}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(model_name, context, started)]}

    @app.get("/v1/models/{model_id:path}")
    async def one_model(model_id: str) -> dict[str, Any]:
        if model_id != model_name:
            raise ApiError(404, f"The model {model_id!r} does not exist; this server has {model_name!r}", "model", "model_not_found")
        return model_card(model_name, context, started)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest) -> Any:
        if body.model and body.model != model_name:
            raise ApiError(404, f"The model {body.model!r} does not exist; this server has {model_name!r}", "model", "model_not_found")
        spec = to_job(body, tokenizer, context, settings.default_max_tokens, settings.max_batch_size)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        try:
            job = worker.submit(spec.prompt, spec.params, spec.n, spec.seed,
                                lambda item: loop.call_soon_threadsafe(queue.put_nowait, item))
        except QueueFull as error:
            raise ApiError(503, f"the server is overloaded: {error}; retry later", kind="server_error", code="overloaded") from error
        parsers = [ReplyParser(tokenizer, spec.stop) for _ in range(spec.n)]
        request_id = new_id()
        if spec.stream:
            return StreamingResponse(_stream(queue, job, parsers, request_id, len(spec.prompt), spec.include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            async for _ in _job_pieces(queue, job, parsers):
                pass
        except GenerationFailed as error:
            raise ApiError(500, str(error), kind="server_error") from error
        except asyncio.CancelledError:
            job.cancel()
            raise
        return completion_body(request_id, model_name, len(spec.prompt), parsers)

    async def _stream(queue: asyncio.Queue, job: Job, parsers: list[ReplyParser], request_id: str, prompt_tokens: int,
                      include_usage: bool) -> AsyncIterator[str]:
        created = int(time.time())

        def chunk(choices: list[dict[str, Any]], counts: dict[str, int] | None = None) -> str:
            return _sse(chunk_body(request_id, model_name, created, choices, counts))

        ended = False
        try:
            yield chunk([delta_choice(i, {"role": "assistant", "content": ""}) for i in range(len(parsers))])
            async for choice, pieces, finished in _job_pieces(queue, job, parsers):
                for piece in pieces:
                    yield chunk([delta_choice(choice, piece_delta(piece))])
                if finished:
                    yield chunk([delta_choice(choice, {}, parsers[choice].finish_reason)])
            ended = True
            if include_usage:
                yield chunk([], usage(prompt_tokens, parsers))
        except GenerationFailed as error:
            ended = True
            yield _sse(error_body(str(error), "server_error"))
        finally:  # the client went away (the stream was cancelled) or the reply is complete
            if not ended:
                job.cancel()
        yield DONE

    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), so the address is known before serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def run(app: FastAPI, sock: socket.socket) -> None:
    """Serve `app` on `sock` until interrupted (Ctrl-C or SIGTERM: uvicorn shuts down cleanly)."""
    config = uvicorn.Config(app, log_level="info", access_log=False, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
