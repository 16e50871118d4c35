"""Peer run for bench_tokenizer.py: BPE training time of rustbpe and bpeasy on the same text.

Runs in the bench-only virtualenv (these trainers are not project dependencies). Reads one
JSON string per line, trains each trainer that is installed with the same split pattern and
vocabulary size, and prints one JSON line: {trainer: {"seconds": ..., "vocab_size": ...}}.

    python bpe_trainers.py TEXTS_JSONL PATTERN VOCAB_SIZE
"""

import json
import sys
import time


def main() -> None:
    texts_path, pattern, vocab_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(texts_path, encoding="utf-8") as handle:
        texts = [json.loads(line) for line in handle]
    results = {}
    try:
        import rustbpe

        trainer = rustbpe.Tokenizer()
        started = time.perf_counter()
        trainer.train_from_iterator(iter(texts), vocab_size=vocab_size, pattern=pattern)
        results["rustbpe"] = {"seconds": time.perf_counter() - started, "vocab_size": trainer.vocab_size}
    except ImportError:
        pass
    try:
        import bpeasy

        started = time.perf_counter()
        vocab = bpeasy.train_bpe(iter(texts), pattern, max_token_length=128, vocab_size=vocab_size)
        results["bpeasy"] = {"seconds": time.perf_counter() - started, "vocab_size": len(vocab)}
    except ImportError:
        pass
    print(json.dumps(results))


if __name__ == "__main__":
    main()
