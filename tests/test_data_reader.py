"""The training reader: it streams exactly the manifest's documents in order, cuts the stream
into (B, T) batches, resumes from a saved position batch for batch (on the real SeaweedFS
server too), splits row groups between DDP ranks without overlap and gives every rank the same
number of batches per epoch, refuses states from another manifest or of positions that do not
exist, reads ahead without changing a batch, and builds the per-slot streams of gradient
accumulation."""

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


def _same_batches(a: list, b: list) -> bool:
    return len(a) == len(b) and all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))


def test_every_rank_gets_the_same_number_of_batches_per_epoch(local_set):
    output, _ = local_set
    streams = [TokenStream(output, rank=r, world_size=3) for r in range(3)]
    per_epoch = streams[0].batches_per_epoch(batch_size=2, seq_len=8)
    shares = [stream.tokens for stream in streams]
    assert len({share // 17 for share in shares}) > 1  # the shares alone would give unequal epochs
    assert per_epoch == min(shares) // 17 and all(s.batches_per_epoch(2, 8) == per_epoch for s in streams)
    assert [len(list(stream.batches(2, 8))) for stream in streams] == [per_epoch] * 3

    looping = [TokenStream(output, rank=r, world_size=3, loop=True) for r in range(3)]
    for stream in looping:
        batches = stream.batches(2, 8)
        first_epoch = [next(batches) for _ in range(per_epoch)]
        assert stream.epoch == 0
        second_epoch_first = next(batches)
        assert stream.epoch == 1 and np.array_equal(second_epoch_first[0], first_epoch[0][0])  # starts over


def test_a_split_too_small_for_one_batch_per_rank_is_an_error(local_set):
    output, _ = local_set
    with pytest.raises(ValueError, match="too small for one batch"):
        TokenStream(output, split="val", loop=True).batches(batch_size=4, seq_len=64)


def test_a_state_from_another_manifest_or_a_missing_position_is_refused(local_set, tmp_path):
    output, _ = local_set
    stream = TokenStream(output, rank=1, world_size=2)
    next(stream.batches(2, 8))
    state = stream.state_dict()
    assert set(state) == {"version", "manifest_sha256", "split", "rank", "world_size", "epoch", "shard",
                          "row_group", "row", "token", "epoch_tokens"}
    assert state["shard"].startswith("train/shard-") and len(state["manifest_sha256"]) == 64

    # The same shards under a rewritten manifest (a new commit of the set): another identity.
    other = tmp_path / "other"
    other.mkdir()
    manifest = Manifest.read(Storage(), output)
    for name in ("train", "val", "tokenizer.json"):
        (other / name).symlink_to(f"{output}/{name}")
    manifest.model_copy(update={"created_at": "2031-01-01T00:00:00+00:00"}).write(Storage(), str(other))
    with pytest.raises(ValueError, match="another|changed"):
        TokenStream(str(other), rank=1, world_size=2).load_state_dict(state)

    fresh = lambda: TokenStream(output, rank=1, world_size=2)  # noqa: E731
    cases = [
        ({"shard": "train/shard-gone-00000.parquet"}, "does not list"),
        ({"row_group": 999}, "not rank 1's"),
        ({"row": 10_000}, "has .* rows"),
        ({"token": 10_000}, "has .* rows"),
        ({"version": 1}, "version 1"),
        ({"epoch_tokens": -1}, "impossible"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            fresh().load_state_dict({**state, **change})
    resumed = fresh()
    resumed.load_state_dict(state)
    assert _same_batches(list(resumed.batches(2, 8)), list(stream.batches(2, 8)))


def test_prefetch_changes_no_batch_and_no_state(local_set):
    output, _ = local_set
    for world_size, rank in ((1, 0), (2, 1)):
        runs = []
        for prefetch in (0, 1, 3):
            stream = TokenStream(output, rank=rank, world_size=world_size, loop=True, prefetch=prefetch)
            batches = stream.batches(3, 5)
            seen = []
            for _ in range(2 * stream.batches_per_epoch(3, 5) + 3):  # into the third epoch
                batch = next(batches)
                seen.append((batch[0].tolist(), batch[1].tolist(), stream.state_dict()))
            stream.close()
            runs.append(seen)
        assert runs[0] == runs[1] == runs[2]


def test_prefetch_reads_ahead_while_the_model_works(local_set):
    """With a consumer that spends time on each batch (as a model does), only the very first
    row group is waited for; without prefetch every row group read is a wait."""
    import time

    output, _ = local_set
    for prefetch in (0, 2):
        with TokenStream(output, prefetch=prefetch) as stream:
            for _ in stream.batches(2, 8):
                time.sleep(0.01)  # the model's step
            stats = stream.io_stats
        assert stats["row_groups_read"] >= 16
        if prefetch == 0:
            assert stats["stalls"] == stats["row_groups_read"]
        else:
            assert stats["stalls"] <= 2  # the first group; one more at most on a loaded machine


def test_accumulation_slots_read_the_same_tokens_in_any_layout(local_set):
    """1 process x 2 micro-steps and 2 processes x 1 micro-step: the same tokens per global step."""
    from model.data import slot_streams

    output, _ = local_set
    one_process = slot_streams(output, process_rank=0, processes=1, accum_steps=2)
    two_processes = [slot_streams(output, process_rank=p, processes=2, accum_steps=1)[0] for p in range(2)]
    assert [(s.rank, s.world_size) for s in one_process] == [(0, 2), (1, 2)]
    steps = one_process[0].batches_per_epoch(2, 4)
    assert all(stream.batches_per_epoch(2, 4) == steps for stream in one_process + two_processes)
    for a, b in zip(one_process, two_processes):
        assert _same_batches(list(a.batches(2, 4)), list(b.batches(2, 4)))
    assert one_process[1].state_dict() == two_processes[1].state_dict()  # a slot's state fits either layout


def test_a_schema_1_manifest_is_refused_with_what_to_do(local_set, tmp_path):
    import json

    output, _ = local_set
    data = json.loads(Storage().read_text(f"{output}/manifest.json"))
    data["schema_version"] = 1
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="schema 1.*tokenize the documents again"):
        TokenStream(str(tmp_path))
