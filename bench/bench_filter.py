"""Crawl-to-documents throughput, side by side with datatrove's FineWeb pipeline in one run.

Same WARC files, one core each, one after the other in this run, so the figure that matters is
the ratio. Contenders:
  - datatrove: WarcReader -> URLFilter -> Trafilatura -> LanguageFilter -> Gopher repetition and
    quality -> C4 -> FineWeb -> PII -> JSONL (run in the bench-only venv, see bench/README.md);
  - crawl2chat, the chain in one process (the code a Spark task runs), with resiliparse (our
    default) and with trafilatura (to show where the difference comes from);
  - crawl2chat end to end: the Spark job on local[1], output Parquet and stats included.
Both sides use the full UT1 blocklist and the same lid.176 model.

    .venv/bin/python bench/bench_filter.py [--copies 2] [--warc PATH ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra.settings import Settings, load_settings  # noqa: E402
from tasks.filters.blocklist import import_blocklist  # noqa: E402
from tasks.formats.docs import unit_key  # noqa: E402
from tasks.jobs.filter import filter_warc, summarize  # noqa: E402
from tasks.pipeline import Funnel  # noqa: E402

REALDATA = ROOT.parent / "shared" / "realdata"
BENCH_PYTHON = ROOT / ".bench" / "venv" / "bin" / "python"


def corpus(args, workdir: Path) -> list[Path]:
    """`--copies` copies of the given WARCs (default: the real pages of ../shared) in one folder."""
    sources = [Path(p) for p in args.warc] or [REALDATA / "warc" / "realpages.warc.gz"]
    folder = workdir / "warcs"
    folder.mkdir()
    copies = []
    for copy in range(args.copies):
        for source in sources:
            target = folder / f"{copy:02d}-{source.name}"
            shutil.copyfile(source, target)
            copies.append(target)
    return copies


def run_datatrove(warc_dir: Path, workdir: Path) -> dict:
    lid = REALDATA / "lid" / "lid.176.ftz"
    out = subprocess.run(
        [str(BENCH_PYTHON), str(ROOT / "bench" / "peers" / "datatrove_filter.py"), str(warc_dir), str(lid), str(workdir / "datatrove")],
        capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(workdir)},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_chain_in_process(warcs: list[Path], settings: Settings, output: Path) -> dict:
    funnel = Funnel()
    started = time.perf_counter()
    for warc in warcs:
        result = filter_warc(str(warc), unit_key(str(warc)), str(output), settings)
        funnel.merge(Funnel.from_dict(result["funnel"]))
    seconds = time.perf_counter() - started
    totals = summarize(funnel)
    return {"records": totals["records_in"], "docs_out": totals["docs_out"], "seconds": seconds, "steps": funnel.to_dict()}


def run_spark_job(warcs: list[Path], settings: Settings, output: Path) -> dict:
    from infra.spark import spark_session
    from tasks.jobs.filter import run_filter

    started = time.perf_counter()
    spark = spark_session(settings.spark)
    startup = time.perf_counter() - started
    stats = run_filter(spark, [str(w) for w in warcs], str(output), settings)
    seconds = time.perf_counter() - started
    spark.stop()
    # The session start (JVM, ~10 s) is paid once per run, whatever the crawl's size; it is
    # included in `seconds` and reported on its own so that larger runs can be extrapolated.
    return {"records": stats["totals"]["records_in"], "docs_out": stats["totals"]["docs_out"], "seconds": seconds,
            "spark_startup_seconds": startup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--warc", action="append", default=[])
    parser.add_argument("--skip-datatrove", action="store_true")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-filter-") as tmp:
        workdir = Path(tmp)
        warcs = corpus(args, workdir)
        started = time.perf_counter()
        ut1 = REALDATA / "blocklist" / "datatrove" / "url_filterblacklistsv0_3_0.tar.gz"
        import_blocklist(str(ut1), str(workdir / "ut1"))
        print(f"UT1 import: {time.perf_counter() - started:.1f} s")
        base = {"spark": {"master": "local[1]"}, "filter": {"url": {"blocklist_path": str(workdir / "ut1")}}}
        resiliparse = load_settings(overrides=base)
        trafilatura = load_settings(overrides={**base, "filter": {**base["filter"], "extraction": {"extractor": "trafilatura"}}})

        results = {}
        if not args.skip_datatrove:
            results["datatrove (trafilatura)"] = run_datatrove(warcs[0].parent, workdir)
        results["crawl2chat chain (resiliparse)"] = run_chain_in_process(warcs, resiliparse, workdir / "ours-r")
        results["crawl2chat chain (trafilatura)"] = run_chain_in_process(warcs, trafilatura, workdir / "ours-t")
        results["crawl2chat Spark job local[1] (resiliparse)"] = run_spark_job(warcs, resiliparse, workdir / "ours-spark")

    peer = results.get("datatrove (trafilatura)")
    print(f"\n{len(warcs)} WARC file(s), one core each\n")
    print(f"{'contender':<46}{'records':>8}{'kept':>7}{'seconds':>9}{'rec/s/core':>12}{'vs datatrove':>14}")
    for name, result in results.items():
        rate = result["records"] / result["seconds"]
        ratio = f"{rate / (peer['records'] / peer['seconds']):.1f}x" if peer else "-"
        print(f"{name:<46}{result['records']:>8}{result['docs_out']:>7}{result['seconds']:>9.1f}{rate:>12.1f}{ratio:>14}")
        if "spark_startup_seconds" in result:
            print(f"{'  of which Spark session start':<46}{'':>15}{result['spark_startup_seconds']:>9.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
