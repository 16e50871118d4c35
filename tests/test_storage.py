"""Storage against local paths and a real SeaweedFS S3 server: read, write, list, glob, errors."""

from __future__ import annotations

import pytest

from infra.settings import StorageSettings
from infra.storage import Storage, StorageError, join


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> tuple[Storage, str]:
    if request.param == "local":
        return Storage(StorageSettings(endpoint_url=None)), str(tmp_path)
    settings = request.getfixturevalue("seaweed")
    return Storage(settings), request.getfixturevalue("s3_prefix")


def test_write_read_list_glob_delete(root):
    storage, base = root
    storage.write_bytes(join(base, "a/x.warc.gz"), b"abc")
    storage.write_text(join(base, "a/b/y.warc.gz"), "hello")
    storage.write_text(join(base, "a/z.json"), "{}")
    assert storage.read_bytes(join(base, "a/x.warc.gz")) == b"abc"
    assert storage.size(join(base, "a/b/y.warc.gz")) == 5
    listed = [entry.uri for entry in storage.list(join(base, "a"), suffix=".warc.gz")]
    assert listed == [join(base, "a/b/y.warc.gz"), join(base, "a/x.warc.gz")]
    assert storage.glob(join(base, "a/*.json")) == [join(base, "a/z.json")]
    assert storage.glob(join(base, "a/*/*.warc.gz")) == [join(base, "a/b/y.warc.gz")]
    assert storage.list(join(base, "missing")) == []
    storage.delete(join(base, "a/z.json"))
    assert not storage.exists(join(base, "a/z.json"))
    with storage.open_input(join(base, "a/x.warc.gz")) as handle:
        handle.seek(1)
        assert handle.read() == b"bc"


def test_overwrite_replaces_whole_file(root):
    storage, base = root
    target = join(base, "f.bin")
    storage.write_bytes(target, b"x" * 1000)
    storage.write_bytes(target, b"short")
    assert storage.read_bytes(target) == b"short"


def test_large_object_roundtrip_s3(seaweed, s3_prefix):
    storage = Storage(seaweed)
    payload = bytes(range(256)) * (40 * 1024 * 4)  # 40 MiB: several multipart parts
    storage.write_bytes(join(s3_prefix, "big.bin"), payload)
    assert storage.read_bytes(join(s3_prefix, "big.bin")) == payload


def test_wrong_credentials_fail_in_one_line(seaweed, s3_prefix):
    bad = Storage(seaweed.model_copy(update={"secret_access_key": "wrong", "max_attempts": 1}))
    with pytest.raises(StorageError, match=r"^cannot write to s3://"):
        bad.check_writable(s3_prefix)


def test_unsupported_scheme():
    with pytest.raises(StorageError, match="unsupported URI scheme"):
        Storage().exists("ftp://host/file")


def test_a_streamed_output_appears_only_when_committed_and_an_error_leaves_nothing(root):
    from infra.storage import S3_PART_BYTES

    storage, base = root
    target = join(base, "streamed.bin")
    part = bytes(range(256)) * (S3_PART_BYTES // 256)
    with pytest.raises(RuntimeError):
        with storage.open_output(target) as out:
            out.write(part + b"tail")  # on S3: one part uploaded, an upload in progress
            assert out.tell() == len(part) + 4
            assert not storage.exists(target)
            raise RuntimeError("the writer died")
    assert storage.list(base) == []  # no object, no temporary file
    if base.startswith("s3://"):
        bucket = base[len("s3://") :].split("/", 1)[0]
        pending = storage._s3_client().list_multipart_uploads(Bucket=bucket, Prefix=base.split("/", 3)[3])
        assert pending.get("Uploads", []) == []  # the upload was aborted, not left dangling

    out = storage.create_output(target)
    for _ in range(3):
        out.write(part)
    assert not storage.exists(target)
    out.commit()
    out.abort()  # after a commit: nothing happens
    assert storage.read_bytes(target) == part * 3


def test_a_write_that_raises_leaves_nothing(root):
    storage, base = root
    target = join(base, "part.parquet")
    storage.write_bytes(target, b"the old, complete file")
    with pytest.raises(RuntimeError, match="unit died"):
        with storage.open_output(target) as out:
            out.write(b"half of a new file")
            raise RuntimeError("unit died")
    assert storage.read_bytes(target) == b"the old, complete file"
    assert [entry.uri for entry in storage.list(base)] == [target]  # no temporary left behind


def test_stat_many_lists_each_folder_once(root):
    storage, base = root
    for name in ("a/1.bin", "a/2.bin", "b/3.bin"):
        storage.write_bytes(join(base, name), name.encode() * 3)
    wanted = [join(base, "a/1.bin"), join(base, "a/2.bin"), join(base, "b/3.bin"), join(base, "a/missing.bin")]
    found = storage.stat_many(wanted)
    assert sorted(found) == sorted(wanted[:3])
    assert found[join(base, "b/3.bin")].size == 21 and found[join(base, "b/3.bin")].mtime_ns > 0
    assert found[join(base, "a/1.bin")] == storage.stat(join(base, "a/1.bin"))
