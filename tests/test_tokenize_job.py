"""The tokenize stage on Spark: it trains and saves a tokenizer (and refuses to on too little
text), every document comes back from the shards unchanged, small runs get a val split, a crash
between shard writes leaves the previous manifest and a rerun completes the same shard set as a
clean run, and a real sample round-trips through SeaweedFS."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from infra.settings import Settings, ShardSettings, StorageSettings, TokenizerSettings
from infra.storage import Storage, join
from model.data import TokenStream
from model.tokenizer import BpeTokenizer
from tasks.formats.docs import docs_uri, documents_to_table, write_table
from tasks.jobs.tokenize import TooLittleText, run_tokenize, val_fraction_for
from tasks.jobs.units import StaleProgress
from tasks.pipeline import Document
from model.shards import Manifest, split_of
from tests.conftest import REALDATA, needs_realdata
from tests.test_tokenizer import synthetic_corpus

pytestmark = pytest.mark.spark


def job_settings(storage: StorageSettings | None = None, vocab_size: int = 400) -> Settings:
    return Settings(
        storage=storage or StorageSettings(),
        tokenizer=TokenizerSettings(vocab_size=vocab_size, sample_docs=10_000, heldout_docs=10, min_train_bytes=10_000),
        shards=ShardSettings(shard_tokens=2_000, row_group_docs=8, val_fraction=0.1),
    )


def write_docs(storage: Storage, stage: str, parts: dict[str, list[str]]) -> dict[str, str]:
    """A filter/dedup-style stage output: docs/part-<name>.parquet with small row groups."""
    texts = {}
    for name, part_texts in parts.items():
        docs = [
            Document(id=f"{name}-{i}", url=f"https://example.com/{name}/{i}", text=text, snapshot="CC-MAIN-2024-10")
            for i, text in enumerate(part_texts)
        ]
        write_table(storage, docs_uri(stage, name), documents_to_table(docs), row_group_rows=8)
        texts.update({doc.id: doc.text for doc in docs})
    return texts


def read_shards(storage: Storage, output: str) -> dict[str, tuple[str, list[int]]]:
    """doc id -> (split, tokens) over every shard the manifest lists."""
    manifest = Manifest.read(storage, output)
    rows = {}
    for split, info in manifest.splits.items():
        for shard in info.shards:
            with storage.open_input(join(output, shard.path)) as handle:
                for row in pq.read_table(handle).to_pylist():
                    assert row["n_tokens"] == len(row["tokens"])
                    rows[row["id"]] = (split, row["tokens"])
    return rows


def assert_round_trip(storage: Storage, output: str, texts: dict[str, str], val_fraction: float) -> None:
    tokenizer = TokenStream(output, storage=storage).load_tokenizer()
    rows = read_shards(storage, output)
    assert rows.keys() == texts.keys()
    for doc_id, (split, tokens) in rows.items():
        assert tokens[0] == tokenizer.bos_id
        assert tokenizer.decode(tokens[1:]) == texts[doc_id]
        assert split == split_of(doc_id, val_fraction)


def corrupt_last_row_group(path: Path) -> bytes:
    """Zero the pages of a Parquet file's last row group (reading it then fails); return the
    original bytes. The rows before it read fine, so the unit dies between shard writes."""
    original = path.read_bytes()
    data = bytearray(original)
    metadata = pq.ParquetFile(path).metadata
    group = metadata.row_group(metadata.num_row_groups - 1)
    for c in range(group.num_columns):
        column = group.column(c)
        start = column.dictionary_page_offset or column.data_page_offset
        data[start : start + column.total_compressed_size] = bytes(column.total_compressed_size)
    path.write_bytes(bytes(data))
    return original


def shard_files(storage: Storage, output: str) -> list[str]:
    return [entry.uri[len(output) + 1 :] for entry in storage.list(output, suffix=".parquet")]


def manifest_shards(manifest: Manifest) -> dict[str, list]:
    return {split: [s.model_dump() for s in info.shards] for split, info in manifest.splits.items()}


def test_clean_run_trains_a_tokenizer_and_round_trips_every_document(spark, tmp_path):
    storage = Storage()
    stage = str(tmp_path / "docs")
    texts = write_docs(storage, stage, {"a": synthetic_corpus(60, seed=1), "b": synthetic_corpus(60, seed=2) + [""]})
    output = str(tmp_path / "tokens")
    report = run_tokenize(spark, stage, output, job_settings())

    assert report["failed"] == {} and report["units"] == 2
    assert report["counts"] == {"skipped_empty": 1}
    training = report["tokenizer_training"]
    # 120 non-empty documents: every 10th is held out (12), up to heldout_docs (10); 110 train.
    assert training["vocab_size"] == 400 and training["heldout_docs"] == 10 and training["train_docs"] == 110
    assert training["bytes_per_token"] > 1.5
    assert json.loads(storage.read_text(join(output, "tokenizer_report.json"))) == training

    manifest = Manifest.read(storage, output)
    assert manifest.tokenizer.sha256 == BpeTokenizer.load(join(output, "tokenizer.json")).sha256
    assert manifest.source_snapshots == ["CC-MAIN-2024-10"] and manifest.dtype == "uint16"
    train = manifest.splits["train"]
    assert len(train.shards) >= 4  # shard_tokens is small: each unit wrote several shards
    assert train.n_tokens == sum(s.n_tokens for s in train.shards)
    assert sorted(shard_files(storage, output)) == sorted(
        s.path for info in manifest.splits.values() for s in info.shards
    )
    del texts["b-60"]  # the empty document is skipped
    assert_round_trip(storage, output, texts, val_fraction=0.1)


def test_crash_between_shard_writes_then_rerun_completes_the_same_shards(spark, tmp_path):
    storage, settings = Storage(), job_settings()
    stage = str(tmp_path / "docs")
    parts = {name: synthetic_corpus(70, seed=seed) for seed, name in enumerate(["a", "b", "c"])}
    texts = write_docs(storage, stage, parts)
    tokenizer_uri = str(tmp_path / "tokenizer.json")
    BpeTokenizer.train([t for p in parts.values() for t in p], vocab_size=400).save(tokenizer_uri)

    clean = str(tmp_path / "clean")
    run_tokenize(spark, stage, clean, settings, tokenizer_uri)
    clean_manifest = Manifest.read(storage, clean)

    # First run over a, b: committed. Then c arrives, and its task dies after its first shards.
    output = str(tmp_path / "tokens")
    part_c = Path(docs_uri(stage, "c"))
    c_bytes = part_c.read_bytes()
    part_c.unlink()
    run_tokenize(spark, stage, output, settings, tokenizer_uri)
    committed = storage.read_text(join(output, "manifest.json"))
    part_c.write_bytes(c_bytes)
    corrupt_last_row_group(part_c)

    crashed = run_tokenize(spark, stage, output, settings, tokenizer_uri)
    assert list(crashed["failed"]) == [str(part_c)] and crashed["resumed"] == 2
    assert storage.read_text(join(output, "manifest.json")) == committed  # the old, consistent state
    assert any("shard-part-c" in path for path in shard_files(storage, output))  # half a unit on disk

    part_c.write_bytes(c_bytes)
    resumed = run_tokenize(spark, stage, output, settings, tokenizer_uri)
    assert resumed["failed"] == {} and resumed["resumed"] == 2
    manifest = Manifest.read(storage, output)
    assert manifest_shards(manifest) == manifest_shards(clean_manifest)
    assert manifest.splits["train"].n_tokens == clean_manifest.splits["train"].n_tokens
    assert sorted(shard_files(storage, output)) == sorted(shard_files(storage, clean))  # nothing duplicated
    assert_round_trip(storage, output, texts, val_fraction=0.1)


def test_an_output_made_with_another_tokenizer_is_refused(tmp_path):
    storage = Storage()
    stage = str(tmp_path / "docs")
    write_docs(storage, stage, {"a": synthetic_corpus(5, seed=1)})
    output = str(tmp_path / "tokens")
    BpeTokenizer.train(synthetic_corpus(50, seed=1), vocab_size=300).save(join(output, "tokenizer.json"))
    other = str(tmp_path / "other.json")
    BpeTokenizer.train(synthetic_corpus(50, seed=2), vocab_size=300).save(other)
    with pytest.raises(ValueError, match="another tokenizer"):
        run_tokenize(None, stage, output, job_settings(), tokenizer_uri=other)


@needs_realdata
@pytest.mark.s3
def test_real_sample_round_trips_through_seaweedfs(spark, seaweed, s3_prefix):
    lines = (REALDATA / "pretrain_text" / "llama_factory_c4_demo.jsonl").read_text().splitlines()
    c4 = [json.loads(line)["text"] for line in lines]
    storage = Storage(seaweed)
    stage, output = join(s3_prefix, "docs"), join(s3_prefix, "tokens")
    texts = write_docs(storage, stage, {"c4-1": c4[:150], "c4-2": c4[150:]})
    report = run_tokenize(spark, stage, output, job_settings(seaweed, vocab_size=1_000))
    assert report["failed"] == {}
    assert sum(split["docs"] for split in report["splits"].values()) == len(c4) == 300
    assert_round_trip(storage, output, texts, val_fraction=0.1)


def test_too_little_text_to_train_a_tokenizer_is_a_one_line_error(tmp_path, capsys):
    from flows.cli import main

    storage = Storage()
    stage = str(tmp_path / "docs")
    write_docs(storage, stage, {"a": synthetic_corpus(30, seed=1)})  # about 8 KB of text
    output = str(tmp_path / "tokens")
    with pytest.raises(TooLittleText, match=r"only [\d,]+ bytes of text in 27 document\(s\).*min_train_bytes is 50,000"):
        run_tokenize(None, stage, output, Settings())
    assert not storage.exists(join(output, "tokenizer.json"))

    assert main(["tokenizer", "train", "--input", stage, "--output", str(tmp_path / "tok")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("crawl2chat: error: only ") and "--tokenizer" in err and "\n" not in err


def test_small_runs_get_a_val_split_and_large_ones_keep_the_fraction(spark, tmp_path):
    storage = Storage()
    stage = str(tmp_path / "docs")
    texts = write_docs(storage, stage, {"a": synthetic_corpus(40, seed=1), "b": synthetic_corpus(35, seed=2)})
    files = [docs_uri(stage, "a"), docs_uri(stage, "b")]
    defaults = ShardSettings()  # val_fraction 0.001: 75 documents would give no val at all
    assert sum(split_of(doc_id, defaults.val_fraction) == "val" for doc_id in texts) == 0
    assert val_fraction_for(storage, files, defaults) == pytest.approx(10 / 75)
    assert val_fraction_for(storage, files, defaults.model_copy(update={"min_val_docs": 0})) == 0.001
    assert val_fraction_for(storage, files, defaults.model_copy(update={"val_fraction": 0.2})) == 0.2  # 15 >= 10
    assert val_fraction_for(storage, files, defaults.model_copy(update={"min_val_docs": 70})) == 0.5  # at most half

    settings = job_settings().model_copy(update={"shards": defaults})
    output = str(tmp_path / "tokens")
    report = run_tokenize(spark, stage, output, settings)
    manifest = Manifest.read(storage, output)
    assert manifest.val_fraction == report["val_fraction"] == pytest.approx(10 / 75)
    assert 0 < manifest.splits["val"].n_docs < 20 and manifest.splits["val"].n_tokens > 0
    assert_round_trip(storage, output, texts, val_fraction=manifest.val_fraction)

    # More documents change the floor's fraction: units split under the old one are not mixed in.
    write_docs(storage, stage, {"c": synthetic_corpus(30, seed=3)})
    with pytest.raises(ValueError, match="val fraction"):
        run_tokenize(spark, stage, output, settings)


def test_other_shard_settings_are_refused_then_forced(spark, tmp_path):
    storage = Storage()
    stage = str(tmp_path / "docs")
    texts = write_docs(storage, stage, {"a": synthetic_corpus(40, seed=1), "b": synthetic_corpus(40, seed=2)})
    tokenizer_uri = str(tmp_path / "tokenizer.json")
    BpeTokenizer.train(list(texts.values()), vocab_size=400).save(tokenizer_uri)
    output = str(tmp_path / "tokens")
    run_tokenize(spark, stage, output, job_settings(), tokenizer_uri)
    shards_before = len(Manifest.read(storage, output).splits["train"].shards)
    bigger = job_settings()
    bigger.shards.shard_tokens = 5_000
    with pytest.raises(StaleProgress, match=r"made with other settings \(shards\.shard_tokens: 2000 -> 5000\); use a fresh output, or --force"):
        run_tokenize(spark, stage, output, bigger, tokenizer_uri)
    forced = run_tokenize(spark, stage, output, bigger, tokenizer_uri, force=True)
    assert forced["redone"] == 2 and forced["failed"] == {}
    assert len(Manifest.read(storage, output).splits["train"].shards) < shards_before
    assert_round_trip(storage, output, texts, val_fraction=0.1)
