"""Gopher's document filters (Rae et al. 2021, "Scaling Language Models", Appendix A), as two steps.

`GopherRepetitionFilter` drops documents that repeat themselves (Table A1):
- duplicate paragraphs / lines: the fraction of paragraphs (lines) that repeat an earlier one, and
  the fraction of characters in them (the first occurrence is the original and does not count);
- top n-gram (n = 2..4): the characters in all occurrences of the most frequent n-gram, if it
  occurs more than once (ties: the longest);
- duplicated n-grams (n = 5..10): the characters of the words covered by any n-gram that occurs
  more than once, all occurrences included, each word counted once however many n-grams cover it.
Paragraphs are split on blank lines; character fractions of the paragraph and line rules are
relative to the characters of all non-empty paragraphs or lines, those of the n-gram rules to
the characters of all words.

`GopherQualityFilter` drops documents that do not look like prose: a word count outside
50..100,000, a mean word length outside 3..10, more '#' or ellipses than a tenth of the words,
more than 90% of lines starting with a bullet, more than 30% of lines ending in an ellipsis, fewer
than 80% of words holding a letter, or fewer than two of the stop words (any case). Here words
are whitespace tokens that are not pure punctuation ("-", "|", "..." are not words), with
attached punctuation counted in their length.

Thresholds come from the settings (defaults are the paper's) as they apply to the document's
language (`languages.py`: FineWeb-2's per-language values and stop words ship for de, fr, es,
zh and ja); a measure exactly at its threshold passes. A stop word is a whole word in any case:
not glued to a letter on a side where it ends in one, so French "l'" counts in "l'homme". A
language without stop words of its own skips that rule, counted as `no_stop_words:<language>`.
Words are whitespace tokens (see `text.py`), cut by a segmenter for Chinese and Japanese, whose
stop words are then looked for among those words: no general tokenizer, which is where the time
of other implementations goes.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass

from infra.settings import GopherQualitySettings, GopherRepetitionSettings, TextSettings
from tasks.filters.quality.languages import LanguageRules, Reading
from tasks.filters.quality.text import NGramRepetition, duplicates, lines, paragraphs
from tasks.pipeline import Document, Step


@dataclass(frozen=True)
class _RepetitionRules:
    reading: Reading[GopherRepetitionSettings]
    max_n: int  # the largest n-gram size looked at
    last_top_n: int  # the largest top-n-gram size
    dup_floor: dict[int, float]  # the lowest duplicated-n-gram threshold among sizes >= n (see apply)

    @classmethod
    def build(cls, reading: Reading[GopherRepetitionSettings]) -> "_RepetitionRules":
        s = reading.settings
        sizes = [*s.top_n_grams, *s.dup_n_grams]
        if any(n < 2 for n in sizes):
            raise ValueError(f"n-gram sizes must be at least 2, got {sorted(sizes)} ({reading.language})")
        floor = {n: min(t for m, t in s.dup_n_grams.items() if m >= n) for n in s.dup_n_grams}
        return cls(reading, max(sizes, default=0), max(s.top_n_grams, default=0), floor)


class GopherRepetitionFilter(Step):
    name = "gopher_repetition"

    def __init__(self, settings: GopherRepetitionSettings | None = None, text: TextSettings | None = None) -> None:
        self.settings = settings or GopherRepetitionSettings()
        self._rules = LanguageRules(self.settings, text, _RepetitionRules.build)

    def apply(self, doc: Document, counts: Counter | None = None) -> str | None:
        rules = self._rules(doc.language)
        s = rules.reading.settings
        if not s.enabled:
            return None
        # Paragraphs first: a repeated paragraph also repeats its lines, and should be named as such.
        reason = _duplicate_reason("para", paragraphs(doc.text), s.dup_para_frac, s.dup_para_char_frac)
        reason = reason or _duplicate_reason("line", lines(doc.text), s.dup_line_frac, s.dup_line_char_frac)
        if reason or not rules.max_n:
            return reason
        repetition = NGramRepetition(rules.reading.words.split(doc.text))
        total = repetition.total_chars
        if total == 0:
            return None  # nothing to repeat; the quality filter drops empty documents
        for n, starts, occurrences in repetition.levels(rules.max_n):
            if n in s.top_n_grams and repetition.top_chars(n, starts, occurrences) / total > s.top_n_grams[n]:
                return f"top_{n}_gram"
            if n in s.dup_n_grams:
                covered = repetition.covered_chars(n, starts, occurrences) / total
                if covered > s.dup_n_grams[n]:
                    return f"duplicated_{n}_n_grams"
                # Covered characters only shrink as n grows (a repeated (n+1)-gram is two
                # overlapping repeated n-grams), so below every later threshold means done.
                if n >= rules.last_top_n and covered <= rules.dup_floor[n]:
                    break
        return None


def _duplicate_reason(kind: str, items: list[str], max_fraction: float, max_char_fraction: float) -> str | None:
    """Drop reason when too many of `items` (lines or paragraphs) repeat an earlier one."""
    if not items:
        return None
    repeated, repeated_chars = duplicates(items)
    if repeated / len(items) > max_fraction:
        return f"dup_{kind}_frac"
    if repeated_chars / sum(map(len, items)) > max_char_fraction:
        return f"dup_{kind}_char_frac"
    return None


_LETTER = re.compile(r"[^\W\d_]")  # a word character that is neither a digit nor "_"
_WORD_CHAR = re.compile(r"\w")
# What a bulleted line starts with: the Unicode bullets and the ASCII stand-ins "-" and "*".
BULLETS = (
    "•", "‣", "◦", "⁃", "⁌", "⁍", "‧", "∙", "▪", "▫", "●", "○", "■", "□", "►", "▸", "➢", "✓", "✔", "-", "–", "*",
)
ELLIPSES = ("...", "…")


@dataclass(frozen=True)
class _QualityRules:
    reading: Reading[GopherQualitySettings]
    stop_word: re.Pattern | None  # None: this language has no stop words, the rule is skipped

    @classmethod
    def build(cls, reading: Reading[GopherQualitySettings]) -> "_QualityRules":
        # Longest first, so that no stop word hides another; whole words in any case ("The"
        # counts as "the"), with no word character next to an end that is a word character
        # ("l'" may be followed by a letter, "the" may not).
        alternatives = "|".join(
            ("(?<!\\w)" if _WORD_CHAR.match(word[:1]) else "")
            + re.escape(word)
            + ("(?!\\w)" if _WORD_CHAR.match(word[-1:]) else "")
            for word in sorted(reading.settings.stop_words, key=len, reverse=True)
        )
        return cls(reading, re.compile(alternatives, re.IGNORECASE) if alternatives else None)


class GopherQualityFilter(Step):
    name = "gopher_quality"

    def __init__(self, settings: GopherQualitySettings | None = None, text: TextSettings | None = None) -> None:
        self.settings = settings or GopherQualitySettings()
        self._rules = LanguageRules(self.settings, text, _QualityRules.build)

    def apply(self, doc: Document, counts: Counter | None = None) -> str | None:
        rules = self._rules(doc.language)
        s = rules.reading.settings
        if not s.enabled:
            return None
        text = doc.text
        tokens = rules.reading.words.split(text)
        # Most tokens are plain words, which str.isalpha settles at C speed; the regexes only see
        # the few others ("end.", "2021", "--").
        letterless = [token for token in tokens if not token.isalpha() and not _LETTER.search(token)]
        punctuation = [token for token in letterless if not _WORD_CHAR.search(token)]
        n_words = len(tokens) - len(punctuation)
        if n_words < s.min_doc_words or n_words == 0:
            return "gopher_short_doc"
        if n_words > s.max_doc_words:
            return "gopher_long_doc"

        mean_length = (sum(map(len, tokens)) - sum(map(len, punctuation))) / n_words
        if mean_length < s.min_avg_word_length:
            return "gopher_below_avg_word_len"
        if mean_length > s.max_avg_word_length:
            return "gopher_above_avg_word_len"

        symbols = max(text.count("#"), text.count("...") + text.count("…"))
        if symbols / n_words > s.max_symbol_word_ratio:
            return "gopher_symbol_word_ratio"

        text_lines = lines(text)  # not empty: there are words
        if sum(1 for line in text_lines if line.startswith(BULLETS)) / len(text_lines) > s.max_bullet_lines_ratio:
            return "gopher_bullet_lines"
        if sum(1 for line in text_lines if line.endswith(ELLIPSES)) / len(text_lines) > s.max_ellipsis_lines_ratio:
            return "gopher_ellipsis_lines"

        words_without_letters = len(letterless) - len(punctuation)
        if (n_words - words_without_letters) / n_words < s.max_non_alpha_words_ratio:
            return "gopher_alpha_words"

        if s.min_stop_words > 0:
            if rules.stop_word is None:
                if counts is not None:
                    counts[f"no_stop_words:{rules.reading.language}"] += 1
            else:
                # Segmented words are looked up as words: joined by spaces, each is a whole word.
                searched = " ".join(tokens) if rules.reading.words.segmented else text
                found = sum(1 for _ in itertools.islice(rules.stop_word.finditer(searched), s.min_stop_words))
                if found < s.min_stop_words:  # counting stops at the minimum: usually within the first line
                    return "gopher_stop_words"
        return None
