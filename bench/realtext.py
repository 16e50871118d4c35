"""Real text and a tokenizer trained on it, shared by the benches: the pretraining sample in
../shared/realdata/pretrain_text (C4 and Wikipedia excerpts, Tiny Shakespeare).

The model benches train the project's own BPE on it once per vocabulary size and keep it in
.bench/ (ignored by git), so every contender of a run sees the very same token ids.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REALDATA_TEXT = ROOT.parent / "shared" / "realdata" / "pretrain_text"
CACHE = ROOT / ".bench"


def load_texts(paths: list[Path]) -> list[str]:
    """.jsonl files (a "text" field per line) or plain text (one document per blank-line-separated block)."""
    texts = []
    for path in paths:
        if path.suffix == ".jsonl":
            texts += [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line]
        else:
            texts += [block for block in path.read_text(encoding="utf-8").split("\n\n") if block.strip()]
    return texts


def realdata_texts() -> list[str]:
    if not REALDATA_TEXT.exists():
        raise SystemExit(f"{REALDATA_TEXT} is absent: the benches need the real pretraining sample")
    return load_texts(sorted(REALDATA_TEXT.iterdir()))


def realdata_tokenizer(vocab_size: int):
    """Our BPE trained on the real sample with `vocab_size` tokens (cached in .bench/)."""
    from model.tokenizer import BpeTokenizer

    path = CACHE / f"tokenizer-realdata-{vocab_size}.json"
    if path.exists():
        return BpeTokenizer.load(str(path))
    tokenizer = BpeTokenizer.train(realdata_texts(), vocab_size=vocab_size)
    CACHE.mkdir(exist_ok=True)
    tokenizer.save(str(path))
    return tokenizer
