"""Settings of talking to the model: the terminal chat's defaults and the HTTP server."""

from __future__ import annotations

from pydantic import Field

from infra.settings.base import Section


class ChatSettings(Section):
    """Defaults of `crawl2chat chat`; its flags (--temperature, --top-k, ...) override them."""

    temperature: float = Field(0.6, ge=0)  # 0: greedy
    top_k: int | None = Field(50, ge=1)  # None: off
    top_p: float | None = Field(None, gt=0, le=1)  # None: off
    max_tokens: int = Field(512, ge=1)  # per reply
    system: str | None = None  # the system prompt a conversation starts with


class ServeSettings(Section):
    """`crawl2chat serve-model`: the OpenAI-compatible server and its batching (flows/serve_model.py)."""

    host: str = "127.0.0.1"  # loopback: expose it on purpose (and behind a proxy with auth)
    port: int = Field(8000, ge=0, le=65535)  # 0: any free port (printed when it starts)
    model_name: str | None = None  # the model id in /v1/models; None: taken from the checkpoint's path
    max_batch_size: int = Field(8, ge=1)  # rows (choices) decoded together in one batch
    batch_window_ms: float = Field(20.0, ge=0)  # an idle worker waits this long for more requests to batch
    max_queued_requests: int = Field(64, ge=1)  # more waiting requests than this get 503 at once
    default_max_tokens: int = Field(256, ge=1)  # when a request gives neither max_tokens nor max_completion_tokens
    max_request_bytes: int = Field(1_000_000, ge=1024)  # larger bodies get 413
