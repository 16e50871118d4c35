"""The byte-level BPE tokenizer: training, saving and loading, encoding and decoding.

It is a Hugging Face `tokenizers` BPE over bytes, so every UTF-8 string round-trips exactly:
text is split into pieces by a GPT-4-style regex (`SPLIT_PATTERN`), each piece is mapped to
bytes (ByteLevel, one printable character per byte), and merges learned on a sample of the
cleaned documents join bytes into tokens. No normaliser runs, so nothing is changed on the way.

The special tokens take the first ids: `<|bos|>` starts every document, the chat template is
`<|im_start|>role<|im_sep|>content<|im_end|>`; `<|search_start|>query<|search_end|>` is a search
call the model makes and `<|result_start|>...<|result_end|>` the results the engine puts back.
They only ever enter a sequence structurally (`bos_id`, `encode_chat`): text is always encoded
as ordinary text, so a web page that contains the string "<|im_end|>" gets ordinary tokens for
it and cannot forge a turn boundary.

`encode_chat_masked` is the one implementation of the template (message content as a string or
as typed parts, see model/chat.py) and also says which tokens the assistant writes: the loss
mask of SFT. `encode_chat` is its ids alone.

A tokenizer is identified by `sha256`, the hash of its canonical JSON (sorted keys, no
whitespace), which is also exactly what `save` writes, so `sha256sum tokenizer.json` agrees
with the manifest of every shard set made with it.

Training, saving and decoding use HF `tokenizers`; encoding runs the very same merges and split
pattern through tiktoken's engine (as nanochat does), which is 4-5x faster per core than HF's
encoder on the same vocabulary and gives identical ids (checked in tests and in the bench).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import tiktoken
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from infra.storage import Storage

BOS = "<|bos|>"
IM_START = "<|im_start|>"
IM_SEP = "<|im_sep|>"
IM_END = "<|im_end|>"
SEARCH_START = "<|search_start|>"
SEARCH_END = "<|search_end|>"
RESULT_START = "<|result_start|>"
RESULT_END = "<|result_end|>"
SPECIAL_TOKENS = (BOS, IM_START, IM_SEP, IM_END, SEARCH_START, SEARCH_END, RESULT_START, RESULT_END)

# The typed parts an assistant message may hold instead of a plain string (model/chat.py): each
# kind's field with its text, the tokens around it, and whether the assistant writes it (mask 1)
# or the engine does (search results, mask 0).
TEXT_PART, SEARCH_PART, RESULTS_PART = "text", "search", "search_results"
PART_FIELDS = {TEXT_PART: "text", SEARCH_PART: "query", RESULTS_PART: "text"}
_PART_TOKENS = {TEXT_PART: None, SEARCH_PART: (SEARCH_START, SEARCH_END), RESULTS_PART: (RESULT_START, RESULT_END)}
_PART_WRITTEN_BY_ASSISTANT = {TEXT_PART: True, SEARCH_PART: True, RESULTS_PART: False}

# How text is cut into pieces before BPE; no token ever spans two pieces. The alternatives are
# tried left to right at each position:
SPLIT_PATTERN = "|".join(
    [
        r"'(?i:[sdmt]|ll|ve|re)",  # English contractions ('s, 'T, 'll, ...) as their own piece
        r"[^\r\n\p{L}\p{N}]?+\p{L}+",  # a run of letters, with at most one leading space/symbol
        r"\p{N}{1,3}",  # digits in groups of at most three, so numbers do not bloat the vocab
        r" ?[^\s\p{L}\p{N}]++[\r\n]*",  # a run of punctuation/symbols, then any line breaks
        r"\s*[\r\n]",  # whitespace up to and including a line break
        r"\s+(?!\S)",  # whitespace, leaving its last space to lead the next word
        r"\s+",  # whitespace at the end of the text
    ]
)


def _byte_alphabet() -> dict[int, str]:
    """The ByteLevel character that stands for each byte: printable Latin-1 bytes stand for
    themselves, the other 68 bytes (controls, space, ...) take the characters from U+0100 on,
    in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    alphabet = {byte: chr(byte) for byte in printable}
    for offset, byte in enumerate(b for b in range(256) if b not in alphabet):
        alphabet[byte] = chr(256 + offset)
    return alphabet


_CHAR_TO_BYTE = {char: byte for byte, char in _byte_alphabet().items()}


def canonical_json(tokenizer: Tokenizer) -> str:
    return json.dumps(json.loads(tokenizer.to_str()), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


class BpeTokenizer:
    """A trained tokenizer plus the ids and conventions the pipeline and the model rely on."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        missing = [token for token in SPECIAL_TOKENS if tokenizer.token_to_id(token) is None]
        if missing:
            raise ValueError(f"tokenizer lacks the special tokens {missing}")
        # Special-token strings inside text are plain text; see the module docstring.
        tokenizer.encode_special_tokens = True
        self._tokenizer = tokenizer
        self.json = canonical_json(tokenizer)
        self.sha256 = hashlib.sha256(self.json.encode("utf-8")).hexdigest()
        self.special_ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
        self.bos_id = self.special_ids[BOS]
        self._encoder = tiktoken.Encoding(
            name=f"crawl2chat-{self.sha256[:12]}",
            pat_str=SPLIT_PATTERN,
            mergeable_ranks=self.mergeable_ranks(),
            special_tokens=self.special_ids,
        )

    # -- making and storing ---------------------------------------------------------------------

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> BpeTokenizer:
        """Learn merges on `texts` (streamed; any iterable) until `vocab_size` tokens, specials included."""
        # A piece that is itself a token is taken whole, as tiktoken does: same ids, less work.
        tokenizer = Tokenizer(models.BPE(ignore_merges=True))
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer)

    @classmethod
    def from_json(cls, text: str) -> BpeTokenizer:
        return cls(Tokenizer.from_str(text))

    @classmethod
    def load(cls, uri: str, storage: Storage | None = None) -> BpeTokenizer:
        return cls.from_json((storage or Storage()).read_text(uri))

    def save(self, uri: str, storage: Storage | None = None) -> None:
        (storage or Storage()).write_text(uri, self.json)

    # -- using ----------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Text to ids; special-token strings in `text` are encoded as ordinary text."""
        return self._encoder.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts. One text per call into tiktoken is faster per core than its
        threaded batch API, and a Spark task has one core."""
        encode = self._encoder.encode_ordinary
        return [encode(text) for text in texts]

    def encode_with_hf(self, text: str) -> list[int]:
        """The same encoding through HF `tokenizers` (reference for tests and the bench)."""
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=False)

    def encode_chat(self, messages: Sequence[Mapping[str, Any]], open_turn: str | None = None) -> list[int]:
        """`<|bos|>` then `<|im_start|>role<|im_sep|>content<|im_end|>` per message (ids only)."""
        return self.encode_chat_masked(messages, open_turn)[0]

    def encode_chat_masked(
        self, messages: Sequence[Mapping[str, Any]], open_turn: str | None = None
    ) -> tuple[list[int], list[int]]:
        """The chat template's ids, and a mask that is 1 exactly on the tokens an assistant writes.

        Those are an assistant message's content and its `<|im_end|>`, search calls included
        (`<|search_start|>query<|search_end|>`); everything else is 0: `<|bos|>`, system and
        user turns, every `<|im_start|>role<|im_sep|>` header (the template writes it) and search
        results (`<|result_start|>...<|result_end|>`, which the engine inserts). A content is a
        string or a list of typed parts (`{"type": "text"|"search"|"search_results", ...}`).
        Roles and contents are encoded as text, so they cannot inject special tokens. With
        `open_turn` (e.g. "assistant") the sequence ends in an opened turn for generation.
        """
        special = self.special_ids
        ids, mask = [self.bos_id], [0]

        def add(tokens: list[int], written_by_assistant: bool) -> None:
            ids.extend(tokens)
            mask.extend([int(written_by_assistant)] * len(tokens))

        for message in messages:
            assistant = message["role"] == "assistant"
            add([special[IM_START], *self.encode(message["role"]), special[IM_SEP]], False)
            content = message["content"]
            parts = [{"type": TEXT_PART, "text": content}] if isinstance(content, str) else content
            for part in parts:
                kind = part["type"]
                text = self.encode(part[PART_FIELDS[kind]])
                around = _PART_TOKENS[kind]
                if around is not None:
                    text = [special[around[0]], *text, special[around[1]]]
                add(text, assistant and _PART_WRITTEN_BY_ASSISTANT[kind])
            add([special[IM_END]], assistant)
        if open_turn is not None:
            add([special[IM_START], *self.encode(open_turn), special[IM_SEP]], False)
        return ids, mask

    def mergeable_ranks(self) -> dict[bytes, int]:
        """Every non-special token as its bytes -> id: the vocabulary in tiktoken's form.

        Ids grow with merge order, so they double as merge ranks; the bench builds a tiktoken
        `Encoding` from this (with SPLIT_PATTERN) to compare speed on the same vocabulary.
        """
        specials = set(SPECIAL_TOKENS)
        return {
            bytes(_CHAR_TO_BYTE[char] for char in token): token_id
            for token, token_id in self._tokenizer.get_vocab().items()
            if token not in specials
        }
