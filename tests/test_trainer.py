"""The trainer toolkit on its own (no Spark, no files but the run's): the schedule, the optimizer's
parameter groups, Muon, count-weighted gradient accumulation, SIGTERM stopping and resuming,
the JSON-lines log, RNG states under weights_only loading, the presets, and the progress line."""

from __future__ import annotations

import io
import logging
import math
import os
import random
import signal

import numpy as np
import pytest
import torch

from infra.settings import PRESETS, ModelSettings, TrainSettings, load_settings
from infra.storage import Storage, join
from model.checkpoint import latest_pointer, load_checkpoint
from model.distributed import init_distributed
from model.gpt import GPT, GPTConfig
from model.optim import Optimizers, build_optimizer, parameter_kinds
from model.schedule import lr_multiplier
from model.tokenizer import BpeTokenizer
from model.trainer import JsonlLog, LossOutput, Trainer, accumulation_steps, rng_state, set_rng_state

pytestmark = pytest.mark.usefixtures("one_thread")
VOCAB_TEXT = ["counting one two three four five six seven eight nine ten"] * 20


@pytest.fixture(scope="module")
def tokenizer(one_thread) -> BpeTokenizer:
    return BpeTokenizer.train(VOCAB_TEXT, vocab_size=300)


def _model(tokenizer: BpeTokenizer, tie: bool = False) -> GPT:
    settings = ModelSettings(n_layer=2, n_head=2, n_kv_head=1, n_embd=32, seq_len=16, tie_embeddings=tie)
    return GPT(GPTConfig.from_settings(settings, tokenizer.vocab_size), seed=0)


def _batches(seed: int, rows: int = 4, length: int = 16):
    """Rows of a learnable pattern (each token the previous + 1, mod 300) from random starts."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, 300, (rows, 1), generator=generator)
        sequence = (starts + torch.arange(length + 1)) % 300
        yield sequence[:, :-1], sequence[:, 1:]


def _lm_loss(model, batch) -> LossOutput:
    inputs, targets = batch
    valid = int((targets != -1).sum())
    return LossOutput(model(inputs, targets) * valid, valid, tokens=inputs.numel())


def _trainer(tokenizer, run, **settings) -> Trainer:
    values = {"max_steps": 6, "lr": 1e-2, "warmup_steps": 1, "log_every": 1, "eval_every": 0, "grad_clip": 0.0, **settings}
    return Trainer(_model(tokenizer), TrainSettings(**values), dist=init_distributed("cpu"), run=str(run),
                   stage="test", tokenizer=tokenizer)


# --- schedule ---------------------------------------------------------------------------------


def test_schedules_are_pure_functions_of_the_step():
    cosine = TrainSettings(max_steps=100, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert [lr_multiplier(s, cosine) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_multiplier(10, cosine) == pytest.approx(1.0) and lr_multiplier(99, cosine) == pytest.approx(0.1)
    assert lr_multiplier(54, cosine) == pytest.approx(0.55, abs=0.01)  # halfway down the cosine
    wsd = TrainSettings(max_steps=100, warmup_steps=10, schedule="wsd", decay_fraction=0.2, min_lr_ratio=0.0)
    assert lr_multiplier(79, wsd) == 1.0 and lr_multiplier(89, wsd) == pytest.approx(0.5) and lr_multiplier(99, wsd) == 0.0
    constant = TrainSettings(max_steps=100, warmup_steps=0, schedule="constant")
    assert {lr_multiplier(s, constant) for s in range(100)} == {1.0}


# --- optimizer --------------------------------------------------------------------------------


@pytest.mark.parametrize("tie", [False, True])
def test_adamw_decays_matrices_only(tokenizer, tie):
    model = _model(tokenizer, tie)
    optimizer = build_optimizer(model, TrainSettings(weight_decay=0.1), torch.device("cpu"))
    decayed, plain = optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decayed["params"]) and all(names[id(p)].endswith("norm.weight") for p in plain["params"])
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == model.config.num_params()
    assert "embed_tokens.weight" in {names[id(p)] for p in decayed["params"]}


def test_muon_takes_the_block_matrices_and_adamw_the_rest(tokenizer, tmp_path):
    model = _model(tokenizer)
    optimizer = build_optimizer(model, TrainSettings(optimizer="muon"), torch.device("cpu"))
    assert isinstance(optimizer, Optimizers)
    muon, adamw = optimizer.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    assert {id(p) for p in muon.param_groups[0]["params"]} == {id(p) for p in parameter_kinds(model)["block_matrices"]}
    assert all(p.ndim == 2 for p in muon.param_groups[0]["params"])
    with pytest.raises(ValueError, match="does not work with train.fsdp"):
        build_optimizer(model, TrainSettings(optimizer="muon"), torch.device("cpu"), fsdp=True)
    trainer = _trainer(tokenizer, tmp_path / "muon", optimizer="muon", max_steps=30, lr=2e-2)
    trainer.begin(resume=False)
    data = _batches(0)
    trainer.fit(_lm_loss, lambda _: next(data))
    losses = [r["train_loss"] for r in trainer.metrics.records]
    assert losses[-1] < 0.5 * losses[0]
    state = io.BytesIO()
    torch.save(optimizer.state_dict(), state)  # the combined state goes through weights_only loading
    optimizer.load_state_dict(torch.load(io.BytesIO(state.getvalue()), weights_only=True))


# --- the loop ---------------------------------------------------------------------------------


def test_accumulation_weights_items_not_micro_batches(tokenizer, tmp_path):
    """Two micro-batches with 60 and 8 target tokens give the update of one batch of all 68:
    the exact per-token mean, not the mean of the two micro-batch means."""
    inputs, targets = next(_batches(1, rows=4))
    masked = targets.clone()
    masked[2:, 4:] = -1  # rows 2-3 keep 4 targets each
    parts = [(inputs[:2], masked[:2]), (inputs[2:], masked[2:])]
    split, whole = _trainer(tokenizer, tmp_path / "split", max_steps=1), _trainer(tokenizer, tmp_path / "whole", max_steps=1)
    split.fit(_lm_loss, lambda micro_step: parts[micro_step], accum_steps=2)
    whole.fit(_lm_loss, lambda _: (inputs, masked))
    for a, b in zip(split.raw.parameters(), whole.raw.parameters()):
        assert (a - b).abs().max() < 1e-6
    assert split.metrics.records[-1]["train_loss"] == pytest.approx(whole.metrics.records[-1]["train_loss"], abs=1e-6)
    assert split.tokens == whole.tokens == 64


def test_accumulation_steps_fill_the_total_batch_exactly():
    assert accumulation_steps(TrainSettings(total_batch_tokens=8192), 1024, 2) == 4
    assert accumulation_steps(TrainSettings(total_batch_tokens=None), 1024, 2) == 1
    with pytest.raises(ValueError, match=r"not a multiple of batch_size x seq_len x processes \(1024 x 3 = 3072\)"):
        accumulation_steps(TrainSettings(total_batch_tokens=8192), 1024, 3)


def test_sigterm_checkpoints_and_a_resumed_run_continues_exactly(tokenizer, tmp_path):
    straight = _trainer(tokenizer, tmp_path / "straight")
    data = _batches(2)
    straight.fit(_lm_loss, lambda _: next(data), data_state=lambda: {"seed": 2})

    stopped = _trainer(tokenizer, tmp_path / "stopped")
    stopped.begin(resume=False)
    feed = _batches(2)
    consumed = []

    def next_batch(_):
        consumed.append(1)
        return next(feed)

    def preempt(result):
        if result.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    summary = stopped.fit(_lm_loss, next_batch, data_state=lambda: {"batches": len(consumed)}, on_step=preempt)
    assert summary["stopped"] and summary["steps"] == 3
    pointer = latest_pointer(Storage(), str(tmp_path / "stopped"))
    assert pointer["step"] == 3 and not pointer["final"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the loop put the old handler back

    resumed = _trainer(tokenizer, tmp_path / "stopped")
    (saved,) = resumed.begin(resume=True)
    assert saved == {"batches": 3} and resumed.step == 3
    again = _batches(2)
    for _ in range(saved["batches"]):
        next(again)
    resumed.fit(_lm_loss, lambda _: next(again))
    expected = [r["train_loss"] for r in straight.metrics.records]
    got = [r["train_loss"] for r in resumed.metrics.records]
    assert [r["step"] for r in resumed.metrics.records] == list(range(1, 7))
    assert got == pytest.approx(expected, abs=1e-6)
    assert load_checkpoint(Storage(), str(tmp_path / "stopped")).record["final"]


def test_starting_over_an_existing_run_is_refused(tokenizer, tmp_path):
    trainer = _trainer(tokenizer, tmp_path / "run", max_steps=1)
    data = _batches(3)
    trainer.fit(_lm_loss, lambda _: next(data))
    with pytest.raises(ValueError, match="already holds checkpoints"):
        _trainer(tokenizer, tmp_path / "run").begin(resume=False)


def test_a_diverging_loss_is_one_clear_error(tokenizer, tmp_path):
    trainer = _trainer(tokenizer, tmp_path / "run")

    def broken(model, batch):
        out = _lm_loss(model, batch)
        return LossOutput(out.loss * float("nan"), out.count)

    data = _batches(4)
    with pytest.raises(ValueError, match="the loss is nan at step 1; lower train.lr"):
        trainer.fit(broken, lambda _: next(data))


def test_progress_lines_and_stage_metrics(tokenizer, tmp_path, caplog):
    trainer = _trainer(tokenizer, tmp_path / "run", max_steps=4, log_every=2, eval_every=2)
    data = _batches(5)

    def with_accuracy(model, batch):
        out = _lm_loss(model, batch)
        with torch.no_grad():
            correct = (model(batch[0]).argmax(-1) == batch[1]).sum()
        return LossOutput(out.loss, out.count, out.tokens, {"accuracy": correct})

    with caplog.at_level(logging.INFO, logger="model.trainer"):
        trainer.fit(with_accuracy, lambda _: next(data), evaluate=lambda step: {"val_score": float(step)})
    lines = [r.getMessage() for r in caplog.records if "step" in r.getMessage()]
    assert any(line.startswith("test step 2/4 | loss ") and "tok/s" in line and "eta" in line for line in lines)
    assert any(line.startswith("test eval step 4 | val_score 4.0000") for line in lines)
    records = {r["step"]: r for r in trainer.metrics.records}
    assert sorted(records) == [0, 2, 4] and records[0]["val_score"] == 0.0 and records[0]["train_loss"] is None
    assert 0.0 <= records[4]["train_accuracy"] <= 1.0 and records[4]["val_score"] == 4.0
    assert records[4]["tokens"] == 4 * 64 and records[4]["tokens_per_second"] > 0


def test_the_log_drops_what_a_dead_run_wrote_after_its_checkpoint(tmp_path):
    storage, uri = Storage(), join(str(tmp_path), "metrics.jsonl")
    log = JsonlLog(storage, uri, enabled=True)
    for step in range(1, 8):
        log.add({"step": step, "train_loss": 1.0 / step})
    resumed = JsonlLog(storage, uri, enabled=True)
    resumed.resume_at(5)
    resumed.add({"step": 6, "train_loss": 0.5})
    assert [r["step"] for r in resumed.records] == [1, 2, 3, 4, 5, 6]
    assert storage.read_text(uri).count("\n") == 6


def test_rng_states_survive_weights_only_loading():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    buffer = io.BytesIO()
    torch.save(rng_state(), buffer)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


# --- presets ----------------------------------------------------------------------------------


def test_presets_sit_under_file_environment_and_set(tmp_path, monkeypatch):
    settings = load_settings(preset="cpu-tiny")
    assert (settings.model.n_layer, settings.model.n_embd, settings.train.max_steps) == (2, 128, 300)
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  max_steps: 7\n")
    monkeypatch.setenv("CRAWL2CHAT_TRAIN__LR", "0.5")
    mixed = load_settings(config, {"model": {"n_layer": 3}}, preset="cpu-tiny")
    assert (mixed.model.n_layer, mixed.model.n_embd, mixed.train.max_steps, mixed.train.lr) == (3, 128, 7, 0.5)
    with pytest.raises(ValueError, match=r"unknown preset 'cpu-huge' \(known: cpu-tiny, cpu-small, gpu-gpt2-small, gpu-1b\)"):
        load_settings(preset="cpu-huge")


@pytest.mark.parametrize("name, vocab, low, high", [
    ("cpu-tiny", 4096, 1e6, 3e6), ("cpu-small", 4096, 4e6, 8e6),
    ("gpu-gpt2-small", 32768, 100e6, 130e6), ("gpu-1b", 32768, 1.0e9, 1.2e9),
])
def test_every_preset_is_a_valid_model_of_its_size(name, vocab, low, high):
    settings = load_settings(preset=name)
    config = GPTConfig.from_settings(settings.model, vocab)
    assert low < config.num_params() < high
    train = settings.train
    assert train.total_batch_tokens % (train.batch_size * config.seq_len) == 0
    assert PRESETS[name]["model"]["seq_len"] == config.seq_len and math.isfinite(config.flops_per_token())
