"""SFT quality on the real conversations, and the "I don't know" recipe, from one base checkpoint.

    nice .venv/bin/python bench/bench_sft_quality.py --base /work/artifacts/base-cpu-small [--preset cpu-small]

In one run (each training step resumable: a rerun continues where it stopped):
1. SFT of the base on the real conversations under ../shared/realdata/chat (Alpaca, the
   OpenAssistant trees, LLaMA-Factory's v1 SFT demo and identity, whose {{name}}/{{author}}
   placeholders are filled in as LLaMA-Factory users do), with the preset's `sft` settings,
   through `tasks.train.sft.sft`: the held-out loss (the same held-out conversations, assistant
   tokens only) of the base at step 0 and of the SFT model at the end, and greedy replies to a
   few held-out questions;
2. questions of known answer made by `tasks/chat/qa.py` from the pretraining text the base
   was trained on (../shared/realdata/pretrain_text), and `idk build` against the SFT model of
   step 1 (samples, judge, verdicts, refusals): the counts;
3. SFT of the same base on the mix of the real conversations and that "I don't know" set, with
   the same settings;
4. `idk eval` (greedy) of both SFT models on every probed question, per split (train: their
   refusals were in the mix; heldout: never seen) and verdict (known / unknown by the first
   model), plus the refusal rate on the held-out real questions (over-refusal).
Prints Markdown tables for BENCHMARKS.md and writes every number to <work>/results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stage_runs import records, trained  # noqa: E402
from infra.settings import load_settings  # noqa: E402
from infra.storage import Storage  # noqa: E402
from model.chat import text_of  # noqa: E402
from model.export import load_for_inference  # noqa: E402
from model.trainer import sequence_length  # noqa: E402
from tasks.chat.conversations import load_conversations, write_conversations  # noqa: E402
from tasks.chat.idk import Question, evaluate, idk_conversations, is_refusal, probe, write_probes  # noqa: E402
from tasks.chat.qa import generate_qa, write_qa  # noqa: E402
from tasks.samples.pretrain_text import pretrain_text_documents  # noqa: E402
from tasks.train.sft import sample_answers, sft, split_conversations  # noqa: E402

REALDATA = ROOT.parent / "shared" / "realdata"
CHAT = REALDATA / "chat"
IDENTITY_FILL = {"{{name}}": "crawl2chat", "{{author}}": "the crawl2chat project"}


def real_data(work: Path) -> list[str]:
    identity = json.loads((CHAT / "llama_factory" / "identity.json").read_text())
    for row in identity:
        for key in ("instruction", "output"):
            for placeholder, value in IDENTITY_FILL.items():
                row[key] = row[key].replace(placeholder, value)
    filled = work / "identity.json"
    filled.write_text(json.dumps(identity))
    return [str(CHAT / "llama_factory" / "alpaca_en_demo.json"), str(CHAT / "oasst2_openpaws" / "oasst2_filtered.jsonl"),
            str(CHAT / "llama_factory" / "v1_sft_demo.jsonl"), str(filled)]


def run_sft(settings, base: str, data: list[str], output: Path) -> dict:
    trained(output, settings.sft.train.max_steps, lambda: sft(settings, base, data, str(output), resume=True))
    metrics = records(output)
    evals = [m for m in metrics if "val_loss" in m]
    report = json.loads((output / "data_report.json").read_text())
    return {"output": str(output), "val_loss_start": evals[0]["val_loss"], "val_loss_end": evals[-1]["val_loss"],
            "steps": metrics[-1]["step"], "train_seconds": metrics[-1]["elapsed_seconds"], "split": report["split"],
            "files": {Path(f["input"]).name: {step: (s["docs_in"], s["docs_out"], s["dropped"]) for step, s in f["steps"].items()}
                      for f in report["files"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the pretrained base checkpoint")
    parser.add_argument("--preset", default="cpu-small", help="whose sft settings to train with")
    parser.add_argument("--questions", type=int, default=300, help="questions of known answer to probe with")
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "sft-quality")
    parser.add_argument("--set", action="append", default=[], help="extra SECTION.FIELD=VALUE settings")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args.work.mkdir(parents=True, exist_ok=True)
    from flows.cli import parse_overrides

    settings = load_settings(overrides=parse_overrides(args.set), preset=args.preset)
    storage = Storage()
    data = real_data(args.work)
    results: dict = {"base": args.base, "preset": args.preset, "sft": settings.sft.model_dump()}

    # 1. SFT on the real conversations.
    results["real"] = run_sft(settings, args.base, data, args.work / "sft-real")
    model, tokenizer = load_for_inference(str(args.work / "sft-real"), storage)
    seq_len = sequence_length(settings.sft.train, model.config)
    real = load_conversations(data, tokenizer=tokenizer, max_tokens=seq_len + 1).conversations
    _, val = split_conversations(real, settings.sft.val_fraction)
    held_out_questions = list(dict.fromkeys(text_of(c[0]["content"]) for c in val if c[0]["role"] == "user"))
    results["samples"] = sample_answers(model, tokenizer, held_out_questions[:6], max_tokens=64)

    # 2. Questions of known answer from the pretraining text, probed against that SFT model.
    documents = [{"id": d.id, "url": d.url, "text": d.text, "language": d.language}
                 for d in pretrain_text_documents(REALDATA / "pretrain_text")]
    qas, qa_funnel = generate_qa(documents, count=args.questions, seed=0, per_doc=3)
    write_qa(str(args.work / "qa.jsonl"), qas)
    questions = [Question(qa.question, qa.answer) for qa in qas]
    probes = probe(model, tokenizer, questions, settings.idk)
    conversations, funnel = idk_conversations(probes)
    write_probes(storage, str(args.work / "idk.probes.jsonl"), probes)
    write_conversations(str(args.work / "idk.jsonl"), conversations)
    results["qa_funnel"] = qa_funnel.to_dict()
    results["idk_funnel"] = funnel.to_dict()

    # 3. SFT of the same base on the real conversations plus the "I don't know" set.
    results["with_idk"] = run_sft(settings, args.base, [*data, str(args.work / "idk.jsonl")], args.work / "sft-idk")

    # 4. Refusal rate and accuracy on the probed questions, and over-refusal on real questions.
    probed = [Question(p.question, p.answer, p.split, p.verdict) for p in probes]
    results["eval"] = {}
    for name in ("real", "with_idk"):
        model, tokenizer = load_for_inference(results[name]["output"], storage)
        results["eval"][name] = evaluate(model, tokenizer, probed, settings.idk)["groups"]
        replies = sample_answers(model, tokenizer, held_out_questions[:200], max_tokens=settings.idk.max_tokens)
        results["eval"][name]["real_heldout_refusal_rate"] = round(sum(is_refusal(r["answer"]) for r in replies) / len(replies), 4)
        if name == "with_idk":
            results["samples_with_idk"] = replies[:6]
    (args.work / "results.json").write_text(json.dumps(results, indent=1))

    print("\n| model | held-out loss, base (step 0) | held-out loss, after SFT | steps | train time (s) |")
    print("|---|---|---|---|---|")
    for name, label in (("real", "SFT on the real conversations"), ("with_idk", "SFT on real + \"I don't know\"")):
        r = results[name]
        print(f"| {label} | {r['val_loss_start']:.3f} | {r['val_loss_end']:.3f} | {r['steps']} | {r['train_seconds']:.0f} |")
    judged = funnel["judge"].counts
    written = funnel["write"].counts
    print(f"\nProbed {len(probes)} questions x {settings.idk.samples} samples: known {judged['known']}, unknown {judged['unknown']}, "
          f"uncertain {judged['uncertain']}; written {written['idk']} \"I don't know\" + {written['answer']} answers "
          f"(held out: {sum(funnel['split'].dropped.values())})\n")
    groups = sorted(set(results["eval"]["real"]) | set(results["eval"]["with_idk"]))
    print("| questions | n | accuracy before | accuracy after | refusals before | refusals after |")
    print("|---|---|---|---|---|---|")
    for group in (g for g in groups if g != "real_heldout_refusal_rate"):
        before, after = results["eval"]["real"].get(group), results["eval"]["with_idk"].get(group)
        if before and after:
            print(f"| {group} | {before['questions']} | {before['accuracy']:.1%} | {after['accuracy']:.1%} | "
                  f"{before['refusal_rate']:.1%} | {after['refusal_rate']:.1%} |")
    print(f"| held-out real questions (over-refusal) | {min(200, len(held_out_questions))} | | | "
          f"{results['eval']['real']['real_heldout_refusal_rate']:.1%} | {results['eval']['with_idk']['real_heldout_refusal_rate']:.1%} |")
    print("\nSample replies (held-out questions, greedy):")
    for sample in results["samples"]:
        print(f"- **{sample['question'][:100]}** -> {sample['answer'][:200]!r}")


if __name__ == "__main__":
    main()
