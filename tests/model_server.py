"""`crawl2chat serve-model` as a real process for the tests that talk to it over HTTP.

    with served_model(["--checkpoint", run, "--model-name", "judge"], log_path) as (url, process):
        httpx.get(f"{url}/health")

The server binds a free loopback port (`--port 0`) and prints its address on its first line;
the context waits for /health, and stops the process (terminate, then kill) on the way out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def served_model(args: Sequence[str], log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    command = [sys.executable, "-m", "flows.cli", "serve-model", "--port", "0", *args]
    with open(log, "w") as errors:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=errors, text=True,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        line = process.stdout.readline()
        found = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        assert found, f"the server did not start: {line!r}\n{log.read_text()}"
        url = found.group(1)
        for _ in range(200):
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
