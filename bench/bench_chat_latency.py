"""Chat latency through the HTTP server, side by side on the same model: ours (`crawl2chat
serve-model`) against Hugging Face's `transformers serve`, both OpenAI-compatible, at 1 and 8
concurrent streaming clients.

    nice .venv/bin/python bench/bench_chat_latency.py [--layers 4 --width 256] [--runs 3] [--max-tokens 48]

The peer runs from the project's .venv (transformers is in the test extra) and needs accelerate
there on CPU (`.venv/bin/pip install accelerate`; listed in the bench extra); `--no-peer` skips it.

The model: a GPT of `--layers` x `--width` (random weights, seeded) with a 4096-token BPE trained
on the real Wikipedia sample under ../shared/realdata, saved as our checkpoint and exported to a
Hugging Face directory (model/export.py) for the peer, so both serve the very same weights.
Greedy decoding (temperature 0): both sides produce the same tokens, and a random model almost
never predicts an end of turn, so every reply runs its `--max-tokens` (the table says how many
tokens came back on average).

The clients are real HTTP clients (httpx, one connection each, in threads), streaming: each
client sends `--requests` chat requests one after the other, each with its own prompt (a
sentence of the Wikipedia sample), all clients starting together. Per request we record the
time to first token (request sent -> first streamed chunk holding generated text) and the
decoding rate that client sees ((tokens - 1) / (last chunk - first chunk)); per run, total
tokens/s is every token of every client over the run's wall time. Each figure is the median
over requests, then the median over `--runs` runs.

What each side's time includes: the whole HTTP round trip on loopback, request parsing,
chat-template rendering and tokenizing, queueing, prefill, decoding and incremental detokenizing,
and the server-sent-event framing. Both run with OMP_NUM_THREADS=2 under `nice` on the same
machine, one at a time. The peer streams the prompt's template text back as its first content
chunk (its response parser's prefix; a quirk of its handling of this template), which is not a
generated token: chunks holding special-token text (`<|...|>`) are skipped on both sides.
The peer runs its default mode: its `--continuous-batching` (paged attention) was measured at
over a minute to the first token on this CPU and ~6 tokens/s, so it is left out.

Prints a Markdown table for BENCHMARKS.md and one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

WIKI = ROOT.parent / "shared" / "realdata" / "pretrain_text" / "llama_factory_wiki_demo.txt"
PYTHON = ROOT / ".venv" / "bin" / "python"
TRANSFORMERS = ROOT / ".venv" / "bin" / "transformers"


def build_model(root: Path, layers: int, width: int, context: int) -> tuple[str, str, int]:
    """Our checkpoint and its Hugging Face export of one seeded random model; its parameter count."""
    from infra.settings.train import ModelSettings
    from infra.storage import Storage
    from model.checkpoint import model_tensors, save_checkpoint
    from model.export import export_model
    from model.gpt import GPT, GPTConfig
    from model.tokenizer import BpeTokenizer

    lines = [line for line in WIKI.read_text().splitlines() if line.strip()]
    tokenizer = BpeTokenizer.train(lines[:3000], vocab_size=4096)
    settings = ModelSettings(n_layer=layers, n_head=max(1, width // 64), n_kv_head=max(1, width // 64), n_embd=width, seq_len=context)
    model = GPT(GPTConfig.from_settings(settings, tokenizer.vocab_size), seed=0).eval()
    run, exported = str(root / "run"), str(root / "hf")
    save_checkpoint(Storage(), run, 0, model_tensors(model), model.config, tokenizer, "bench")
    export_model(model, tokenizer, exported)
    return run, exported, model.config.num_params()


def prompts(count: int) -> list[str]:
    sentences = re.findall(r"[A-Z][^.!?]{40,160}[.!?]", WIKI.read_text())
    return sentences[:count]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One server process under `nice`, started and waited for; stopped on exit."""

    def __init__(self, name: str, command: list[str], port: int, model: str, log: Path) -> None:
        self.name, self.url, self.model = name, f"http://127.0.0.1:{port}", model
        env = {**os.environ, "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"}
        self.log = open(log, "w")
        self.process = subprocess.Popen(["nice", "-n", "10", *command], cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} did not start within 300 s")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def one_request(client: httpx.Client, server: Server, prompt: str, max_tokens: int) -> dict:
    body = {"model": server.model, "messages": [{"role": "user", "content": prompt}], "stream": True,
            "temperature": 0, "max_tokens": max_tokens}
    sent = time.perf_counter()
    times: list[float] = []
    with client.stream("POST", f"{server.url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices", []):
                text = (choice.get("delta") or {}).get("content")
                if text and "<|" not in text:  # generated text only (the peer echoes its template first)
                    times.append(time.perf_counter())
    if not times:
        raise RuntimeError(f"{server.name} streamed no text for {prompt!r}")
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else float("nan")
    return {"ttft": times[0] - sent, "tokens": len(times), "rate": rate}


def run_clients(server: Server, clients: int, requests: int, texts: list[str], max_tokens: int) -> dict:
    results: list[dict] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client_loop(index: int) -> None:
        with httpx.Client(timeout=600) as client:
            start.wait()
            for r in range(requests):
                measured = one_request(client, server, texts[(index * requests + r) % len(texts)], max_tokens)
                with lock:
                    results.append(measured)

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    return {
        "ttft_s": statistics.median(r["ttft"] for r in results),
        "client_tokens_per_s": statistics.median(r["rate"] for r in results),
        "total_tokens_per_s": sum(r["tokens"] for r in results) / wall,
        "tokens_per_reply": statistics.mean(r["tokens"] for r in results),
    }


def measure(server: Server, concurrency: list[int], runs: int, requests: int, texts: list[str], max_tokens: int) -> dict:
    with httpx.Client(timeout=600) as warm:  # first request pays one-off costs (allocations, lazy imports)
        one_request(warm, server, texts[-1], max_tokens)
    figures = {}
    for clients in concurrency:
        per_run = [run_clients(server, clients, requests, texts, max_tokens) for _ in range(runs)]
        figures[clients] = {key: statistics.median(run[key] for run in per_run) for key in per_run[0]}
        print(f"  {server.name}, {clients} client(s): {figures[clients]}", file=sys.stderr, flush=True)
    if server.name == "ours":
        figures["batches"] = httpx.get(f"{server.url}/metrics", timeout=10).json()["batch_rows"]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--requests", type=int, default=2, help="requests per client per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--no-peer", action="store_true", help="measure ours only")
    args = parser.parse_args()
    if not WIKI.exists():
        print(f"bench_chat_latency: {WIKI} is absent (../shared/realdata)", file=sys.stderr)
        return 2
    if not args.no_peer and subprocess.run([str(PYTHON), "-c", "import accelerate"], capture_output=True).returncode:
        print("bench_chat_latency: the peer (transformers serve on CPU) needs accelerate: "
              ".venv/bin/pip install accelerate, or measure ours alone with --no-peer", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench-chat-"))
    try:
        run, exported, params = build_model(root, args.layers, args.width, args.context)
        texts = prompts(max(args.clients) * args.requests + 1)
        servers = [("ours", [str(PYTHON), "-m", "flows.cli", "serve-model", "--checkpoint", run, "--model-name", "bench",
                             "--device", "cpu"], "bench")]
        if not args.no_peer:
            servers.append(("transformers serve", [str(TRANSFORMERS), "serve", exported, "--device", "cpu",
                                                   "--host", "127.0.0.1", "--log-level", "warning"], exported))
        results = {}
        for name, command, model in servers:
            port = free_port()
            command = [*command, "--port", str(port)]
            with Server(name, command, port, model, root / f"{name.replace(' ', '-')}.log") as server:
                results[name] = measure(server, args.clients, args.runs, args.requests, texts, args.max_tokens)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"\nModel: {args.layers} layers x {args.width} wide, {params / 1e6:.1f} M parameters, 4096-token vocabulary, "
          f"context {args.context}; greedy, {args.max_tokens} tokens per reply; medians of {args.runs} runs "
          f"of {args.requests} requests per client.\n")
    print("| server | clients | time to first token | tokens/s per client | total tokens/s | tokens per reply |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, figures in results.items():
        for clients in args.clients:
            f = figures[clients]
            print(f"| {name} | {clients} | {f['ttft_s'] * 1000:.0f} ms | {f['client_tokens_per_s']:.1f} | "
                  f"{f['total_tokens_per_s']:.1f} | {f['tokens_per_reply']:.0f} |")
    if len(results) == 2:
        ours, peer = results["ours"], results["transformers serve"]
        for clients in args.clients:
            print(f"\n{clients} client(s): total tokens/s ours / peer = {ours[clients]['total_tokens_per_s'] / peer[clients]['total_tokens_per_s']:.2f}x, "
                  f"time to first token peer / ours = {peer[clients]['ttft_s'] / ours[clients]['ttft_s']:.2f}x", end="")
        print()
    print(f"\nour batch sizes (rows -> batches): {results['ours'].get('batches')}")
    print(json.dumps({"model": {"layers": args.layers, "width": args.width, "params": params, "context": args.context},
                      "max_tokens": args.max_tokens, "runs": args.runs, "requests": args.requests,
                      "results": {name: {str(k): v for k, v in figures.items()} for name, figures in results.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
