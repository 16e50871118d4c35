"""Token shards: the train/val split, dtypes, shard capping and naming, row groups, the
manifest model, and that a writer interrupted by an error never uploads a half-full shard."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from infra.storage import Storage
from model.shards import (
    Manifest,
    ShardInfo,
    ShardWriter,
    SplitInfo,
    TokenizerInfo,
    shard_path,
    shard_schema,
    split_of,
    token_dtype,
)


def test_split_is_stable_and_takes_the_asked_fraction():
    ids = [f"doc-{i}" for i in range(20_000)]
    splits = [split_of(doc_id, 0.1) for doc_id in ids]
    assert splits == [split_of(doc_id, 0.1) for doc_id in ids]
    assert 0.09 < splits.count("val") / len(ids) < 0.11
    assert {split_of(doc_id, 0.0) for doc_id in ids} == {"train"}
    assert {split_of(doc_id, 1.0) for doc_id in ids} == {"val"}


def test_token_dtype_follows_the_vocabulary_size():
    assert token_dtype(32_768) == "uint16"
    assert token_dtype(65_536) == "uint16"
    assert token_dtype(65_537) == "int32"
    assert shard_schema("uint16").field("tokens").type == pa.list_(pa.uint16())
    assert shard_schema("int32").field("tokens").type == pa.list_(pa.int32())


def _docs(n: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(f"d{i:03d}", rng.integers(0, 60_000, size=int(rng.integers(1, 40)))) for i in range(n)]


def test_writer_caps_shards_names_them_and_groups_rows(tmp_path):
    storage, output = Storage(), str(tmp_path)
    docs = _docs(50)
    with ShardWriter(storage, output, "unitA", "uint16", shard_tokens=200, row_group_docs=4) as writer:
        for doc_id, tokens in docs:
            writer.add("train", doc_id, tokens)
    shards = writer.written["train"]
    assert writer.written["val"] == []
    assert [s.path for s in shards] == [shard_path("train", "unitA", i) for i in range(len(shards))]
    assert shards[0].path == "train/shard-unitA-00000.parquet"
    assert all(s.n_tokens >= 200 for s in shards[:-1])  # each full shard reached the cap ...
    assert all(s.n_tokens - 40 < 200 for s in shards[:-1])  # ... with at most one document more
    assert sum(s.n_docs for s in shards) == 50
    assert sum(s.n_tokens for s in shards) == sum(len(t) for _, t in docs)

    rows = []
    for shard in shards:
        parquet = pq.ParquetFile(f"{output}/{shard.path}")
        assert parquet.schema_arrow == shard_schema("uint16")
        assert parquet.metadata.num_row_groups == shard.n_row_groups
        for g in range(shard.n_row_groups):  # the manifest's per-row-group counts are the file's
            group = parquet.read_row_group(g)
            assert group.num_rows == shard.row_group_docs[g]
            assert sum(group.column("n_tokens").to_pylist()) == shard.row_group_tokens[g]
        assert all(parquet.metadata.row_group(g).num_rows <= 4 for g in range(shard.n_row_groups))
        rows += parquet.read().to_pylist()
    assert [row["id"] for row in rows] == [doc_id for doc_id, _ in docs]
    assert [row["tokens"] for row in rows] == [tokens.tolist() for _, tokens in docs]
    assert [row["n_tokens"] for row in rows] == [len(tokens) for _, tokens in docs]


def test_ids_beyond_uint16_survive_as_int32(tmp_path):
    tokens = np.array([0, 65_535, 65_536, 99_999])
    with ShardWriter(Storage(), str(tmp_path), "u", "int32", shard_tokens=100, row_group_docs=10) as writer:
        writer.add("val", "big", tokens)
    table = pq.read_table(tmp_path / writer.written["val"][0].path)
    assert table.column("tokens").to_pylist() == [tokens.tolist()]


def test_an_error_drops_the_open_shards_and_keeps_the_finished_ones(tmp_path):
    storage, output = Storage(), str(tmp_path)
    docs = _docs(30)
    with pytest.raises(RuntimeError):
        with ShardWriter(storage, output, "u", "uint16", shard_tokens=150, row_group_docs=4) as writer:
            for doc_id, tokens in docs:
                writer.add("train", doc_id, tokens)
                if len(writer.written["train"]) == 1:
                    raise RuntimeError("the task died here")
    on_disk = [entry.uri for entry in storage.list(output)]
    assert on_disk == [f"{output}/train/shard-u-00000.parquet"]
    assert pq.read_table(on_disk[0]).num_rows == writer.written["train"][0].n_docs


def test_manifest_round_trip_and_strictness(tmp_path):
    shards = [
        ShardInfo(path="train/shard-a-00000.parquet", n_docs=3, n_tokens=30, n_row_groups=2,
                  row_group_docs=[2, 1], row_group_tokens=[25, 5])
    ]
    manifest = Manifest(
        created_at=Manifest.now(),
        tokenizer=TokenizerInfo(sha256="ab" * 32, vocab_size=512, bos_id=0),
        dtype="uint16",
        source_uri="s3://bucket/docs",
        source_snapshots=["CC-MAIN-2024-10"],
        val_fraction=0.001,
        splits={"train": SplitInfo.of(shards), "val": SplitInfo.of([])},
    )
    assert manifest.splits["train"].n_tokens == 30 and manifest.splits["val"].n_docs == 0
    storage = Storage()
    manifest.write(storage, str(tmp_path))
    assert Manifest.read(storage, str(tmp_path)) == manifest
    assert Manifest.read(storage, str(tmp_path / "manifest.json")) == manifest
    data = manifest.model_dump()
    with pytest.raises(ValidationError):
        Manifest.model_validate({**data, "schema_version": 3})
    with pytest.raises(ValidationError):
        Manifest.model_validate({**data, "unexpected": 1})
    with pytest.raises(ValidationError, match="add up"):
        ShardInfo.model_validate({**shards[0].model_dump(), "row_group_tokens": [25, 6]})
    with pytest.raises(ValueError, match="schema 3"):
        Manifest.parse(manifest.model_copy(update={"schema_version": 3}).model_dump_json().encode())


@pytest.mark.s3
def test_a_shard_streams_out_and_appears_on_object_storage_only_when_complete(seaweed, s3_prefix):
    """A shard larger than one upload part: its row groups go out as they fill (nothing to see
    yet), the object appears whole when the shard closes, and an error leaves nothing at all."""
    from infra.storage import S3_PART_BYTES

    storage = Storage(seaweed)
    rng = np.random.default_rng(1)
    docs = [(f"d{i}", rng.integers(0, 60_000, size=50_000)) for i in range(3 * S3_PART_BYTES // 100_000)]
    with pytest.raises(RuntimeError):
        with ShardWriter(storage, s3_prefix, "u", "uint16", shard_tokens=10**9, row_group_docs=10) as writer:
            for doc_id, tokens in docs:
                writer.add("train", doc_id, tokens)
            output = writer._open["train"].output
            assert output.upload_id is not None and len(output.parts) >= 2  # streamed, not held
            assert storage.list(s3_prefix) == []
            raise RuntimeError("the task died here")
    assert storage.list(s3_prefix) == []
    bucket, prefix = s3_prefix[len("s3://") :].split("/", 1)
    assert storage._s3_client().list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []) == []

    with ShardWriter(storage, s3_prefix, "u", "uint16", shard_tokens=10**9, row_group_docs=10) as writer:
        for doc_id, tokens in docs:
            writer.add("train", doc_id, tokens)
    [shard] = writer.written["train"]
    with storage.open_input(f"{s3_prefix}/{shard.path}") as handle:
        table = pq.read_table(handle)
    assert table.column("id").to_pylist() == [doc_id for doc_id, _ in docs]
    groups = [docs[i : i + 10] for i in range(0, len(docs), 10)]
    assert shard.row_group_tokens == [sum(len(tokens) for _, tokens in group) for group in groups]
    assert shard.row_group_docs == [len(group) for group in groups] and shard.n_tokens == 50_000 * len(docs)
