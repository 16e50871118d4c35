"""The training loop every stage shares: pretraining, SFT, reward, DPO, PPO and GRPO plug into it.

A stage supplies three things: how to get a micro-batch, how to turn one into a loss, and
(optionally) how to evaluate. The loop does the rest: gradient accumulation, the all-reduce
across processes, clipping, the schedule, bf16 autocast, torch.compile, progress lines, the
metrics log, evaluation and checkpoint cadence, and exact resume.

    trainer = Trainer(model, settings.train, dist=dist, run=output_uri, stage="sft",
                      tokenizer=tokenizer, storage=storage)
    saved = trainer.begin(resume=True)          # weights, optimizer, RNG, step restored; returns
                                                # every rank's saved data state (or None)
    loader = MyLoader(...); loader.load_state_dict(saved[dist.rank]) if saved else None

    def loss_fn(model, batch) -> LossOutput:    # one micro-batch; runs under autocast
        logits = model(batch.inputs)
        losses = cross_entropy(logits, batch.targets, reduction="none")[batch.mask]
        return LossOutput(loss=losses.sum(), count=losses.numel(), tokens=batch.inputs.numel(),
                          metrics={"accuracy": (logits.argmax(-1) == batch.targets)[batch.mask].sum()})

    summary = trainer.fit(loss_fn, next_batch=lambda micro_step: next(loader_iter),
                          accum_steps=4, data_state=loader.state_dict,
                          evaluate=lambda step: {"val_loss": ...})

The contract of `loss_fn`: `loss` is the SUM of per-item losses over the micro-batch and `count`
the number of items (target tokens for language modelling, pairs for a reward model or DPO,
sequences or tokens for GRPO, as the stage defines its mean). The loop sums both over every
micro-step and every process, and scales the gradients by the global count, so the update is
that of the exact mean over the whole batch however it is split: 1 process x 2 micro-steps
computes what 2 processes x 1 micro-step compute, and micro-batches with different numbers of
target tokens (SFT's masking) are weighted per token, not per micro-batch. `metrics` values are
sums over the same items too and are logged divided by the global count (train_<name>).
`tokens` counts what went through the model, for tokens/s and the `tokens` column.

The model the loss gets is the training module (compiled, DDP- or FSDP-wrapped); `trainer.raw`
is the plain module underneath (for the engine, for a reference copy). A stage with heads (a
reward model's score, PPO's value head) trains a module whose state_dict keeps GPT's names at
the top level (subclass GPT or add the head as an attribute), so its checkpoints load with
`model.checkpoint.load_weights`. RL stages feed rollouts through `next_batch` (it may call the
engine on `trainer.raw`); PPO's epochs over one rollout batch are just more micro-batches from
the same source. Hooks: `on_step(StepResult)` after every optimizer step (a KL controller, a
reference update) may return a dict of metrics that go into that step's metrics line under
their own names (the RL stages' `reward_mean`, `kl`, `generate_share`, ...: statistics of a
rollout or a whole step, not sums over items); `evaluate(step)` returns the metrics of an eval
line. A stage may end the run early with `request_stop()`
(PPO's KL budget): called during a step (from `next_batch` or the loss), every rank stops after
that step, checkpointed, as on SIGTERM.

Outputs under `run` (local or s3://):
- `checkpoints/` (model/checkpoint.py): weights, and `trainer.pt` with everything resume needs:
  the step, tokens seen, elapsed time, the optimizer's state (gathered whole under FSDP),
  every rank's loader state and RNG states (Python, NumPy, torch CPU and CUDA), and the train
  settings. Saved every `checkpoint_every` steps, at the end (marked final), and when any rank
  receives SIGTERM (all ranks stop at the same step); the newest `keep_checkpoints` stay.
  A stage that puts `inputs` in `meta` (what the run is made from: its base, a fingerprint of
  its data, its own settings) has a resume over other inputs refused, in one line.
- `metrics.jsonl`: one JSON object per logged step: `step`, `tokens`, `train_loss`, `lr`,
  `tokens_per_second`, `grad_norm`, `elapsed_seconds` (and `mfu` on GPU), the stage's
  train_* metrics, and on eval steps what `evaluate` returned (pretraining: `val_loss`,
  `val_bpb`). Step 0 has an eval line before any training. On resume, lines after the resumed
  step (written by the run that died) are dropped, so the log never holds a step twice.

Resume is exact: 2N steps straight and N steps + kill + resume + N steps give the same losses,
because the weights are float32, the optimizer state and loader positions are restored, the
schedule is a pure function of the step, and the RNGs continue where they were.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xxhash
from torch import Tensor, nn

from infra.settings.train import TrainSettings
from infra.storage import Storage, join
from model.checkpoint import CheckpointError, latest_pointer, load_checkpoint, save_checkpoint
from model.distributed import (
    Distributed,
    all_reduce_sum,
    barrier,
    full_model_tensors,
    gather_objects,
    gradient_sync,
    is_fsdp,
    load_model_tensors,
    load_optimizer_state,
    optimizer_state,
    wrap_model,
)
from model.gpt import GPTConfig
from model.optim import build_optimizer
from model.schedule import lr_multiplier
from model.tokenizer import BpeTokenizer

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TRAINER_STATE_VERSION = 1
# Dense bf16 tensor-core peaks per GPU, for MFU (NVIDIA datasheets; H200 has H100's compute).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


@dataclass
class LossOutput:
    """One micro-batch's loss: a sum over `count` items (see the module docstring)."""

    loss: Tensor
    count: float | int | Tensor
    tokens: int = 0
    metrics: dict[str, float | Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class StepResult:
    step: int  # optimizer steps done, this one included
    loss: float
    lr: float
    grad_norm: float | None
    tokens: int  # in this step, all processes
    metrics: dict[str, float]


class JsonlLog:
    """A run's JSON-lines log (metrics.jsonl, samples.jsonl), kept in memory and rewritten
    whole when flushed (object storage cannot append). Only the main process writes."""

    def __init__(self, storage: Storage, uri: str, enabled: bool) -> None:
        self.storage, self.uri, self.enabled = storage, uri, enabled
        self.records: list[dict[str, Any]] = []

    def resume_at(self, step: int) -> None:
        """Keep the records of steps up to `step` from an earlier run; drop the rest."""
        if self.storage.exists(self.uri):
            lines = self.storage.read_text(self.uri).splitlines()
            self.records = [record for record in map(json.loads, filter(None, lines)) if record.get("step", 0) <= step]

    def add(self, record: dict[str, Any], flush: bool = True) -> None:
        self.records.append(record)
        if flush:
            self.flush()

    def flush(self) -> None:
        if self.enabled:
            self.storage.write_text(self.uri, "".join(json.dumps(record) + "\n" for record in self.records))


def reader_states(saved: list[Any], slots: int, rank: int, accum: int, output_uri: str, section: str) -> list[Any]:
    """This rank's reader states (one per micro-step) out of `saved`, the per-rank lists a
    checkpoint holds; a checkpoint written with another number of readers cannot resume."""
    flat = [state for rank_states in saved for state in (rank_states or [])]
    if len(flat) != slots:
        raise CheckpointError(
            f"the checkpoint under {output_uri} was written with {len(flat)} readers (processes x accumulation steps); "
            f"this run has {slots}: resume with the same {section}.total_batch_tokens, batch size and process count"
        )
    return flat[rank * accum : (rank + 1) * accum]


def sequence_length(settings: TrainSettings, config: GPTConfig) -> int:
    """The training sequence length: train.seq_len, or the model's context; never above it."""
    length = settings.seq_len or config.seq_len
    if length > config.seq_len:
        raise ValueError(f"train.seq_len ({length}) is above the model's context (model.seq_len={config.seq_len})")
    return length


def accumulation_steps(settings: TrainSettings, tokens_per_micro_step: int, world_size: int) -> int:
    """Micro-steps per optimizer step so that every step sees `train.total_batch_tokens`:
    total = tokens per micro-step (per process) x processes x micro-steps, exactly."""
    if settings.total_batch_tokens is None:
        return 1
    per_round = tokens_per_micro_step * world_size
    if settings.total_batch_tokens % per_round:
        raise ValueError(
            f"train.total_batch_tokens ({settings.total_batch_tokens}) is not a multiple of batch_size x seq_len x "
            f"processes ({tokens_per_micro_step} x {world_size} = {per_round})"
        )
    return settings.total_batch_tokens // per_round


def uses_bf16(settings: TrainSettings, device: torch.device) -> bool:
    return settings.precision == "bf16" or (settings.precision == "auto" and device.type == "cuda")


def rng_state() -> dict[str, Any]:
    """This process's random generators, in types `torch.load(weights_only=True)` accepts."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "python": [version, list(internal), gauss],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def weights_fingerprint(tensors: dict[str, Tensor]) -> str:
    """xxh3-64 over every tensor's name and bytes: equal exactly when the weights are bit-identical."""
    digest = xxhash.xxh3_64()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(tensors[name].numpy()).view(np.uint8))
    return digest.hexdigest()


def plain(value: Any) -> Any:
    """`value` with NumPy scalars and arrays turned into Python numbers and tensors, so that a
    stage's loader state loads under `torch.load(weights_only=True)`."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(item) for item in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    return value


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted keys, so that a difference names its leaf."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Trainer:
    """The shared loop. Build it with the plain model on its device; it compiles and wraps it."""

    def __init__(
        self,
        model: nn.Module,
        settings: TrainSettings,
        *,
        dist: Distributed,
        run: str,
        stage: str,
        tokenizer: BpeTokenizer,
        storage: Storage | None = None,
        config: GPTConfig | None = None,
        flops_per_token: int | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.settings, self.dist, self.run, self.stage = settings, dist, run.rstrip("/"), stage
        self.tokenizer, self.storage = tokenizer, storage or Storage()
        self.config: GPTConfig = config or model.config
        self.flops_per_token = flops_per_token
        self.meta = meta or {}
        self.raw = model
        if settings.fsdp:  # shard in place first, then compile the sharded module (FSDP2's order)
            wrapped = wrap_model(model, dist, fsdp=True)
            self.model = torch.compile(wrapped) if settings.compile else wrapped
        else:  # compile the plain module, then let DDP hook into its gradients (nanoGPT's order)
            compiled = torch.compile(model) if settings.compile else model
            self.model = wrap_model(compiled, dist)
        self.optimizer = build_optimizer(model, settings, dist.device, fsdp=settings.fsdp)
        self.bf16 = uses_bf16(settings, dist.device)
        self.metrics = JsonlLog(self.storage, join(self.run, METRICS_FILE), dist.is_main)
        self.step, self.tokens, self.elapsed = 0, 0, 0.0
        self.data_state: Callable[[], Any] | None = None
        self._stop_requested = False
        self._stop_reason: str | None = None
        self._last: StepResult | None = None

    # -- precision ------------------------------------------------------------------------------

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA (and where train.precision=bf16), nothing otherwise: float32."""
        return torch.autocast(self.dist.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    # -- starting and resuming -------------------------------------------------------------------

    def begin(self, resume: bool) -> list[Any] | None:
        """Start fresh, or with `resume` continue from the run's newest checkpoint. Returns every
        rank's saved data state (rank order) when resuming, else None. Starting fresh where a run
        already has checkpoints is refused: pass resume, or choose a fresh output."""
        pointer = latest_pointer(self.storage, self.run)
        if pointer is None:
            if resume:
                log.info("%s: no checkpoint under %s yet; starting from step 0", self.stage, self.run)
            return None
        if not resume:
            raise ValueError(f"{self.run} already holds checkpoints (step {pointer['step']}): pass --resume, or use a fresh output")
        checkpoint = load_checkpoint(self.storage, self.run, with_trainer_state=True)
        where = checkpoint.uri
        if checkpoint.stage != self.stage:
            raise CheckpointError(f"checkpoint {where} is from stage {checkpoint.stage!r}, not {self.stage!r}")
        if checkpoint.record["tokenizer_sha256"] != self.tokenizer.sha256:
            raise CheckpointError(
                f"checkpoint {where} was made with another tokenizer ({checkpoint.record['tokenizer_sha256'][:12]}) "
                f"than this run's ({self.tokenizer.sha256[:12]})"
            )
        if checkpoint.config != self.config:
            saved, now = checkpoint.config.model_dump(), self.config.model_dump()
            diff = ", ".join(f"{key} {saved[key]} vs {now[key]}" for key in saved if saved[key] != now[key])
            raise CheckpointError(f"checkpoint {where} has another model config ({diff}); resume with the same settings")
        self._check_inputs(checkpoint.record["meta"].get("inputs"), where)
        state = checkpoint.trainer_state
        if state is None or state.get("version") != TRAINER_STATE_VERSION:
            raise CheckpointError(f"checkpoint {where} has no trainer state to resume from")
        if state["settings"].get("optimizer") != self.settings.optimizer:
            raise CheckpointError(f"checkpoint {where} was trained with train.optimizer={state['settings'].get('optimizer')}")
        load_model_tensors(self.model, checkpoint.tensors)
        try:
            load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        except (ValueError, KeyError, RuntimeError) as error:
            raise CheckpointError(f"checkpoint {where}: the optimizer state does not fit ({str(error).splitlines()[0]})") from error
        if self.dist.rank < len(state["rng"]):
            set_rng_state(state["rng"][self.dist.rank])
        self.step, self.tokens, self.elapsed = state["step"], state["tokens"], state["elapsed_seconds"]
        self.metrics.resume_at(self.step)
        log.info("%s: resumed from %s at step %d (%s tokens)", self.stage, where, self.step, f"{self.tokens:,}")
        return state["data"]

    def _check_inputs(self, saved: dict[str, Any] | None, where: str) -> None:
        if "inputs" not in self.meta:
            return
        now, saved = _flat(json.loads(json.dumps(self.meta["inputs"]))), _flat(saved or {})
        differ = [f"{key} {saved.get(key)!r} vs {now.get(key)!r}" for key in sorted(set(now) | set(saved))
                  if saved.get(key) != now.get(key)]
        if differ:
            raise CheckpointError(f"checkpoint {where} was made from other inputs ({'; '.join(differ)}); "
                                  "resume with the same ones, or use a fresh output")

    # -- the loop ----------------------------------------------------------------------------------

    def fit(
        self,
        loss_fn: Callable[[nn.Module, Any], LossOutput],
        next_batch: Callable[[int], Any],
        *,
        accum_steps: int = 1,
        data_state: Callable[[], Any] | None = None,
        evaluate: Callable[[int], dict[str, float]] | None = None,
        on_step: Callable[[StepResult], dict[str, Any] | None] | None = None,
    ) -> dict[str, Any]:
        """Train until `train.max_steps` (or a SIGTERM); return a summary. `next_batch(i)` gives
        micro-step i's batch (0 <= i < accum_steps), already on the device."""
        s = self.settings
        self.data_state = data_state
        last_eval: dict[str, float] = {}
        if evaluate is not None and self.step == 0:
            last_eval = self._evaluate(evaluate)
            self.metrics.add({"step": 0, "tokens": 0, "train_loss": None, "lr": s.lr * lr_multiplier(0, s),
                              "tokens_per_second": None, **last_eval})
        interval_seconds, interval_tokens, started = 0.0, 0, self.step
        with self._sigterm_stops():
            while self.step < s.max_steps:
                began = time.perf_counter()
                result = self._train_step(loss_fn, next_batch, accum_steps)
                seconds = time.perf_counter() - began
                self.elapsed += seconds
                interval_seconds += seconds
                interval_tokens += result.tokens
                step_metrics = on_step(result) if on_step is not None else None
                stopping = self._stop_requested  # agreed by every rank inside _train_step
                final = self.step == s.max_steps
                evaluating = evaluate is not None and (final or (s.eval_every and self.step % s.eval_every == 0))
                logging_now = final or stopping or evaluating or self.step % s.log_every == 0
                if logging_now:
                    record = self._progress(result, interval_tokens / max(interval_seconds, 1e-9), seconds_per_step=interval_seconds / max(1, self.step - started))
                    interval_seconds, interval_tokens, started = 0.0, 0, self.step
                    record.update(step_metrics or {})
                    if evaluating:
                        last_eval = self._evaluate(evaluate)
                        record.update(last_eval)
                    self.metrics.add(record)
                if final or stopping or (s.checkpoint_every and self.step % s.checkpoint_every == 0):
                    self.save(final=final)
                if stopping:
                    log.warning("%s: stopped (%s) at step %d; resume with --resume", self.stage,
                                self._stop_reason or "SIGTERM", self.step)
                    break
        last = self._last
        return {
            "stage": self.stage,
            "output": self.run,
            "steps": self.step,
            "tokens": self.tokens,
            "stopped": self._stop_requested and self.step < s.max_steps,
            "stop_reason": (self._stop_reason or "SIGTERM") if self._stop_requested and self.step < s.max_steps else None,
            "train_loss": last.loss if last else None,
            **{key: value for key, value in last_eval.items()},
            "train_seconds": round(self.elapsed, 3),
            "tokens_per_second": round(self.tokens / self.elapsed, 1) if self.elapsed else None,
        }

    def _train_step(self, loss_fn: Callable[[nn.Module, Any], LossOutput], next_batch: Callable[[int], Any],
                    accum_steps: int) -> StepResult:
        s, device = self.settings, self.dist.device
        multiplier = lr_multiplier(self.step, s)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * multiplier
        self.model.train()
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        count, tokens = 0.0, 0
        metric_sums: dict[str, Tensor] = {}
        for micro_step in range(accum_steps):
            batch = next_batch(micro_step)
            with self.autocast():
                out = loss_fn(self.model, batch)
            with gradient_sync(self.model, enabled=micro_step == accum_steps - 1):
                out.loss.backward()
            loss_sum += out.loss.detach().double()
            count += float(out.count)
            tokens += int(out.tokens)
            for name, value in out.metrics.items():
                metric_sums[name] = metric_sums.get(name, 0) + torch.as_tensor(value, device=device, dtype=torch.float64).detach()
        names = sorted(metric_sums)
        totals = torch.stack([loss_sum, torch.tensor(count, device=device, dtype=torch.float64),
                              torch.tensor(float(tokens), device=device, dtype=torch.float64),
                              torch.tensor(1.0 if self._stop_requested else 0.0, device=device, dtype=torch.float64),
                              *[metric_sums[name].reshape(()) for name in names]])
        totals = all_reduce_sum(totals).tolist()
        total_loss, total_count, total_tokens, stop_votes = totals[:4]
        if total_count <= 0:
            raise ValueError(f"{self.stage}: step {self.step + 1} had no items to learn from (every micro-batch's count was 0)")
        # Gradients hold the sum over this process's items, averaged over processes by DDP/FSDP:
        # scale to the mean over every item of the step.
        grads = [p.grad for p in self.raw.parameters() if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, self.dist.world_size / total_count)
        grad_norm = None
        if s.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.raw.parameters(), s.grad_clip))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss = total_loss / total_count
        if not math.isfinite(loss):
            raise ValueError(f"{self.stage}: the loss is {loss} at step {self.step + 1}; lower train.lr or check the data")
        self.step += 1
        self.tokens += int(total_tokens)
        self._stop_requested = stop_votes > 0  # every rank sees the same sum: all stop together
        metrics = {f"train_{name}": value / total_count for name, value in zip(names, totals[4:])}
        self._last = StepResult(self.step, loss, s.lr * multiplier, grad_norm, int(total_tokens), metrics)
        return self._last

    def _progress(self, result: StepResult, tokens_per_second: float, seconds_per_step: float) -> dict[str, Any]:
        s = self.settings
        record: dict[str, Any] = {
            "step": result.step, "tokens": self.tokens, "train_loss": result.loss, "lr": result.lr,
            "tokens_per_second": round(tokens_per_second, 1), "grad_norm": result.grad_norm,
            "elapsed_seconds": round(self.elapsed, 3), **result.metrics,
        }
        parts = [f"{self.stage} step {result.step}/{s.max_steps}", f"loss {result.loss:.4f}", f"lr {result.lr:.2e}",
                 f"{tokens_per_second:,.0f} tok/s"]
        peak = self.peak_flops()
        if peak and self.flops_per_token:
            record["mfu"] = round(self.flops_per_token * tokens_per_second / (peak * self.dist.world_size), 4)
            parts.append(f"mfu {100 * record['mfu']:.1f}%")
        parts.append(f"{_duration(self.elapsed)} elapsed, eta {_duration(seconds_per_step * (s.max_steps - result.step))}")
        log.info(" | ".join(parts))
        return record

    def peak_flops(self) -> float | None:
        """One device's dense bf16 peak (train.peak_flops, or a known GPU's), for MFU."""
        if self.settings.peak_flops:
            return self.settings.peak_flops
        if self.dist.device.type != "cuda":
            return None
        name = torch.cuda.get_device_name(self.dist.device)
        return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)

    def _evaluate(self, evaluate: Callable[[int], dict[str, float]]) -> dict[str, float]:
        self.model.eval()
        began = time.perf_counter()
        with torch.no_grad():
            values = evaluate(self.step)
        self.model.train()
        shown = " | ".join(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}" for key, value in values.items())
        log.info("%s eval step %d | %s | %.1fs", self.stage, self.step, shown, time.perf_counter() - began)
        return values

    def request_stop(self, reason: str) -> None:
        """End the run after the current step (see the module docstring), saying why."""
        self._stop_requested, self._stop_reason = True, reason

    # -- checkpoints -----------------------------------------------------------------------------

    def save(self, final: bool = False) -> str | None:
        """Write a checkpoint of the current step (every rank must call this; rank 0 writes).
        Under DDP every rank fingerprints its weights first: replicas that are not bit-identical
        are a bug (or bad hardware), and saving one of them would hide it."""
        tensors = full_model_tensors(self.model)
        fingerprints = gather_objects(None if is_fsdp(self.model) else weights_fingerprint(tensors))
        if len(set(fingerprints)) > 1:
            raise RuntimeError(f"{self.stage}: the model replicas differ at step {self.step} (weights fingerprints {fingerprints})")
        optimizer = optimizer_state(self.model, self.optimizer)
        rngs = gather_objects(rng_state())
        data = gather_objects(plain(self.data_state()) if self.data_state is not None else None)
        folder = None
        if self.dist.is_main:
            state = {
                "version": TRAINER_STATE_VERSION, "step": self.step, "tokens": self.tokens,
                "elapsed_seconds": self.elapsed, "optimizer": optimizer, "rng": rngs, "data": data,
                "settings": self.settings.model_dump(),
            }
            meta = {"tokens": self.tokens, "world_size": self.dist.world_size, "weights_xxh3_64": fingerprints[0],
                    "replica_fingerprints": fingerprints, **self.meta}
            folder = save_checkpoint(self.storage, self.run, self.step, tensors, self.config, self.tokenizer, self.stage,
                                     meta=meta, trainer_state=state, keep=self.settings.keep_checkpoints, final=final)
            log.info("%s: checkpoint %s%s", self.stage, folder, " (final)" if final else "")
        barrier()
        return folder

    @contextlib.contextmanager
    def _sigterm_stops(self) -> Iterator[None]:
        """SIGTERM (a scheduler preempting the job) asks for a checkpoint and a clean stop."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum, frame) -> None:
            self._stop_requested = True

        previous = signal.signal(signal.SIGTERM, request_stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

