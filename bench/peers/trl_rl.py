"""The peer side of bench/bench_rl_vs_trl.py: TRL's DPOTrainer and GRPOTrainer on our exported model.

Runs in the bench-only venv (`.bench/trl-venv`: torch 2.13, trl, transformers, datasets,
accelerate), never in the project's. Three modes, each writing one JSON file:

    trl_rl.py dpo    --model HF_DIR --data pairs.jsonl --config run.json --out dpo.json
    trl_rl.py replay --model HF_DIR --data prompts.jsonl --completions DIR --config run.json --out replay.json
    trl_rl.py sample --model HF_DIR --data prompts.jsonl --config run.json --out sample.json

`dpo`: DPOTrainer on TRL's conversational prompt/chosen/rejected rows, reference
log-probabilities precomputed (as ours are). `replay`: GRPOTrainer whose `rollout_func` (TRL's
hook for custom generation) returns, at step k, the completions our GRPO sampled at its step k
(read from its completions/ log), with our rewards, so both sides learn from identical
completions. `sample`: GRPOTrainer generating its own completions with transformers'
`generate` (TRL's default without vLLM), scored by the same checker ours uses
(tasks/verifiable/rewards.py: stdlib only, imported from the repository).

The settings come from `--config` (what the bench gave our side). Per step we record the logged
loss (and the peer's other logged values) and the step's wall time, measured by a callback from
the step's start to its end: generation, reward, reference and policy forward, backward and the
optimizer step, as in our trainer's step time; model loading, dataset preparation, the
reference precompute and checkpointing are outside.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


class StepClock(TrainerCallback):
    """Wall seconds of every optimizer step, and every logged record."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.logs: list[dict] = []
        self._began = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._began)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.logs.append({"step": state.global_step, **logs})


def _common(config: dict, out_dir: str) -> dict:
    """TrainingArguments matching our side: AdamW, constant lr, no warmup, the same clipping."""
    return dict(
        output_dir=out_dir, per_device_train_batch_size=config["batch_size"], gradient_accumulation_steps=1,
        learning_rate=config["lr"], lr_scheduler_type="constant", warmup_steps=0, max_steps=config["steps"],
        weight_decay=0.0, adam_beta1=config["beta1"], adam_beta2=config["beta2"], adam_epsilon=config["eps"],
        max_grad_norm=config["grad_clip"], logging_steps=1, save_strategy="no", report_to=[], seed=config["seed"],
        use_cpu=True, bf16=False, fp16=False, dataloader_num_workers=0, disable_tqdm=True,
    )


def _rows(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def run_dpo(args, config: dict, clock: StepClock) -> dict:
    from trl import DPOConfig, DPOTrainer

    training = DPOConfig(**_common(config, args.work), beta=config["beta"], loss_type=["sigmoid"],
                         max_length=config["max_length"], precompute_ref_log_probs=True,
                         precompute_ref_batch_size=config["batch_size"])
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    trainer = DPOTrainer(model=model, args=training, train_dataset=Dataset.from_list(_rows(args.data)),
                         processing_class=AutoTokenizer.from_pretrained(args.model), callbacks=[clock])
    began = time.perf_counter()
    trainer.train()
    return {"train_seconds": time.perf_counter() - began}


def _grpo_config(args, config: dict):
    from trl import GRPOConfig

    return GRPOConfig(**_common(config, args.work), num_generations=config["group_size"],
                      max_completion_length=config["max_new_tokens"], temperature=config["temperature"], top_p=1.0,
                      top_k=0, beta=config["beta"], epsilon=config["clip_low"], epsilon_high=config["clip_high"],
                      loss_type="dapo", scale_rewards="group", num_iterations=1, steps_per_generation=1,
                      shuffle_dataset=False, mask_truncated_completions=False, log_completions=False)


def run_grpo(args, config: dict, clock: StepClock, replay: bool) -> dict:
    from trl import GRPOTrainer

    from tasks.verifiable.rewards import score

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    stops = {tokenizer.convert_tokens_to_ids(token) for token in ("<|im_end|>", "<|bos|>")}
    prompts = _rows(args.data)
    recorded: dict[int, list[dict]] = {}
    if replay:
        for path in sorted(Path(args.completions).glob("rollout-*-rank-0.jsonl")):
            rows = _rows(str(path))
            recorded[rows[0]["step"]] = rows
    lengths: list[float] = []

    def rollout_func(batch_prompts, trainer):
        rows = recorded[trainer.state.global_step + 1]  # our step k's completions, at TRL's step k
        return {"prompt_ids": [row["prompt_ids"] for row in rows], "completion_ids": [row["completion_ids"] for row in rows],
                "logprobs": [row["logprobs"] for row in rows], "recorded_reward": [row["reward"] for row in rows]}

    def reward(completions, completion_ids, gold, recorded_reward=None, **kwargs):
        lengths.append(sum(map(len, completion_ids)) / len(completion_ids))
        if recorded_reward is not None:
            return [float(value) for value in recorded_reward]
        texts = [tokenizer.decode([t for t in ids if t not in stops]) for ids in completion_ids]
        return [score(text, "stop" if ids and ids[-1] in stops else "length", answer).reward(config["format_weight"])
                for text, ids, answer in zip(texts, completion_ids, gold)]

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=_grpo_config(args, config),
                          train_dataset=Dataset.from_list(prompts), processing_class=tokenizer, callbacks=[clock],
                          rollout_func=rollout_func if replay else None)
    began = time.perf_counter()
    trainer.train()
    return {"train_seconds": time.perf_counter() - began, "response_length": sum(lengths) / max(len(lengths), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["dpo", "replay", "sample"])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--completions")
    parser.add_argument("--config", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    config = json.loads(Path(args.config).read_text())
    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])
    clock = StepClock()
    if args.mode == "dpo":
        result = run_dpo(args, config, clock)
    else:
        result = run_grpo(args, config, clock, replay=args.mode == "replay")
    import trl
    import transformers

    result.update({"step_seconds": clock.seconds, "logs": clock.logs, "trl": trl.__version__,
                   "transformers": transformers.__version__})
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
