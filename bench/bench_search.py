"""Search index speed and size, side by side on the same documents: ours (tantivy, through
tasks/search) against bm25s, the other maintained BM25 library, one core each.

    .venv/bin/python bench/bench_search.py [--copies 4] [--queries 300] [--repeat 3]

Documents: the real text under ../shared/realdata (C4 and Wikipedia paragraphs, news pages,
OpenAssistant messages in a dozen languages), `--copies` times over with the copies told apart
by a marker word, written as a docs stage. Queries: 6 words from the middle of randomly chosen
documents (seeded); "found@5" is the share whose document (any of its copies, which are the
same text) comes back in the top 5.

What each side's time includes:
- build, ours: `build_index` end to end: reading the Parquet parts, analysing, indexing with
  positions, storing the text compressed, committing, merging, hashing the files, publishing.
- build, bm25s: tokenizing (its default regex, English stop words, as in its README), building
  the sparse matrix and saving it with the corpus (so that, like ours, it can return the text).
  The Parquet reading is not counted for bm25s: its texts are handed over in memory.
- query, ours: `SearchIndex.search`: parsing, BM25 top-k over the text, fetching the
  stored documents and making their snippets. "ours, no snippet" is the raw tantivy top-k.
- query, bm25s: tokenizing the query and `retrieve` of the top-k ids from the in-memory
  matrix (no text fetched, no snippet).
Prints a Markdown table for BENCHMARKS.md and one JSON line with every number.
"""

from __future__ import annotations

import os

for variable in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[variable] = "1"  # one core for both sides, before the libraries load

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bm25s  # noqa: E402

from infra.settings import SearchSettings  # noqa: E402
from infra.storage import Storage  # noqa: E402
from tasks.formats.docs import docs_uri, documents_to_table, write_table  # noqa: E402
from tasks.pipeline import Document  # noqa: E402
from tasks.search.build import build_index  # noqa: E402
from tasks.search.index import SearchIndex  # noqa: E402

REALDATA = ROOT.parent / "shared" / "realdata"


def real_texts() -> list[tuple[str, str]]:
    """(url, text) of every real document we have, paragraphs of long articles apart."""
    texts = []
    for number, line in enumerate((REALDATA / "pretrain_text" / "llama_factory_c4_demo.jsonl").read_text().splitlines()):
        texts.append((f"c4/{number}", json.loads(line)["text"]))
    for number, line in enumerate((REALDATA / "pretrain_text" / "llama_factory_wiki_demo.txt").read_text().splitlines()):
        for part, chunk in enumerate(range(0, len(line), 2_000)):
            texts.append((f"wiki/{number}/{part}", line[chunk : chunk + 2_000]))
    truth = json.loads((REALDATA / "extraction_ref" / "scrapinghub_aeb" / "ground-truth.json").read_text())
    texts += [(page["url"], page["articleBody"]) for page in truth.values()]

    def messages(node):
        yield node
        for reply in node.get("replies") or []:
            yield from messages(reply)

    for line in (REALDATA / "chat" / "oasst2_openpaws" / "oasst2_filtered.jsonl").read_text().splitlines():
        for message in messages(json.loads(line)["prompt"]):
            texts.append((f"oasst/{message['message_id']}", message["text"]))
    return [(url, text) for url, text in texts if text.strip()]


def best(run, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def folder_bytes(path: str) -> int:
    return sum(file.stat().st_size for file in Path(path).rglob("*") if file.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()

    base = real_texts()
    docs = [
        Document(id=f"{copy}-{number}", url=f"{url}#{copy}", text=f"{text}\ncopy{copy}", language="")
        for copy in range(args.copies)
        for number, (url, text) in enumerate(base)
    ]
    texts = [doc.text for doc in docs]
    megabytes = sum(len(text.encode()) for text in texts) / 1e6
    rng = random.Random(0)
    queries = []
    for doc in rng.sample(docs, args.queries):
        words = doc.text.split()
        middle = len(words) // 2
        queries.append((doc.id, " ".join(words[max(0, middle - 3) : middle + 3])))

    work = tempfile.mkdtemp(prefix="bench-search-")
    try:
        storage = Storage()
        stage = os.path.join(work, "stage")
        for part in range(0, len(docs), 5_000):
            write_table(storage, docs_uri(stage, f"{part:06d}"), documents_to_table(docs[part : part + 5_000]), 1_000)
        settings = SearchSettings(writer_threads=1, writer_memory_mb=128, cache_dir=os.path.join(work, "cache"))

        def ours_build() -> None:
            shutil.rmtree(os.path.join(stage, "search-index"), ignore_errors=True)
            build_index(stage, settings=settings, storage=storage)

        def bm25s_build() -> None:
            shutil.rmtree(os.path.join(work, "bm25s"), ignore_errors=True)
            retriever = bm25s.BM25()
            retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
            retriever.save(os.path.join(work, "bm25s"), corpus=[{"id": doc.id, "text": doc.text} for doc in docs], show_progress=False)

        ours_build_s, bm25s_build_s = best(ours_build, args.repeat), best(bm25s_build, args.repeat)
        ours_size = folder_bytes(os.path.join(stage, "search-index"))
        bm25s_size = folder_bytes(os.path.join(work, "bm25s"))

        index = SearchIndex.open(stage, storage, settings)
        searcher, tantivy_index = index._searcher, index._index
        retriever = bm25s.BM25.load(os.path.join(work, "bm25s"))
        ids = [doc.id for doc in docs]

        def ours_query() -> None:
            for _, query in queries:
                index.search(query, args.k)

        def ours_raw_query() -> None:
            for _, query in queries:
                text = " ".join(query.lower().replace(":", " ").replace('"', " ").split())
                searcher.search(tantivy_index.parse_query_lenient(text, ["text"])[0], args.k)

        def bm25s_query() -> None:
            for _, query in queries:
                retriever.retrieve(bm25s.tokenize([query], stopwords="en", show_progress=False), k=args.k, show_progress=False, n_threads=1)

        ours_q, raw_q, bm25s_q = (best(run, args.repeat) / len(queries) for run in (ours_query, ours_raw_query, bm25s_query))
        def original(doc_id: str) -> str:
            return doc_id.split("-", 1)[1]

        ours_found = sum(
            original(doc_id) in {original(hit.doc_id) for hit in index.search(query, args.k)} for doc_id, query in queries
        ) / len(queries)
        bm25s_found = 0
        for doc_id, query in queries:
            found, _ = retriever.retrieve(bm25s.tokenize([query], stopwords="en", show_progress=False), k=args.k, show_progress=False, n_threads=1)
            bm25s_found += original(doc_id) in {original(ids[number]) for number in found[0]}
        bm25s_found /= len(queries)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "documents": len(docs), "megabytes": round(megabytes, 2), "queries": len(queries), "k": args.k,
        "ours_build_s": round(ours_build_s, 3), "bm25s_build_s": round(bm25s_build_s, 3),
        "ours_index_mb": round(ours_size / 1e6, 2), "bm25s_index_mb": round(bm25s_size / 1e6, 2),
        "ours_query_ms": round(ours_q * 1e3, 3), "ours_raw_query_ms": round(raw_q * 1e3, 3), "bm25s_query_ms": round(bm25s_q * 1e3, 3),
        "ours_found_at_k": round(ours_found, 3), "bm25s_found_at_k": round(bm25s_found, 3),
    }
    print(f"{len(docs):,} documents, {megabytes:.1f} MB of text, {len(queries)} queries, k={args.k}, one core, best of {args.repeat}\n")
    print("| | build s | MB/s | index MB | query ms | found@k |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| **ours (tantivy)** | {ours_build_s:.2f} | {megabytes / ours_build_s:.1f} | {ours_size / 1e6:.1f} | {ours_q * 1e3:.2f} | {ours_found:.3f} |")
    print(f"| ours, no snippet | | | | {raw_q * 1e3:.2f} | |")
    print(f"| bm25s | {bm25s_build_s:.2f} | {megabytes / bm25s_build_s:.1f} | {bm25s_size / 1e6:.1f} | {bm25s_q * 1e3:.2f} | {bm25s_found:.3f} |")
    print(f"| ratio (bm25s / ours) | {bm25s_build_s / ours_build_s:.2f} | | {bm25s_size / ours_size:.2f} | {bm25s_q / ours_q:.2f} | |")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
