"""Peak memory of one filter unit (one Spark task's work) as its WARC grows: it must stay flat.

    .venv/bin/python bench/bench_filter_memory.py --sizes-mb 100 300 1000
    .venv/bin/python bench/bench_filter_memory.py --sizes-mb 100 300 --code /tmp/old-checkout   # another version

Each size is a WARC made by concatenating copies of `../shared/realdata/warc/realpages.warc.gz`
(real pages, one gzip member per record, so copies concatenate into a valid WARC), written to a
temporary folder and deleted afterwards (never committed). Each point runs `filter_warc` (the
exact function a Spark task runs for one WARC: reader, the full default chain, Parquet writers)
in a fresh Python process with `filter.keep_dropped` on, so both the kept and the dropped writers
are measured, and reports that process's own peak resident memory (ru_maxrss). The figure includes the
interpreter, the fastText model and the blocklist (the first row shows that floor); what matters
is how it moves with the input size. `--code` runs the same measurement against another checkout
(e.g. `git archive <commit> | tar -x -C DIR`), for a before/after in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL_WARC = ROOT.parent / "shared" / "realdata" / "warc" / "realpages.warc.gz"

UNIT = """
import json, resource, sys, time
from infra.settings import load_settings
from tasks.jobs.filter import filter_warc
settings = load_settings(overrides={"filter": {"keep_dropped": True}})
started = time.perf_counter()
stats = filter_warc(sys.argv[1], "bench", sys.argv[2], settings)
funnel = stats["funnel"]
print(json.dumps({"records": funnel["read_warc"]["docs_in"], "kept": list(funnel.values())[-1]["docs_out"],
                  "seconds": round(time.perf_counter() - started, 1),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def make_warc(path: Path, size_mb: float) -> int:
    """Concatenate copies of the real WARC up to about `size_mb`; return the copies written."""
    data = REAL_WARC.read_bytes()
    copies = max(1, round(size_mb * 1e6 / len(data)))
    with path.open("wb") as out:
        for _ in range(copies):
            out.write(data)
    return copies


def measure(code: Path, warc: Path, output: Path) -> dict:
    """Run one unit in a fresh process; its counts, seconds and its own peak RSS in MB."""
    done = subprocess.run(
        [sys.executable, "-c", UNIT, str(warc), str(output)], cwd=code, env={**os.environ, "PYTHONPATH": str(code)},
        capture_output=True, text=True, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose filter_warc to measure")
    args = parser.parse_args()
    sizes = sorted(args.sizes_mb)
    print(f"code: {args.code}")
    print(f"{'WARC MB':>8} {'copies':>6} {'records':>8} {'kept':>6} {'seconds':>8} {'peak RSS MB':>12}")
    with tempfile.TemporaryDirectory(prefix="crawl2chat-bench-") as work:
        for size in sizes:
            warc = Path(work) / "big.warc.gz"
            copies = make_warc(warc, size)
            point = measure(args.code, warc, Path(work) / f"out-{size:g}")
            actual_mb = warc.stat().st_size / 1e6
            print(f"{actual_mb:>8.0f} {copies:>6} {point['records']:>8} {point['kept']:>6} "
                  f"{point['seconds']:>8.1f} {point['peak_rss_mb']:>12}", flush=True)
            warc.unlink()


if __name__ == "__main__":
    main()
