"""Screenshots of the Prefect UI for the README, taken by headless Chromium in this script.

    .venv/bin/python docs/screenshots.py [--steps 100] [--keep DIR]

Starts a local stack of its own (infra/services.py: a Prefect server, SeaweedFS and a worker on
free loopback ports, state in a temporary folder), runs the main command on the generated sample
crawl against it (`crawl2chat run --until <last stage this installation has>`), and, with the
system's Chromium (`/usr/bin/chromium`, never a downloaded browser) driven by Playwright:

- while the pretraining stage runs, opens the `train` run's page (its Artifacts tab) and the
  `pretrain-progress` artifact, once the progress is part way: docs/prefect-progress.png,
  docs/prefect-progress-run.png;
- when the run has finished, the crawl-to-chat run's page with its task graph and artifacts:
  docs/prefect-run.png; and its report card, whole page: docs/prefect-report-card.png.

It fails unless the report card shows its images (every <img> on the page decoded, with a
width), which is the proof that the inline PNGs reach the browser. The stack is stopped at
the end; `--keep DIR` keeps the run's output there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flows.stages import PIPELINES, installed_commands  # noqa: E402
from infra.seaweed import free_port  # noqa: E402
from infra.services import Stack  # noqa: E402
from infra.settings import SeaweedSettings, ServicesSettings  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1000}
MAX_HEIGHT = 6000  # pixels: a report card taller than this is cut


def api(stack: Stack, method: str, path: str, body: object = None) -> object:
    request = urllib.request.Request(stack.api_url + path, method=method, headers={"content-type": "application/json"},
                                     data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def latest_run(stack: Stack, flow: str) -> dict | None:
    runs = api(stack, "POST", "/flow_runs/filter", {"flows": {"name": {"any_": [flow]}}, "sort": "START_TIME_DESC", "limit": 1})
    return runs[0] if runs else None


def artifact(stack: Stack, key: str) -> dict | None:
    found = api(stack, "POST", "/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1})
    return found[0] if found else None


def last_stage() -> str:
    """The last stage of the ppo pipeline whose command this installation has."""
    have = installed_commands()
    stages = [name for name in PIPELINES["ppo"] if name in have]
    return stages[-1]


def shoot(page, url: str, path: Path, tab: str | None = None, whole: bool = False) -> None:
    page.set_viewport_size(VIEWPORT)
    page.goto(url, wait_until="networkidle", timeout=120_000)
    if tab:  # the run page's tabs are buttons or tabs depending on the UI's version
        page.get_by_text(tab, exact=True).first.click(timeout=60_000)
        page.wait_for_load_state("networkidle")
    page.wait_for_timeout(2500)  # the graph and the markdown render after the data arrives
    if whole:  # the UI scrolls inside its own panel, not the page: make the window as tall as that panel's content
        height = page.evaluate("Math.max(...Array.from(document.querySelectorAll('*'), e => e.scrollHeight))")
        page.set_viewport_size({"width": VIEWPORT["width"], "height": min(int(height) + 40, MAX_HEIGHT)})
        page.wait_for_timeout(1000)
    page.screenshot(path=str(path))
    print(f"wrote {path.relative_to(ROOT)}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="pretraining steps (default: the main command's)")
    parser.add_argument("--keep", help="keep the run's output in this folder")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the stack

    state = Path(tempfile.mkdtemp(prefix="crawl2chat-screenshots-"))
    services = ServicesSettings(state_dir=str(state / "stack"), prefect_port=free_port(), cpu_worker_health_port=free_port(),
                                gpu_worker=False, start_timeout_seconds=300)
    stack = Stack(services, SeaweedSettings(data_dir=str(state / "stack" / "seaweedfs"), s3_port=free_port()))
    output = Path(args.keep) if args.keep else state / "run"
    command = [sys.executable, "-m", "flows.cli", "run", "--output", str(output), "--until", last_stage()]
    if args.steps:
        command += ["--set", f"train.max_steps={args.steps}"]
    docs = ROOT / "docs"
    try:
        stack.up()
        env = {**os.environ, "PREFECT_API_URL": stack.api_url, "PYTHONPATH": str(ROOT)}
        print(f"Prefect UI {stack.ui_url}; running: {' '.join(command[2:])}", flush=True)
        run = subprocess.Popen(command, cwd=ROOT, env=env)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport=VIEWPORT)
            progress_shot = False
            while run.poll() is None:
                time.sleep(2)
                progress = artifact(stack, "pretrain-progress")
                if not progress_shot and progress and 25 <= (progress["data"] or 0) <= 90:
                    train_run = latest_run(stack, "train")
                    shoot(page, f"{stack.ui_url}/artifacts/artifact/{progress['id']}", docs / "prefect-progress.png")
                    shoot(page, f"{stack.ui_url}/runs/flow-run/{train_run['id']}", docs / "prefect-progress-run.png", tab="Artifacts")
                    # A live run page polls and redraws: on 2 cores its renderer took most of a
                    # core from the training stages it was waiting for.
                    page.goto("about:blank")
                    progress_shot = True
            if run.returncode != 0:
                raise SystemExit(f"the run failed with exit code {run.returncode}")
            if not progress_shot:
                raise SystemExit("the pretraining progress was never seen part way: use more --steps")
            chat_run = latest_run(stack, "crawl-to-chat")
            shoot(page, f"{stack.ui_url}/runs/flow-run/{chat_run['id']}", docs / "prefect-run.png", tab="Artifacts")
            card = artifact(stack, "report-card")
            shoot(page, f"{stack.ui_url}/artifacts/artifact/{card['id']}", docs / "prefect-report-card.png", whole=True)
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.src.slice(0, 22), e.naturalWidth])")
            shown = [width for src, width in images if src.startswith("data:image/png")]
            print(f"report card images: {len(shown)} inline PNGs, widths {shown}")
            if not shown or not all(shown):
                raise SystemExit("the report card's images did not render in the browser")
            browser.close()
    finally:
        stack.down()
        if not args.keep:
            shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
