"""Text normalisation and shingling for deduplication (FineWeb's recipe).

Two documents count as the same, or as near-duplicates, after this normalisation: lowercase,
accents stripped (Unicode NFD, combining marks dropped), punctuation and symbols removed, every
digit turned into "0", whitespace collapsed. `shingles` then cuts the normalised text into the
overlapping n-grams that MinHash hashes: word n-grams, or character n-grams for scripts written
without spaces (Chinese, Japanese, Thai), whose lines would otherwise be single "words".

ASCII text (most of the web) takes a fast path, one `str.translate`; other text goes through
NFD and two regular expressions. Both give the same result on ASCII input (tested).
"""

from __future__ import annotations

import re
import unicodedata

# Average word length above which a document is treated as unsegmented (CJK, Thai): languages
# that separate words by spaces average 4-8 letters a word, unsegmented text whole lines.
UNSEGMENTED_MIN_AVG_WORD = 20

_ASCII_TABLE = {
    code: ("0" if chr(code).isdigit() else None)
    for code in range(128)
    if not chr(code).isalpha() and not chr(code).isspace()
}
# What the ASCII table does, for any script: drop everything that is neither a word character
# nor whitespace (punctuation, symbols, the combining marks NFD split off, "_"), digits -> 0.
_NOT_WORD = re.compile(r"[^\w\s]|_")
_DIGIT = re.compile(r"\d")


def normalize_text(text: str) -> str:
    """The normalised form of `text`: what exact dedup hashes and near dedup shingles."""
    text = text.lower()
    if text.isascii():
        text = text.translate(_ASCII_TABLE)
    else:
        text = _DIGIT.sub("0", _NOT_WORD.sub("", unicodedata.normalize("NFD", text)))
    return " ".join(text.split())


def shingles(normalized: str, n: int) -> tuple[list[bytes], bool]:
    """The UTF-8 n-grams of a normalised text, and whether they are character n-grams.

    Word n-grams are the words joined by single spaces, i.e. substrings of `normalized`.
    A text with fewer than `n` units has no shingles (it cannot be a near-duplicate).
    """
    words = normalized.encode("utf-8").split(b" ") if normalized else []
    if len(normalized) > UNSEGMENTED_MIN_AVG_WORD * len(words):
        chars = normalized.replace(" ", "")
        return [chars[i : i + n].encode("utf-8") for i in range(len(chars) - n + 1)], True
    # zip over n shifted views: the n-grams without building a slice per n-gram
    return list(map(b" ".join, zip(*(words[k:] for k in range(n))))), False
