"""FineWeb's three line rules at their thresholds (a value at the threshold is dropped, as in
the paper and datatrove), and real text that passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.pipeline import Document
from tasks.filters.quality.fineweb import FineWebFilter

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
needs_realdata = pytest.mark.skipif(not REALDATA.exists(), reason="../shared/realdata is absent")


def fineweb(lines: list[str]) -> str | None:
    return FineWebFilter().apply(Document(id="d", url="u", text="\n".join(lines)))


def sentence(i: int, end: str = ".") -> str:
    """A distinct line of 40-odd characters."""
    return f"Line number {i:03d} tells a small story here{end}"


def test_line_punctuation_ratio():
    ends = [".", "!", "?", '"', "'"]
    lines = [sentence(i, end="") for i in range(25)]
    for i in range(4):
        lines[i] = sentence(i, end=ends[i])
    lines[3] = sentence(3, end="")
    assert fineweb(lines) is None  # 3 of 25 = 0.12, not below it
    lines[2] = sentence(2, end="")
    assert fineweb(lines) == "fineweb_line_punct_ratio"  # 2 of 25 = 0.08


def test_other_endings_are_not_terminal_punctuation():
    assert fineweb([sentence(i, end=end) for i, end in enumerate([":", ";", ",", "…", ")"] * 2)]) == (
        "fineweb_line_punct_ratio"
    )


def test_short_line_ratio():
    short = [f"Short line {i:02d}." for i in range(68)]  # 15 characters, <= 30
    long = [sentence(i) for i in range(33)]
    assert fineweb(short[:67] + long) is None  # 67 of 100, not above 0.67
    assert fineweb(short + long[:32]) == "fineweb_short_line_ratio"  # 68 of 100
    assert fineweb(["x" * 29 + ".", "y" * 30 + ".", "z" * 30 + "."]) is None  # 31 characters is long


def test_duplicated_line_characters():
    unique = [f"Unique line {i} " + "u" * 25 + "." for i in range(8)]  # 8 x 40 characters
    repeated = "Repeated line " + "r" * 25 + "."  # 40 characters
    lines = [repeated, *unique, repeated]
    assert fineweb(lines) is None  # 40 of 400 = 0.10, not above it
    lines[1] = lines[1][:-2] + "."
    assert fineweb(lines) == "fineweb_char_dup_ratio"  # 40 of 399


def test_blank_lines_are_not_short_lines():
    lines = [sentence(i) for i in range(10)]
    assert fineweb(["", *"\n \n".join(lines).splitlines(), "   "]) is None


def test_empty_text_is_dropped():
    assert fineweb([]) == "fineweb_line_punct_ratio"


@needs_realdata
def test_real_c4_documents_pass():
    with open(REALDATA / "pretrain_text" / "llama_factory_c4_demo.jsonl") as lines:
        texts = [json.loads(line)["text"] for line in lines]
    assert sum(fineweb(text.splitlines()) is None for text in texts) >= 0.95 * len(texts)
