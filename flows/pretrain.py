"""Prefect flow of the training half: pretraining as a flow run, its progress lines in the run's logs.

    pretrain_flow(tokens="s3://bucket/tokens", output="s3://bucket/base", preset="cpu-small")

The flow wraps `tasks.train.pretrain.pretrain` and hides no logic: it resolves the settings,
forwards the `model` and `tasks` loggers (the trainer's progress, eval and checkpoint lines) to
the flow run's logs in the Prefect UI, and publishes the summary as a table artifact. It always
resumes, so a retried or re-run flow continues from the newest checkpoint instead of starting
over. Multi-GPU runs go through `torchrun ... -m flows.cli pretrain` instead: one Prefect flow
run per process would make no sense.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging.handlers import APILogHandler

from infra.settings import load_settings
from tasks.train.pretrain import pretrain


@contextlib.contextmanager
def run_logs(*names: str) -> Iterator[None]:
    """Send INFO and above of the named loggers to the current flow run's logs."""
    handler = APILogHandler(level=logging.INFO)
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        handler.flush()  # sent before the run is reported finished
        for logger, level in zip(loggers, levels):
            logger.removeHandler(handler)
            logger.setLevel(level)


def summary_markdown(summary: dict[str, Any]) -> str:
    rows = [f"| {key} | {value:,.4f} |" if isinstance(value, float) else f"| {key} | {value} |"
            for key, value in summary.items()]
    return "\n".join(["| | |", "|---|---|", *rows])


@flow(name="pretrain")
def pretrain_flow(
    tokens: str,
    output: str,
    preset: str | None = None,
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Pretrain on the shards under `tokens`; checkpoints, metrics.jsonl and samples under `output`."""
    settings = load_settings(config_file, overrides, preset=preset)
    with run_logs("model", "tasks"):
        summary = pretrain(settings, tokens, output, resume=True)
    create_markdown_artifact(key="pretrain-summary", markdown=summary_markdown(summary), description=f"pretrain -> {output}")
    return summary
