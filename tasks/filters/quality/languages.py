"""How the quality steps read each language: its words, and its settings resolved once.

Words are whitespace tokens (`text.words`) in every language written with spaces between words.
A language written without them (Chinese, Japanese) names a segmenter in
`TextSettings.segmenters`, and each whitespace token is cut further into that language's words:
jieba-rs (the `rjieba` binding) for Chinese and Sudachi (split mode A, the core dictionary) for
Japanese, the segmenters FineWeb-2's per-language thresholds were measured with (datatrove runs
jieba and Sudachi under spaCy). Both ship their dictionaries inside the installed package, so
nothing is downloaded and nothing is written at run time, and each loads once per process, on
the first document of its language. Since segmentation only ever splits whitespace tokens,
segmented words are never fewer nor longer than whitespace tokens; C4 uses that to segment only
the lines whitespace words would condemn.

`LanguageRules` gives each step its rules for a document's language: the step's settings as they
apply to that language (`PerLanguage.for_language`), the words to count, and whatever the step
derives from them (a stop-word regex, n-gram limits), built on the first document of the
language and kept. A document without a language (language ID off) is read as
`TextSettings.default_language`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from infra.settings import PerLanguage, TextSettings
from tasks.filters.quality.text import words as whitespace_words

# Sudachi refuses inputs over 49,149 UTF-8 bytes; 12,000 characters are at most 48,000 bytes.
_SUDACHI_MAX_CHARS = 12_000


def _jieba() -> Callable[[str], list[str]]:
    import rjieba

    return functools.partial(rjieba.cut, hmm=True)  # jieba's default mode: dictionary + HMM for unknown words


def _sudachi() -> Callable[[str], list[str]]:
    from sudachipy import Dictionary, SplitMode

    # Split mode A, the shortest units, as datatrove's spaCy Japanese uses; only surfaces are
    # read, so no other morpheme field is loaded.
    tokenizer = Dictionary(dict="core").tokenizer(mode=SplitMode.A, fields=set())

    def segment(token: str) -> list[str]:
        return [
            morpheme.surface()
            for start in range(0, len(token), _SUDACHI_MAX_CHARS)
            for morpheme in tokenizer.tokenize(token[start : start + _SUDACHI_MAX_CHARS])
        ]

    return segment


_SEGMENTERS = {"jieba": _jieba, "sudachi": _sudachi}


@functools.cache
def segmenter(name: str) -> Callable[[str], list[str]]:
    """The word segmenter called `name`, loaded once per process."""
    return _SEGMENTERS[name]()


class Words:
    """The words of a text in one language: whitespace tokens, maybe cut by a segmenter."""

    def __init__(self, segmenter_name: str | None = None) -> None:
        self.segmented = segmenter_name is not None
        self._segmenter_name = segmenter_name
        # The steps of a chain read the same text one after the other: segment it once.
        self.split = functools.lru_cache(maxsize=4)(self._segment) if self.segmented else whitespace_words

    def _segment(self, text: str) -> tuple[str, ...]:
        segment = segmenter(self._segmenter_name)
        # A segmenter may return spaces, or pieces holding them: split those too.
        return tuple(piece for token in whitespace_words(text) for word in segment(token) for piece in word.split())


@functools.cache
def words_for(segmenter_name: str | None) -> Words:
    """One `Words` per segmenter and process, so that every step shares its cache."""
    return Words(segmenter_name)


R = TypeVar("R")
S = TypeVar("S", bound=PerLanguage)


@dataclass(frozen=True)
class Reading(Generic[S]):
    """What a step needs to judge one language: its settings and how to split its words."""

    language: str
    settings: S
    words: Words


class LanguageRules(Generic[S, R]):
    """A step's rules for each language, built by `build(reading)` on first use and kept
    (without `build`, the rules are the `Reading` itself).

    The rules of the default language and of every language with an entry in the settings are
    built at once, so that a bad threshold fails when the step is made, not on a document.
    """

    def __init__(
        self, settings: S, text: TextSettings | None, build: Callable[[Reading[S]], R] | None = None
    ) -> None:
        self._settings = settings
        self._text = text or TextSettings()
        self._build = build or (lambda reading: reading)
        self._rules: dict[str, R] = {}
        for language in [self._text.default_language, *settings.languages]:
            self(language)

    def __call__(self, language: str | None) -> R:
        language = language or self._text.default_language
        rules = self._rules.get(language)
        if rules is None:
            words = words_for(self._text.segmenters.get(language))
            reading = Reading(language, self._settings.for_language(language), words)
            rules = self._rules[language] = self._build(reading)
        return rules
