"""FineWeb's own document rules (Penedo et al. 2024, section 3.6), run after the C4 rules.

Three measures over the lines of a document, each a drop when it passes its threshold (strictly,
as our spec states the recipe; datatrove also drops a document sitting exactly on a threshold):

- `fineweb_line_punct_ratio`: the fraction of lines ending in terminal punctuation
  (. ' " ! ? as FineWeb counts them) is below `line_punct_threshold`;
- `fineweb_short_line_ratio`: the fraction of lines of at most `short_line_length` characters is
  above `short_line_threshold`;
- `fineweb_char_dup_ratio`: the characters of lines repeating an earlier line, over the
  characters of all lines, are above `char_dup_lines_threshold`.

- `fineweb_list_ratio` (FineWeb-2's, off unless `max_newline_word_ratio` is set, as it is for
  the languages FineWeb-2 gives a value): newlines per word above it (lists, menus, tables).

Lines are non-empty and stripped. In the chain this filter sees the text C4 has just rewritten,
which holds only such lines, so the measures are FineWeb's; run on other text, it keeps blank
lines from counting as short lines without punctuation. A document with no line is dropped by the
first rule. Thresholds apply as they do to the document's language (FineWeb-2's values for de,
fr, es, zh and ja, which also switch the short-line rule off), and the terminal punctuation is
that of every script (`text.TERMINAL_PUNCTUATION`), so a Chinese line ending in "。" counts.
"""

from __future__ import annotations

from collections import Counter

from infra.settings import FineWebSettings, TextSettings
from tasks.filters.quality.languages import LanguageRules
from tasks.filters.quality.text import TERMINAL_PUNCTUATION, duplicates, lines
from tasks.pipeline import Document, Step


class FineWebFilter(Step):
    name = "fineweb"

    def __init__(self, settings: FineWebSettings | None = None, text: TextSettings | None = None) -> None:
        self.settings = settings or FineWebSettings()
        self._readings = LanguageRules(self.settings, text)

    def apply(self, doc: Document, counts: Counter | None = None) -> str | None:
        reading = self._readings(doc.language)
        s = reading.settings
        if not s.enabled:
            return None
        text_lines = lines(doc.text)
        if not text_lines:
            return "fineweb_line_punct_ratio"
        n_lines = len(text_lines)
        if sum(1 for line in text_lines if line.endswith(TERMINAL_PUNCTUATION)) / n_lines < s.line_punct_threshold:
            return "fineweb_line_punct_ratio"
        if sum(1 for line in text_lines if len(line) <= s.short_line_length) / n_lines > s.short_line_threshold:
            return "fineweb_short_line_ratio"
        _, duplicated_chars = duplicates(text_lines)
        if duplicated_chars / sum(map(len, text_lines)) > s.char_dup_lines_threshold:
            return "fineweb_char_dup_ratio"
        if s.max_newline_word_ratio is not None:
            n_words = len(reading.words.split(doc.text))  # at least one: there is a line
            if doc.text.count("\n") / n_words > s.max_newline_word_ratio:
                return "fineweb_list_ratio"
        return None

