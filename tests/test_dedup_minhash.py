"""Normalisation, shingling, MinHash signatures and LSH banding, without Spark.

Known answers for the normaliser, bit-for-bit agreement with datasketch's affine64 MinHash,
Jaccard estimates that match the true shingle-set similarity within MinHash noise, and the LSH
candidate rate of planted pairs against the theoretical curve 1 - (1 - s^8)^14.
"""

from __future__ import annotations

import math
import string
import unicodedata

import numpy as np
import pytest
import xxhash
from datasketch import MinHash

from tasks.dedup.minhash import MinHasher, collision_probability, estimated_jaccard
from tasks.dedup.normalize import _DIGIT, _NOT_WORD, digits_folded, normalize_text, shingles
from tasks.samples.dedup_corpus import DocumentFactory, shingle_jaccard


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hello,   World!\n\nIt's 2024.", "hello world its 0000"),
        ("Crème brûlée à Noël — ÇA VA?", "creme brulee a noel ca va"),
        ("snake_case and e-mail: x@y.org", "snakecase and email xyorg"),
        ("Ünïcödé digits ٣٤ and 12", "unicode digits 00 and 00"),
        ("   \t\n ", ""),
        ("", ""),
        ("…!!! ???", ""),
    ],
)
def test_normalize_known_answers(text, expected):
    assert normalize_text(text) == expected


def test_ascii_fast_path_matches_the_unicode_path():
    rng = np.random.default_rng(7)
    alphabet = list(string.printable) + ["\x00", "\x07", "\x1c", "_"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet, int(rng.integers(0, 80))))
        slow = " ".join(_DIGIT.sub("0", _NOT_WORD.sub("", text.lower())).split())
        assert normalize_text(text) == slow, repr(text)


def test_word_shingles_are_space_joined_5_grams():
    grams, by_chars = shingles("a b c d e f", 5)
    assert grams == [b"a b c d e", b"b c d e f"] and not by_chars
    assert shingles("a b c d", 5) == ([], False)  # shorter than one shingle
    assert shingles("", 5) == ([], False)


def test_unsegmented_scripts_fall_back_to_character_shingles():
    chinese = normalize_text("我们的数据处理流程包括去重、过滤和分词。每一步都可以单独测试。")
    grams, by_chars = shingles(chinese, 5)
    assert by_chars
    assert grams[0] == "我们的数据".encode() and len(grams) == len(chinese.replace(" ", "")) - 4
    thai = normalize_text("การประมวลผลข้อมูลขนาดใหญ่ต้องใช้การกำจัดข้อมูลซ้ำซ้อนอย่างมีประสิทธิภาพ")
    assert shingles(thai, 5)[1]
    assert shingles(normalize_text("短い"), 5)[0] == []  # too short either way


def test_signature_equals_datasketch_affine64_bit_for_bit():
    hasher = MinHasher(num_bands=14, rows_per_band=8, seed=1)
    factory = DocumentFactory(seed=3, median_words=120)
    for index in range(20):
        grams, _ = shingles(normalize_text(factory.render(factory.words(index), index)), 5)
        reference = MinHash(num_perm=112, seed=1, scheme="affine64", hashfunc=xxhash.xxh3_64_intdigest)
        reference.update_batch(grams)
        assert np.array_equal(hasher.signature(grams), reference.hashvalues)
    assert not np.array_equal(MinHasher(seed=2).signature(grams), hasher.signature(grams))


def test_jaccard_estimates_match_truth_and_datasketch_within_noise():
    """Ours vs the true shingle Jaccard, and vs datasketch with an unrelated hash (SHA-1)."""
    hasher = MinHasher()
    factory = DocumentFactory(seed=4, median_words=300)
    ours_errors, theirs_errors = [], []
    for index in range(60):
        words = factory.words(index)
        target = 0.3 + 0.65 * (index % 14) / 13
        copy = factory.near_copy(words, target, index)
        truth = shingle_jaccard(words, copy)
        grams = [shingles(" ".join(w), 5)[0] for w in (words, copy)]
        ours = estimated_jaccard(hasher.signature(grams[0]), hasher.signature(grams[1]))
        sketches = [MinHash(num_perm=112, seed=9, scheme="affine64") for _ in grams]
        for sketch, doc_grams in zip(sketches, grams):
            sketch.update_batch(doc_grams)
        theirs = sketches[0].jaccard(sketches[1])
        sigma = math.sqrt(truth * (1 - truth) / 112)
        assert abs(ours - truth) < 4.5 * sigma + 1e-9, (truth, ours)
        ours_errors.append(ours - truth)
        theirs_errors.append(theirs - truth)
    # unbiased, and as spread as datasketch's own estimates
    assert abs(np.mean(ours_errors)) < 0.02
    assert np.std(ours_errors) < 1.5 * np.std(theirs_errors) + 0.01


def test_band_keys_change_only_with_their_band():
    hasher = MinHasher()
    signature = hasher.signature([b"one two three four five", b"two three four five six"])
    keys = hasher.band_keys(signature)
    assert keys.dtype == np.int64 and len(set(keys.tolist())) == 14
    changed = signature.copy()
    changed[3 * 8 + 5] ^= np.uint64(1)  # a value inside band 3
    differs = hasher.band_keys(changed) != keys
    assert differs.tolist() == [band == 3 for band in range(14)]


def test_collision_probability_is_fineweb_curve():
    assert collision_probability(0.8, 14, 8) == pytest.approx(0.924, abs=0.001)
    assert collision_probability(0.7, 14, 8) == pytest.approx(0.564, abs=0.001)
    assert collision_probability(0.3, 14, 8) < 0.001


def test_lsh_candidate_rate_follows_the_theoretical_curve():
    """Planted pairs share a band key as often as 1-(1-s^8)^14 predicts (no Spark involved)."""
    hasher = MinHasher()
    factory = DocumentFactory(seed=5, median_words=100, sigma=0.2)
    pairs_per_level = 250
    for level in (0.8, 0.7, 0.5):
        hits, expected = 0, 0.0
        for number in range(pairs_per_level):
            index = int(level * 10_000) + number
            words = factory.words(index)
            copy = factory.near_copy(words, level, index)
            keys = [hasher.band_keys(hasher.signature(shingles(" ".join(w), 5)[0])) for w in (words, copy)]
            hits += bool(np.any(keys[0] == keys[1]))
            expected += collision_probability(shingle_jaccard(words, copy), 14, 8)
        rate, predicted = hits / pairs_per_level, expected / pairs_per_level
        sigma = math.sqrt(predicted * (1 - predicted) / pairs_per_level)
        assert abs(rate - predicted) < max(4 * sigma, 0.02), (level, rate, predicted)


# --- what normalisation keeps (issue 7, item 9) ----------------------------------------------


@pytest.mark.parametrize(
    "a, b",
    [
        ("किताब", "कातिब"),  # Hindi "book" / "scribe": spacing vowel signs (Mc)
        ("कुल", "कल"),  # "total" / "tomorrow": a non-spacing vowel sign (Mn)
        ("पक्का", "पकका"),  # a virama joins a cluster
        ("سأل", "سال"),  # Arabic "asked" / "flowed": hamza above
        ("ข้าว", "ขาว"),  # Thai "rice" / "white": a tone mark
        ("かき", "がき"),  # Japanese "oyster" / "brat": the voicing mark
    ],
)
def test_marks_that_make_another_word_are_kept(a, b):
    assert normalize_text(a) != normalize_text(b)


def test_nfkc_folds_compatibility_forms_and_canonical_equivalents_agree():
    assert normalize_text("Ｆｕｌｌ－ｗｉｄｔｈ ﬁne １２３", fold_digits=False) == "fullwidth fine 123"
    assert normalize_text("\u0958") == normalize_text("\u0915\u093c")  # क़ precomposed or not
    assert normalize_text("caf\u00e9") == normalize_text("cafe\u0301") == "cafe"
    assert normalize_text("\ud55c\uae00") == normalize_text("\u1112\u1161\u11ab\u1100\u1173\u11af")  # 한글


def test_exact_dedup_keeps_digits_and_near_dedup_folds_them():
    assert normalize_text("Price 12.50 EUR", fold_digits=False) == "price 1250 eur"
    assert normalize_text("Price 12.50 EUR") == "price 0000 eur"
    assert digits_folded(normalize_text("Prix ٣٤ € – ١٢", fold_digits=False)) == normalize_text("Prix ٣٤ € – ١٢") == "prix 00 00"


def test_real_sentences_in_scripts_with_marks_keep_every_letter_and_mark(realdata):
    rows = (realdata / "lid" / "tatoeba_long.tsv").read_text(encoding="utf-8").splitlines()[1:]
    checked = 0
    for row in rows:
        code, _, _, text = row.split("\t")
        if code not in {"hi", "bn", "ta", "te", "mr", "gu", "pa", "kn", "ml", "si", "ar", "ur", "th", "my", "km"}:
            continue
        expected = [c for c in unicodedata.normalize("NFKC", text).lower() if unicodedata.category(c)[0] in "LM"]
        kept = [c for c in normalize_text(text) if unicodedata.category(c)[0] in "LM"]
        assert kept == expected, (code, text)
        checked += 1
    assert checked >= 60
