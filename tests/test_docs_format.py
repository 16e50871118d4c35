"""tasks/formats/docs.py: parts are streamed a row group at a time and appear only when complete;
an --input that would mix stages (a run root) is refused in one line, by the job and the CLI."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from flows.cli import main
from infra.storage import Storage, StorageError
from tasks.formats.docs import DOC_SCHEMA, PartWriter, docs_uri, documents_to_table, dropped_uri, list_doc_files, write_table
from tasks.pipeline import Document


def docs(count: int, start: int = 0) -> list[Document]:
    return [Document(id=f"d{i}", url=f"https://example.com/{i}", text=f"text {i}") for i in range(start, start + count)]


def test_a_part_is_written_in_row_groups(tmp_path):
    uri = str(tmp_path / "docs" / "part-a.parquet")
    with PartWriter(Storage(), uri, DOC_SCHEMA, 10, documents_to_table) as part:
        for doc in docs(25):
            part.add(doc)
            assert len(part.pending) < 10  # never more than one row group held
    metadata = pq.ParquetFile(uri).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [10, 10, 5]
    assert pq.read_table(uri).column("id").to_pylist() == [f"d{i}" for i in range(25)]


def test_a_part_whose_writer_raises_is_never_published(tmp_path):
    uri = str(tmp_path / "docs" / "part-a.parquet")
    with pytest.raises(OSError, match="connection reset"):
        with PartWriter(Storage(), uri, DOC_SCHEMA, 10, documents_to_table) as part:
            for doc in docs(25):
                part.add(doc)
            raise OSError("connection reset")
    assert list((tmp_path / "docs").iterdir()) == []


@pytest.fixture
def run_root(tmp_path) -> str:
    """What `crawl2chat run` leaves: filtered/ (with dropped/), deduped/ (with removed/), tokens/."""
    storage, root = Storage(), str(tmp_path / "run")
    for stage in ("filtered", "deduped"):
        write_table(storage, docs_uri(f"{root}/{stage}", "p0"), documents_to_table(docs(3)), 10)
    write_table(storage, dropped_uri(f"{root}/filtered", "p0"), documents_to_table(docs(2, start=100)), 10)
    return root


def test_a_run_root_is_not_a_documents_stage(run_root):
    storage = Storage()
    with pytest.raises(StorageError) as refused:
        list_doc_files(storage, run_root)
    assert str(refused.value) == (
        f"{run_root} is not one documents stage: it has no docs/ folder and holds Parquet files in deduped/docs, "
        f"filtered/docs, filtered/dropped; point --input at one stage (the folder holding docs/, e.g. {run_root}/deduped)"
    )
    assert list_doc_files(storage, f"{run_root}/deduped") == [docs_uri(f"{run_root}/deduped", "p0")]
    assert list_doc_files(storage, f"{run_root}/deduped/docs") == [docs_uri(f"{run_root}/deduped", "p0")]


@pytest.mark.parametrize("command", ["dedup", "tokenize"])
def test_the_cli_refuses_a_run_root_in_one_line(run_root, tmp_path, capsys, command):
    assert main([command, "--input", run_root, "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"crawl2chat: error: {run_root} is not one documents stage") and "\n" not in error
