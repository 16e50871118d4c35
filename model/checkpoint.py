"""Checkpoints on local disk or object storage, for every training stage and the export.

A run's output (local path or s3://) holds its checkpoints like this:

    <run>/checkpoints/step-00000100/model.safetensors   weights (float32, names as in model/gpt.py,
                                                         plus any head a stage adds: value, score)
    <run>/checkpoints/step-00000100/tokenizer.json      the tokenizer, so a checkpoint stands alone
    <run>/checkpoints/step-00000100/trainer.pt          optional: optimizer, schedule, loader, RNG
    <run>/checkpoints/step-00000100/checkpoint.json     written last in the folder: stage, step, model
                                                         config, tokenizer sha256, meta, and the size
                                                         and sha256 of every file above
    <run>/checkpoints/latest.json                       written last of all: the run's newest
                                                         complete checkpoint (the commit point)

A crash mid-save leaves the previous `latest.json`, so readers never see a half-written
checkpoint; the sizes and hashes in `checkpoint.json` name the file when one was truncated or
damaged later. `trainer.pt` is read with `torch.load(weights_only=True)`, so a checkpoint can hold
tensors and plain containers but never run code. The newest `keep` checkpoints stay; older ones
are deleted after the pointer moves.

`--checkpoint` anywhere in the CLI takes either a run's output (its newest complete checkpoint)
or one checkpoint folder: `resolve_checkpoint` decides which.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from infra.storage import Storage, join
from model.gpt import GPT, GPTConfig
from model.tokenizer import BpeTokenizer

CHECKPOINTS_DIR = "checkpoints"
POINTER_FILE = "latest.json"
META_FILE = "checkpoint.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
TRAINER_FILE = "trainer.pt"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"step-(\d{8})$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, in one line naming what is wrong with it."""


def checkpoint_dir(run: str, step: int) -> str:
    return join(run, CHECKPOINTS_DIR, f"step-{step:08d}")


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's weights as safetensors takes them: float32 on the CPU, contiguous, and a tied
    output head stored once (under the embedding's name; `load_weights` ties it again)."""
    tensors, seen = {}, set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        tensors[name] = tensor.detach().to("cpu", torch.float32).contiguous()
    return tensors


def _digest(data: bytes) -> dict[str, Any]:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def save_checkpoint(
    storage: Storage,
    run: str,
    step: int,
    tensors: dict[str, torch.Tensor],
    config: GPTConfig,
    tokenizer: BpeTokenizer,
    stage: str,
    meta: dict[str, Any] | None = None,
    trainer_state: dict[str, Any] | None = None,
    keep: int = 2,
    final: bool = False,
) -> str:
    """Write one complete checkpoint and move the run's pointer to it; return its folder."""
    folder = checkpoint_dir(run, step)
    files = {WEIGHTS_FILE: save_safetensors(tensors), TOKENIZER_FILE: tokenizer.json.encode("utf-8")}
    if trainer_state is not None:
        buffer = io.BytesIO()
        torch.save(trainer_state, buffer)
        files[TRAINER_FILE] = buffer.getvalue()
    for name, data in files.items():
        storage.write_bytes(join(folder, name), data)
    record = {
        "format_version": FORMAT_VERSION,
        "stage": stage,
        "step": step,
        "final": final,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": config.model_dump(),
        "tokenizer_sha256": tokenizer.sha256,
        "meta": meta or {},
        "files": {name: _digest(data) for name, data in files.items()},
    }
    storage.write_text(join(folder, META_FILE), json.dumps(record, indent=1))
    pointer = {"step": step, "path": folder.rsplit("/", 1)[-1], "stage": stage, "final": final}
    storage.write_text(join(run, CHECKPOINTS_DIR, POINTER_FILE), json.dumps(pointer))
    _prune(storage, run, keep)
    return folder


def _prune(storage: Storage, run: str, keep: int) -> None:
    steps = sorted({int(m.group(1)) for entry in storage.list(join(run, CHECKPOINTS_DIR), suffix=META_FILE)
                    if (m := _STEP_DIR.search(entry.uri.rsplit("/", 1)[0]))})
    for step in steps[: max(0, len(steps) - keep)]:
        folder = checkpoint_dir(run, step)
        storage.delete(join(folder, META_FILE))  # first: a half-deleted checkpoint is never taken for whole
        storage.delete_tree(folder)


def latest_pointer(storage: Storage, run: str) -> dict[str, Any] | None:
    """The run's pointer to its newest complete checkpoint, or None when it has none yet."""
    uri = join(run, CHECKPOINTS_DIR, POINTER_FILE)
    return json.loads(storage.read_text(uri)) if storage.exists(uri) else None


def resolve_checkpoint(storage: Storage, uri: str) -> str:
    """The checkpoint folder `uri` stands for: a run's newest complete one, or `uri` itself."""
    uri = uri.rstrip("/")
    pointer = latest_pointer(storage, uri)
    if pointer is not None:
        return join(uri, CHECKPOINTS_DIR, pointer["path"])
    if storage.exists(join(uri, META_FILE)):
        return uri
    raise CheckpointError(f"no complete checkpoint at {uri} (expected {CHECKPOINTS_DIR}/{POINTER_FILE} or {META_FILE})")


@dataclass
class LoadedCheckpoint:
    uri: str
    record: dict[str, Any]
    config: GPTConfig
    tokenizer: BpeTokenizer
    tensors: dict[str, torch.Tensor]
    trainer_state: dict[str, Any] | None

    @property
    def step(self) -> int:
        return self.record["step"]

    @property
    def stage(self) -> str:
        return self.record["stage"]


def _read_checked(storage: Storage, folder: str, name: str, expected: dict[str, Any]) -> bytes:
    uri = join(folder, name)
    if not storage.exists(uri):
        raise CheckpointError(f"checkpoint file {uri} is missing")
    data = storage.read_bytes(uri)
    if len(data) != expected["bytes"]:
        raise CheckpointError(f"checkpoint file {uri} is truncated or damaged ({len(data)} bytes, expected {expected['bytes']})")
    if hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise CheckpointError(f"checkpoint file {uri} is corrupt (its sha256 does not match {META_FILE})")
    return data


def load_checkpoint(storage: Storage, uri: str, with_trainer_state: bool = False) -> LoadedCheckpoint:
    """Read and verify a checkpoint (a run's newest, or one folder)."""
    folder = resolve_checkpoint(storage, uri)
    try:
        record = json.loads(storage.read_text(join(folder, META_FILE)))
        config = GPTConfig.model_validate(record["model"])
    except (json.JSONDecodeError, KeyError, ValueError) as error:
        raise CheckpointError(f"checkpoint record {join(folder, META_FILE)} is unreadable: {str(error).splitlines()[0]}") from error
    files = record["files"]
    try:
        tensors = load_safetensors(_read_checked(storage, folder, WEIGHTS_FILE, files[WEIGHTS_FILE]))
    except CheckpointError:
        raise
    except Exception as error:  # noqa: BLE001 - safetensors' own parse errors, in one line
        raise CheckpointError(f"checkpoint file {join(folder, WEIGHTS_FILE)} is unreadable: {error}") from error
    tokenizer = BpeTokenizer.from_json(_read_checked(storage, folder, TOKENIZER_FILE, files[TOKENIZER_FILE]).decode("utf-8"))
    if tokenizer.sha256 != record["tokenizer_sha256"]:
        raise CheckpointError(f"checkpoint {folder}: its tokenizer does not match the sha256 in {META_FILE}")
    trainer_state = None
    if with_trainer_state and TRAINER_FILE in files:
        data = _read_checked(storage, folder, TRAINER_FILE, files[TRAINER_FILE])
        trainer_state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    return LoadedCheckpoint(folder, record, config, tokenizer, tensors, trainer_state)


def load_weights(model: GPT, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Load a GPT's own weights from `tensors`; return the others (a stage's heads) untouched."""
    own = {name: tensor for name, tensor in tensors.items() if name in model.state_dict()}
    missing, _ = model.load_state_dict(own, strict=False)
    tied = model.config.tie_embeddings and missing == ["lm_head.weight"]
    if missing and not tied:
        raise CheckpointError(f"checkpoint lacks weights the model needs: {missing[:3]}")
    return {name: tensor for name, tensor in tensors.items() if name not in own}


def load_model(uri: str, storage: Storage | None = None, device: str | torch.device = "cpu") -> tuple[GPT, BpeTokenizer, LoadedCheckpoint]:
    """A checkpoint's GPT (on `device`, in eval mode) and tokenizer, for generation and chat."""
    checkpoint = load_checkpoint(storage or Storage(), uri)
    model = GPT(checkpoint.config)
    load_weights(model, checkpoint.tensors)
    return model.to(device).eval(), checkpoint.tokenizer, checkpoint
