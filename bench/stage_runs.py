"""Resumable stage runs for the quality benches (bench_sft_quality, bench_rlhf_quality).

A bench trains several stages one after another; a rerun must skip a stage whose final
checkpoint is there, continue one that stopped, and never feed a half-trained stage to the next.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from infra.storage import Storage
from model.checkpoint import latest_pointer


def records(run: Path) -> list[dict]:
    """The run's metrics.jsonl, one dict per line."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def finished(run: Path, steps: int) -> bool:
    """Whether `run` holds its final checkpoint at step `steps`."""
    pointer = latest_pointer(Storage(), str(run))
    return bool(pointer and pointer["final"] and pointer["step"] == steps)


def trained(run: Path, steps: int, train: Callable[[], object]) -> None:
    """Run `train()` unless `run` already holds its final checkpoint; a stage stopped early (a
    SIGTERM makes the trainers checkpoint and return) ends the bench instead of feeding the next."""
    if not finished(run, steps):
        train()
    if not finished(run, steps):
        raise SystemExit(f"{run} stopped before step {steps}: rerun the bench to resume it")
