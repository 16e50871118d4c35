"""Chat SFT: fine-tune a base checkpoint on conversations, the loss on what the assistant writes.

    summary = sft(settings, base_uri="runs/base", data_specs=["real.jsonl", "idk.jsonl:2"],
                  output_uri="runs/sft", resume=True)

    # or in two steps, e.g. for rejection sampling's winners (conversations already in hand):
    base = load_base("runs/policy", storage)
    data = sft_data_from(conversations, base.tokenizer, seq_len, settings.sft.val_fraction)
    summary = train_sft(settings, base, data, "runs/best-of-n")

The model is the base's: its config and tokenizer, its weights as the starting point (a
training checkpoint or an exported Hugging Face directory). Conversations come from any
importer format, several sources mixed by weight (`tasks/chat/mix.py`); one longer than the
context (`seq_len + 1` tokens: see model/packing.py) is counted as `too_long` in its file's
funnel and skipped. Each is rendered with the chat template; targets are the next tokens where
the assistant wrote them (its text, its search calls and its `<|im_end|>`), -1 elsewhere (system
and user turns, turn headers, search results). Micro-batches are packed rows or padded rows
(`sft.batching`, model/packing.py), dealt out to processes and accumulation micro-steps as
pretraining's are, and the loader's position goes into every checkpoint.

Held out: `sft.val_fraction` of the conversations by content hash (xxh64 of the conversation's
canonical JSON), so the split does not depend on file order or the mix's seed, and a
conversation repeated by a weight is all train or all val. Evaluation (step 0, every
`train.eval_every` steps, the end): `val_loss`, the mean cross-entropy over the assistant tokens
of the held-out conversations (the first, in hash order, up to `train.eval_tokens` tokens),
the same for any number of processes; and greedy replies to `train.sample_prompts` asked as
user turns, logged and appended to `<output>/samples.jsonl`.

`<output>/data_report.json`: every file's funnel (rows read, imported, too long, by reason),
the mix's composition, the split and the batching's fill. The loop (checkpoints,
`metrics.jsonl`, exact resume, torchrun) is model/trainer.py's, run with `settings.sft.train`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import xxhash

from infra.settings import Settings
from infra.storage import Storage, join
from model.chat import render_prompt
from model.checkpoint import CheckpointError, latest_pointer
from model.distributed import Distributed, all_reduce_sum, init_distributed
from model.engine import Engine, SamplingParams
from model.export import load_for_inference
from model.gpt import GPT
from model.packing import Batch, Example, SftLoader, batch_width, collate, encode_example, plan_batches
from model.tokenizer import BpeTokenizer
from model.trainer import JsonlLog, LossOutput, Trainer, accumulation_steps, reader_states, sequence_length
from tasks.chat.conversations import Conversation
from tasks.chat.errors import ChatDataError
from tasks.chat.mix import load_mix

log = logging.getLogger(__name__)

STAGE = "sft"
DATA_REPORT = "data_report.json"
SAMPLES_FILE = "samples.jsonl"


@dataclass
class Base:
    """The model an SFT run starts from, and where it came from."""

    uri: str
    model: GPT
    tokenizer: BpeTokenizer


def load_base(uri: str, storage: Storage) -> Base:
    """A training checkpoint (a run's newest, or one folder) or an exported directory, on the CPU."""
    model, tokenizer = load_for_inference(uri, storage)
    return Base(uri, model.train(), tokenizer)


# -- data --------------------------------------------------------------------------------------


def conversation_key(conversation: Conversation) -> int:
    return xxhash.xxh64_intdigest(json.dumps(conversation, sort_keys=True, ensure_ascii=False).encode())


def split_conversations(conversations: Sequence[Conversation], val_fraction: float) -> tuple[list[Conversation], list[Conversation]]:
    """(train, val): a conversation is held out when its hash falls in the lowest `val_fraction`
    of the range; val in hash order, train in the given order."""
    threshold = int(val_fraction * 2**64)
    keyed = [(conversation_key(conversation), conversation) for conversation in conversations]
    train = [conversation for key, conversation in keyed if key >= threshold]
    val = [conversation for _, conversation in sorted((item for item in keyed if item[0] < threshold), key=lambda item: item[0])]
    return train, val


@dataclass
class SftData:
    train: list[Example]
    val: list[Example]
    report: dict[str, Any] = field(default_factory=dict)


def _split_stats(examples: Sequence[Example]) -> dict[str, int]:
    return {"conversations": len(examples), "tokens": sum(map(len, examples)),
            "loss_tokens": sum(example.loss_tokens for example in examples)}


def sft_data_from(conversations: Sequence[Conversation], tokenizer: BpeTokenizer, val_fraction: float,
                  report: dict[str, Any] | None = None) -> SftData:
    """Split and render conversations that already fit the context."""
    train, val = split_conversations(conversations, val_fraction)
    if not train:
        raise ChatDataError(f"no conversation is left to train on ({len(conversations)} usable, all held out)")
    if val_fraction and not val:
        raise ChatDataError(
            f"none of the {len(conversations)} conversations fell in the validation split (sft.val_fraction={val_fraction}): "
            "give more data or a larger sft.val_fraction (0 switches validation off)"
        )
    data = SftData([encode_example(tokenizer, c) for c in train], [encode_example(tokenizer, c) for c in val], dict(report or {}))
    data.report["split"] = {"val_fraction": val_fraction, "train": _split_stats(data.train), "val": _split_stats(data.val)}
    return data


def load_sft_data(specs: Sequence[str], tokenizer: BpeTokenizer, seq_len: int, val_fraction: float, fmt: str = "auto",
                  seed: int = 0, storage: Storage | None = None) -> SftData:
    """The mix of `specs` (FILE or FILE:WEIGHT), every skip counted per file, split and rendered."""
    mix = load_mix(specs, fmt, seed, storage, tokenizer, max_tokens=seq_len + 1)
    files = [report.stats() for report in mix.reports]
    for report in mix.reports:
        dropped = {reason: count for step in report.funnel.steps.values() for reason, count in step.dropped.items()}
        log.info("%s: %s format, %d of %d rows kept%s", report.uri, report.format, report.kept, report.funnel["read"].docs_in,
                 "; skipped " + ", ".join(f"{reason}={count}" for reason, count in sorted(dropped.items())) if dropped else "")
    return sft_data_from(mix.conversations, tokenizer, val_fraction,
                         {"files": files, "composition": mix.composition, "max_tokens": seq_len + 1})


def batching_stats(examples: Sequence[Example], batching: str, batch_size: int, seq_len: int) -> dict[str, Any]:
    """How full the rows of one epoch are: real tokens / (rows x width)."""
    batches = plan_batches([len(e) for e in examples], batching, batch_size, seq_len, rng=None)
    rows = sum(len(batch) for batch in batches)
    capacity = sum(len(batch) * batch_width(examples, batch, batching, seq_len) for batch in batches)
    tokens = sum(map(len, examples))
    return {"batching": batching, "micro_batches_per_epoch": len(batches), "rows_per_epoch": rows,
            "fill": round(tokens / capacity, 4) if capacity else None}


# -- the loss and evaluation -------------------------------------------------------------------


def sft_loss(module: torch.nn.Module, batch: Batch) -> LossOutput:
    """The summed cross-entropy over the batch's assistant tokens (LossOutput's contract)."""
    count = batch.loss_tokens
    mean = module(batch.inputs, batch.targets, positions=batch.positions, mask=batch.mask)
    return LossOutput(loss=mean * count, count=count, tokens=batch.tokens)


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, examples: Sequence[Example], batching: str, batch_size: int, seq_len: int,
                  dist: Distributed, autocast) -> float:
    """Mean cross-entropy over the assistant tokens of `examples`; micro-batches shared by rank."""
    batches = plan_batches([len(e) for e in examples], batching, batch_size, seq_len, rng=None)
    sums = torch.zeros(2, dtype=torch.float64, device=dist.device)
    for rows in batches[dist.rank :: dist.world_size]:
        batch = collate(examples, rows, batching, seq_len).to(dist.device)
        with autocast():
            out = sft_loss(model, batch)
        sums += torch.stack([out.loss.detach().double(), torch.tensor(float(out.count), dtype=torch.float64, device=dist.device)])
    nats, count = all_reduce_sum(sums).tolist()
    return nats / count


def first_tokens(examples: Sequence[Example], max_tokens: int) -> list[Example]:
    """The leading examples up to `max_tokens` positions (at least one)."""
    kept, total = [], 0
    for example in examples:
        if kept and total + len(example) > max_tokens:
            break
        kept.append(example)
        total += len(example)
    return kept


def sample_answers(model: GPT, tokenizer: BpeTokenizer, questions: Sequence[str], max_tokens: int) -> list[dict[str, str]]:
    """Greedy replies to `questions`, each asked as the first user turn of a conversation."""
    prompts = [render_prompt(tokenizer, [{"role": "user", "content": question}]) for question in questions]
    done = Engine(model, tokenizer).generate(prompts, SamplingParams(max_tokens=max_tokens, temperature=0.0))
    return [{"question": question, "answer": completion.text} for question, completion in zip(questions, done)]


# -- the stage ---------------------------------------------------------------------------------


def train_sft(settings: Settings, base: Base, data: SftData, output_uri: str, resume: bool = False,
              storage: Storage | None = None, dist: Distributed | None = None) -> dict[str, Any]:
    """Fine-tune `base` on `data`; checkpoints, metrics.jsonl, samples.jsonl and data_report.json
    under `output_uri`. With `resume`, continue from the newest checkpoint there (if any)."""
    s, train = settings.sft, settings.sft.train
    storage = storage or Storage(settings.storage)
    dist = dist or init_distributed(train.device)
    config = base.model.config
    seq_len = sequence_length(train, config)
    too_long = max(map(len, data.train + data.val))
    if too_long > seq_len:
        raise ChatDataError(f"a conversation takes {too_long} positions, more than sft.train.seq_len ({seq_len}); "
                            "load the data with this seq_len so that longer ones are skipped")
    accum = accumulation_steps(train, train.batch_size * seq_len, dist.world_size)
    slots = dist.world_size * accum
    data.report["batching"] = batching_stats(data.train, s.batching, train.batch_size, seq_len)
    loaders = [SftLoader(data.train, s.batching, train.batch_size, seq_len, train.seed, slot=dist.rank * accum + m, slots=slots)
               for m in range(accum)]
    val = first_tokens(data.val, train.eval_tokens)

    torch.manual_seed(train.seed)
    model = base.model.to(dist.device).train()
    info = {"base": base.uri, "params": config.num_params(), "seq_len": seq_len, "batching": s.batching, "accum_steps": accum,
            "world_size": dist.world_size, "train_conversations": len(data.train), "val_conversations": len(val)}
    trainer = Trainer(model, train, dist=dist, run=output_uri, stage=STAGE, tokenizer=base.tokenizer, storage=storage,
                      config=config, flops_per_token=config.flops_per_token(), meta=info)
    steps_per_epoch = loaders[0].batches_per_slot(0)
    if dist.is_main:
        log.info("%s: %s parameters from %s; %d train / %d val conversations (%s / %s tokens); %s batching, fill %.1f%%; "
                 "%d process(es) x %d micro-step(s) x %d rows; %d steps ~ %.2f epochs",
                 STAGE, f"{info['params']:,}", base.uri, len(data.train), len(data.val),
                 f"{data.report['split']['train']['tokens']:,}", f"{data.report['split']['val']['tokens']:,}", s.batching,
                 100 * data.report["batching"]["fill"], dist.world_size, accum, train.batch_size, train.max_steps,
                 train.max_steps / steps_per_epoch)

    saved = trainer.begin(resume)
    if saved is not None:
        for loader, state in zip(loaders, reader_states(saved, slots, dist.rank, accum, output_uri, "sft.train")):
            try:
                loader.load_state_dict(state)
            except ValueError as error:
                raise CheckpointError(f"cannot resume {output_uri}: {error}") from error
    if dist.is_main:  # once the run is known to be this data's (fresh, or resumed over the same)
        storage.write_text(join(output_uri, DATA_REPORT), json.dumps(data.report, indent=1))

    samples = JsonlLog(storage, join(output_uri, SAMPLES_FILE), dist.is_main)
    samples.resume_at(trainer.step)

    def evaluate(step: int) -> dict[str, float]:
        values = {"val_loss": evaluate_loss(trainer.model, val, s.batching, train.batch_size, seq_len, dist, trainer.autocast)} if val else {}
        if train.sample_tokens and train.sample_prompts and (dist.is_main or train.fsdp):
            for sample in sample_answers(trainer.raw, base.tokenizer, train.sample_prompts, train.sample_tokens):
                log.info("%s sample step %d | %r -> %r", STAGE, step, sample["question"], sample["answer"])
                samples.add({"step": step, **sample}, flush=False)
            samples.flush()
        return values

    summary = trainer.fit(sft_loss, lambda micro_step: next(loaders[micro_step]).to(dist.device), accum_steps=accum,
                          data_state=lambda: [loader.state_dict() for loader in loaders], evaluate=evaluate)
    pointer = latest_pointer(storage, output_uri)
    summary.update(info)
    summary["epochs"] = round(trainer.step / steps_per_epoch, 3)
    summary["checkpoint"] = join(output_uri, "checkpoints", pointer["path"]) if pointer else None
    return summary


def sft(settings: Settings, base_uri: str, data_specs: Sequence[str], output_uri: str, fmt: str = "auto",
        resume: bool = False) -> dict[str, Any]:
    """Load the base and the mix of `data_specs`, then `train_sft`."""
    storage = Storage(settings.storage)
    dist = init_distributed(settings.sft.train.device)
    base = load_base(base_uri, storage)
    seq_len = sequence_length(settings.sft.train, base.model.config)
    data = load_sft_data(data_specs, base.tokenizer, seq_len, settings.sft.val_fraction, fmt, settings.sft.train.seed, storage)
    summary = train_sft(settings, base, data, output_uri, resume, storage, dist)
    summary["data_report"] = join(output_uri, DATA_REPORT)
    return summary
