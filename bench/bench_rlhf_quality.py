"""RLHF on the real preference data, from one SFT checkpoint: reward models, PPO, GRPO.

    nice .venv/bin/python bench/bench_rlhf_quality.py --sft .bench/sft-quality/sft-real

In one run (each stage resumable: a rerun continues where it stopped):
1. reward models from the SFT model on the HH-RLHF harmless-base pairs
   (../shared/realdata/chat/hh_rlhf): one on all the non-held-out pairs (the stage as a user
   runs it), and two on parts 0 and 1 of 2 of them (`reward.parts`), which never see each
   other's pairs (PPO learns against one while the other judges); all three are evaluated on
   the same held-out pairs (by content hash), against the 50% chance line and the reply-length
   rules ("the shorter reply wins", "the longer reply wins", by characters of the reply) on
   exactly those pairs;
2. PPO of the SFT model against the part-0 reward model, the part-1 model judging on held-out
   prompts: reward, judge and KL curves (a PNG drawn by flows/plots.py), rollout tokens/s and
   the share of the time spent generating;
3. GRPO on the arithmetic generator (tasks/verifiable/arithmetic.py). The real conversations
   never show the `#### <answer>` line the checker reads, so, as nanochat's SFT mix carries
   GSM8K before its RL on GSM8K, the SFT model is first fine-tuned (`tasks.train.sft`, SFT's
   settings with `--arith-sft-steps`) on `--arith-examples` worked problems of the generator's
   training split; GRPO starts from that. Greedy accuracy on the same held-out problems for the
   SFT model, after the worked problems (GRPO's step 0) and after GRPO, the sampled correct
   rate of the rollouts at the start and the end, and how sound the greedy replies' working is
   before and after (`working_lines`: the reward reads only the final line).
`--stages` runs some of the three (`--stages grpo` alone: GRPO needs no reward model). Every
trained model lives in a folder named by a digest of what made it (starting model, reward or
ppo or grpo settings, generator, worked problems), so a rerun under other settings trains
afresh beside the earlier run instead of resuming it.
Prints Markdown tables for BENCHMARKS.md and writes every number to <work>/results.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import operator
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stage_runs import records, trained  # noqa: E402
from flows.cli import parse_overrides  # noqa: E402
from flows.plots import training_curves  # noqa: E402
from infra.settings import load_settings  # noqa: E402
from infra.storage import Storage  # noqa: E402
from model.chat import render_prompt, text_of  # noqa: E402
from model.engine import Engine, SamplingParams  # noqa: E402
from model.export import load_for_inference  # noqa: E402
from model.heads import RewardModel  # noqa: E402
from model.trainer import sequence_length  # noqa: E402
from tasks.chat.conversations import write_conversations  # noqa: E402
from tasks.chat.pairs import load_pairs  # noqa: E402
from tasks.train.grpo import grpo  # noqa: E402
from tasks.train.ppo import ppo  # noqa: E402
from tasks.train.reward import fit_pairs, split_pairs, train_reward  # noqa: E402
from tasks.train.sft import sft as train_sft  # noqa: E402
from tasks.verifiable.arithmetic import ArithmeticProblems  # noqa: E402
from tasks.verifiable.rewards import score  # noqa: E402

HH = ROOT.parent / "shared" / "realdata" / "chat" / "hh_rlhf" / "harmless-base_test.jsonl.gz"


def fitted_pairs(settings, sft: str) -> list:
    """The HH pairs as the reward stage sees them: fitted to its context the same way."""
    model, tokenizer = load_for_inference(sft, Storage())
    return fit_pairs(tokenizer, load_pairs([str(HH)]).pairs, sequence_length(settings.reward.train, model.config))[0]


def held_out(settings, pairs: list) -> list:
    """The reward stage's own held-out pairs (the same split and cap)."""
    return split_pairs(pairs, settings.reward.val_fraction)[1][: settings.reward.max_val_pairs]


def unseen_by_half(settings, pairs: list, held: list, part: int) -> list:
    """Every pair the reward model of half `part` never trained on: the held-out ones (`held`)
    and the other half's (about 6x the held-out pairs alone, so a few points are told apart)."""
    return held + split_pairs(pairs, settings.reward.val_fraction, 2, 1 - part)[0]


def shorter_wins(pairs: list) -> list[float]:
    """Per pair, whether "the shorter reply wins" is right (1), wrong (0) or a tie (0.5)."""
    def right(pair) -> float:
        chosen, rejected = len(text_of(pair.chosen["content"])), len(text_of(pair.rejected["content"]))
        return 0.5 if chosen == rejected else float(chosen < rejected)
    return [right(pair) for pair in pairs]


def length_rules(pairs: list) -> dict:
    """Accuracy of "shorter wins" and "longer wins" on `pairs`; a tie counts as half right for both."""
    shorter = sum(shorter_wins(pairs)) / len(pairs)
    return {"pairs": len(pairs), "shorter_wins": shorter, "longer_wins": 1 - shorter}


def pairwise_right(reward_uri: str, pairs: list) -> list[float]:
    """Per pair, whether the reward model scores the chosen reply above the rejected one."""
    judge = RewardModel.load(reward_uri, batch_size=32)
    chosen = judge.rewards([[*pair.prompt, pair.chosen] for pair in pairs])
    rejected = judge.rewards([[*pair.prompt, pair.rejected] for pair in pairs])
    return [float(c > r) for c, r in zip(chosen, rejected)]


def against_shorter(reward_uri: str, pairs: list) -> dict:
    """The reward model's accuracy on `pairs`, the length rules', and the model's lead over
    "shorter wins" with its standard error, paired per pair (both judge the same pairs)."""
    model, rule = pairwise_right(reward_uri, pairs), shorter_wins(pairs)
    lead = [m - r for m, r in zip(model, rule)]
    mean = sum(lead) / len(lead)
    error = (sum((x - mean) ** 2 for x in lead) / (len(lead) - 1) / len(lead)) ** 0.5
    return {"accuracy": sum(model) / len(model), **length_rules(pairs), "lead_over_shorter": mean, "lead_standard_error": error}


def run_rewards(overrides: list[str], sft: str, work: Path) -> dict:
    """The all-pairs reward model and the two halves, each half also judged on every pair it
    never saw, beside the length rules on exactly those pairs."""
    settings = load_settings(overrides=parse_overrides(overrides))
    pairs = fitted_pairs(settings, sft)
    held = held_out(settings, pairs)
    halves = [run_reward(overrides, sft, work, part, 2) for part in (0, 1)]
    for part, half in enumerate(halves):
        half["unseen"] = against_shorter(half["output"], unseen_by_half(settings, pairs, held, part))
    return {"all": run_reward(overrides, sft, work, 0, 1), "halves": halves, "length_rules": length_rules(held)}


def run_reward(overrides: list[str], sft: str, work: Path, part: int, parts: int) -> dict:
    settings = load_settings(overrides=parse_overrides([*overrides, f"reward.parts={parts}", f"reward.part={part}"]))
    output = work / f"reward-{part}-of-{parts}-{settings_key(sft, settings.reward.model_dump())}"
    trained(output, settings.reward.train.max_steps, lambda: train_reward(settings, sft, [str(HH)], str(output), resume=True))
    lines = records(output)
    evals = [r for r in lines if "val_accuracy" in r]
    report = json.loads((output / "data_report.json").read_text())
    return {"output": str(output), "split": report["split"], "context": report["context"],
            "val_accuracy_start": evals[0]["val_accuracy"], "val_accuracy_end": evals[-1]["val_accuracy"],
            "val_loss_end": evals[-1]["val_loss"], "train_seconds": lines[-1]["elapsed_seconds"]}


def run_ppo(settings, sft: str, rewards: list[dict], work: Path) -> dict:
    output = work / f"ppo-{settings_key(rewards[0]['output'], rewards[1]['output'], settings.ppo.model_dump())}"
    trained(output, settings.ppo.train.max_steps,
            lambda: ppo(settings, sft, rewards[0]["output"], [str(HH)], str(output), judge=rewards[1]["output"], resume=True))
    lines = records(output)
    png = training_curves("ppo", lines)
    if png:
        (work / "ppo-curves.png").write_bytes(png)
    evals = [r for r in lines if "judge_mean" in r]
    steps = [r for r in lines if r.get("rollout_tokens_per_second") is not None]
    return {"output": str(output), "steps": lines[-1]["step"], "train_seconds": lines[-1]["elapsed_seconds"],
            "evals": [{k: r[k] for k in ("step", "val_reward_mean", "judge_mean", "val_response_length")} for r in evals],
            "curve": [{k: r.get(k) for k in ("step", "reward_mean", "kl", "kl_coef", "response_length", "entropy", "distinct_2")}
                      for r in steps],
            "rollout_tokens_per_second": steps[-1]["rollout_tokens_per_second"], "generate_share": steps[-1]["generate_share"]}


def grpo_eval(settings, policy: str, output: Path) -> dict:
    """Step 0 of a GRPO run is its policy's greedy held-out evaluation: a one-step run's first eval line."""
    trained(output, 1, lambda: grpo(settings, policy, str(output), task="arithmetic", resume=True))
    return next(r for r in records(output) if "val_accuracy" in r)


def settings_key(*parts) -> str:
    """A short digest of what made a stage's output, so a rerun under other settings trains afresh
    in its own folder instead of resuming (or reusing) work done under these."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


WORKING_LINE = re.compile(r"\s*(\d+)\s*([-+*])\s*(\d+)\s*=\s*(\d+)\s*")
OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def working_lines(settings, uri: str, problems: list) -> dict:
    """How sound a model's working is in its greedy replies to the held-out `problems`: the share
    of the "a + b = c" lines whose arithmetic holds, the share equal to the worked solution's
    line at the same place, and the share of problems answered right with every line sound.
    GRPO's reward reads only the final `####` line, so this is what it leaves unwatched."""
    g = settings.grpo
    model, tokenizer = load_for_inference(uri, Storage())
    prompts = [render_prompt(tokenizer, p.messages(g.system_prompt, g.instruction)) for p in problems]
    replies = Engine(model.eval(), tokenizer).generate(prompts, SamplingParams(max_tokens=g.max_new_tokens, temperature=0.0))
    lines = sound = as_worked = right_and_sound = 0
    for problem, reply in zip(problems, replies):
        worked = [line.strip() for line in problem.solution.splitlines() if "=" in line]
        written = [line.strip() for line in reply.text.splitlines() if "=" in line]
        holds = [bool(m) and OPERATORS[m[2]](int(m[1]), int(m[3])) == int(m[4]) for m in map(WORKING_LINE.fullmatch, written)]
        lines, sound = lines + len(written), sound + sum(holds)
        as_worked += sum(a == b for a, b in zip(written, worked))
        right_and_sound += score(reply.text, reply.finish_reason, problem.answer, g.require_stop).correct and all(holds)
    return {"lines": lines, "sound_lines": sound / max(lines, 1), "lines_as_worked": as_worked / max(lines, 1),
            "right_with_sound_working": right_and_sound / len(problems)}


def run_grpo(settings, overrides: list[str], sft: str, work: Path, examples: int, sft_steps: int) -> dict:
    problems = ArithmeticProblems(settings.grpo.arithmetic, seed=settings.grpo.train.seed)
    val = problems.val(settings.grpo.val_problems)  # the held-out problems grpo() evaluates on
    warm_key = settings_key(sft, settings.grpo.arithmetic.model_dump(), settings.grpo.train.seed, examples, sft_steps)
    worked = work / f"arithmetic-worked-{warm_key}.jsonl"
    write_conversations(str(worked), [problems.train(i).conversation() for i in range(examples)])
    warm = work / f"sft-arithmetic-{warm_key}"
    warm_settings = load_settings(overrides=parse_overrides([*overrides, f"sft.train.max_steps={sft_steps}"]), preset="cpu-small")
    trained(warm, sft_steps, lambda: train_sft(warm_settings, sft, [str(worked)], str(warm), resume=True))
    one_step = load_settings(overrides=parse_overrides([*overrides, "grpo.train.max_steps=1"]))
    before = grpo_eval(one_step, sft, work / f"grpo-eval-sft-{warm_key}")
    output = work / f"grpo-{settings_key(warm_key, settings.grpo.model_dump())}"
    trained(output, settings.grpo.train.max_steps, lambda: grpo(settings, str(warm), str(output), task="arithmetic", resume=True))
    lines = records(output)
    evals = [r for r in lines if "val_accuracy" in r]
    steps = [r for r in lines if r.get("rollout_tokens_per_second") is not None]
    sampled = [r["correct_rate"] for r in steps]
    return {"output": str(output), "steps": lines[-1]["step"], "train_seconds": lines[-1]["elapsed_seconds"],
            "worked_examples": examples, "worked_sft_steps": sft_steps,
            "sft_model": {k: before[k] for k in ("val_accuracy", "val_format_rate", "val_response_length")},
            "evals": [{k: r[k] for k in ("step", "val_accuracy", "val_format_rate", "val_response_length")} for r in evals],
            "reward_mean_first": steps[0]["reward_mean"], "reward_mean_last": steps[-1]["reward_mean"],
            "sampled_correct_first_10": sum(sampled[:10]) / len(sampled[:10]),
            "sampled_correct_last_10": sum(sampled[-10:]) / len(sampled[-10:]),
            "working": {name: working_lines(settings, str(uri), val) for name, uri in (("before", warm), ("after", output))},
            "rollout_tokens_per_second": steps[-1]["rollout_tokens_per_second"], "generate_share": steps[-1]["generate_share"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft", required=True, help="the SFT checkpoint every stage starts from")
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "rlhf-quality")
    parser.add_argument("--arith-examples", type=int, default=2000, help="worked arithmetic problems to fine-tune on before GRPO")
    parser.add_argument("--arith-sft-steps", type=int, default=150, help="steps of that fine-tuning (SFT's cpu-small settings)")
    parser.add_argument("--set", action="append", default=[], help="extra SECTION.FIELD=VALUE settings")
    parser.add_argument("--stages", nargs="+", choices=("reward", "ppo", "grpo"), default=["reward", "ppo", "grpo"],
                        help="which parts to run (ppo needs reward)")
    args = parser.parse_args()
    if "ppo" in args.stages and "reward" not in args.stages:
        parser.error("--stages ppo needs reward: PPO learns against the reward models")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args.work.mkdir(parents=True, exist_ok=True)
    settings = load_settings(overrides=parse_overrides(args.set))  # the reward models' parts are set per model
    results: dict = {"sft": args.sft, "settings": {k: getattr(settings, k).model_dump() for k in ("reward", "ppo", "grpo")}}

    stages = {
        "reward": lambda: run_rewards(args.set, args.sft, args.work),
        "ppo": lambda: run_ppo(settings, args.sft, results["reward"]["halves"], args.work),
        "grpo": lambda: run_grpo(settings, args.set, args.sft, args.work, args.arith_examples, args.arith_sft_steps),
    }
    for name, run in stages.items():
        if name in args.stages:
            results[name] = run()
            (args.work / "results.json").write_text(json.dumps(results, indent=1))  # after each stage, for a crash
    print_tables(results)


def print_tables(results: dict) -> None:
    if "reward" in results:
        rules = results["reward"]["length_rules"]
        print(f"\nReward models, held-out accuracy on the same {rules['pairs']} held-out pairs:\n")
        print("| judge of the held-out pairs | accuracy |\n|---|---|\n| chance | 50.0% |")
        print(f"| the shorter reply wins | {rules['shorter_wins']:.1%} |\n| the longer reply wins | {rules['longer_wins']:.1%} |")
        models = {"all": results["reward"]["all"], **{f"part {part} of 2": r for part, r in enumerate(results["reward"]["halves"])}}
        for name, r in models.items():
            print(f"| reward model, {name} ({r['split']['train']} train pairs, {r['train_seconds']:.0f} s) | "
                  f"{r['val_accuracy_end']:.1%} (step 0: {r['val_accuracy_start']:.1%}) |")
        print("\nEach half's reward model on every pair it never trained on (the held-out ones and the other half's):\n")
        print("| model | unseen pairs | reward model | the shorter reply wins | the longer reply wins | lead over shorter (paired SE) |")
        print("|---|---|---|---|---|---|")
        for part, r in enumerate(results["reward"]["halves"]):
            u = r["unseen"]
            print(f"| part {part} of 2 | {u['pairs']} | {u['accuracy']:.1%} | {u['shorter_wins']:.1%} | {u['longer_wins']:.1%} | "
                  f"{u['lead_over_shorter']:+.1%} ({u['lead_standard_error']:.1%}) |")
    if "ppo" in results:
        p = results["ppo"]
        print(f"\nPPO ({p['steps']} steps, {p['train_seconds']:.0f} s; rollout {p['rollout_tokens_per_second']:.0f} tokens/s, "
              f"generating {p['generate_share']:.0%} of the time):\n")
        print("| step | held-out reward (part 0) | judge (part 1) | reply length |\n|---|---|---|---|")
        for e in p["evals"]:
            print(f"| {e['step']} | {e['val_reward_mean']:.3f} | {e['judge_mean']:.3f} | {e['val_response_length']:.1f} |")
    if "grpo" in results:
        g = results["grpo"]
        print(f"\nGRPO on arithmetic ({g['steps']} steps, {g['train_seconds']:.0f} s; rollout {g['rollout_tokens_per_second']:.0f} "
              f"tokens/s, generating {g['generate_share']:.0%}; sampled correct rate, first / last 10 steps: "
              f"{g['sampled_correct_first_10']:.1%} / {g['sampled_correct_last_10']:.1%}):\n")
        print("| model | held-out accuracy (greedy) | well-formed answers | reply length |\n|---|---|---|---|")
        m = g["sft_model"]
        print(f"| the SFT model | {m['val_accuracy']:.1%} | {m['val_format_rate']:.1%} | {m['val_response_length']:.1f} |")
        for e in g["evals"]:
            label = (f"+ {g['worked_sft_steps']} SFT steps on {g['worked_examples']} worked problems" if e["step"] == 0
                     else f"+ GRPO, step {e['step']}")
            print(f"| {label} | {e['val_accuracy']:.1%} | {e['val_format_rate']:.1%} | {e['val_response_length']:.1f} |")
        print("\n| greedy working on the held-out problems | before GRPO | after |\n|---|---|---|")
        before, after = g["working"]["before"], g["working"]["after"]
        for key, label in (("sound_lines", "lines whose arithmetic holds"), ("lines_as_worked", "lines as in the worked solution"),
                           ("right_with_sound_working", "problems right with every line sound")):
            print(f"| {label} | {before[key]:.1%} | {after[key]:.1%} |")


if __name__ == "__main__":
    main()
