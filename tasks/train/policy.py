"""The checkpoint a preference or RL stage starts from (`--policy`), and its frozen copy.

    policy = load_policy("runs/sft", storage, device)     # a run's newest checkpoint, or one folder
    policy.model, policy.tokenizer, policy.weights_sha256  # the fingerprint keys cached work to it
    reference = frozen_copy(policy.model)                 # no gradients, eval mode
    checkpoint_meta(storage, "runs/dpo")                  # what a run recorded about its inputs

The stage trains `policy.model` in place; what it caches from the starting weights (DPO's
reference log-probabilities) is keyed to `weights_sha256`, the SHA-256 of the checkpoint's
weights file as recorded in its checkpoint.json, so a cache made from other weights is never used.
A stage records the keys of its inputs in its checkpoints' meta and refuses to resume a run
whose recorded keys differ from its own (`checkpoint_meta` reads them without the weights).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

import torch

from infra.storage import Storage, join
from model.checkpoint import CHECKPOINTS_DIR, META_FILE, WEIGHTS_FILE, latest_pointer, load_checkpoint, load_weights
from model.gpt import GPT
from model.tokenizer import BpeTokenizer


@dataclass
class Policy:
    model: GPT
    tokenizer: BpeTokenizer
    uri: str  # the checkpoint folder
    stage: str
    step: int
    weights_sha256: str

    def describe(self) -> dict[str, object]:
        return {"policy": self.uri, "policy_stage": self.stage, "policy_step": self.step,
                "policy_weights_sha256": self.weights_sha256}


def load_policy(uri: str, storage: Storage, device: torch.device | str) -> Policy:
    """The GPT of a checkpoint (a run's newest complete one, or one folder) on `device`, in
    train mode; any head the checkpoint carries (a reward model's score) is left out."""
    checkpoint = load_checkpoint(storage, uri)
    model = GPT(checkpoint.config)
    load_weights(model, checkpoint.tensors)
    sha = checkpoint.record["files"][WEIGHTS_FILE]["sha256"]
    return Policy(model.to(device).train(), checkpoint.tokenizer, checkpoint.uri, checkpoint.stage, checkpoint.step, sha)


def frozen_copy(model: GPT) -> GPT:
    """A copy of `model` that never trains: the reference of DPO's and GRPO's KL."""
    reference = copy.deepcopy(model).eval()
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    return reference


def checkpoint_meta(storage: Storage, run: str) -> dict[str, Any]:
    """The `meta` of the run's newest checkpoint, read from its checkpoint.json alone; {} when
    the run has no checkpoint yet."""
    pointer = latest_pointer(storage, run)
    if pointer is None:
        return {}
    return json.loads(storage.read_text(join(run, CHECKPOINTS_DIR, pointer["path"], META_FILE))).get("meta", {})
