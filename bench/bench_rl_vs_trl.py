"""DPO and GRPO steps side by side with TRL's DPOTrainer and GRPOTrainer, on the same model, data
and settings: the losses of the first steps agree, and steps/s are compared.

    python3.11 -m venv .bench/trl-venv
    .bench/trl-venv/bin/pip install "torch==2.13.*"          # first: it is on local disk
    .bench/trl-venv/bin/pip install trl transformers datasets accelerate
    nice .venv/bin/python bench/bench_rl_vs_trl.py [--threads 2] [--dpo-steps 10] [--grpo-steps 6]

The model: a GPT of cpu-small's shape (4 layers x 256, context 256) with a 2,048-token BPE
trained on the real HH-RLHF pairs and arithmetic problems, warm-started for `--warm-steps` on
worked single-digit additions (so its replies close their turn and score differently within a
group), saved as our checkpoint and exported with model/export.py (`crawl2chat export-hf`) for
TRL: both sides start from the very same weights, float32 on the CPU.

DPO: the first `--pairs` real HH-RLHF harmless-base pairs that fit the context, one batch of them
every step (so the two sides' data order cannot differ), beta 0.1, sigmoid loss, reference
log-probabilities precomputed, AdamW (betas 0.9/0.999, eps 1e-8, no weight decay), constant lr,
no warmup, gradient clipping at 1.0. The loss at step 1 is log 2 on both sides (policy =
reference); the steps after test the gradients and the optimizer.

GRPO, two comparisons:
- identical completions: our GRPO samples its rollouts (P prompts x G) and logs them
  (grpo.log_completions); TRL's GRPOTrainer replays them through its `rollout_func` hook, step k
  getting our step k's completions and rewards. As both policies start equal and take the same
  steps, the completions are on-policy for both. beta 0.04 (so the KL term, which depends on
  the moving policy, is in the loss), DAPO token-level loss (TRL's default), group-scaled
  advantages, clip 0.2, one update per rollout. Compared per step: loss, kl, entropy.
- steps/s with each side sampling its own completions (ours: the engine's batched KV-cache
  sampler, prefill once per prompt; TRL: transformers' `generate`, its default without vLLM),
  same prompts, G, max new tokens and temperature 1.0; mean reply lengths are reported, since
  the two draw different samples.

What each side's time includes: the median wall time of an optimizer step (generation, rewards,
reference and policy forwards, backward, optimizer) as each trainer measures it (ours: the
trainer's step time; TRL: a callback from step begin to step end), so model loading, data
preparation, the DPO reference precompute, evaluation and checkpoints are outside on both
sides. Each side runs with `--threads` torch threads, one after the other.

Prints a Markdown table for BENCHMARKS.md and one JSON line with every number.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from flows.cli import parse_overrides  # noqa: E402
from infra.settings import load_settings  # noqa: E402
from infra.settings.rl import ArithmeticSettings  # noqa: E402
from model.export import export_model  # noqa: E402
from model.tokenizer import BpeTokenizer  # noqa: E402
from tasks.chat.pairs import load_pairs, pair_tokens, write_pairs  # noqa: E402
from tasks.train.dpo import REFERENCE_FILE, dpo  # noqa: E402
from tasks.train.grpo import COMPLETIONS_DIR, grpo  # noqa: E402
from tasks.verifiable.arithmetic import ArithmeticProblems  # noqa: E402
from tests.rl_models import save_policy, sft_warm_start, tiny_gpt  # noqa: E402

HH = ROOT.parent / "shared" / "realdata" / "chat" / "hh_rlhf" / "harmless-base_test.jsonl.gz"
TRL_PYTHON = ROOT / ".bench" / "trl-venv" / "bin" / "python"
PEER = ROOT / "bench" / "peers" / "trl_rl.py"
CONTEXT = 256


def build_model(root: Path, warm_steps: int, threads: int) -> tuple[str, str, BpeTokenizer]:
    """Our checkpoint and its Hugging Face export of one warm-started model."""
    with gzip.open(HH, "rt") as lines:
        hh_text = [line for _, line in zip(range(1500), lines)]
    problems = ArithmeticProblems(ArithmeticSettings(), seed=0)
    worked = [problems.train(i) for i in range(2000)]
    tokenizer = BpeTokenizer.train(hh_text + [f"{p.question}\n{p.solution}" for p in worked], vocab_size=2048)
    model = tiny_gpt(tokenizer, seq_len=CONTEXT, layers=4, width=256, seed=0)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    sft_warm_start(model, tokenizer, [p.conversation() for p in worked], warm_steps, lr=1e-3)
    run, exported = str(root / "policy"), str(root / "hf")
    save_policy(run, model, tokenizer)
    export_model(model, tokenizer, exported)
    return run, exported, tokenizer


def _metrics(run: str) -> list[dict]:
    return [json.loads(line) for line in Path(run, "metrics.jsonl").read_text().splitlines()]


def _our_steps(run: str) -> tuple[dict[int, dict], list[float]]:
    records = {r["step"]: r for r in _metrics(run) if r.get("train_loss") is not None}
    elapsed = [0.0] + [records[s]["elapsed_seconds"] for s in sorted(records)]
    return records, [b - a for a, b in zip(elapsed, elapsed[1:])]


def _peer(mode: str, root: Path, config: dict, **paths: str) -> dict:
    config_path, out = root / f"{mode}-config.json", root / f"{mode}-trl.json"
    config_path.write_text(json.dumps(config))
    command = [str(TRL_PYTHON), str(PEER), mode, "--config", str(config_path), "--out", str(out),
               "--work", str(root / f"{mode}-trl"), *[arg for key, value in paths.items() for arg in (f"--{key}", value)]]
    env = {"OMP_NUM_THREADS": str(config["threads"]), "PATH": "/usr/bin:/bin", "HOME": str(root),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # never the network
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"TRL {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def _peer_steps(result: dict) -> dict[int, dict]:
    return {log["step"]: log for log in result["logs"]}


def bench_dpo(root: Path, policy: str, exported: str, tokenizer: BpeTokenizer, args) -> dict:
    pairs = [p for p in load_pairs([str(HH)]).pairs if pair_tokens(tokenizer, p) <= CONTEXT][: args.pairs]
    data = str(root / "pairs.jsonl")
    write_pairs(data, pairs)  # TRL's conversational layout: both sides read this file
    config = {"batch_size": args.pairs, "lr": args.dpo_lr, "steps": args.dpo_steps, "beta1": 0.9, "beta2": 0.999,
              "eps": 1e-8, "grad_clip": 1.0, "seed": 0, "threads": args.threads, "beta": 0.1, "max_length": CONTEXT}
    ours_run = str(root / "dpo-ours")
    settings = load_settings(overrides=parse_overrides([
        f"dpo.train.batch_size={args.pairs}", f"dpo.train.lr={args.dpo_lr}", f"dpo.train.max_steps={args.dpo_steps}",
        "dpo.train.schedule=constant", "dpo.train.warmup_steps=0", "dpo.train.weight_decay=0", "dpo.train.beta2=0.999",
        "dpo.train.grad_clip=1.0", "dpo.train.log_every=1", "dpo.val_fraction=0", "dpo.beta=0.1",
        f"dpo.ref_batch_size={args.pairs}", "dpo.train.device=cpu"]))
    began = time.perf_counter()
    dpo(settings, policy, [data], ours_run)
    ours_wall = time.perf_counter() - began
    ours, ours_seconds = _our_steps(ours_run)
    peer = _peer("dpo", root, config, model=exported, data=data)
    theirs = _peer_steps(peer)
    steps = sorted(set(ours) & set(theirs))
    # At step 1 the policy is the reference: its summed log-probabilities of the chosen and the
    # rejected replies, averaged over the step's pairs, say whether both sides scored the same tokens.
    reference = torch.load(Path(ours_run, REFERENCE_FILE), weights_only=True)["train"]
    return {
        "pairs": len(pairs), "tokens_per_step": ours[1]["tokens"],
        "logps_step1": {"chosen": (reference[:, 0].mean().item(), theirs[1].get("logps/chosen")),
                        "rejected": (reference[:, 1].mean().item(), theirs[1].get("logps/rejected"))},
        "loss": [(s, ours[s]["train_loss"], theirs[s]["loss"]) for s in steps],
        "margin": [(s, ours[s]["train_margin"], theirs[s]["rewards/margins"]) for s in steps],
        "ours_step_seconds": ours_seconds, "trl_step_seconds": peer["step_seconds"], "ours_wall": ours_wall,
        "trl": peer["trl"], "transformers": peer["transformers"],
    }


def bench_grpo(root: Path, policy: str, exported: str, args) -> dict:
    problems = ArithmeticProblems(ArithmeticSettings(), seed=0)
    prompts = [problems.train(i) for i in range(args.prompts * (args.grpo_steps + 2))]  # ours draws these, in order
    data = root / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": p.question}], "gold": p.answer}) + "\n"
                            for p in prompts))
    config = {"batch_size": args.prompts * args.group, "lr": args.grpo_lr, "steps": args.grpo_steps, "beta1": 0.9,
              "beta2": 0.999, "eps": 1e-8, "grad_clip": 1.0, "seed": 0, "threads": args.threads, "beta": 0.04,
              "group_size": args.group, "max_new_tokens": args.max_new_tokens, "temperature": 1.0, "clip_low": 0.2,
              "clip_high": 0.2, "format_weight": 0.1}
    ours_run = str(root / "grpo-ours")
    settings = load_settings(overrides=parse_overrides([
        f"grpo.train.batch_size={args.prompts * args.group}", f"grpo.prompts_per_rollout={args.prompts}",
        f"grpo.group_size={args.group}", f"grpo.max_new_tokens={args.max_new_tokens}", f"grpo.train.lr={args.grpo_lr}",
        f"grpo.train.max_steps={args.grpo_steps}", "grpo.train.beta2=0.999", "grpo.train.grad_clip=1.0",
        "grpo.beta=0.04", "grpo.loss_type=dapo", "grpo.scale_rewards=group", "grpo.temperature=1.0",
        "grpo.log_completions=true", "grpo.val_problems=8", "grpo.train.eval_every=0", "grpo.format_weight=0.1",
        "grpo.train.device=cpu"]))
    grpo(settings, policy, ours_run, task="arithmetic")
    ours, ours_seconds = _our_steps(ours_run)
    replay = _peer("replay", root, config, model=exported, data=str(data), completions=str(Path(ours_run) / COMPLETIONS_DIR))
    sample = _peer("sample", root, config, model=exported, data=str(data))
    theirs = _peer_steps(replay)
    steps = sorted(set(ours) & set(theirs))
    return {
        "loss": [(s, ours[s]["train_loss"], theirs[s]["loss"]) for s in steps],
        "kl": [(s, ours[s]["kl"], theirs[s].get("kl")) for s in steps],
        "entropy": [(s, ours[s]["entropy"], theirs[s].get("entropy")) for s in steps],
        "ours_step_seconds": ours_seconds, "trl_replay_step_seconds": replay["step_seconds"],
        "trl_sample_step_seconds": sample["step_seconds"],
        "ours_response_length": statistics.mean(ours[s]["response_length"] for s in ours),
        "trl_response_length": sample["response_length"],
        "ours_generate_share": statistics.mean(ours[s]["generate_share"] for s in ours),
    }


def _rate(seconds: list[float]) -> float:
    return 1 / statistics.median(seconds[1:] if len(seconds) > 2 else seconds)  # the first step warms caches


def _max_gap(rows: list[tuple]) -> float:
    return max(abs(a - b) for _, a, b in rows if a is not None and b is not None)


def table(d: dict, g: dict, args) -> str:
    ours_dpo, trl_dpo = _rate(d["ours_step_seconds"]), _rate(d["trl_step_seconds"])
    ours_grpo, trl_grpo = _rate(g["ours_step_seconds"]), _rate(g["trl_sample_step_seconds"])
    lines = [
        f"Model: 4 x 256 GPT (cpu-small's shape), 2,048-token BPE, context {CONTEXT}, float32 on CPU, {args.threads} "
        f"threads; TRL {d['trl']}, transformers {d['transformers']}.",
        "",
        "| stage | loss, step 1 (ours / TRL) | largest loss gap, steps 1-%d | ours steps/s | TRL steps/s | ours vs TRL |" % len(d["loss"]),
        "|---|---|---:|---:|---:|---:|",
        f"| DPO, {d['pairs']} real HH pairs a step | {d['loss'][0][1]:.6f} / {d['loss'][0][2]:.6f} | {_max_gap(d['loss']):.1e} "
        f"| {ours_dpo:.2f} | {trl_dpo:.2f} | {ours_dpo / trl_dpo:.2f}x |",
        f"| GRPO, identical completions ({args.prompts} x {args.group}) | {g['loss'][0][1]:.6f} / {g['loss'][0][2]:.6f} | "
        f"{_max_gap(g['loss']):.1e} | | {_rate(g['trl_replay_step_seconds']):.2f} (no generation) | |",
        f"| GRPO, each side sampling ({args.prompts} x {args.group}, {args.max_new_tokens} new tokens max) | | | "
        f"{ours_grpo:.2f} | {trl_grpo:.2f} | {ours_grpo / trl_grpo:.2f}x |",
        "",
        "DPO step 1, mean summed log-prob of chosen / rejected replies (ours / TRL): "
        + ", ".join(f"{side} {a:.4f} / {b:.4f}" for side, (a, b) in d["logps_step1"].items() if b is not None),
        "DPO loss per step (ours / TRL): " + ", ".join(f"{s}: {a:.5f} / {b:.5f}" for s, a, b in d["loss"]),
        "GRPO loss per step (ours / TRL): " + ", ".join(f"{s}: {a:.6f} / {b:.6f}" for s, a, b in g["loss"]),
        "GRPO kl per step (ours / TRL): " + ", ".join(f"{s}: {a:.2e} / {b:.2e}" for s, a, b in g["kl"] if b is not None),
        f"Mean reply length when sampling: ours {g['ours_response_length']:.1f}, TRL {g['trl_response_length']:.1f} tokens; "
        f"our share of step time generating: {g['ours_generate_share']:.2f}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warm-steps", type=int, default=150)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--dpo-steps", type=int, default=10)
    parser.add_argument("--dpo-lr", type=float, default=1e-4)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--grpo-steps", type=int, default=6)
    parser.add_argument("--grpo-lr", type=float, default=1e-4)
    parser.add_argument("--json", help="also write every number to this file")
    args = parser.parse_args()
    if not TRL_PYTHON.exists():
        sys.exit(f"no TRL venv at {TRL_PYTHON}: see this script's docstring for the two pip commands")
    with tempfile.TemporaryDirectory(prefix="bench-rl-") as tmp:
        root = Path(tmp)
        policy, exported, tokenizer = build_model(root, args.warm_steps, args.threads)
        dpo_result = bench_dpo(root, policy, exported, tokenizer, args)
        grpo_result = bench_grpo(root, policy, exported, args)
    print(table(dpo_result, grpo_result, args))
    every = {"dpo": dpo_result, "grpo": grpo_result, "args": vars(args)}
    print(json.dumps(every))
    if args.json:
        Path(args.json).write_text(json.dumps(every, indent=1))


if __name__ == "__main__":
    main()
