"""The search tool's index: BM25 full-text search over the pipeline's own documents.

    crawl2chat index build --input <docs stage> [--output <uri>]   # default <stage>/search-index/
    index = SearchIndex.open(uri)                                   # local or s3://
    hits = index.search("eiffel tower completed", k=3)              # [Hit(url, title, snippet, score, ...)]
    text = format_results(hits, max_chars=1200)                     # what goes between <|result_start|> and <|result_end|>

The engine is tantivy (Rust, Lucene-like: BM25 scoring, compressed on-disk segments that are
memory-mapped, stored fields and a snippet generator), through its maintained Python binding.
Modules: schema.py (fields and the multilingual word analyzer), layout.py (how an index is
stored and committed), build.py (docs stage -> index, resumable), index.py (open, cache, search),
results.py (hits -> the text the model reads).
"""
