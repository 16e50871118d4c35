"""The `train` flow: pretrain -> SFT -> reward model -> PPO (or DPO, or GRPO), one Prefect task a stage.

    train(output="data/run", preset="cpu-tiny")                        # tokens from data/run/tokens
    train(output="s3://bucket/run", tokens="s3://bucket/cc/tokens", rl="dpo", sft_data=["chat.jsonl"])
    train(output="data/run", until="pretrain", processes=2)            # torchrun, 2 processes (gloo on CPU)

Each stage trains into `<output>/<stage>/` by launching its CLI command (flows/stages.py: the
stage table, launching, and the skip-or-resume rule), so a rerun skips the stages that finished
from the same inputs and settings, resumes the one that was interrupted, and refuses, in one
line, to mix a stage with one made from other inputs (`force` retrains it). A failed stage is
retried `retries` times, each retry resuming from its newest checkpoint. The flow holds the
lease on `<output>` (infra/lease.py) while it trains, so a second run on the same output stops
at once, in one line, instead of training the same stages beside it.

Inputs: `tokens` (default `<output>/tokens`, where crawl-to-tokens writes them); `sft_data`,
`pairs` and `prompts` for the later stages. Those not given are made from the run's own
documents (`docs`, default `<output>/deduped`) by the `chat-data` task into
`<output>/chat-data/` (tasks/chat/from_docs.py), with the search index built next to the docs.

In the Prefect UI each stage has a progress artifact `<stage>-progress` (steps done of its total,
moved as its metrics.jsonl grows, every log interval), a table artifact `<stage>-metrics` (the
logged steps: losses, learning rate, and the stage's own metrics such as reward and KL), and
its process's log lines in the task's logs. Settings: `preset` (cpu-tiny, ...) under the config
file, the environment and `overrides`; credentials never as parameters (flows/credentials.py).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from prefect import flow, get_run_logger, task

from flows.credentials import run_settings
from flows.progress import ProgressArtifact, in_prefect_run, watch_metrics
from flows.stages import (
    STAGES,
    Decision,
    Stage,
    StageError,
    StageFailed,
    begin_record,
    check_commands,
    decide,
    default_processes,
    failure_line,
    launch_command,
    made_from,
    max_steps,
    now,
    pipeline,
    read_metrics,
    run_process,
    shown,
    stage_argv,
    stage_environment,
    stage_overrides,
    summary_of,
    write_record,
)
from infra.lease import hold_lease
from infra.storage import Storage, join
from model.checkpoint import latest_pointer
from model.trainer import METRICS_FILE

DEDUPED = "deduped"
TOKENS = "tokens"
CHAT_DATA = "chat-data"
# Inputs the chat-data task can make, and the key of its manifest's files that holds each.
CLOCK = re.compile(r"^\d\d:\d\d:\d\d ")
MADE_INPUTS = {"sft_data": "sft", "pairs": "pairs", "prompts": "prompts"}
METRIC_COLUMNS = ("step", "tokens", "train_loss", "val_loss", "val_bpb", "val_accuracy", "reward_mean", "judge_mean",
                  "kl", "entropy", "response_length", "lr", "tokens_per_second")


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run
        return logging.getLogger(__name__)


def metric_rows(records: list[dict[str, Any]], limit: int = 40) -> list[dict[str, Any]]:
    """The logged steps for a table: every eval line and the last, and as many others as fit."""
    if not records:
        return []
    evals = [r for r in records if any(key.startswith("val_") for key in r)]
    others = [r for r in records if r not in evals]
    stride = max(1, len(others) // max(1, limit - len(evals)))
    chosen = {id(r) for r in evals + others[::stride] + records[-1:]}
    columns = [c for c in METRIC_COLUMNS if any(c in r and r[c] is not None for r in records)]
    return [{c: (round(r[c], 5) if isinstance(r.get(c), float) else r.get(c)) for c in columns}
            for r in records if id(r) in chosen]


def publish_stage(stage: Stage, stage_uri: str, storage: Storage, status: str) -> dict[str, str]:
    """The stage's metrics table artifact; returns {key: artifact id} (empty outside a run)."""
    if not in_prefect_run():
        return {}
    from prefect.artifacts import create_table_artifact

    rows = metric_rows(read_metrics(storage, stage_uri))
    if not rows:
        return {}
    key = f"{stage.name}-metrics"
    artifact = create_table_artifact(rows, key=key, description=f"{stage.name} ({status}): logged steps from {join(stage_uri, METRICS_FILE)}")
    return {key: str(artifact)}


def retry_failed_process(task, task_run, state) -> bool:
    """Retry a stage whose process failed (it resumes), not one refused before it started."""
    try:
        state.result()
    except StageFailed:
        return True
    except Exception:  # noqa: BLE001 - a StageError or a bug: retrying would fail the same way
        return False
    return False


@task(name="train-stage", retry_condition_fn=retry_failed_process)
def run_stage(
    name: str, output: str, inputs: dict[str, Any], processes: int | None, force: bool,
    preset: str | None, config_file: str | None, overrides: dict[str, Any] | None,
) -> dict[str, Any]:
    """Skip, resume or train one stage; returns what it made (see flows/stages.py)."""
    logger = _logger()
    stage = STAGES[name]
    settings = run_settings(config_file, overrides, preset)
    storage = Storage(settings.storage)
    stage_uri = join(output, stage.name)
    parts = made_from(stage, output, inputs, settings, storage)
    decision: Decision = decide(storage, stage, stage_uri, parts, force)
    total = max_steps(stage, settings)
    progress = ProgressArtifact(f"{stage.name}-progress", f"{stage.name}: training steps done")
    if decision.action == "skip":
        logger.info("%s: skipped, %s (%s)", stage.name, decision.reason, stage_uri)
        progress.update(total or 1, total or 1, "finished earlier, skipped")
        artifacts = publish_stage(stage, stage_uri, storage, "skipped")
        return {**_result(decision.record, storage, stage_uri), "status": "skipped", "artifacts": artifacts}

    count = processes or default_processes()
    argv = stage_argv(stage, output, inputs, config_file, stage_overrides(stage, settings, overrides))
    command = launch_command(argv, count)
    record = begin_record(stage, parts, decision.record, command)
    write_record(storage, stage_uri, record)
    logger.info("%s: %s %s, %d process(es): %s", stage.name, decision.action, decision.reason, count, shown(argv, stage))

    def on_record(line: dict[str, Any]) -> None:
        loss = line.get("train_loss")
        progress.update(line.get("step", 0), total or max(1, line.get("step", 0)), f"loss {loss:.4f}" if loss else "")

    with watch_metrics(storage, join(stage_uri, METRICS_FILE), on_record):
        # (the stage's own clock at the start of its lines is dropped: the run log has its own)
        code, stdout, tail = run_process(command, stage_environment(settings), lambda line: logger.info("%s", CLOCK.sub("", line)))
    if code == 2:  # the CLI's exit code for input or settings it refused: a retry would be refused too
        raise StageError(failure_line(stage, code, tail))
    if code != 0:
        raise StageFailed(failure_line(stage, code, tail))
    pointer = latest_pointer(storage, stage_uri)
    if pointer is None or not pointer.get("final"):
        step = pointer["step"] if pointer else 0
        raise StageFailed(f"stage {stage.name} stopped at step {step} of {total} before its end; rerun to resume it")
    record.update(status="done", finished_at=now(), summary=summary_of(stdout),
                  checkpoint=join(stage_uri, "checkpoints", pointer["path"]), steps=pointer["step"])
    write_record(storage, stage_uri, record)
    artifacts = publish_stage(stage, stage_uri, storage, "trained")
    logger.info("%s: done, final checkpoint %s", stage.name, record["checkpoint"])
    return {**_result(record, storage, stage_uri), "status": "trained", "artifacts": artifacts}


def _result(record: dict[str, Any], storage: Storage, stage_uri: str) -> dict[str, Any]:
    pointer = latest_pointer(storage, stage_uri) or {}
    return {"stage": record.get("stage"), "uri": stage_uri, "fingerprint": record.get("fingerprint"),
            "checkpoint": join(stage_uri, "checkpoints", pointer["path"]) if pointer else None,
            "steps": pointer.get("step"), "summary": record.get("summary", {}), "attempts": record.get("attempts")}


@task(name="chat-data")
def chat_data_stage(docs: str, output: str, config_file: str | None, overrides: dict[str, Any] | None,
                    seed: int = 0) -> dict[str, Any]:
    """SFT conversations, preference pairs and prompts made from the run's documents (skipped
    when made before from the same documents); the search index is built next to the docs."""
    from flows.report import funnel_rows, funnel_text
    from tasks.chat.from_docs import build_chat_data
    from tasks.search.build import build_index
    from tasks.search.index import SearchIndex

    settings = run_settings(config_file, overrides)
    storage = Storage(settings.storage)
    build_index(docs, settings=settings.search, storage=storage)
    index = SearchIndex.open(docs, storage, settings.search)
    made = build_chat_data(storage, docs, output, index, seed=seed, search_k=settings.search.top_k,
                           search_chars=settings.search.result_chars)
    _logger().info("chat data in %s (%s):\n%s", output, "up to date" if made["up_to_date"] else "made",
                   funnel_text({"steps": made["funnel"]}))
    if in_prefect_run():
        from prefect.artifacts import create_table_artifact

        rows = [{"file": entry["uri"].rsplit("/", 1)[-1], "kind": kind, "rows": entry["rows"]}
                for kind, entries in made["files"].items() for entry in entries]
        made["artifacts"] = {
            "chat-data": str(create_table_artifact(rows, key="chat-data", description=f"chat data made from {docs}")),
            "chat-data-funnel": str(create_table_artifact(funnel_rows({"steps": made["funnel"]}), key="chat-data-funnel",
                                                          description="what the chat data left out, and why")),
        }
    return made


def resolve_inputs(output: str, tokens: str | None, sft_data: list[str] | None, pairs: list[str] | None,
                   prompts: list[str] | None) -> dict[str, Any]:
    return {"tokens": tokens or join(output, TOKENS), "sft_data": sft_data, "pairs": pairs, "prompts": prompts}


def known_inputs(storage: Storage, output: str, given: dict[str, Any]) -> dict[str, Any]:
    """The inputs as far as they are known before the flow runs: those given, and those an
    earlier run made into `<output>/chat-data/` (for the checks of `preflight`)."""
    from tasks.chat.from_docs import read_manifest

    inputs = resolve_inputs(output, given.get("tokens"), given.get("sft_data"), given.get("pairs"), given.get("prompts"))
    made = read_manifest(storage, join(output, CHAT_DATA))
    for name, key in MADE_INPUTS.items():
        if not inputs.get(name) and made:
            inputs[name] = [entry["uri"] for entry in made["files"][key]]
    return inputs


def missing_made_inputs(stages: list[Stage], inputs: dict[str, Any]) -> list[str]:
    """The inputs these stages need that were not given and that the chat-data task makes."""
    needed = {name for stage in stages for name in stage.inputs.values()}
    return sorted(name for name in needed if name in MADE_INPUTS and not inputs.get(name))


@flow(name="train", log_prints=True)
def train(
    output: str,
    tokens: str | None = None,
    sft_data: list[str] | None = None,
    pairs: list[str] | None = None,
    prompts: list[str] | None = None,
    docs: str | None = None,
    rl: str = "ppo",
    until: str | None = None,
    preset: str | None = None,
    processes: int | None = None,
    force: bool = False,
    retries: int = 1,
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    report: bool = True,
) -> dict[str, Any]:
    """Train the pipeline's stages in order into `<output>/<stage>/` (see the module docstring)."""
    settings = run_settings(config_file, overrides, preset)  # a bad setting, or a credential, fails here in one line
    stages = pipeline(rl, until)
    check_commands(stages)
    inputs = resolve_inputs(output, tokens, sft_data, pairs, prompts)
    made = None
    results: dict[str, Any] = {}
    with hold_lease(Storage(settings.storage), output, settings.jobs.lease_seconds, "train"):
        if missing_made_inputs(stages, inputs):
            made = chat_data_stage(docs or join(output, DEDUPED), join(output, CHAT_DATA), config_file, overrides)
            for name in missing_made_inputs(stages, inputs):
                inputs[name] = [entry["uri"] for entry in made["files"][MADE_INPUTS[name]]]
        for stage in stages:
            launch = run_stage.with_options(name=stage.name, task_run_name=stage.name, retries=retries, retry_delay_seconds=5)
            results[stage.name] = launch(stage.name, output, inputs, processes, force, preset, config_file, overrides)
    summary = {"output": output, "rl": rl, "stages": results, "last": stages[-1].name, "chat_data": made, "inputs": inputs}
    if report:
        from flows.report_card import publish_report_card

        summary["report"] = publish_report_card(output, summary, config_file, overrides)
    return summary
