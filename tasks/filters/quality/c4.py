"""C4's cleaning rules (Raffel et al. 2020, section 2.2), the way FineWeb ran them.

C4 works line by line and rewrites the document with the lines it keeps. Each non-empty line,
stripped, goes through these rules in this order (C4's, which FineWeb's datatrove kept):

1. a word longer than `max_word_length` characters drops the line;
2. Wikipedia-style citation markers ("[1]", "[edit]", "[citation needed]") are removed;
3. optionally, a line not ending in terminal punctuation (or ending in "...") is dropped: C4 did
   this, FineWeb switched it off because its own filter judges punctuation per document;
4. fewer than `min_words_per_line` words drop the line;
5. "lorem ipsum" drops the whole document;
6. a line mentioning "javascript" is dropped;
7. a curly bracket "{" drops the whole document (code, not prose);
8. cookie and terms-of-use boilerplate lines are dropped.

So "lorem ipsum" and "{" only condemn a document when they sit on a line that survived rules 1-4.
The document is then dropped if no line is left, or if the kept lines hold fewer than
`min_sentences` sentences (counted with a regex, see `text.count_sentences`; CJK full stops end
sentences too). `counts` gets, for each document the step keeps, the lines it removed by rule and
the citation markers it deleted.

Words are whitespace tokens; in a language written without spaces (`languages.py`) a line's
words are its segmented words, so a line of Chinese is not one long "word". Segmented words are
never fewer nor longer than whitespace tokens, so only a line that whitespace tokens would drop
by rule 1 or 4 is segmented. The settings apply as they do to the document's language.
"""

from __future__ import annotations

import re
from collections import Counter

from infra.settings import C4Settings, TextSettings
from tasks.filters.quality.languages import LanguageRules
from tasks.filters.quality.text import TERMINAL_PUNCTUATION, count_sentences, lines
from tasks.pipeline import Document, Step

_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")
COOKIE_PHRASES = ("cookie policy", "uses cookies", "use of cookies", "use cookies")


class C4Filter(Step):
    name = "c4"

    def __init__(self, settings: C4Settings | None = None, text: TextSettings | None = None) -> None:
        self.settings = settings or C4Settings()
        self._readings = LanguageRules(self.settings, text)

    def apply(self, doc: Document, counts: Counter | None = None) -> str | None:
        reading = self._readings(doc.language)
        s = reading.settings
        if not s.enabled:
            return None
        segment = reading.words.split if reading.words.segmented else None
        removed: Counter = Counter()
        kept: list[str] = []
        sentences = 0
        for line in lines(doc.text):
            line_words = line.split()
            # Only a line longer than the limit can hold a word longer than the limit.
            if (
                len(line) > s.max_word_length
                and max(map(len, line_words)) > s.max_word_length
                and (segment is None or max(map(len, segment(line))) > s.max_word_length)
            ):
                removed["c4_line_long_word"] += 1
                continue
            if s.remove_citations and "[" in line:
                line, n_citations = _CITATION.subn("", line)
                if n_citations:
                    line = line.strip()  # "Text [1]" must not keep a trailing space
                    line_words = line.split()
                    removed["c4_citations"] += n_citations
            if s.filter_no_terminal_punct and (not line.endswith(TERMINAL_PUNCTUATION) or line.endswith("...")):
                removed["c4_line_no_terminal_punct"] += 1
                continue
            if len(line_words) < s.min_words_per_line and (
                segment is None or len(segment(line)) < s.min_words_per_line
            ):
                removed["c4_line_too_few_words"] += 1
                continue
            lowered = line.lower()
            if s.filter_lorem_ipsum and "lorem ipsum" in lowered:
                return "c4_lorem_ipsum"
            if s.filter_javascript and "javascript" in lowered:
                removed["c4_line_javascript"] += 1
                continue
            if s.filter_curly_bracket and "{" in line:
                return "c4_curly_bracket"
            if s.filter_policy and _is_policy_line(lowered):
                removed["c4_line_policy"] += 1
                continue
            kept.append(line)
            if sentences < s.min_sentences:  # counting further would not change the verdict
                sentences += count_sentences(line, up_to=s.min_sentences - sentences)

        if not kept:
            return "c4_empty_after_line_filter"
        if sentences < s.min_sentences:
            return "c4_too_few_sentences"
        doc.text = "\n".join(kept)
        if counts is not None:
            counts.update(+removed)  # unary + leaves out zero counts (a line with no citation)
        return None



def _is_policy_line(lowered: str) -> bool:
    """Whether a lower-cased line is terms-of-use, privacy or cookie boilerplate."""
    if "terms of use" in lowered or "privacy policy" in lowered:
        return True
    # Every cookie phrase holds "cookie", so most lines are settled by this one search.
    return "cookie" in lowered and any(phrase in lowered for phrase in COOKIE_PHRASES)
