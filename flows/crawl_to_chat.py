"""The `crawl-to-chat` flow: crawl-to-tokens, then train, then the report card. Crawl to chat model.

    crawl_to_chat(output="data/run", inputs=["crawl/*.warc.gz"])                 # -> data/run/<last stage>
    crawl_to_chat(output="s3://bucket/run", snapshot="CC-MAIN-2024-51", max_warcs=8, rl="dpo", processes=8)

The main command runs it (`crawl2chat run`, so `make run`); with no input, on the generated
sample crawl and `SAMPLE_RUN` settings (the tiny presets made to fit the sample: a few minutes
of training on 2 cores), ending in a model to talk to (`crawl2chat chat --checkpoint
<output>/<last stage>`) and the report card (flows/report_card.py). The data half and the
training half are subflows (`crawl-to-tokens` with its own `crawl-to-docs`, and `train`), so
the UI shows every stage as its own task with its artifacts, and a rerun skips what is done in
each: the data stages by their progress markers and manifests, the training stages by their
fingerprints (flows/stages.py). `force` redoes stale work in both halves; `allow_partial` lets
the data half go on without failed units (flows/crawl_to_tokens.py). The SFT and preference data come from the run's own documents
unless given (tasks/chat/from_docs.py).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from flows.crawl_to_tokens import crawl_to_tokens, snapshot_run
from flows.credentials import run_settings
from flows.report_card import publish_report_card
from flows.stages import check_commands, pipeline
from flows.train import train

# The embedded defaults of `crawl2chat run` on the sample crawl (67 documents, 27 k training
# tokens), under the user's own settings: the cpu-tiny shape with a context of 256 so that a
# question, one search result of 400 characters and the answer fit; about 15 epochs of
# pretraining; one search hit per call (what the search examples are made with, and what
# `crawl2chat chat --search-index` must be given: the run prints the command).
SAMPLE_RUN: dict[str, Any] = {
    "model": {"seq_len": 256},
    "train": {
        "batch_size": 16, "max_steps": 100, "warmup_steps": 10, "eval_every": 25, "checkpoint_every": 25,
        "log_every": 5, "eval_tokens": 8192, "sample_tokens": 24,
        "sample_prompts": ["A Beginner's Guide to", "The library in", "Few hobbies offer"],
    },
    "search": {"top_k": 1, "result_chars": 400},
}


@task(name="report-card")
def report_card(output: str, training: dict[str, Any], config_file: str | None, overrides: dict[str, Any] | None) -> dict[str, Any]:
    return publish_report_card(output, training, config_file, overrides)


@flow(name="crawl-to-chat", log_prints=True)
def crawl_to_chat(
    output: str,
    inputs: list[str] | None = None,
    snapshot: str | None = None,
    max_warcs: int | None = None,
    rl: str = "ppo",
    until: str | None = None,
    preset: str | None = "cpu-tiny",
    processes: int | None = None,
    force: bool = False,
    allow_partial: bool = False,
    retries: int = 1,
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    tokenizer_uri: str | None = None,
) -> dict[str, Any]:
    """WARC files (or a snapshot) -> token shards -> the training stages -> the report card."""
    settings = run_settings(config_file, overrides, preset)
    check_commands(pipeline(rl, until))  # before the data half: a missing stage costs one line, not a crawl
    output, snapshot = snapshot_run(settings, output, snapshot)
    data = crawl_to_tokens(output, inputs, snapshot, max_warcs, config_file, overrides, tokenizer_uri, force, allow_partial)
    training = train(output, rl=rl, until=until, preset=preset, processes=processes, force=force, retries=retries,
                     config_file=config_file, overrides=overrides, report=False)
    card = report_card(output, training, config_file, overrides)
    return {"output": output, "data": data, "train": training, "report": card}
