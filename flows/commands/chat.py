"""Talking to the model: the terminal chat and the OpenAI-compatible server.

    crawl2chat chat --checkpoint runs/sft [--temperature 0.6 --top-k 50 --top-p 0.95 --max-tokens 512]
    crawl2chat chat --checkpoint runs/sft --search-index out/deduped        # the model may search
    crawl2chat chat --checkpoint hf/sft --prompt "What is BM25?"           # one reply, for scripts
    crawl2chat serve-model --checkpoint runs/sft [--host 127.0.0.1 --port 8000] [--search-index out/deduped]

Both take any stage's checkpoint (a run's output or one checkpoint folder, a base model too) or
an exported Hugging Face directory, local or s3://. The conversation logic is ChatSession
(model/session.py) and the server is flows/serve_model.py; this module reads lines, prints
what comes back (search calls and results dimmed, on a terminal) and starts the server.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, TextIO

from flows.cli import add_config_args, parse_overrides

DIM, RESET = "\033[2m", "\033[0m"
LABELS = {"search": "[search] ", "search_results": "[results] "}


def register(commands: argparse._SubParsersAction) -> None:
    chat = commands.add_parser("chat", help="talk to a model in the terminal (tokens stream as they come)")
    _model_args(chat)
    chat.add_argument("--temperature", type=float, help="0 is greedy (default: chat.temperature)")
    chat.add_argument("--top-k", type=int, help="sample from the k likeliest tokens; 0: off (default: chat.top_k)")
    chat.add_argument("--top-p", type=float, help="nucleus sampling; 1: off (default: chat.top_p)")
    chat.add_argument("--max-tokens", type=int, help="tokens per reply at most (default: chat.max_tokens)")
    chat.add_argument("--system", help="the system prompt to start with (default: chat.system)")
    chat.add_argument("--seed", type=int, help="make the replies reproducible (default: a fresh seed each)")
    chat.add_argument("--prompt", help="send this one message, print the reply and exit (for scripts)")
    chat.set_defaults(handler=_chat)

    serve = commands.add_parser("serve-model", help="an OpenAI-compatible HTTP server and web chat for a model")
    _model_args(serve)
    serve.add_argument("--host", help="address to bind (default: serve.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: serve.port, 8000; 0 picks a free one)")
    serve.add_argument("--model-name", help="the model id clients ask for (default: from the checkpoint's path)")
    serve.add_argument("--max-batch-size", type=int, help="rows decoded together (default: serve.max_batch_size)")
    serve.set_defaults(handler=_serve)


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="a run's output, one checkpoint folder or an exported Hugging Face directory, local or s3://")
    parser.add_argument("--search-index", help="give the model the search tool over this index (or the docs stage it sits next to)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when there is one)")
    add_config_args(parser)


def model_name(uri: str) -> str:
    """A readable id for a checkpoint: its run's name, with the step when one folder was named."""
    parts = [part for part in uri.rstrip("/").split("/") if part]
    if len(parts) >= 3 and re.fullmatch(r"step-\d+", parts[-1]) and parts[-2] == "checkpoints":
        return f"{parts[-3]}@{parts[-1]}"
    return parts[-1] if parts else uri


def _load(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """Settings, the engine on its device, and the tools (search when an index was given)."""
    import torch

    from infra.settings import load_settings
    from infra.storage import Storage
    from model.engine import Engine
    from model.export import load_for_inference

    settings = load_settings(args.config, parse_overrides(args.set))
    storage = Storage(settings.storage)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model, tokenizer = load_for_inference(args.checkpoint, storage, device)
    tools = {}
    if args.search_index:
        from tasks.search.index import SearchIndex
        from tasks.search.results import search_tool

        tools["search"] = search_tool(SearchIndex.open(args.search_index, storage, settings.search))
    return settings, Engine(model, tokenizer), tools


class View:
    """Prints a reply as it streams: text to `text_out` as it comes, search calls, results and
    notices to `side_out` on lines of their own, dimmed when that is a terminal (and NO_COLOR
    is unset). In the terminal chat both are stdout; with --prompt the side is stderr, so
    stdout holds the reply alone."""

    def __init__(self, text_out: TextIO, side_out: TextIO) -> None:
        self.text_out, self.side_out = text_out, side_out
        self.kind = "text"
        self.fresh = {id(text_out): True, id(side_out): True}  # at the start of a line

    def _write(self, stream: TextIO, text: str, dim: bool = False) -> None:
        if text:
            dim = dim and stream.isatty() and not os.environ.get("NO_COLOR")
            stream.write(f"{DIM}{text}{RESET}" if dim else text)
            stream.flush()
            self.fresh[id(stream)] = text.endswith("\n")

    def _new_line(self, stream: TextIO) -> None:
        if not self.fresh[id(stream)]:
            self._write(stream, "\n")

    def show(self, item: Any) -> None:
        from model.session import Notice

        if isinstance(item, Notice):
            self._new_line(self.side_out)
            self._write(self.side_out, item.text, dim=True)
            self._write(self.side_out, "\n")
            return
        if item.kind != self.kind:  # a search call or its results begin, or the text resumes
            self._new_line(self.side_out)
            self.kind = item.kind
            self._write(self.side_out, LABELS.get(item.kind, ""), dim=True)
        self._write(self.text_out if item.kind == "text" else self.side_out, item.text, dim=item.kind != "text")

    def end(self) -> None:
        """Close the reply's lines."""
        self._new_line(self.side_out)
        self._new_line(self.text_out)
        self.kind = "text"


def _chat(args: argparse.Namespace) -> int:
    from model.engine import SamplingParams
    from model.session import ChatSession, Notice

    settings, engine, tools = _load(args)
    defaults = settings.chat
    params = SamplingParams(
        max_tokens=args.max_tokens if args.max_tokens is not None else defaults.max_tokens,
        temperature=args.temperature if args.temperature is not None else defaults.temperature,
        top_k=(args.top_k or None) if args.top_k is not None else defaults.top_k,
        top_p=(args.top_p if args.top_p != 1 else None) if args.top_p is not None else defaults.top_p,
    )
    system = args.system if args.system is not None else defaults.system
    session = ChatSession(engine, params, system=system, tools=tools, seed=args.seed)
    if args.prompt is not None:  # one shot: the reply alone on stdout, the rest on stderr
        if not args.prompt.strip():
            raise ValueError("--prompt is empty")
        view = View(sys.stdout, sys.stderr)
        for item in session.reply(args.prompt):
            view.show(item)
        view.end()
        return 0

    interactive = sys.stdin.isatty()
    view = View(sys.stdout, sys.stdout)
    if interactive:
        import readline  # noqa: F401 - line editing and history for input()

        search = ", with search" if tools else ""
        print(f"chatting with {model_name(args.checkpoint)} ({engine.model.config.num_params():,} parameters, "
              f"context {engine.context}{search}); /help lists the commands, Ctrl-D leaves")
    while not session.done:
        try:
            line = input("you> " if interactive else "")
        except EOFError:
            break
        except KeyboardInterrupt:  # at the prompt: a fresh line, as a shell does
            print()
            continue
        items = session.handle(line)
        try:
            for item in items:
                view.show(item)
        except KeyboardInterrupt:  # mid-reply: stop it; what was said stays in the conversation
            items.close()
            view.show(Notice("(interrupted)"))
        view.end()
    if interactive:
        print()
    return 0


def _serve(args: argparse.Namespace) -> int:
    import logging

    from flows.serve_model import bind, create_app, run
    from infra.settings import ServeSettings

    settings, engine, tools = _load(args)
    flags = {"host": args.host, "port": args.port, "model_name": args.model_name, "max_batch_size": args.max_batch_size}
    serve = ServeSettings.model_validate({**settings.serve.model_dump(), **{k: v for k, v in flags.items() if v is not None}})
    name = serve.model_name or model_name(args.checkpoint)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        sock = bind(serve.host, serve.port)
    except OSError as error:
        raise ValueError(f"cannot listen on {serve.host}:{serve.port}: {error.strerror or error}") from error
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    search = f", search over {args.search_index}" if tools else ""
    print(f"serving {name} ({engine.model.config.num_params():,} parameters, context {engine.context}{search}) "
          f"on http://{shown}:{port}  (web chat at /, OpenAI API at /v1)", flush=True)
    run(create_app(engine, serve, name, tools), sock)
    return 0
