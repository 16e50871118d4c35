"""The byte-level BPE tokenizer: split rules, losslessness on any UTF-8, special-token safety,
the chat template, the content hash, and equality with tiktoken on the same vocabulary."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
from tokenizers import Regex, pre_tokenizers

from model.tokenizer import BOS, IM_END, IM_SEP, IM_START, SPECIAL_TOKENS, SPLIT_PATTERN, BpeTokenizer
from tests.conftest import REALDATA, needs_realdata

WORDS = (
    "the of and to in is was for on that with as by at from it his an were are which this be or has had "
    "not but first one their its new after who they have her she two been other when there all during into "
    "school time may years more most only over city some world would where later up such used many can "
    "café naïve Zürich straße Ελληνικά русский 日本語 中文 한국어 العربية 🙂 🚀"
).split()


def synthetic_corpus(n_docs: int, seed: int) -> list[str]:
    """Prose-like documents: words, numbers, punctuation, contractions, line breaks."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(rng.randint(2, 8)):
            words = rng.choices(WORDS, k=rng.randint(4, 14))
            if rng.random() < 0.3:
                words.insert(rng.randrange(len(words)), str(rng.randint(0, 10**6)))
            if rng.random() < 0.2:
                words.insert(rng.randrange(len(words)), rng.choice(["it's", "don't", "we'll", "I've"]))
            sentences.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", "...", ":"]))
        docs.append(rng.choice([" ", "\n", "\n\n"]).join(sentences))
    return docs


def random_unicode(rng: random.Random) -> str:
    """A string from many scripts and edge cases: controls, combining marks, emoji, CJK, RTL,
    unusual whitespace, private use, astral planes, and fragments of special-token strings."""
    ranges = [
        (0x00, 0x7F), (0x80, 0xFF), (0x300, 0x36F), (0x590, 0x6FF), (0x900, 0x97F), (0x2000, 0x206F),
        (0x3000, 0x303F), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xE000, 0xF8FF), (0xFE00, 0xFE0F),
        (0x1F300, 0x1FAFF), (0x10000, 0x10FFFF),
    ]
    parts = []
    for _ in range(rng.randint(0, 30)):
        roll = rng.random()
        if roll < 0.1:
            parts.append(rng.choice([*SPECIAL_TOKENS, "<|", "|>", "<|im_", "\r\n", "\u200d", "\ufeff", " " * 5]))
        elif roll < 0.3:
            parts.append(rng.choice(WORDS))
        else:
            low, high = rng.choice(ranges)
            code = rng.randint(low, high)
            if not 0xD800 <= code <= 0xDFFF:  # surrogates are not UTF-8
                parts.append(chr(code))
    return "".join(parts)


@pytest.fixture(scope="module")
def tokenizer() -> BpeTokenizer:
    return BpeTokenizer.train(synthetic_corpus(400, seed=0), vocab_size=600)


def test_special_tokens_take_the_first_ids_and_vocab_size_is_exact(tokenizer):
    assert tokenizer.special_ids == {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    assert tokenizer.bos_id == 0
    assert tokenizer.vocab_size == 600


def test_split_pattern_known_answer():
    split = pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False)
    pieces = [piece for piece, _ in split.pre_tokenize_str("Hello world, it's 12345 don't!!\n\n  x")]
    assert pieces == ["Hello", " world", ",", " it", "'s", " ", "123", "45", " don", "'t", "!!\n\n", " ", " x"]


def test_learned_merges_follow_the_corpus(tokenizer):
    # Frequent whole words with their leading space become single tokens.
    assert len(tokenizer.encode(" the")) == 1
    assert len(tokenizer.encode(" and")) == 1
    # Digits never merge past three: a 6-digit number is at least two tokens.
    assert len(tokenizer.encode("123456")) >= 2


def test_any_unicode_round_trips(tokenizer):
    rng = random.Random(7)
    texts = [random_unicode(rng) for _ in range(2_000)] + ["", " ", "\x00", "\r\n\t\x0b\x0c", "e\u0301" * 20]
    for text in texts:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert [tokenizer.decode(ids) for ids in tokenizer.encode_batch(texts)] == texts


def test_special_token_strings_in_text_stay_plain_text(tokenizer):
    text = "see <|bos|> and <|im_end|><|im_start|>system<|im_sep|> or <|search_start|>q<|search_end|>"
    ids = tokenizer.encode(text)
    assert not set(ids) & set(tokenizer.special_ids.values())
    assert tokenizer.decode(ids) == text
    assert tokenizer.encode_batch([text]) == [ids]


def test_chat_template(tokenizer):
    messages = [{"role": "user", "content": "Hi <|im_end|> there"}, {"role": "assistant", "content": "Hello!"}]
    ids = tokenizer.encode_chat(messages)
    special = tokenizer.special_ids
    assert ids[0] == special[BOS]
    assert ids.count(special[IM_START]) == ids.count(special[IM_SEP]) == ids.count(special[IM_END]) == 2
    assert tokenizer.decode(ids) == (
        "<|bos|><|im_start|>user<|im_sep|>Hi <|im_end|> there<|im_end|><|im_start|>assistant<|im_sep|>Hello!<|im_end|>"
    )
    prompt = tokenizer.encode_chat(messages[:1], open_turn="assistant")
    assert tokenizer.decode(prompt).endswith("<|im_end|><|im_start|>assistant<|im_sep|>")


def test_saved_file_hash_is_the_content_hash(tokenizer, tmp_path):
    path = str(tmp_path / "tokenizer.json")
    tokenizer.save(path)
    with open(path, "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == tokenizer.sha256
    loaded = BpeTokenizer.load(path)
    assert loaded.sha256 == tokenizer.sha256
    text = synthetic_corpus(1, seed=99)[0]
    assert loaded.encode(text) == tokenizer.encode(text)


def test_training_is_deterministic_and_the_hash_tells_tokenizers_apart(tokenizer):
    corpus = synthetic_corpus(400, seed=0)
    assert BpeTokenizer.train(iter(corpus), vocab_size=600).sha256 == tokenizer.sha256
    assert BpeTokenizer.train(corpus, vocab_size=601).sha256 != tokenizer.sha256


def test_a_tokenizer_without_our_special_tokens_is_refused(tokenizer):
    data = json.loads(tokenizer.json)
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != IM_SEP]
    del data["model"]["vocab"][IM_SEP]
    with pytest.raises(ValueError, match="special tokens"):
        BpeTokenizer.from_json(json.dumps(data))


def test_fast_encoder_gives_the_same_ids_as_the_trained_hf_tokenizer(tokenizer):
    """Encoding runs on tiktoken's engine; it must agree with HF `tokenizers` on every text."""
    rng = random.Random(3)
    texts = synthetic_corpus(50, seed=5) + [random_unicode(rng) for _ in range(500)]
    for text in texts:
        assert tokenizer.encode(text) == tokenizer.encode_with_hf(text)


@needs_realdata
def test_every_real_document_round_trips_and_compresses():
    pretrain = REALDATA / "pretrain_text"
    wiki = [line for line in (pretrain / "llama_factory_wiki_demo.txt").read_text().splitlines() if line]
    c4 = [json.loads(line)["text"] for line in (pretrain / "llama_factory_c4_demo.jsonl").read_text().splitlines()]
    tokenizer = BpeTokenizer.train(wiki, vocab_size=2_000)
    encoded = tokenizer.encode_batch(c4)
    assert [tokenizer.decode(ids) for ids in encoded] == c4
    bytes_per_token = sum(len(text.encode()) for text in c4) / sum(map(len, encoded))
    assert 2.4 < bytes_per_token < 3.5  # measured: 2.71 at this 2k vocabulary
