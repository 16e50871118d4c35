"""Known answers for the shared text measurements, and the n-gram counter against brute force."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tasks.filters.quality.text import NGramRepetition, count_sentences, duplicates, lines, paragraphs, words


def test_words_are_whitespace_tokens_with_punctuation_attached():
    assert words("  The end.\tNext -\u00a0line\n") == ["The", "end.", "Next", "-", "line"]


def test_lines_are_stripped_and_never_empty():
    assert lines("  first \r\n\n   \nsecond\rthird\n") == ["first", "second", "third"]
    assert lines("") == []


def test_paragraphs_split_on_blank_lines_even_with_spaces_in_them():
    text = "one\nstill one\n\ntwo\n  \n\t\nthree\n\n\n"
    assert paragraphs(text) == ["one\nstill one", "two", "three"]


def test_duplicates_count_repeats_after_the_first_occurrence():
    assert duplicates(["ab", "c", "ab", "ab", "d"]) == (2, 4)
    assert duplicates([]) == (0, 0)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("No end punctuation here", 1),
        ("One. Two! Three? Four", 4),
        ('He said "stop." Then left.', 2),
        ("Wait... what?! Fine.", 3),
        ("... leading dots. Then more", 2),
        ("3.14 is not an end, nor is example.com here.", 1),
        ("", 0),
        ("   ", 0),
    ],
)
def test_count_sentences(line, expected):
    assert count_sentences(line) == expected


def test_count_sentences_stops_at_up_to():
    assert count_sentences("A. B. C. D. E. F.", up_to=2) == 2
    assert count_sentences("A. B.", up_to=5) == 2


def _levels(sequence: list[str], max_n: int = 10) -> dict[int, tuple[int, int]]:
    """{n: (top n-gram chars, covered chars)} from NGramRepetition."""
    repetition = NGramRepetition(sequence)
    return {
        n: (repetition.top_chars(n, starts, counts), repetition.covered_chars(n, starts, counts))
        for n, starts, counts in repetition.levels(max_n)
    }


def _brute_force(sequence: list[str], n: int) -> tuple[int, int]:
    """The same two measures, computed the obvious quadratic way."""
    grams = [tuple(sequence[i : i + n]) for i in range(len(sequence) - n + 1)]
    counts = Counter(grams)
    top = max(counts.values(), default=0)
    top_chars = 0 if top < 2 else top * max(sum(map(len, g)) for g, c in counts.items() if c == top)
    covered = set()
    for i, gram in enumerate(grams):
        if counts[gram] > 1:
            covered.update(range(i, i + n))
    return top_chars, sum(len(sequence[i]) for i in covered)


def test_ngram_repetition_known_answer():
    sequence = "aa b c aa b c xyz aa b".split()
    levels = _levels(sequence)
    # "aa b" occurs 3 times (3 * 3 chars); "aa b c" twice, covering words 0-5 (2 * 4 chars).
    assert levels[2] == (9, 4 + 4 + 3)
    assert levels[3] == (8, 8)
    assert levels[4] == (0, 0)  # looked at (its prefix "aa b c" repeats) but no 4-gram repeats...
    assert 5 not in levels  # ...so the walk stops there
    assert NGramRepetition(sequence).total_chars == 14


def test_ngram_repetition_ties_take_the_longest_ngram():
    # "x y" and "long words" both occur twice; the longer one sets the top chars.
    assert _levels("x y long words x y long2 long words".split())[2][0] == 2 * 9


def test_ngram_repetition_overlapping_occurrences_count_each_word_once():
    # "a a a a a a": the 5-gram occurs twice (positions 0 and 1), covering all six words once.
    assert _levels(["a"] * 6)[5] == (2 * 5, 6)


def test_ngram_repetition_matches_brute_force_on_random_text():
    rng = random.Random(7)
    for trial in range(200):
        vocabulary = [f"w{i}" * rng.randint(1, 3) for i in range(rng.randint(2, 12))]
        sequence = [rng.choice(vocabulary) for _ in range(rng.randint(0, 80))]
        levels = _levels(sequence)
        for n in range(2, 11):
            assert levels.get(n, (0, 0)) == _brute_force(sequence, n), (trial, n, sequence)


@pytest.mark.parametrize("sequence", [[], ["solo"], ["a", "b"]])
def test_ngram_repetition_on_tiny_inputs(sequence):
    assert _levels(sequence) in ({}, {2: (0, 0)})
