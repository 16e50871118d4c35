"""Peer run for bench_filter.py: datatrove's FineWeb filtering pipeline on the same WARC files.

Runs in the bench-only virtualenv that has datatrove (it must not share our environment: it pins
other versions of trafilatura and its own fastText module). Offline by construction: the
language model is the local lid.176.ftz, the URL lists are datatrove's bundled ones, and
tldextract uses its bundled suffix snapshot. Prints one JSON line: records, docs out, seconds.

    python datatrove_filter.py WARC_DIR LID_MODEL OUT_DIR
"""

import json
import sys
import time

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.extractors import Trafilatura
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


def main(warc_dir: str, lid_model: str, out_dir: str) -> None:
    url_filter = URLFilter()
    url_filter.tldextractor = TLDExtract(suffix_list_urls=())  # no network here
    language_filter = LanguageFilter(languages=["en"], language_threshold=0.65)
    language_filter.model.MODEL_URL = lid_model  # the local lid.176.ftz (datatrove copies it into its cache)
    pipeline = [
        WarcReader(warc_dir, glob_pattern="*.warc.gz"),
        url_filter,
        Trafilatura(favour_precision=True, timeout=1),
        language_filter,
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False),
        FineWebQualityFilter(),
        PIIFormatter(),
        JsonlWriter(f"{out_dir}/output"),
    ]
    executor = LocalPipelineExecutor(pipeline=pipeline, tasks=1, workers=1, logging_dir=f"{out_dir}/logs")
    started = time.perf_counter()
    stats = executor.run()
    seconds = time.perf_counter() - started
    per_step = [{key: str(value) for key, value in step.stats.items()} for step in stats.stats]
    leading_int = lambda text: int(str(text).split()[0]) if text else 0  # "377 [377.00/input_file]" -> 377
    print(json.dumps({
        "records": leading_int(per_step[0].get("documents")),
        "docs_out": leading_int(per_step[-1].get("total")),
        "seconds": seconds,
        "steps": per_step,
    }))


if __name__ == "__main__":
    main(*sys.argv[1:4])
