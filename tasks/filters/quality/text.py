"""The text measurements every quality filter shares: words, lines, paragraphs, sentences, n-grams.

One place, so that Gopher, C4 and FineWeb agree on what a word or a line is, and so each can stay
a short list of thresholds. Everything here is built for speed on CPython: words are
whitespace-separated tokens from `str.split` (C speed, and what the Gopher rules were written
for; no spaCy or NLTK; languages written without spaces cut them further, see `languages.py`),
lines and paragraphs are stripped and never empty, and repeated n-grams are found with a few
numpy sorts per n-gram size instead of building millions of string tuples.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import numpy as np

# What C4 and FineWeb accept as the end of a line of prose: FineWeb's . ! ? and closing quotes,
# and the sentence ends of other scripts (CJK full-width stop, exclamation and question marks
# and closing corner brackets; Arabic, Urdu, Devanagari, Armenian, Ethiopic, Burmese, Khmer and
# Tibetan ends), so that a line of Chinese prose ending in "。" counts as one in any language.
TERMINAL_PUNCTUATION = (
    ".", "!", "?", '"', "'", "。", "！", "？", "．", "｡", "」", "』", "؟", "۔", "।", "॥", "։", "።", "፧", "။", "។", "།",
)

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")  # two or more newlines, blank-looking lines included
# A sentence ends in . ! or ? (or another script's end), maybe followed by closing quotes or
# brackets, then space or the end. CJK text puts no space after its full-width ends, so those end
# a sentence wherever they stand. Abbreviations ("e.g. this") count as ends too; that is the
# price of not running a tokenizer.
_SENTENCE_END = re.compile(r"[.!?؟۔।॥։።፧။។།]+[\"'”’)\]]*(?=\s|$)|[。！？｡]+[」』”’）)\]]*")


def words(text: str) -> list[str]:
    """Whitespace-separated tokens; punctuation stays attached ("end." is one word)."""
    return text.split()


def lines(text: str) -> list[str]:
    """The non-empty lines of `text`, stripped of surrounding whitespace."""
    return [line for line in map(str.strip, text.splitlines()) if line]


def paragraphs(text: str) -> list[str]:
    """The non-empty paragraphs of `text` (split on blank lines), stripped."""
    return [paragraph for paragraph in map(str.strip, _PARAGRAPH_BREAK.split(text)) if paragraph]


def count_sentences(line: str, up_to: int | None = None) -> int:
    """How many sentences `line` holds, counting no further than `up_to`.

    A sentence is a non-blank piece ended by a sentence end; a last piece without end
    punctuation counts as one too.
    """
    count = start = 0
    for end in _SENTENCE_END.finditer(line):
        if end.start() > start and not line[start : end.start()].isspace():
            count += 1
            if count == up_to:
                return count
        start = end.end()
    if line[start:].strip():
        count += 1
    return count


def duplicates(items: list[str]) -> tuple[int, int]:
    """(how many, how many characters) of `items` repeat an earlier item.

    The first occurrence of an item is the original, so a text with every line written twice
    has half of its lines duplicated, not all of them.
    """
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


class NGramRepetition:
    """How much of a word sequence sits in repeated n-grams, for n = 2, 3, 4, ...

    `levels()` walks the n-gram sizes in order. Each n-gram gets an exact integer key (the rank of
    its (n-1)-gram prefix combined with the id of its last word), one numpy sort groups equal
    keys, and only positions whose n-gram repeats are carried to n+1: an (n+1)-gram can only
    repeat where its n-gram prefix does. Clean text runs out of repeated n-grams after a few
    sizes, so most of the work is the first level. Characters are word characters (spaces
    between words are not counted), so fractions are relative to `total_chars`.
    """

    def __init__(self, words: list[str]) -> None:
        self.n_words = len(words)
        vocabulary: dict[str, int] = {}
        # setdefault hands each new word the next counter value: ids < n_words without a Python loop.
        self._ids = np.array(list(map(vocabulary.setdefault, words, itertools.count())), np.int64)
        self._lengths = np.array(list(map(len, words)), np.int64)
        self._prefix = np.zeros(self.n_words + 1, np.int64)  # _prefix[i] = characters of words[:i]
        np.cumsum(self._lengths, out=self._prefix[1:])
        self.total_chars = int(self._prefix[-1])

    def levels(self, max_n: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield (n, starts, counts) for n = 2, 3, ... up to `max_n`.

        `starts` are the positions whose n-gram may occur more than once (any other n-gram occurs
        exactly once) and `counts[i]` is how often the n-gram at `starts[i]` occurs. The walk ends
        after the first size at which nothing repeats: sizes not yielded have no repeated n-gram.
        """
        starts = np.arange(self.n_words - 1)
        ranks = self._ids[:-1]  # for n = 2 the "rank" of the 1-gram prefix is its word id
        n = 2
        while starts.size and n <= max_n:
            # ranks < n_words and ids < n_words, so this key is exact (no hashing, no collisions).
            keys = ranks * (self.n_words + 1) + self._ids[starts + n - 1]
            counts, ranks = _group(keys)
            yield n, starts, counts
            carried = (counts > 1) & (starts + n < self.n_words)
            starts, ranks = starts[carried], ranks[carried]
            n += 1

    def top_chars(self, n: int, starts: np.ndarray, counts: np.ndarray) -> int:
        """Characters in all occurrences of the most frequent n-gram (the longest among ties).

        0 when no n-gram occurs twice: a single occurrence is not repetition.
        """
        top = int(counts.max())
        if top < 2:
            return 0
        tied = starts[counts == top]
        return top * int((self._prefix[tied + n] - self._prefix[tied]).max())

    def covered_chars(self, n: int, starts: np.ndarray, counts: np.ndarray) -> int:
        """Characters of the words that lie inside at least one repeated n-gram, each word once.

        Every occurrence of a repeated n-gram counts, the first included, and overlapping
        occurrences do not count a word twice.
        """
        repeated = starts[counts > 1]
        if repeated.size == 0:
            return 0
        depth = np.zeros(self.n_words + 1, np.int32)  # +1 where a repeated n-gram opens, -1 where it closes
        depth[repeated] += 1
        depth[repeated + n] -= 1
        return int(self._lengths[np.cumsum(depth[:-1]) > 0].sum())


def _group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each key: how often it occurs in `keys`, and its rank among the distinct keys."""
    order = np.argsort(keys, kind="stable")  # faster than quicksort on these small int arrays
    sorted_keys = keys[order]
    is_new = np.empty(len(keys), bool)
    is_new[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=is_new[1:])
    sorted_ranks = np.cumsum(is_new) - 1
    counts = np.empty(len(keys), np.int64)
    counts[order] = np.bincount(sorted_ranks)[sorted_ranks]
    ranks = np.empty(len(keys), np.int64)
    ranks[order] = sorted_ranks
    return counts, ranks
