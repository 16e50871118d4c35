"""Crawl-to-documents throughput, side by side with datatrove's FineWeb pipeline in one run.

Same WARC files, one core each, one contender after the other in this run, so the figures that
matter are the ratios, and each ratio compares the same extractor on both sides:
  - trafilatura: datatrove's Trafilatura step against our chain with trafilatura, the same
    trafilatura version (the bench venv is given ours, see below) called with the same options;
  - resiliparse: our chain (our default) against datatrove with the same resiliparse call
    plugged into its extractor API (datatrove has no resiliparse extractor of its own; see
    bench/peers/datatrove_filter.py);
  - and our Spark job on local[1] end to end (resiliparse), output Parquet and stats included.
Both sides run URL filter (the full UT1 list) -> extraction -> lid.176 (en >= 0.65) -> Gopher
repetition and quality -> C4 -> FineWeb -> PII -> output file, on the same lid.176 model.

What each side's time includes: each chain run is a fresh process, timed (wall clock, and CPU
time of the process and its finished children, which a busy machine disturbs far less) from the
first document to the last output byte: reading the WARCs, every step, and writing the output (our
Parquet part per WARC; datatrove's gzipped JSONL plus its stats and logs). Both pay their
one-off setup inside that time: datatrove builds Python sets of the 4.6M blocked domains from its
bundled tarball and loads spaCy (its word tokenizer) and fastText; we memory-map the imported
block list (the import itself, `crawl2chat blocklist load`, is done once before and reported on
its own) and load fastText. So the bench also runs every contender on the first copy alone:
`steady` is the time of the copies after it ((T(all) - T(first)) / records), which leaves the
setup out on both sides. Per step: each side's own wall-clock timer (our funnel's seconds, kept to
the millisecond per WARC file; datatrove's track_time) over the documents that step saw, one-off
setup included (datatrove's block list in url_filter, spaCy in gopher_repetition); on a busy
machine these are indicative only. Extraction gets a generous per-page timeout on both sides
(`--extraction-timeout`, 30 s), so that no page is lost to a busy machine on one side only.

The peer runs in a bench-only virtualenv (datatrove pins an older trafilatura and its own
fastText module, which must not enter ours):

    python3.11 -m venv .bench/venv
    .bench/venv/bin/pip install "datatrove[processing]" spacy faust-cchardet python-magic warcio \\
        orjson lxml_html_clean resiliparse
    .bench/venv/bin/pip install "trafilatura==$(.venv/bin/python -c 'import trafilatura; print(trafilatura.__version__)')"
    .venv/bin/python bench/bench_filter.py [--copies 2] [--warc PATH ...] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
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
# The chain's steps in order, in both pipelines (datatrove's stats list its steps in this order).
STEPS = ["read_warc", "url_filter", "extract", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb", "pii"]


def corpus(args, workdir: Path) -> tuple[Path, Path]:
    """Folders of the first copy alone and of all `--copies` copies of the WARCs (default: ../shared's real pages)."""
    sources = [Path(p) for p in args.warc] or [REALDATA / "warc" / "realpages.warc.gz"]
    first, everything = workdir / "warcs-first", workdir / "warcs-all"
    first.mkdir()
    everything.mkdir()
    for copy in range(args.copies):
        for source in sources:
            target = everything / f"{copy:02d}-{source.name}"
            shutil.copyfile(source, target)
            if copy == 0:
                shutil.copyfile(source, first / target.name)
    return first, everything


def run_datatrove(warc_dir: Path, workdir: Path, extractor: str, timeout: float) -> dict:
    lid = REALDATA / "lid" / "lid.176.ftz"
    home = workdir / "home"  # a fresh HOME per run: each run unpacks and loads its lists itself
    home.mkdir(parents=True)
    out = subprocess.run(
        [str(BENCH_PYTHON), str(ROOT / "bench" / "peers" / "datatrove_filter.py"), str(warc_dir), str(lid),
         str(workdir / "out"), extractor, str(timeout)],
        capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(home)},
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    step_seconds, step_docs = list(result["step_seconds"].values()), list(result["step_docs_in"].values())
    result["per_step"] = {name: (step_seconds[i], step_docs[i]) for i, name in enumerate(STEPS)}
    return result


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the same measure the peer takes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_chain_in_process(warcs: list[Path], settings: Settings, output: Path) -> dict:
    """Our chain as a Spark task runs it (filter_warc per WARC), timed inside this process."""
    funnel = Funnel()
    started, cpu_started = time.perf_counter(), cpu_seconds()
    for warc in warcs:
        result = filter_warc(str(warc), unit_key(str(warc)), str(output), settings)
        funnel.merge(Funnel.from_dict(result["funnel"]))
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    totals = summarize(funnel)
    per_step = {name: (funnel[name].seconds, funnel[name].docs_in) for name in STEPS}
    return {"records": totals["records_in"], "docs_out": totals["docs_out"], "seconds": seconds, "cpu_seconds": cpu,
            "per_step": per_step}


def run_chain(warc_dir: Path, settings: Settings, output: Path) -> dict:
    """`run_chain_in_process` in a fresh interpreter, so that it pays its setup as datatrove does."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(run_chain_in_process, (sorted(warc_dir.iterdir()), settings, output))


def run_spark_job(warc_dir: Path, settings: Settings, output: Path) -> dict:
    from infra.spark import spark_session
    from tasks.jobs.filter import run_filter

    started = time.perf_counter()
    spark = spark_session(settings.spark)
    startup = time.perf_counter() - started
    stats = run_filter(spark, [str(w) for w in sorted(warc_dir.iterdir())], str(output), settings)
    seconds = time.perf_counter() - started
    spark.stop()
    # The session start (JVM, ~10 s) is paid once per run, whatever the crawl's size; it is
    # included in `seconds` and reported on its own so that larger runs can be extrapolated.
    return {"records": stats["totals"]["records_in"], "docs_out": stats["totals"]["docs_out"], "seconds": seconds,
            "spark_startup_seconds": startup}


def with_steady_rate(first: dict, everything: dict) -> dict:
    """`everything`, plus its rates over the copies after the first (setup left out), in records
    per wall-clock and per CPU second."""
    extra_records = everything["records"] - first["records"]
    for clock in ("seconds", "cpu_seconds"):
        extra = everything[clock] - first[clock]
        everything[f"first_copy_{clock}"] = first[clock]
        everything[f"steady_rate_{clock}"] = extra_records / extra if extra_records and extra > 0 else None
    return everything


def _rate(result: dict, clock: str, steady: bool) -> float | None:
    if steady:
        return result.get(f"steady_rate_{clock}")
    return result["records"] / result[clock] if result.get(clock) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--warc", action="append", default=[])
    parser.add_argument("--skip-datatrove", action="store_true")
    # Generous on both sides: a page that times out only because the machine is busy would
    # leave one side with less work to do. (The pipeline's own default is 1 s.)
    parser.add_argument("--extraction-timeout", type=float, default=30.0)
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    if args.copies < 2:
        parser.error("--copies must be at least 2: the steady rate is measured on the copies after the first")

    with tempfile.TemporaryDirectory(prefix="bench-filter-") as tmp:
        workdir = Path(tmp)
        first, everything = corpus(args, workdir)
        n_warcs = len(list(everything.iterdir()))
        started = time.perf_counter()
        ut1 = REALDATA / "blocklist" / "datatrove" / "url_filterblacklistsv0_3_0.tar.gz"
        import_blocklist(str(ut1), str(workdir / "ut1"))
        print(f"UT1 import (once, before our runs; not in their times): {time.perf_counter() - started:.1f} s")
        base = {"spark": {"master": "local[1]"}, "filter": {"url": {"blocklist_path": str(workdir / "ut1")}}}
        settings = {
            extractor: load_settings(overrides={**base, "filter": {**base["filter"], "extraction": {
                "extractor": extractor, "timeout_seconds": args.extraction_timeout}}})
            for extractor in ("trafilatura", "resiliparse")
        }

        results, peers = {}, {}
        for extractor in ("trafilatura", "resiliparse"):
            if not args.skip_datatrove:
                name = f"datatrove ({extractor})"
                runs = [
                    run_datatrove(folder, workdir / f"dt-{extractor}-{folder.name}", extractor, args.extraction_timeout)
                    for folder in (first, everything)
                ]
                results[name] = peers[extractor] = with_steady_rate(*runs)
            runs = [
                run_chain(folder, settings[extractor], workdir / f"ours-{extractor}-{folder.name}")
                for folder in (first, everything)
            ]
            results[f"crawl2chat chain ({extractor})"] = with_steady_rate(*runs)
        results["crawl2chat Spark job local[1] (resiliparse)"] = run_spark_job(everything, settings["resiliparse"], workdir / "spark")

    print(f"\n{n_warcs} WARC file(s), one core each; rates in records per second (wall clock / CPU time)")
    print("ratios: ours over datatrove with the same extractor, on CPU time (wall clock in brackets)\n")
    print(f"{'contender':<46}{'records':>8}{'kept':>6}{'wall s':>8}{'CPU s':>8}{'rec/s':>14}{'steady rec/s':>15}"
          f"{'ratio':>15}{'steady ratio':>15}")
    for name, result in results.items():
        extractor = "trafilatura" if "trafilatura" in name else "resiliparse"
        peer = None if name.startswith("datatrove") else peers.get(extractor)
        cells = []
        for steady in (False, True):
            wall, cpu = _rate(result, "seconds", steady), _rate(result, "cpu_seconds", steady)
            cells.append(f"{wall or 0:.1f} / {cpu:.1f}" if cpu else (f"{wall:.1f} / -" if wall else "-"))
        for steady in (False, True):
            ours = [_rate(result, clock, steady) for clock in ("cpu_seconds", "seconds")]
            theirs = [_rate(peer, clock, steady) for clock in ("cpu_seconds", "seconds")] if peer else [None, None]
            ratios = [f"{a / b:.1f}x" if a and b else "-" for a, b in zip(ours, theirs)]
            cells.append(f"{ratios[0]} ({ratios[1]})" if peer else "-")
        cpu_text = f"{result['cpu_seconds']:.1f}" if "cpu_seconds" in result else "-"
        print(f"{name:<46}{result['records']:>8}{result['docs_out']:>6}{result['seconds']:>8.1f}{cpu_text:>8}"
              f"{cells[0]:>14}{cells[1]:>15}{cells[2]:>15}{cells[3]:>15}")
        if "spark_startup_seconds" in result:
            print(f"{'  of which Spark session start':<60}{result['spark_startup_seconds']:>8.1f}")

    print("\nper step, all copies: microseconds (wall clock) per document the step saw, one-off setup included")
    chains = {name: result for name, result in results.items() if "per_step" in result}
    print(f"{'step':<20}" + "".join(f"{name:>32}" for name in chains))
    for step in STEPS[1:]:
        cells = []
        for result in chains.values():
            seconds, docs = result["per_step"][step]
            cells.append(f"{1e6 * seconds / docs:>24.0f} ({docs:>4})" if docs else f"{'-':>32}")
        print(f"{step:<20}" + "".join(cells))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
