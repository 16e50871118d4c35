"""Generation speed: our KV-cached decoding against transformers' `generate` on the same weights
(our model exported with model/export.py and loaded by `AutoModelForCausalLM.from_pretrained`),
greedy, at batch 1 and batch 8, the same prompt and the same token budget, in one run.

    nice .venv/bin/python bench/bench_generate.py [--new-tokens 128] [--rounds 5] [--checkpoint URI]

Contenders:
- `engine`: `model.engine.Engine(model, tokenizer).generate(prompts, SamplingParams(max_tokens=N,
  temperature=0, stop=()))`, the sampler that chat, serve and the RL stages use;
- `cached loop`: the plainest greedy loop over `model.gpt.KVCache` (prefill, then one token per
  forward), written here as the reference for what the engine adds;
- `transformers`: `generate(do_sample=False, max_new_tokens=N)` with its default dynamic cache.

Each timed call includes the prefill of the prompt (the same real-text prompt for every row),
N new tokens per row, and every per-token step of that side's loop (argmax, stopping checks,
cache bookkeeping); tokens/s counts the new tokens of all rows. Stop tokens are switched off on
every side, so each spends the whole budget. The greedy tokens of every side are compared with
the cached loop's and the agreement is printed.

The model is the training bench's shape (4 layers, 4 heads, 256 wide; context 512) with our
BPE at 32768 tokens trained on the real pretraining sample, at its seeded initialisation, or the
model of `--checkpoint` (a run, a checkpoint folder or an exported directory). Rounds interleave
the contenders (A B C A B C ...) on the shared machine and the table gives medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.realtext import realdata_texts, realdata_tokenizer  # noqa: E402
from infra.settings.train import ModelSettings  # noqa: E402
from model.engine import Engine, SamplingParams  # noqa: E402
from model.export import export_model, load_for_inference  # noqa: E402
from model.gpt import GPT, GPTConfig, KVCache  # noqa: E402


@torch.inference_mode()
def cached_loop(model: GPT, prompts: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy decoding with a KV cache: one forward over the prompts, then one per new token."""
    cache = KVCache(model.config, prompts.shape[0], prompts.shape[1] + new_tokens, prompts.device, torch.float32)
    logits = model(prompts, cache=cache)[:, -1]
    tokens = []
    for step in range(new_tokens):
        tokens.append(logits.argmax(-1, keepdim=True))
        if step + 1 < new_tokens:
            logits = model(tokens[-1], cache=cache)[:, -1]
    return torch.cat(tokens, 1)


@torch.inference_mode()
def transformers_generate(hf_model, prompts: torch.Tensor, new_tokens: int) -> torch.Tensor:
    output = hf_model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                               max_new_tokens=new_tokens)
    return output[:, prompts.shape[1]:]


def engine_generate(model: GPT, tokenizer, new_tokens: int):
    """`generate(prompts)` through the engine, greedy, with no stop token."""
    engine, params = Engine(model, tokenizer), SamplingParams(max_tokens=new_tokens, temperature=0.0, stop=())
    return lambda prompts: [list(c.tokens) for c in engine.generate(prompts.tolist(), params)]


def agreement(reference: torch.Tensor, rows: list[list[int]]) -> float:
    """Share of new tokens equal to the cached loop's, position by position."""
    same = total = 0
    for expected, got in zip(reference.tolist(), rows):
        total += len(expected)
        same += sum(a == b for a, b in zip(expected, got))
    return same / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a run, checkpoint folder or exported directory; default: the bench shape, seeded init")
    parser.add_argument("--vocab-size", type=int, default=32_768)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own, one per core)")
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers

    if args.checkpoint:
        model, tokenizer = load_for_inference(args.checkpoint)
    else:
        tokenizer = realdata_tokenizer(args.vocab_size)
        settings = ModelSettings(n_layer=4, n_head=4, n_kv_head=4, n_embd=256, seq_len=512)
        model = GPT(GPTConfig.from_settings(settings, tokenizer.vocab_size), seed=0).eval()
    if args.prompt_tokens + args.new_tokens > model.config.seq_len:
        raise SystemExit(f"prompt + new tokens ({args.prompt_tokens + args.new_tokens}) exceed the model's context of {model.config.seq_len}")
    with tempfile.TemporaryDirectory() as directory:
        export_model(model, tokenizer, directory)
        hf_model = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    hf_model.generation_config.eos_token_id = None  # spend the whole budget, as the loop does
    text = next(t for t in realdata_texts() if len(tokenizer.encode(t)) >= args.prompt_tokens)
    prompt = [tokenizer.bos_id, *tokenizer.encode(text)][: args.prompt_tokens]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: timings are under whatever else shares "
          "the machine, so read the ratios (contenders take turns)", flush=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads; "
          f"{model.config.num_params():,} parameters; prompt {len(prompt)} tokens, {args.new_tokens} new", flush=True)

    contenders = {"engine": engine_generate(model, tokenizer, args.new_tokens),
                  "cached loop": lambda p: cached_loop(model, p, args.new_tokens).tolist(),
                  "transformers": lambda p: transformers_generate(hf_model, p, args.new_tokens).tolist()}
    results = []
    for batch in args.batches:
        prompts = torch.tensor([prompt] * batch)
        reference = cached_loop(model, prompts, args.new_tokens)
        seconds = {name: [] for name in contenders}
        produced = {}
        for name, run in contenders.items():  # warm-up, and the tokens each side produces
            produced[name] = run(prompts)
        for _ in range(args.rounds):
            for name, run in contenders.items():
                started = time.perf_counter()
                run(prompts)
                seconds[name].append(time.perf_counter() - started)
        for name in contenders:
            tokens = sum(len(row) for row in produced[name])
            median = statistics.median(seconds[name])
            results.append({"batch": batch, "contender": name, "median_seconds": median, "seconds": seconds[name],
                            "new_tokens": tokens, "tokens_per_second": tokens / median,
                            "agreement_with_cached_loop": agreement(reference, produced[name])})
        print(f"  batch {batch}: " + ", ".join(f"{r['contender']} {r['tokens_per_second']:,.0f} tok/s"
                                                for r in results if r["batch"] == batch), flush=True)

    print("\n| batch | contender | median s | new tokens | tokens/s | vs transformers | same greedy tokens |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in results:
        peer = next(p for p in results if p["batch"] == r["batch"] and p["contender"] == "transformers")
        print(f"| {r['batch']} | {r['contender']} | {r['median_seconds']:.3f} | {r['new_tokens']} | {r['tokens_per_second']:,.0f} | "
              f"{r['tokens_per_second'] / peer['tokens_per_second']:.2f}x | {100 * r['agreement_with_cached_loop']:.0f}% |")
    if args.json:
        args.json.write_text(json.dumps({"threads": torch.get_num_threads(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
