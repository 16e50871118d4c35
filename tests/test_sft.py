"""Chat SFT (tasks/train/sft.py, model/packing.py) on the real conversation samples, driven as a
user drives it: only assistant tokens carry loss, packed rows compute what each conversation
computes alone, SFT lowers the held-out loss, a run stopped by SIGTERM or killed with SIGKILL
resumes exactly (same losses, same weights), two processes compute what one computes with the
same total batch, a tiny model taught the search examples calls the real index and answers from
its results, and bad input gets one line and exit code 2.

The base models are tiny GPTs saved as ordinary checkpoints, with a BPE trained on the chat
text: the mechanics do not depend on a pretrained base (bench/bench_sft_quality.py uses a real one).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flows.cli import main, parse_overrides
from infra.settings import ModelSettings, load_settings
from infra.storage import Storage, join
from model.checkpoint import latest_pointer, load_checkpoint, model_tensors, save_checkpoint
from model.chat import render_prompt
from model.distributed import Distributed
from model.engine import Engine, SamplingParams
from model.gpt import GPT, GPTConfig
from model.packing import IGNORE, SftLoader, batch_width, collate, encode_example, plan_batches
from model.tokenizer import IM_END, RESULT_END, RESULT_START, BpeTokenizer
from tasks.chat.conversations import load_conversations, write_conversations
from tasks.train.sft import evaluate_loss, load_base, sft, split_conversations
from tests.conftest import REALDATA

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
CHAT = REALDATA / "chat"
ALPACA = str(CHAT / "llama_factory" / "alpaca_en_demo.json")
IDENTITY = str(CHAT / "llama_factory" / "identity.json")
OASST = str(CHAT / "oasst2_openpaws" / "oasst2_filtered.jsonl")
TINY = ["sft.train.batch_size=4", "sft.train.log_every=1", "sft.train.warmup_steps=2", "sft.train.lr=0.003",
        "sft.train.eval_every=0", "sft.train.sample_tokens=0", "sft.train.checkpoint_every=0", "sft.train.eval_tokens=4096"]


def make_base(run: str, tokenizer: BpeTokenizer, seq_len: int = 128, seed: int = 0, **shape) -> str:
    """An untrained tiny GPT saved as a pretraining checkpoint: what `--base` takes."""
    settings = ModelSettings(**{"n_layer": 2, "n_head": 2, "n_kv_head": 1, "n_embd": 64, "seq_len": seq_len, **shape})
    config = GPTConfig.from_settings(settings, tokenizer.vocab_size)
    save_checkpoint(Storage(), run, 0, model_tensors(GPT(config, seed=seed)), config, tokenizer, "pretrain", final=True)
    return run


def settings_with(*pairs: str):
    return load_settings(overrides=parse_overrides([*TINY, *pairs]))


def records(run: str, name: str = "metrics.jsonl") -> list[dict]:
    return [json.loads(line) for line in Storage().read_text(join(run, name)).splitlines()]


def losses(run: str) -> dict[int, float]:
    return {r["step"]: r["train_loss"] for r in records(run) if r["train_loss"] is not None}


def set_args(*pairs: str) -> list[str]:
    return [arg for pair in [*TINY, *pairs] for arg in ("--set", pair)]


@pytest.fixture(scope="module")
def tokenizer(realdata, one_thread) -> BpeTokenizer:
    rows = json.loads(Path(ALPACA).read_text())[:400]
    return BpeTokenizer.train([f"{r['instruction']} {r['input']} {r['output']}" for r in rows], vocab_size=700)


@pytest.fixture(scope="module")
def base(tokenizer, tmp_path_factory) -> str:
    return make_base(str(tmp_path_factory.mktemp("base") / "run"), tokenizer)


def assistant_ids(tokenizer: BpeTokenizer, conversation) -> list[int]:
    """What the assistant wrote, encoded on its own: its text, each search call, and <|im_end|>."""
    special = tokenizer.special_ids
    ids = []
    for message in conversation:
        if message["role"] != "assistant":
            continue
        content = message["content"]
        for part in [{"type": "text", "text": content}] if isinstance(content, str) else content:
            if part["type"] == "text":
                ids += tokenizer.encode(part["text"])
            elif part["type"] == "search":
                ids += [special["<|search_start|>"], *tokenizer.encode(part["query"]), special["<|search_end|>"]]
        ids.append(special[IM_END])
    return ids


def check_targets(tokenizer, conversations, batching: str, seq_len: int) -> None:
    """Through the loader's real batches: per conversation, the targets that are not -1 are
    exactly what the assistant wrote, in order; everything else in the batch is -1."""
    examples = [encode_example(tokenizer, c) for c in conversations]
    loader = SftLoader(examples, batching, batch_size=4, seq_len=seq_len, seed=0)
    for rows in loader.plan(0)[:3]:
        batch = next(loader)
        for r, row in enumerate(rows):
            at = 0
            for index in row:
                segment = batch.targets[r, at : at + len(examples[index])]
                assert segment[segment != IGNORE].tolist() == assistant_ids(tokenizer, conversations[index])
                at += len(examples[index])
        expected = sum(len(assistant_ids(tokenizer, conversations[i])) for row in rows for i in row)
        assert int((batch.targets != IGNORE).sum()) == expected


def test_only_assistant_tokens_carry_loss_on_real_conversations(tokenizer):
    oasst = load_conversations([OASST], tokenizer=tokenizer, max_tokens=1025).conversations
    multi_turn = [c for c in oasst if len(c) > 2][:6]
    assert multi_turn, "the OASST sample has multi-turn conversations"
    alpaca = load_conversations([ALPACA], tokenizer=tokenizer, max_tokens=257).conversations[:10]
    with_system = [[{"role": "system", "content": "You are a helpful assistant."}, *c] for c in alpaca[:4]]
    conversations = multi_turn + alpaca + with_system
    for batching in ("pack", "pad"):
        check_targets(tokenizer, conversations, batching, seq_len=1024)


def test_packed_rows_compute_what_each_conversation_computes_alone(tokenizer, base):
    model = load_base(base, Storage()).model.eval()
    conversations = load_conversations([ALPACA], tokenizer=tokenizer, max_tokens=129).conversations[:12]
    examples = [encode_example(tokenizer, c) for c in conversations]
    lengths = [len(e) for e in examples]
    for batching in ("pack", "pad"):
        batches = plan_batches(lengths, batching, batch_size=3, seq_len=128, rng=None)
        if batching == "pack":
            assert max(len(row) for rows in batches for row in rows) >= 2, "rows hold several conversations"
        with torch.no_grad():
            for rows in batches:
                batch = collate(examples, rows, batching, 128)
                logits = model(batch.inputs, positions=batch.positions, mask=batch.mask)
                for r, row in enumerate(rows):
                    at = 0
                    for index in row:
                        alone = model(torch.from_numpy(examples[index].inputs)[None])[0]
                        packed = logits[r, at : at + len(examples[index])]
                        assert torch.allclose(packed, alone, atol=1e-5), (batching, (packed - alone).abs().max())
                        at += len(examples[index])
    dist = Distributed(0, 0, 1, torch.device("cpu"))
    packed_loss = evaluate_loss(model, examples, "pack", 3, 128, dist, contextlib.nullcontext)
    padded_loss = evaluate_loss(model, examples, "pad", 3, 128, dist, contextlib.nullcontext)
    assert packed_loss == pytest.approx(padded_loss, abs=1e-5)


def test_every_epoch_holds_every_conversation_once_within_the_budget(tokenizer):
    examples = [encode_example(tokenizer, c) for c in load_conversations([ALPACA], tokenizer=tokenizer, max_tokens=129).conversations]
    lengths = [len(e) for e in examples]
    for batching in ("pack", "pad"):
        loaders = [SftLoader(examples, batching, batch_size=4, seq_len=128, seed=0, slot=s, slots=2) for s in range(2)]
        plans = [loaders[0].plan(epoch) for epoch in (0, 1)]
        assert plans[0] != plans[1]  # reshuffled every epoch
        for plan in plans:
            placed = sorted(index for rows in plan for row in rows for index in row)
            assert placed == list(range(len(examples)))
            for rows in plan:
                assert len(rows) * batch_width(examples, rows, batching, 128) <= 4 * 128
                assert all(sum(lengths[i] for i in row) <= 128 for row in rows)
        # Two slots take alternate micro-batches; a loader restored from a state continues exactly.
        first = [next(loaders[s]) for _ in range(3) for s in range(2)]
        assert torch.equal(first[0].inputs, collate(examples, plans[0][0], batching, 128).inputs)
        assert torch.equal(first[1].inputs, collate(examples, plans[0][1], batching, 128).inputs)
        restored = SftLoader(examples, batching, batch_size=4, seq_len=128, seed=0, slot=1, slots=2)
        restored.load_state_dict(loaders[1].state_dict())
        assert torch.equal(next(restored).targets, next(loaders[1]).targets)


def test_the_split_is_by_content_hash_whatever_the_order(tokenizer):
    conversations = load_conversations([ALPACA]).conversations
    train, val = split_conversations(conversations, 0.1)
    assert 60 < len(val) < 140 and len(train) + len(val) == len(conversations)
    train_reversed, val_reversed = split_conversations(conversations[::-1], 0.1)
    assert val_reversed == val and sorted(map(json.dumps, train_reversed)) == sorted(map(json.dumps, train))
    _, val_twice = split_conversations(conversations + conversations[:50], 0.1)  # a repeat stays on its side
    assert len(val_twice) == len(val) + sum(c in val for c in conversations[:50])


def test_sft_lowers_the_held_out_loss_and_reports_its_data(base, tmp_path):
    run = str(tmp_path / "sft")
    summary = sft(settings_with("sft.train.max_steps=40", "sft.train.eval_every=20", "sft.train.sample_tokens=6",
                                "sft.val_fraction=0.1"), base, [ALPACA, f"{IDENTITY}:2"], run)
    evals = {r["step"]: r["val_loss"] for r in records(run) if "val_loss" in r}
    assert sorted(evals) == [0, 20, 40]
    assert evals[40] < evals[20] < evals[0] and evals[40] < evals[0] - 0.75, evals  # nats, from ln(700) = 6.55
    assert summary["val_loss"] == evals[40] and summary["steps"] == 40 and summary["batching"] == "pack"
    report = json.loads(Path(run, "data_report.json").read_text())
    alpaca, identity = report["files"]
    assert alpaca["format"] == "alpaca" and alpaca["steps"]["read"]["docs_in"] == 999
    assert alpaca["steps"]["length"]["dropped"]["too_long"] > 0  # longer than 129 tokens: counted, skipped
    assert report["composition"][IDENTITY]["in_mix"] == 2 * report["composition"][IDENTITY]["loaded"]
    kept = alpaca["steps"]["length"]["docs_out"] + 2 * identity["steps"]["length"]["docs_out"]
    assert report["split"]["train"]["conversations"] + report["split"]["val"]["conversations"] == kept
    assert 0.8 < report["batching"]["fill"] <= 1.0
    samples = records(run, "samples.jsonl")
    assert {s["step"] for s in samples} == {0, 20, 40} and all(set(s) == {"step", "question", "answer"} for s in samples)
    checkpoint = load_checkpoint(Storage(), run)
    assert checkpoint.stage == "sft" and checkpoint.record["meta"]["base"] == base
    assert checkpoint.tokenizer.sha256 == load_checkpoint(Storage(), base).tokenizer.sha256


# --- exact resume, several processes --------------------------------------------------------


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _start(*args: str, stdout=subprocess.DEVNULL) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env, stdout=stdout,
                            stderr=subprocess.DEVNULL, text=True)


def _wait_for_checkpoint(process: subprocess.Popen, run: str, step: int) -> None:
    deadline = time.monotonic() + 240
    while (latest_pointer(Storage(), run) or {}).get("step", 0) < step:
        assert process.poll() is None and time.monotonic() < deadline, f"the run ended before its checkpoint at step {step}"
        time.sleep(0.005)


@pytest.mark.slow
def test_a_run_stopped_by_sigterm_then_killed_by_sigkill_resumes_exactly(base, tmp_path):
    straight, broken = str(tmp_path / "straight"), str(tmp_path / "broken")
    common = ["--base", base, "--data", ALPACA, *set_args("sft.train.max_steps=30", "sft.train.checkpoint_every=10")]
    assert main(["sft", "--output", straight, *common]) == 0

    # A scheduler's SIGTERM: a checkpoint where it stands and a clean exit, the summary saying so.
    process = _start("sft", "--output", broken, *common, stdout=subprocess.PIPE)
    _wait_for_checkpoint(process, broken, 10)
    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 0
    summary = json.loads(stdout)
    assert summary["stopped"] and 10 <= summary["steps"] < 30, summary
    assert latest_pointer(Storage(), broken)["step"] == summary["steps"]

    # Resumed, then killed outright between checkpoints: the steps after the last one are lost.
    process = _start("sft", "--output", broken, "--resume", *common)
    _wait_for_checkpoint(process, broken, 20)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert max(losses(broken)) < 30, "the run finished before it was killed"

    resumed = _cli("sft", "--output", broken, "--resume", *common)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    expected, got = losses(straight), losses(broken)
    assert sorted(got) == list(range(1, 31))  # no step twice, none missing
    assert all(abs(got[step] - expected[step]) <= 1e-6 for step in expected), (expected, got)
    assert json.loads(resumed.stdout)["val_loss"] == pytest.approx(records(straight)[-1]["val_loss"], abs=1e-6)
    # The same weights as the uninterrupted run's.
    weights = [load_checkpoint(Storage(), run).tensors for run in (straight, broken)]
    assert weights[0].keys() == weights[1].keys()
    assert max((weights[0][name] - weights[1][name]).abs().max().item() for name in weights[0]) <= 1e-6


def test_the_sft_command_with_a_preset_as_a_user_runs_it(base, tmp_path):
    run = str(tmp_path / "sft")
    done = _cli("sft", "--base", base, "--data", ALPACA, f"{IDENTITY}:2", "--output", run, "--preset", "cpu-tiny",
                "--set", "sft.train.max_steps=2", "--set", "sft.train.eval_every=2", "--set", "sft.train.sample_tokens=4")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)  # stdout is the summary alone
    assert summary["steps"] == 2 and summary["checkpoint"] == join(run, "checkpoints", "step-00000002")
    assert summary["tokens"] > 2 * 12 * 128  # cpu-tiny's 16 packed rows a step, not the default 8
    assert summary["data_report"] == join(run, "data_report.json") and Path(summary["data_report"]).exists()
    # stderr: each file's funnel, its skips by reason.
    assert f"== {ALPACA} (alpaca)" in done.stderr and f"== {IDENTITY} (alpaca)" in done.stderr
    assert "too_long=" in done.stderr
    prompts = load_settings(preset="cpu-tiny").sft.train.sample_prompts
    assert [s["question"] for s in records(run, "samples.jsonl")] == prompts * 2  # at step 0 and at the end
    assert [r["step"] for r in records(run) if "val_loss" in r] == [0, 2]


@pytest.mark.slow
def test_two_processes_compute_what_one_computes_with_accumulation(base, tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    common = ["--base", base, "--data", ALPACA, *set_args("sft.train.max_steps=5", "sft.train.total_batch_tokens=1024")]
    assert main(["sft", "--output", one, *common]) == 0  # 1 process x 2 micro-steps of 4 x 128
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "flows.cli", "sft", "--output", two, *common], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    expected, got = losses(one), losses(two)
    assert sorted(got) == list(range(1, 6)) and all(abs(got[s] - expected[s]) < 1e-5 for s in expected), (expected, got)
    meta = [load_checkpoint(Storage(), run).record["meta"] for run in (one, two)]
    assert (meta[0]["world_size"], meta[0]["accum_steps"], meta[1]["world_size"], meta[1]["accum_steps"]) == (1, 2, 2, 1)


# --- the search tool ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def search_stage(realdata, tmp_path_factory):
    from tasks.search.build import build_index
    from tests.test_search_index import real_pages, write_stage

    docs = real_pages()
    stage = write_stage(str(tmp_path_factory.mktemp("pages") / "stage"), {"a": docs[:90], "b": docs[90:]})
    build_index(stage)
    return stage


def test_a_tiny_model_taught_the_search_examples_calls_the_real_index_and_answers_from_it(search_stage, tmp_path):
    from tasks.chat.qa import generate_qa, stage_documents
    from tasks.chat.search_examples import build_search_examples
    from tasks.search.index import SearchIndex
    from tasks.search.results import format_results

    index = SearchIndex.open(search_stage)
    k, chars = 2, 300
    qas, _ = generate_qa(stage_documents(Storage(), search_stage), count=40, seed=0)
    conversations, _ = build_search_examples(index, qas, count=6, k=k, max_chars=chars)
    assert len(conversations) == 6
    texts = [part.get("text") or part.get("query") for c in conversations for m in c for part in
             ([{"text": m["content"]}] if isinstance(m["content"], str) else m["content"])]
    tokenizer = BpeTokenizer.train(texts * 3, vocab_size=1200)
    data_file = str(tmp_path / "search.jsonl")
    write_conversations(data_file, conversations)

    # Search results carry no loss in the SFT batches; the call and the reply do.
    check_targets(tokenizer, conversations, "pack", seq_len=320)
    for conversation in conversations:
        example = encode_example(tokenizer, conversation)
        ids = [int(token) for token in example.inputs] + [int(example.targets[-1])]
        start, end = ids.index(tokenizer.special_ids[RESULT_START]), ids.index(tokenizer.special_ids[RESULT_END])
        assert (example.targets[start - 1 : end] == IGNORE).all()  # the results and both markers: no loss

    base = make_base(str(tmp_path / "base"), tokenizer, seq_len=320, n_layer=2, n_embd=96, n_head=4, n_kv_head=2)
    run = str(tmp_path / "sft")
    sft(settings_with("sft.train.max_steps=150", "sft.train.lr=0.004", "sft.train.batch_size=2", "sft.val_fraction=0",
                      "sft.train.log_every=50"), base, [data_file], run)
    model = load_base(run, Storage()).model.eval()
    tool_results = []

    def search(query: str) -> str:
        tool_results.append(format_results(index.search(query, k), chars))
        return tool_results[-1]

    prompts = [render_prompt(tokenizer, [conversation[0]]) for conversation in conversations]
    done = Engine(model, tokenizer).generate(prompts, SamplingParams(max_tokens=200, temperature=0), tools={"search": search})
    answers = {qa.question: qa.answer for qa in qas}
    answered = 0
    for conversation, completion in zip(conversations, done):
        search_part, results_part, _ = conversation[1]["content"]
        (call,) = completion.tool_calls
        assert call.query == search_part["query"] and call.result == results_part["text"]  # the real index's results
        # The results went into the model's context as forced tokens, between the two markers.
        forced = [token for token, was_forced in zip(completion.tokens, completion.forced) if was_forced]
        assert forced == [tokenizer.special_ids[RESULT_START], *tokenizer.encode(call.result), tokenizer.special_ids[RESULT_END]]
        after_results = completion.text.split(call.result, 1)[1]
        answered += answers[conversation[0]["content"]] in after_results
    assert answered >= 5, [c.text[-120:] for c in done]
    assert len(tool_results) == 6


# --- bad input ----------------------------------------------------------------------------------


def _one_line_error(capsys, argv: list[str], *fragments: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crawl2chat: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_input_is_one_line_and_exit_code_2(capsys, tokenizer, base, tmp_path):
    out = ["--output", str(tmp_path / "out")]
    data = ["--data", ALPACA]
    _one_line_error(capsys, ["sft", "--base", str(tmp_path / "nothing"), *data, *out], "no complete checkpoint")
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"messages": [{"role": "user", "content": "hello"}]}) + "\n")
    _one_line_error(capsys, ["sft", "--base", base, "--data", str(empty), *out], "no usable conversations", "no_assistant_turn=1")
    short = make_base(str(tmp_path / "short"), tokenizer, seq_len=8)
    _one_line_error(capsys, ["sft", "--base", short, *data, *out], "no usable conversations", "too_long=999")
    _one_line_error(capsys, ["sft", "--base", base, "--data", str(tmp_path / "missing.jsonl"), *out], "no data files at")
    _one_line_error(capsys, ["sft", "--base", base, *data, *out, "--set", "model.n_layer=3"], "model.* settings do not apply")
    _one_line_error(capsys, ["sft", "--base", base, *data, *out, "--set", "sft.train.seq_len=512"],
                    "seq_len (512) is above the model's context (model.seq_len=128)")
    _one_line_error(capsys, ["sft", "--base", base, *data, *out, "--set", "sft.batching=stack"], "invalid settings", "sft.batching")
    _one_line_error(capsys, ["sft", "--base", base, *data, *out, "--set", "sft.val_fraction=0.0001"], "validation split")
    _one_line_error(capsys, ["sft", "--base", base, *data, *out, "--preset", "cpu-huge"], "unknown preset 'cpu-huge'")
    run = str(tmp_path / "run")
    assert main(["sft", "--base", base, *data, "--output", run, *set_args("sft.train.max_steps=2")]) == 0
    _one_line_error(capsys, ["sft", "--base", base, *data, "--output", run, *set_args("sft.train.max_steps=4")], "--resume")
    _one_line_error(capsys, ["sft", "--base", base, "--data", IDENTITY, "--output", run, "--resume", *set_args("sft.train.max_steps=4")],
                    "other data")
    _one_line_error(capsys, ["sft", "--base", base, *data, "--output", run, "--resume", *set_args("sft.train.max_steps=4", "sft.batching=pad")],
                    "other data or batching settings")
