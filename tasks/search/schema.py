"""What the index holds per document, and how text is cut into search terms.

Fields: `id`, `url`, `language` and `title` are stored as they are; `text` is analyzed,
positions included (so a query word that is several terms, like a CJK word, matches as a
phrase), and stored for snippets. The docs stage keeps no HTML title, so a document's title is
the first line of its text, cut at a word boundary: shown with a hit, not searched apart, since
it is already part of the text (searching it too counted those words twice, and measurably
ranked pages with short first lines too high: bench/bench_search.py).

The analyzer is multilingual without a dictionary: scripts written without spaces between
words (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar) give one term per character, as
Lucene's standard analyzer does for CJK; every other script gives runs of letters, marks and
digits. Terms are lowercased and folded to ASCII where a folding exists (café = cafe), and
terms over 40 bytes (base64, hashes) are dropped. Queries go through the same analyzer.
"""

from __future__ import annotations

import tantivy

SCHEMA_VERSION = 1  # part of every index's fingerprint: a change here forces a rebuild
ANALYZER = "crawl2chat_words"
FIELDS = ("id", "url", "title", "text", "language")
SEARCHED_FIELDS = ["text"]

_ONE_TERM_PER_CHARACTER = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\x{30FC}"
WORD_PATTERN = rf"[{_ONE_TERM_PER_CHARACTER}]|[[\p{{L}}\p{{M}}\p{{N}}]--[{_ONE_TERM_PER_CHARACTER}]]+"


def analyzer() -> tantivy.TextAnalyzer:
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(WORD_PATTERN))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
        .filter(tantivy.Filter.remove_long(40))
        .build()
    )


def build_schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    for name in ("id", "url", "language", "title"):
        builder.add_text_field(name, stored=True, tokenizer_name="raw")
    builder.add_text_field("text", stored=True, tokenizer_name=ANALYZER)
    return builder.build()


def register_analyzer(index: tantivy.Index) -> None:
    """Custom analyzers are not saved with an index: register ours on every open."""
    index.register_tokenizer(ANALYZER, analyzer())


def title_of(text: str, max_chars: int) -> str:
    """The first non-empty line of `text`, cut at a word boundary to `max_chars`."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if len(line) <= max_chars:
        return line
    cut = line[: max_chars - 1].rsplit(" ", 1)[0] or line[: max_chars - 1]
    return cut.rstrip() + "…"
