"""Real pretraining text as a docs stage: the corpus the pretraining tests and benchmark train on.

    docs = pretrain_text_documents(Path("../shared/realdata/pretrain_text"))
    write_documents(storage, "data/pretrain-docs", docs, parts=4)   # then the tokenize stage

The folder holds three public texts (see its SOURCES.md): 300 C4 web documents (JSON lines),
30 English Wikipedia articles (one per line) and Tiny Shakespeare (one 1.1 MB play text). C4
and Wikipedia documents stay whole; Shakespeare is cut at blank lines (between speeches) into
documents of about `shakespeare_chars` characters, so that the id-hash train/val split takes a
share of it instead of all or nothing. Ids name the source and index (`c4-00012`,
`wiki-003`, `shakespeare-0042`), so the split is the same on every run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from infra.storage import Storage
from tasks.formats.docs import docs_uri, documents_to_table, write_table
from tasks.pipeline import Document

C4_FILE = "llama_factory_c4_demo.jsonl"
WIKI_FILE = "llama_factory_wiki_demo.txt"
SHAKESPEARE_FILE = "tinyshakespeare_input.txt"


def _shakespeare_pieces(text: str, size: int) -> Iterator[str]:
    piece: list[str] = []
    length = 0
    for speech in text.split("\n\n"):
        piece.append(speech)
        length += len(speech) + 2
        if length >= size:
            yield "\n\n".join(piece)
            piece, length = [], 0
    if piece:
        yield "\n\n".join(piece)


def pretrain_text_documents(folder: Path, shakespeare_chars: int = 4000) -> list[Document]:
    """Every document of the folder, in a fixed order (C4, Wikipedia, Shakespeare)."""
    docs: list[Document] = []
    with open(folder / C4_FILE, encoding="utf-8") as lines:
        for i, line in enumerate(filter(str.strip, lines)):
            docs.append(Document(id=f"c4-{i:05d}", url=f"c4://{i}", text=json.loads(line)["text"], language="en"))
    with open(folder / WIKI_FILE, encoding="utf-8") as lines:
        for i, line in enumerate(filter(str.strip, lines)):
            docs.append(Document(id=f"wiki-{i:03d}", url=f"wiki://{i}", text=line.strip(), language="en"))
    plays = (folder / SHAKESPEARE_FILE).read_text(encoding="utf-8")
    for i, piece in enumerate(_shakespeare_pieces(plays, shakespeare_chars)):
        docs.append(Document(id=f"shakespeare-{i:04d}", url=f"shakespeare://{i}", text=piece, language="en"))
    return docs


def write_documents(storage: Storage, output: str, docs: list[Document], parts: int = 4, row_group_rows: int = 64) -> list[str]:
    """Write `docs` as a docs stage (`<output>/docs/part-NNN.parquet`, round-robin into `parts`
    files); return the part URIs."""
    uris = []
    for part in range(parts):
        uri = docs_uri(output, f"{part:03d}")
        write_table(storage, uri, documents_to_table(docs[part::parts]), row_group_rows=row_group_rows)
        uris.append(uri)
    return uris
