"""The training reader: it streams exactly the manifest's documents in order, cuts the stream
into (B, T) batches, resumes from a saved position batch for batch (on the real SeaweedFS
server too), and splits row groups between DDP ranks without overlap."""

from __future__ import annotations

import numpy as np
import pytest

from infra.storage import Storage, join
from model.data import TokenStream
from model.tokenizer import BpeTokenizer
from model.shards import TOKENIZER_FILE, Manifest, ShardWriter, SplitInfo, TokenizerInfo


def write_shard_set(storage: Storage, output: str) -> list[np.ndarray]:
    """Two units of random documents (`<|bos|>`=0 first), several shards and row groups each;
    returns the train documents in manifest order."""
    tokenizer = BpeTokenizer.train(["a small corpus, just enough to make a tokenizer " * 5], vocab_size=300)
    tokenizer.save(join(output, TOKENIZER_FILE), storage)
    rng = np.random.default_rng(0)
    shards, docs = [], []
    for unit in ("unit-a", "unit-b"):
        with ShardWriter(storage, output, unit, "uint16", shard_tokens=400, row_group_docs=5) as writer:
            for i in range(40):
                tokens = np.concatenate([[0], rng.integers(1, 300, size=int(rng.integers(1, 50)))])
                writer.add("train", f"{unit}-{i}", tokens)
                docs.append(tokens)
            writer.add("val", f"{unit}-val", np.array([0, 7, 8, 9]))
        shards.append(writer.written)
    Manifest(
        created_at=Manifest.now(),
        tokenizer=TokenizerInfo(sha256=tokenizer.sha256, vocab_size=tokenizer.vocab_size, bos_id=tokenizer.bos_id),
        dtype="uint16",
        source_uri="test",
        source_snapshots=[],
        val_fraction=0.0,
        splits={split: SplitInfo.of([s for written in shards for s in written[split]]) for split in ("train", "val")},
    ).write(storage, output)
    # An orphan, as a crashed run leaves behind: not in the manifest, so never read.
    with ShardWriter(storage, output, "crashed", "uint16", shard_tokens=10, row_group_docs=5) as writer:
        writer.add("train", "orphan", np.arange(20))
    return docs


@pytest.fixture(scope="module")
def local_set(tmp_path_factory) -> tuple[str, list[np.ndarray]]:
    output = str(tmp_path_factory.mktemp("tokens"))
    return output, write_shard_set(Storage(), output)


def test_documents_are_the_manifests_in_order(local_set):
    output, docs = local_set
    stream = TokenStream(output)
    assert stream.manifest.splits["train"].n_docs == 80
    read = list(stream.documents())
    assert len(read) == len(docs)
    assert all(np.array_equal(a, b) for a, b in zip(read, docs))
    assert [d.tolist() for d in TokenStream(output, split="val").documents()] == [[0, 7, 8, 9]] * 2


def test_batches_cut_the_token_stream(local_set):
    output, docs = local_set
    stream_tokens = np.concatenate(docs)
    batches = list(TokenStream(output).batches(batch_size=3, seq_len=7))
    needed = 3 * 7 + 1
    assert len(batches) == len(stream_tokens) // needed  # the final part batch is dropped
    for i, (inputs, targets) in enumerate(batches):
        chunk = stream_tokens[i * needed : (i + 1) * needed]
        assert inputs.dtype == np.int64 and inputs.shape == targets.shape == (3, 7)
        assert np.array_equal(inputs.ravel(), chunk[:-1]) and np.array_equal(targets.ravel(), chunk[1:])


@pytest.mark.s3
def test_resume_from_a_saved_state_on_object_storage(seaweed, s3_prefix):
    storage = Storage(seaweed)
    write_shard_set(storage, s3_prefix)
    first = TokenStream(s3_prefix, storage=storage)
    batches = first.batches(batch_size=2, seq_len=16)
    for _ in range(5):
        next(batches)
    state = first.state_dict()
    assert state["token"] > 0 or state["row"] > 0  # mid row group, so the position really matters
    expected = [next(batches) for _ in range(6)]

    resumed = TokenStream(s3_prefix, storage=storage)
    resumed.load_state_dict(state)
    got = [batch for _, batch in zip(range(6), resumed.batches(batch_size=2, seq_len=16))]
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(got, expected))
    assert resumed.load_tokenizer().sha256 == resumed.manifest.tokenizer.sha256


def test_documents_resume_mid_document(local_set):
    output, docs = local_set
    stream = TokenStream(output)
    next(stream.batches(batch_size=1, seq_len=10))  # consumes 11 tokens: into doc 0 or later
    consumed = 11
    rest = np.concatenate(list(stream.documents()))
    assert np.array_equal(rest, np.concatenate(docs)[consumed:])


def test_ranks_share_the_row_groups_without_overlap(local_set):
    output, docs = local_set
    per_rank = [[d.tolist() for d in TokenStream(output, rank=r, world_size=3).documents()] for r in range(3)]
    assert all(per_rank)
    merged = sorted(doc for rank_docs in per_rank for doc in rank_docs)
    assert merged == sorted(d.tolist() for d in docs)


def test_looping_starts_the_next_epoch(local_set):
    output, docs = local_set
    stream = TokenStream(output, split="val", loop=True)
    documents = stream.documents()
    first_five = [next(documents).tolist() for _ in range(5)]
    assert first_five == [[0, 7, 8, 9]] * 5
    assert stream.state_dict()["epoch"] == 2


def test_a_state_from_another_rank_is_refused(local_set):
    output, _ = local_set
    state = TokenStream(output, rank=0, world_size=2).state_dict()
    with pytest.raises(ValueError, match="rank"):
        TokenStream(output, rank=1, world_size=2).load_state_dict(state)
