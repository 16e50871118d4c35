"""Pretraining: next-token prediction on a tokenize stage's shards, one process or many (torchrun).

    summary = pretrain(settings, tokens_uri="s3://bucket/tokens", output_uri="s3://bucket/base", resume=True)

Data: `model.data.TokenStream` over the manifest's train split, looping over epochs. Every
micro-step of gradient accumulation has its own reader "slot": process p's micro-step m reads
as rank p * accum_steps + m of processes * accum_steps, so one process with 2 accumulation steps
reads exactly the tokens two processes with one step each read, and the two runs compute the
same updates. The slots' positions go into every checkpoint.

Evaluation (step 0, every `train.eval_every` steps, and at the end), identical whatever the
number of processes (each takes every world_size-th row of the same validation rows):
- `val_loss`: mean cross-entropy (nats) over the first `train.eval_tokens` tokens of the val
  split, cut into rows of the training sequence length;
- `val_bpb`: bits per byte, which does not depend on the tokenizer: the same target tokens'
  summed losses in nats / ln 2 / the UTF-8 bytes those tokens stand for (special tokens, i.e.
  `<|bos|>` at document starts, stand for 0 bytes but their loss counts);
- greedy continuations of `train.sample_prompts` through the engine, logged and appended to
  `<output>/samples.jsonl`.

The run's parameter count and training FLOPs per token are logged at the start and returned in
the summary. Everything about the loop (checkpoints, metrics.jsonl, resume) is model/trainer.py.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from infra.settings import Settings
from infra.storage import Storage, join
from model.checkpoint import latest_pointer
from model.data import TokenStream
from model.distributed import Distributed, all_reduce_sum, init_distributed
from model.engine import Engine, SamplingParams
from model.gpt import GPT, GPTConfig
from model.shards import manifest_uri
from model.tokenizer import BOS, BpeTokenizer
from model.trainer import JsonlLog, LossOutput, Trainer, accumulation_steps, reader_states, sequence_length

log = logging.getLogger(__name__)

STAGE = "pretrain"
SAMPLES_FILE = "samples.jsonl"


def token_bytes(tokenizer: BpeTokenizer) -> Tensor:
    """(vocab,) the number of UTF-8 bytes each token stands for; special tokens 0."""
    sizes = torch.zeros(tokenizer.vocab_size, dtype=torch.long)
    for data, token_id in tokenizer.mergeable_ranks().items():
        sizes[token_id] = len(data)
    return sizes


def validation_rows(tokens_uri: str, storage: Storage, seq_len: int, max_tokens: int) -> tuple[Tensor, Tensor]:
    """(inputs, targets), each (rows, seq_len): the first `max_tokens` (about) tokens of the val
    split cut into rows, read from the start of the split on every process."""
    stream = TokenStream(tokens_uri, split="val", storage=storage)
    wanted = max(1, max_tokens // seq_len)
    pairs = [pair for _, pair in zip(range(wanted), stream.batches(batch_size=1, seq_len=seq_len))]
    if not pairs:
        tokens = stream.manifest.splits["val"].n_tokens
        raise ValueError(
            f"the val split of {tokens_uri} has {tokens} tokens, fewer than one row of {seq_len + 1}: "
            "tokenize with a larger shards.val_fraction (or shorter train.seq_len)"
        )
    inputs = torch.cat([torch.from_numpy(i) for i, _ in pairs])
    targets = torch.cat([torch.from_numpy(t) for _, t in pairs])
    return inputs, targets


@torch.no_grad()
def evaluate_bpb(model: torch.nn.Module, inputs: Tensor, targets: Tensor, sizes: Tensor, batch_size: int,
                 dist: Distributed, autocast) -> dict[str, float]:
    """val_loss and val_bpb over `inputs`/`targets` rows; rows are shared round-robin by rank.
    Every rank runs the same number of forward passes (a rank out of rows repeats its first row
    with weight 0), since a sharded (FSDP) forward is a collective."""
    device = dist.device
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # nats, target tokens, bytes
    sizes = sizes.to(device)
    mine = torch.arange(dist.rank, len(inputs), dist.world_size)
    most = math.ceil(len(inputs) / dist.world_size)
    for start in range(0, most, batch_size):
        rows = mine[start : start + batch_size]
        weight = 1.0 if len(rows) else 0.0
        rows = rows if len(rows) else torch.zeros(1, dtype=torch.long)
        x, y = inputs[rows].to(device), targets[rows].to(device)
        with autocast():
            logits = model(x)
        losses = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
        sums += weight * torch.stack([losses.sum().double(), torch.tensor(float(y.numel()), device=device, dtype=torch.float64),
                                      sizes[y].sum().double()])
    nats, count, nbytes = all_reduce_sum(sums).tolist()
    return {"val_loss": nats / count, "val_bpb": nats / math.log(2) / nbytes}


def sample_continuations(model: GPT, tokenizer: BpeTokenizer, prompts: list[str], max_tokens: int) -> list[dict[str, str]]:
    """Greedy continuations of `prompts` (each after `<|bos|>`), stopping at a document end."""
    engine = Engine(model, tokenizer)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=(BOS,))
    ids = [[tokenizer.bos_id, *tokenizer.encode(prompt)] for prompt in prompts]
    return [{"prompt": prompt, "text": done.text} for prompt, done in zip(prompts, engine.generate(ids, params))]


def _check_tokens(storage: Storage, tokens_uri: str) -> None:
    if not storage.exists(manifest_uri(tokens_uri)):
        raise ValueError(f"{tokens_uri} has no manifest.json: not a finished tokenize output (run `crawl2chat tokenize` first)")


def pretrain(settings: Settings, tokens_uri: str, output_uri: str, resume: bool = False) -> dict[str, Any]:
    """Train a GPT from scratch on the shards under `tokens_uri`; checkpoints and logs under
    `output_uri`. With `resume`, continue from the newest checkpoint there (if any)."""
    train = settings.train
    storage = Storage(settings.storage)
    _check_tokens(storage, tokens_uri)
    dist = init_distributed(train.device)
    probe = TokenStream(tokens_uri, split="train", storage=storage)
    tokenizer = probe.load_tokenizer()
    config = GPTConfig.from_settings(settings.model, vocab_size=tokenizer.vocab_size)
    seq_len = sequence_length(train, config)
    accum = accumulation_steps(train, train.batch_size * seq_len, dist.world_size)
    slots = dist.world_size * accum
    train_split = probe.manifest.splits["train"]
    row_groups = sum(shard.n_row_groups for shard in train_split.shards)
    if row_groups < slots:
        raise ValueError(
            f"the train split has {row_groups} row groups, fewer than the {slots} readers (processes x accumulation "
            "steps): tokenize with a smaller shards.row_group_docs, or use a smaller train.total_batch_tokens"
        )
    val_inputs, val_targets = validation_rows(tokens_uri, storage, seq_len, train.eval_tokens)

    torch.manual_seed(train.seed)
    model = GPT(config, seed=train.seed).to(dist.device)
    params, flops = config.num_params(), config.flops_per_token()
    info = {"params": params, "flops_per_token": flops, "tokens_uri": tokens_uri, "seq_len": seq_len,
            "accum_steps": accum, "world_size": dist.world_size}
    trainer = Trainer(model, train, dist=dist, run=output_uri, stage=STAGE, tokenizer=tokenizer, storage=storage,
                      config=config, flops_per_token=flops, meta=info)
    if dist.is_main:
        log.info(
            "%s: %s parameters, %.2f MFLOPs per token; %d process(es) x %d micro-step(s) x %d x %d = %s tokens per step; "
            "train split %s tokens in %d row groups, %d validation rows of %d",
            STAGE, f"{params:,}", flops / 1e6, dist.world_size, accum, train.batch_size, seq_len,
            f"{slots * train.batch_size * seq_len:,}", f"{train_split.n_tokens:,}", row_groups, len(val_inputs), seq_len,
        )

    streams = [TokenStream(tokens_uri, "train", storage, rank=dist.rank * accum + m, world_size=slots, loop=True)
               for m in range(accum)]
    saved = trainer.begin(resume)
    if saved is not None:
        for stream, state in zip(streams, reader_states(saved, slots, dist.rank, accum, output_uri, "train")):
            stream.load_state_dict(state)
    batches = [stream.batches(train.batch_size, seq_len) for stream in streams]

    def next_batch(micro_step: int) -> tuple[Tensor, Tensor]:
        inputs, targets = next(batches[micro_step])
        inputs, targets = torch.from_numpy(inputs), torch.from_numpy(targets)
        if dist.device.type == "cuda":
            return inputs.pin_memory().to(dist.device, non_blocking=True), targets.pin_memory().to(dist.device, non_blocking=True)
        return inputs, targets

    def loss_fn(module: torch.nn.Module, batch: tuple[Tensor, Tensor]) -> LossOutput:
        inputs, targets = batch
        count = targets.numel()
        return LossOutput(loss=module(inputs, targets) * count, count=count, tokens=count)

    sizes = token_bytes(tokenizer)
    samples = JsonlLog(storage, join(output_uri, SAMPLES_FILE), dist.is_main)
    samples.resume_at(trainer.step)

    def evaluate(step: int) -> dict[str, float]:
        values = evaluate_bpb(trainer.model, val_inputs, val_targets, sizes, train.batch_size, dist, trainer.autocast)
        if train.sample_tokens and train.sample_prompts and (dist.is_main or train.fsdp):
            for sample in sample_continuations(trainer.raw, tokenizer, train.sample_prompts, train.sample_tokens):
                log.info("%s sample step %d | %r -> %r", STAGE, step, sample["prompt"], sample["text"])
                samples.add({"step": step, **sample}, flush=False)
            samples.flush()
        return values

    summary = trainer.fit(loss_fn, next_batch, accum_steps=accum, data_state=lambda: [s.state_dict() for s in streams],
                          evaluate=evaluate)
    pointer = latest_pointer(storage, output_uri)
    summary.update(info)
    summary["checkpoint"] = join(output_uri, "checkpoints", pointer["path"]) if pointer else None
    return summary
