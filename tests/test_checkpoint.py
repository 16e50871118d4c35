"""Checkpoints: round trips (local and the real SeaweedFS server), the commit pointer, pruning,
and one clear error naming the file when a checkpoint is missing, truncated or corrupt."""

from __future__ import annotations

import json

import pytest
import torch

from infra.settings.train import ModelSettings
from infra.storage import Storage, join
from model.checkpoint import (
    CHECKPOINTS_DIR,
    META_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    checkpoint_dir,
    load_checkpoint,
    load_model,
    model_tensors,
    resolve_checkpoint,
    save_checkpoint,
)
from model.gpt import GPT, GPTConfig
from model.tokenizer import BpeTokenizer

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "the quick brown fox jumps"] * 20


@pytest.fixture(scope="module")
def tokenizer() -> BpeTokenizer:
    return BpeTokenizer.train(TEXTS, vocab_size=300)


def _model(tokenizer, tie=False) -> GPT:
    settings = ModelSettings(n_layer=1, n_head=2, n_kv_head=1, n_embd=32, seq_len=32, tie_embeddings=tie)
    return GPT(GPTConfig.from_settings(settings, tokenizer.vocab_size), seed=5)


def _round_trip(storage: Storage, run: str, tokenizer, tie: bool) -> None:
    model = _model(tokenizer, tie)
    tensors = {**model_tensors(model), "score.weight": torch.arange(32.0)[None]}
    state = {"step": 7, "rng": torch.get_rng_state(), "loader": {"shard": "train/a.parquet", "row": 3}}
    folder = save_checkpoint(storage, run, 7, tensors, model.config, tokenizer, "pretrain", {"tokens": 99}, state)
    assert resolve_checkpoint(storage, run) == folder == checkpoint_dir(run, 7)
    loaded, loaded_tokenizer, checkpoint = load_model(run, storage)
    assert loaded_tokenizer.sha256 == tokenizer.sha256 and checkpoint.stage == "pretrain" and checkpoint.step == 7
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    if tie:
        assert loaded.lm_head.weight is loaded.embed_tokens.weight
    assert torch.equal(checkpoint.tensors["score.weight"], tensors["score.weight"])
    full = load_checkpoint(storage, folder, with_trainer_state=True)
    assert full.trainer_state["loader"] == state["loader"] and torch.equal(full.trainer_state["rng"], state["rng"])
    assert full.record["meta"] == {"tokens": 99}


@pytest.mark.parametrize("tie", [False, True])
def test_round_trip_local(tmp_path, tokenizer, tie):
    _round_trip(Storage(), str(tmp_path / "run"), tokenizer, tie)


@pytest.mark.s3
def test_round_trip_through_seaweedfs(seaweed, s3_prefix, tokenizer):
    _round_trip(Storage(seaweed), join(s3_prefix, "run"), tokenizer, tie=False)


def test_pointer_moves_last_and_old_checkpoints_are_pruned(tmp_path, tokenizer):
    storage, run = Storage(), str(tmp_path / "run")
    model = _model(tokenizer)
    for step in (10, 20, 30):
        save_checkpoint(storage, run, step, model_tensors(model), model.config, tokenizer, "pretrain", keep=2)
    kept = sorted(p.name for p in (tmp_path / "run" / CHECKPOINTS_DIR).iterdir() if p.is_dir())
    assert kept == ["step-00000020", "step-00000030"]
    assert load_checkpoint(storage, run).step == 30
    assert load_checkpoint(storage, checkpoint_dir(run, 20)).step == 20


def test_a_half_written_checkpoint_is_invisible(tmp_path, tokenizer):
    storage, run = Storage(), str(tmp_path / "run")
    model = _model(tokenizer)
    save_checkpoint(storage, run, 1, model_tensors(model), model.config, tokenizer, "pretrain")
    # A crash after the weights of step 2 but before its record and the pointer:
    storage.write_bytes(join(checkpoint_dir(run, 2), WEIGHTS_FILE), b"partial")
    assert load_checkpoint(storage, run).step == 1
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_checkpoint(storage, checkpoint_dir(run, 2))


def test_truncated_and_corrupt_files_are_named(tmp_path, tokenizer):
    storage, run = Storage(), str(tmp_path / "run")
    model = _model(tokenizer)
    folder = save_checkpoint(storage, run, 1, model_tensors(model), model.config, tokenizer, "pretrain")
    weights = tmp_path / "run" / CHECKPOINTS_DIR / "step-00000001" / WEIGHTS_FILE
    original = weights.read_bytes()
    weights.write_bytes(original[: len(original) // 2])
    with pytest.raises(CheckpointError, match=f"{WEIGHTS_FILE} is truncated"):
        load_checkpoint(storage, run)
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(CheckpointError, match=f"{WEIGHTS_FILE} is corrupt"):
        load_checkpoint(storage, run)
    (tmp_path / "run" / CHECKPOINTS_DIR / "step-00000001" / META_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(storage, folder)
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_checkpoint(storage, str(tmp_path / "elsewhere"))
    assert json.loads((tmp_path / "run" / CHECKPOINTS_DIR / "latest.json").read_text())["step"] == 1
