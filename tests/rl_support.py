"""Helpers the preference-learning tests share: reading a run's metrics.jsonl, and SIGTERM at a step.

`sigterm_at_step(monkeypatch, k)` makes the process send itself SIGTERM right after optimizer
step k, the way a scheduler preempts a job: the shared loop's own handler then checkpoints and
stops, and a later run with `resume` continues. Only the moment is chosen by the test; the
stopping and resuming are the real ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

from model.trainer import Trainer


def metrics(run: Path | str) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def sigterm_at_step(monkeypatch, step: int):
    original = Trainer._train_step

    def step_then_signal(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if self.step == step:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_train_step", step_then_signal)
        yield


def one_line_error(capsys, argv: list[str], *fragments: str) -> None:
    """`crawl2chat ARGV` (its real parser and handlers, in this process) exits 2 with one line."""
    from flows.cli import main

    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crawl2chat: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
