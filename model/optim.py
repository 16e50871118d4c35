"""The optimizer every trainer uses: AdamW, or Muon for the transformer's matrices plus AdamW.

    optimizer = build_optimizer(model, settings.train, device)
    for group in optimizer.param_groups: group["lr"] = group["initial_lr"] * lr_multiplier(step, ...)

Parameters fall into three kinds, by name and shape (so a stage's extra head is handled too):
- matrices inside the blocks (`layers.*`, 2-D): attention and MLP projections;
- other matrices: the token embedding, the output head, any value/score head;
- vectors: RMSNorm scales (and biases, if a head has one).

`adamw` (default): one AdamW; weight decay on every matrix, none on vectors (decaying a norm's
scale towards 0 only fights the norm), as in GPT-2/nanoGPT. PyTorch's fused kernel (one pass over
each parameter's state) on CUDA and on the CPU, where it is 4x faster than the foreach path (19
against 81 ms a step for the 20M-parameter bench model); the foreach path under FSDP, whose
sharded parameters the fused kernel does not take.

`muon`: `torch.optim.Muon` (orthogonalised momentum; Keller Jordan 2024) for the blocks'
matrices, AdamW for the rest: Muon is defined for 2-D weights only (torch refuses any other
shape), and embeddings and heads are not its case. Its learning rate is scaled per matrix with
`adjust_lr_fn="match_rms_adamw"` (Moonshot's "Muon is Scalable for LLM Training": 0.2 *
sqrt(max(A, B))), so the same `train.lr` and `train.weight_decay` serve both optimizers. Muon's
Newton-Schulz step needs the whole matrix, so it is refused with FSDP (which shards matrices).

Every param group carries `initial_lr`, the peak that the schedule scales.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from infra.settings.train import TrainSettings


class Optimizers:
    """Several optimizers stepped as one: the duck type of torch.optim.Optimizer that the
    training loop uses (param_groups, step, zero_grad, state_dict, load_state_dict)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state.get("optimizers", ())) != len(self.optimizers):
            raise ValueError("the saved optimizer state is for another optimizer setup (train.optimizer differs)")
        for optimizer, saved in zip(self.optimizers, state["optimizers"]):
            optimizer.load_state_dict(saved)


def parameter_kinds(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The model's trainable parameters as {"block_matrices", "other_matrices", "vectors"}."""
    kinds: dict[str, list[nn.Parameter]] = {"block_matrices": [], "other_matrices": [], "vectors": []}
    seen: set[int] = set()
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad or id(parameter) in seen:  # a tied head is the embedding
            continue
        seen.add(id(parameter))
        if parameter.ndim < 2:
            kinds["vectors"].append(parameter)
        elif parameter.ndim == 2 and ".layers." in f".{name}":
            kinds["block_matrices"].append(parameter)
        else:
            kinds["other_matrices"].append(parameter)
    return kinds


def build_optimizer(
    model: nn.Module, settings: TrainSettings, device: torch.device, fsdp: bool = False
) -> torch.optim.Optimizer | Optimizers:
    """AdamW (or Muon + AdamW) over `model`'s trainable parameters, as described above."""
    kinds = parameter_kinds(model)
    adamw_options: dict[str, Any] = {"lr": settings.lr, "betas": (settings.beta1, settings.beta2), "eps": settings.adam_eps}
    if device.type in ("cuda", "cpu") and not fsdp:
        adamw_options["fused"] = True
    if settings.optimizer == "adamw":
        decayed = kinds["block_matrices"] + kinds["other_matrices"]
        groups = [{"params": decayed, "weight_decay": settings.weight_decay}, {"params": kinds["vectors"], "weight_decay": 0.0}]
        optimizer: torch.optim.Optimizer | Optimizers = torch.optim.AdamW(
            [group for group in groups if group["params"]], **adamw_options
        )
    else:
        if fsdp:
            raise ValueError("train.optimizer=muon needs whole matrices; it does not work with train.fsdp=true")
        muon = torch.optim.Muon(
            kinds["block_matrices"], lr=settings.lr, weight_decay=settings.weight_decay, adjust_lr_fn="match_rms_adamw"
        )
        groups = [{"params": kinds["other_matrices"], "weight_decay": settings.weight_decay},
                  {"params": kinds["vectors"], "weight_decay": 0.0}]
        adamw = torch.optim.AdamW([group for group in groups if group["params"]], **adamw_options)
        optimizer = Optimizers([muon, adamw])
    for group in optimizer.param_groups:
        group["initial_lr"] = settings.lr
    return optimizer
