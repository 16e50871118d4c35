"""A synthetic document corpus with planted duplicates of known similarity, for tests and benches.

Words come from a made-up vocabulary drawn with Zipf-like frequencies and are rendered as
sentences and paragraphs (capitals, commas, full stops), so normalisation has real work to do
and gives back exactly the generated words. Planted on top of independent documents:

- near-duplicate pairs of a chosen word-5-gram Jaccard similarity s: the copy is the original
  with k words replaced by fresh words at positions at least 5 apart, so each replacement
  removes exactly 5 shingles from the intersection and adds 5 to the union:
  s = (N - 5k) / (N + 5k) for N shingles. The realised similarity is measured, not assumed;
- exact duplicates: the same words rendered with different punctuation, case and spacing.

Every document is a pure function of (seed, its index), so a corpus of any size is written one
file at a time, a pair's members can sit in different files, and nothing is held in memory.
Also runnable: `python -m tasks.samples.dedup_corpus OUTPUT_DIR NUM_DOCS` (the benches use it).
"""

from __future__ import annotations

import argparse
import string
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from infra.storage import Storage
from tasks.formats.docs import DOC_SCHEMA, docs_uri, write_table

NGRAM = 5
_SINGLE, _ORIGINAL, _NEAR_COPY, _EXACT_COPY = range(4)
# Vocabulary words never contain "z", so "z" + a counter is a fresh word no document has.
_VOCAB_LETTERS = np.array(list(string.ascii_lowercase.replace("z", "")))


@dataclass(frozen=True)
class PlantedPair:
    original: str  # document id
    copy: str
    similarity: float  # realised word-5-gram Jaccard; 1.0 for exact copies
    exact: bool


@dataclass
class Corpus:
    files: list[str] = field(default_factory=list)
    num_docs: int = 0
    pairs: list[PlantedPair] = field(default_factory=list)


def shingle_jaccard(first: list[str], second: list[str], n: int = NGRAM) -> float:
    """The Jaccard similarity of two word sequences' n-gram sets (the ground truth)."""
    a = set(zip(*(first[k:] for k in range(n))))
    b = set(zip(*(second[k:] for k in range(n))))
    return len(a & b) / len(a | b) if a or b else 1.0


class DocumentFactory:
    """Words and texts of synthetic documents, each reproducible from (seed, index)."""

    def __init__(self, seed: int = 0, vocab_size: int = 30_000, median_words: int = 350, sigma: float = 0.8) -> None:
        self.seed = seed
        self.median_words = median_words
        self.sigma = sigma
        rng = np.random.default_rng([seed, 0])
        lengths = rng.integers(2, 11, vocab_size)
        letters = rng.choice(_VOCAB_LETTERS, int(lengths.sum()))
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        unique = {"".join(letters[bounds[i] : bounds[i + 1]]) for i in range(vocab_size)}
        self.vocab = sorted(unique, key=lambda word: (len(word), word))  # frequent words are short
        weights = 1.0 / (np.arange(len(self.vocab)) + 10.0)  # Zipf-like, flattened at the top
        self.cdf = np.cumsum(weights) / weights.sum()

    def words(self, index: int) -> list[str]:
        rng = np.random.default_rng([self.seed, 1, index])
        length = int(np.clip(rng.lognormal(np.log(self.median_words), self.sigma), 20, 20_000))
        picks = np.searchsorted(self.cdf, rng.random(length))
        vocab = self.vocab
        return [vocab[i] for i in picks]

    def near_copy(self, words: list[str], similarity: float, index: int) -> list[str]:
        """`words` with fresh words at spread positions, for a 5-gram Jaccard close to `similarity`."""
        rng = np.random.default_rng([self.seed, 2, index])
        shingles = len(words) - NGRAM + 1
        swaps = round(shingles * (1 - similarity) / (NGRAM * (1 + similarity)))
        # positions p in [NGRAM-1, len-NGRAM] touch NGRAM whole shingles; keep them NGRAM apart
        slots = len(words) - 2 * NGRAM + 2 - (swaps - 1) * (NGRAM - 1)
        swaps = max(0, min(swaps, slots))
        chosen = np.sort(rng.choice(slots, swaps, replace=False)) + np.arange(swaps) * (NGRAM - 1) + NGRAM - 1
        copy = list(words)
        for number, position in enumerate(chosen):
            copy[position] = f"z{index}x{number}".translate(_DIGITS_AS_LETTERS)  # unique, letters only
        return copy

    def render(self, words: list[str], index: int) -> str:
        """Sentences of 6-20 words, capitalised, with commas and full stops, in paragraphs."""
        rng = np.random.default_rng([self.seed, 3, index])
        parts, position = [], 0
        while position < len(words):
            size = int(rng.integers(6, 21))
            sentence = words[position : position + size]
            sentence[0] = sentence[0].capitalize()
            if len(sentence) > 8:
                sentence[len(sentence) // 2] += ","
            parts.append(" ".join(sentence) + ".")
            parts.append("\n\n" if rng.random() < 0.2 else " ")
            position += size
        return "".join(parts).strip()


_DIGITS_AS_LETTERS = str.maketrans("0123456789", "abcdefghij")


def _layout(num_docs: int, near: dict[float, int], exact: int, seed: int):
    """Role, partner and similarity per document index, pairs scattered over the corpus."""
    roles = np.full(num_docs, _SINGLE, dtype=np.int8)
    partner = np.full(num_docs, -1, dtype=np.int64)
    similarity = np.zeros(num_docs)
    planted = [(s, count) for s, count in sorted(near.items())] + [(1.0, exact)]
    needed = 2 * sum(count for _, count in planted)
    if needed > num_docs:
        raise ValueError(f"{needed} planted documents do not fit in {num_docs}")
    slots = np.random.default_rng([seed, 4]).permutation(num_docs)[:needed]
    cursor = 0
    for number, (s, count) in enumerate(planted):
        originals, copies = slots[cursor : cursor + count], slots[cursor + count : cursor + 2 * count]
        cursor += 2 * count
        roles[originals] = _ORIGINAL
        roles[copies] = _EXACT_COPY if number == len(planted) - 1 else _NEAR_COPY
        partner[copies], partner[originals] = originals, copies
        similarity[copies] = s
    return roles, partner, similarity


def write_corpus(
    storage: Storage,
    stage_dir: str,
    num_docs: int,
    near: dict[float, int] | None = None,
    exact: int = 0,
    docs_per_file: int = 10_000,
    seed: int = 0,
    snapshot: str = "CC-MAIN-2024-10",
    factory: DocumentFactory | None = None,
) -> Corpus:
    """Write `num_docs` documents as <stage_dir>/docs/part-*.parquet; return what was planted.

    `near` maps a target similarity to a number of pairs; `exact` is a number of exact pairs.
    """
    factory = factory or DocumentFactory(seed)
    roles, partner, similarity = _layout(num_docs, near or {}, exact, seed)
    corpus = Corpus(num_docs=num_docs)
    for first in range(0, num_docs, docs_per_file):
        rows = []
        for index in range(first, min(first + docs_per_file, num_docs)):
            is_copy = roles[index] in (_NEAR_COPY, _EXACT_COPY)
            words = factory.words(int(partner[index]) if is_copy else index)
            if roles[index] == _NEAR_COPY:
                original = words
                words = factory.near_copy(words, similarity[index], index)
                corpus.pairs.append(
                    PlantedPair(_doc_id(partner[index]), _doc_id(index), shingle_jaccard(original, words), False)
                )
            elif roles[index] == _EXACT_COPY:
                corpus.pairs.append(PlantedPair(_doc_id(partner[index]), _doc_id(index), 1.0, True))
            rows.append((index, factory.render(words, index)))
        table = pa.Table.from_pydict(
            {
                "id": [_doc_id(i) for i, _ in rows],
                "url": [f"https://site{i % 997}.example/page/{i}" for i, _ in rows],
                "text": [text for _, text in rows],
                "language": ["en"] * len(rows),
                "language_score": [1.0] * len(rows),
                "warc_path": ["synthetic"] * len(rows),
                "snapshot": [snapshot] * len(rows),
                "crawl_date": ["2024-03-01T00:00:00Z"] * len(rows),
            },
            schema=DOC_SCHEMA,
        )
        uri = docs_uri(stage_dir, f"{first // docs_per_file:05d}")
        write_table(storage, uri, table, row_group_rows=2_000)
        corpus.files.append(uri)
    return corpus


def _doc_id(index: int) -> str:
    return f"doc-{index:09d}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="stage directory to write docs/part-*.parquet into")
    parser.add_argument("num_docs", type=int)
    parser.add_argument("--near-fraction", type=float, default=0.1, help="share of documents in near pairs")
    parser.add_argument("--exact-fraction", type=float, default=0.05, help="share of documents in exact pairs")
    parser.add_argument("--docs-per-file", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    levels = (0.5, 0.7, 0.8, 0.9)
    pairs_per_level = int(args.num_docs * args.near_fraction / 2 / len(levels))
    corpus = write_corpus(
        Storage(), args.output, args.num_docs, near={s: pairs_per_level for s in levels},
        exact=int(args.num_docs * args.exact_fraction / 2), docs_per_file=args.docs_per_file, seed=args.seed,
    )
    print(f"wrote {corpus.num_docs} documents in {len(corpus.files)} files, {len(corpus.pairs)} planted pairs")


if __name__ == "__main__":
    main()
