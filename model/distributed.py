"""Processes working as one: torchrun's environment, DDP or FSDP2, and the collectives the loop needs.

    dist = init_distributed("auto")          # reads RANK / WORLD_SIZE / LOCAL_RANK set by torchrun
    model = wrap_model(GPT(config).to(dist.device), dist, fsdp=False)
    with gradient_sync(model, enabled=last_micro_step): loss.backward()
    tensors = full_model_tensors(model)      # the whole model on every rank's CPU, e.g. to save it

One process (no torchrun) is world size 1 and every helper is a no-op or the identity, so the
same trainer code runs on a laptop and on a cluster. The backend is NCCL when the processes
drive GPUs (one each, `LOCAL_RANK`), gloo on CPU.

Data parallelism has two forms:
- DDP (default): every process holds the whole model and optimizer; gradients are averaged in
  buckets overlapping the backward pass. Replicas start equal (DDP broadcasts rank 0's weights)
  and stay bit-identical, because they apply identical averaged gradients.
- FSDP2 (`train.fsdp=true`, `torch.distributed.fsdp.fully_shard`, per block and then the root):
  parameters, gradients and optimizer state are sharded across processes and gathered block by
  block for compute, for models whose weights plus Adam state do not fit one GPU. Checkpoints
  are gathered into ordinary full tensors (`full_model_tensors`, `optimizer_state`), so a
  checkpoint does not depend on how it was trained and loads anywhere.

Stopping together: `any_rank(flag)` is true on every rank when it is true on one (a SIGTERM,
a time limit), so all ranks leave the loop at the same step and none waits forever in a
collective.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from model.checkpoint import model_tensors


@dataclass(frozen=True)
class Distributed:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> Distributed:
    """This process's place among torchrun's processes (world size 1 without torchrun), its
    device, and the process group (NCCL on GPUs, gloo on CPU) when there is more than one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda, but this machine has no CUDA device")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        target = torch.device("cuda", local_rank)
        torch.cuda.set_device(target)
    else:
        target = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        if use_cuda:
            dist.init_process_group("nccl", device_id=target)
        else:
            dist.init_process_group("gloo")
    return Distributed(rank, local_rank, world_size, target)


@contextlib.contextmanager
def process_group() -> Iterator[None]:
    """Around a training command: tear the process group down when it ends. A finished rank
    waits for its peers first (one tearing gloo down while its peer was still in the last
    collective aborted the peer at exit: "terminate called without an active exception"); a
    failing rank leaves at once, so its peers' next collective fails instead of waiting."""
    try:
        yield
    except BaseException:
        if dist.is_initialized():
            dist.destroy_process_group()
        raise
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrap_model(model: nn.Module, ctx: Distributed, fsdp: bool = False) -> nn.Module:
    """The module to train: `model` itself (one process), DDP around it, or `model` sharded in
    place by FSDP2 (each block its own unit, so only one block is gathered at a time)."""
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        if not ctx.enabled:
            raise ValueError("train.fsdp=true needs several processes (torchrun --nproc-per-node N)")
        for block in getattr(model, "layers", []):
            fully_shard(block)
        fully_shard(model)
        return model
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        # No buffer broadcast before every forward: the only buffers (RoPE tables) are constants.
        return DistributedDataParallel(model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None,
                                       broadcast_buffers=False)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The module under DDP and torch.compile (FSDP2 shards in place: nothing to unwrap)."""
    while True:
        if hasattr(model, "module") and isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(unwrap(model), FSDPModule)


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Run a backward pass with (enabled) or without the gradient all-reduce: gradient
    accumulation syncs only on its last micro-step."""
    if enabled:
        yield
        return
    if isinstance(model, nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    elif is_fsdp(model):
        root = unwrap(model)
        root.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            root.set_requires_gradient_sync(True)
    else:
        yield


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def any_rank(flag: bool, device: torch.device) -> bool:
    """True everywhere when `flag` is true on any rank."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_objects(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if not dist.is_initialized():
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def full_model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights as checkpoints store them (float32 CPU, a tied head once).
    Under FSDP every rank must call this (the shards are gathered)."""
    if not is_fsdp(model):
        return model_tensors(unwrap(model))
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(unwrap(model), options=StateDictOptions(full_state_dict=True))
    return model_tensors_from(state, unwrap(model))


def model_tensors_from(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    tied = getattr(getattr(model, "config", None), "tie_embeddings", False)
    return {name: tensor.detach().to("cpu", torch.float32).contiguous()
            for name, tensor in state.items() if not (tied and name == "lm_head.weight")}


def load_model_tensors(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load full weights into the training module (plain, DDP or FSDP-sharded)."""
    if not is_fsdp(model):
        missing, unexpected = unwrap(model).load_state_dict(tensors, strict=False)
        tied = getattr(unwrap(model).config, "tie_embeddings", False) and missing == ["lm_head.weight"]
        if (missing and not tied) or unexpected:
            raise ValueError(f"checkpoint weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    # One scatter per tensor, so every rank must go through them in the same order; safetensors
    # returns its tensors in an order of its own (per process), the model's is the same everywhere.
    ordered = {name: tensors[name] for name in unwrap(model).state_dict() if name in tensors}
    set_model_state_dict(unwrap(model), ordered, options=StateDictOptions(full_state_dict=True, strict=False))


def optimizer_state(model: nn.Module, optimizer: Any) -> dict[str, Any]:
    """The optimizer's state as a plain, whole (unsharded) state dict. Under FSDP every rank
    must call this."""
    if not is_fsdp(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(unwrap(model), optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: nn.Module, optimizer: Any, state: dict[str, Any]) -> None:
    if not is_fsdp(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(unwrap(model), optimizer, state, options=StateDictOptions(full_state_dict=True))
