"""Peer run for bench_filter.py: datatrove's FineWeb filtering pipeline on the same WARC files.

Runs in the bench-only virtualenv that has datatrove (it must not share our environment: it pins
other versions of trafilatura and its own fastText module; bench_filter.py's docstring says how
the venv is made, with our trafilatura version). Offline by construction: the language model is
the local lid.176.ftz, the URL lists are datatrove's bundled ones, and tldextract uses its
bundled suffix snapshot. Prints one JSON line: records, docs out, wall and CPU seconds, per-step
stats.

The extractor is the one named on the command line, called exactly as crawl2chat calls it:
- `trafilatura`: datatrove's own Trafilatura step, with crawl2chat's options (favour precision,
  no comments, no deduplication; tables on, links and images off are trafilatura's defaults);
- `resiliparse`: datatrove has no resiliparse extractor, so `ResiliparseExtractor` below
  plugs the same resiliparse call crawl2chat makes into datatrove's `BaseExtractor` (which
  still runs it in datatrove's sandbox process, as every datatrove extractor is run).

    python datatrove_filter.py WARC_DIR LID_MODEL OUT_DIR {trafilatura,resiliparse} TIMEOUT_SECONDS
"""

import json
import resource
import sys
import time

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.extractors.base import BaseExtractor
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
    LanguageFilter,
    URLFilter,
)
from datatrove.pipeline.formatters import PIIFormatter
from datatrove.pipeline.readers import WarcReader
from datatrove.pipeline.writers import JsonlWriter
from tldextract import TLDExtract


class ResiliparseExtractor(BaseExtractor):
    """crawl2chat's resiliparse call (tasks/filters/extract.py) as a datatrove extractor."""

    name = "resiliparse"

    def __init__(self, timeout: float = 1):
        super().__init__(timeout)

    def extract(self, text: str) -> str:
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.html import HTMLTree

        tree = HTMLTree.parse(text)
        main_content = tree.document is None or tree.document.query_selector(" ".join(["div"] * 256)) is None
        return extract_plain_text(
            tree, main_content=main_content, preserve_formatting=True, list_bullets=True,
            alt_texts=False, links=False, form_fields=False, noscript=False, comments=False, post_meta=False,
        )


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (datatrove's extraction sandbox)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(warc_dir: str, lid_model: str, out_dir: str, extractor: str, timeout: str) -> None:
    url_filter = URLFilter()
    url_filter.tldextractor = TLDExtract(suffix_list_urls=())  # no network here
    language_filter = LanguageFilter(languages=["en"], language_threshold=0.65)
    language_filter.model.MODEL_URL = lid_model  # the local lid.176.ftz (datatrove copies it into its cache)
    extract = (
        Trafilatura(favour_precision=True, timeout=float(timeout), deduplicate=False)
        if extractor == "trafilatura"
        else ResiliparseExtractor(timeout=float(timeout))
    )
    pipeline = [
        WarcReader(warc_dir, glob_pattern="*.warc.gz"),
        url_filter,
        extract,
        language_filter,
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False),
        FineWebQualityFilter(),
        PIIFormatter(),
        JsonlWriter(f"{out_dir}/output"),
    ]
    executor = LocalPipelineExecutor(pipeline=pipeline, tasks=1, workers=1, logging_dir=f"{out_dir}/logs")
    started, cpu_started = time.perf_counter(), cpu_seconds()
    stats = executor.run()
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    per_step = [{key: str(value) for key, value in step.stats.items()} for step in stats.stats]
    leading_int = lambda text: int(str(text).split()[0]) if text else 0  # "377 [377.00/input_file]" -> 377
    print(json.dumps({
        "records": leading_int(per_step[0].get("documents")),
        "docs_out": leading_int(per_step[-1].get("total")),
        "seconds": seconds,
        "cpu_seconds": cpu,
        # Seconds each step spent on its own work (datatrove's track_time), and documents in.
        "step_seconds": {step.name: step.time_stats.total for step in stats.stats},
        "step_docs_in": {step.name: leading_int(step.stats.get("total") or step.stats.get("documents")) for step in stats.stats},
        "steps": per_step,
    }))


if __name__ == "__main__":
    main(*sys.argv[1:6])
