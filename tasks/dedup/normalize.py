"""Text normalisation and shingling for deduplication (FineWeb's recipe, for every script).

Two documents count as the same, or as near-duplicates, after this normalisation: Unicode
NFKC (full-width letters and digits, ligatures and other compatibility forms become their plain
forms), lowercase, accents stripped, punctuation and symbols removed, whitespace collapsed; and,
for near dedup only, every digit turned into "0". Exact dedup hashes the text with its digits,
so pages that differ only in their numbers (prices, dates, scores) are not exact duplicates;
near dedup folds them, so such pages still share their shingles.

"Accents" are the generic combining diacritics (U+0300-U+036F and the other Combining Diacritical
Marks blocks) that NFD splits off Latin, Greek and Cyrillic letters: "Crème" is "creme". The
marks of scripts that write vowels, consonant clusters and other sounds as marks are letters of
the word and stay: Devanagari and other Indic vowel signs and viramas (किताब "book" and कातिब
"scribe" stay apart), Arabic hamza and harakat (سأل "asked" is not سال "flowed"), Thai vowels,
the Japanese voicing mark (が is not か).

`shingles` then cuts the normalised text into the overlapping n-grams that MinHash hashes: word
n-grams, or character n-grams for scripts written without spaces (Chinese, Japanese, Thai),
whose lines would otherwise be single "words".

ASCII text (most of the web) takes a fast path, `bytes.translate`; other text goes through
NFKC, NFD/NFC and regular expressions (the `regex` module, for the Unicode categories). Both
give the same result on ASCII input (tested), so the MinHash signatures of ASCII text are the
same as before this module kept marks and digits apart.
"""

from __future__ import annotations

import re
import unicodedata

import regex

# Average word length above which a document is treated as unsegmented (CJK, Thai): languages
# that separate words by spaces average 4-8 letters a word, unsegmented text whole lines.
UNSEGMENTED_MIN_AVG_WORD = 20

# ASCII, as bytes (bytes.translate is a table lookup per byte): drop everything that is neither
# a letter, a digit nor whitespace; and digits to "0".
_ASCII_DROP = bytes(code for code in range(128) if not chr(code).isalnum() and not chr(code).isspace())
_ASCII_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
# What the ASCII table does, for any script: drop everything that is not a letter, a mark, a
# number or whitespace (punctuation, symbols, control and format characters, "_"). Whitespace
# is what `str.split` splits on, \x1c-\x1f and \x85 included.
_NOT_WORD = regex.compile(r"[^\p{L}\p{M}\p{N}\s\x1c-\x1f\x85]|_")
_ACCENTS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_DIGIT = re.compile(r"\d")


def normalize_text(text: str, fold_digits: bool = True) -> str:
    """The normalised form of `text`: with `fold_digits`, what near dedup shingles; without,
    what exact dedup hashes."""
    if text.isascii():
        text = text.encode("ascii").lower().translate(None, _ASCII_DROP).decode("ascii")
    else:
        text = unicodedata.normalize("NFKC", text).lower()
        text = unicodedata.normalize("NFC", _ACCENTS.sub("", unicodedata.normalize("NFD", text)))
        text = _NOT_WORD.sub("", text)
    text = " ".join(text.split())
    return digits_folded(text) if fold_digits else text


def digits_folded(normalized: str) -> str:
    """A normalised text with every digit turned into "0" (the near-dedup form of the exact one)."""
    if normalized.isascii():
        return normalized.encode("ascii").translate(_ASCII_DIGITS_TO_ZERO).decode("ascii")
    return _DIGIT.sub("0", normalized)


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
