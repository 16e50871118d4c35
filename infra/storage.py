"""One storage API for local paths and `s3://bucket/prefix` URIs.

Everything the pipeline reads or writes goes through `Storage`: WARC inputs, document Parquet,
stats, token shards and manifests. Local paths use pyarrow's local filesystem; `s3://` URIs use
pyarrow's S3 filesystem configured from `StorageSettings` (endpoint, region, credentials; the
standard AWS_* variables are honoured there), with SDK-level retries and our own backoff with
jitter around whole operations, so a transient error on a put or a list does not fail a Spark task.

Writes are atomic from a reader's point of view and streamed, so memory stays flat in a file's
size: a local file is written beside its target and renamed; an S3 object is uploaded in parts
through boto3 (pyarrow's S3 stream cannot abort an upload: on an error it would complete it and
publish the half-written object) and only appears when its multipart upload completes. That is
what lets a manifest or a per-file `.done` marker act as a commit point.
Reads of S3 streams go in large ranged blocks and pick up at the byte they reached when a block
fails (a dropped connection, a storage server restarting), as the HTTP reader does for WARCs.

Leases (infra/lease.py) need compare-and-swap writes: `create_if_absent`, `replace_if` and
`delete_if`, done on S3 with conditional requests (If-None-Match / If-Match, which SeaweedFS
and AWS S3 honour) and locally under a lock on the folder.
"""

from __future__ import annotations

import abc
import fcntl
import fnmatch
import io
import logging
import os
import posixpath
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TypeVar

import pyarrow.fs as pafs
from pydantic import SecretStr
import xxhash

from infra.retry import backoff_seconds
from infra.settings import StorageSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

# The SDKs' own quick retries per request; the long budget (settings.max_attempts, with our
# backoff) is around whole operations. SDK retries alone, at max_attempts=8, wait about 50 s
# per call, and multiplied with ours would take many minutes to report a dead endpoint.
_SDK_ATTEMPTS = 3


class StorageError(RuntimeError):
    """A storage problem worth one clear line to the user (missing input, unreadable bucket)."""


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def reveal(secret: SecretStr | str | None) -> str | None:
    """The plain value of a secret setting, only where it is handed to the S3 client."""
    return secret.get_secret_value() if isinstance(secret, SecretStr) else secret


def join(base: str, *parts: str) -> str:
    """Join URI or path parts with '/', keeping the `s3://` scheme intact."""
    if is_s3(base):
        return "s3://" + posixpath.join(base[len("s3://") :], *parts)
    return os.path.join(base, *parts)


def _is_transient(error: Exception) -> bool:
    if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    text = str(error).lower()
    permanent = ("access denied", "accessdenied", "signaturedoesnotmatch", "invalidaccesskeyid", "nosuchbucket", "forbidden")
    return not any(word in text for word in permanent)


@dataclass(frozen=True)
class FileEntry:
    uri: str
    size: int
    mtime_ns: int = 0  # last modified, as the filesystem or the object store reports it

    @property
    def fingerprint(self) -> dict[str, int]:
        """What identifies this version of the file without reading it."""
        return {"size": self.size, "mtime_ns": self.mtime_ns}


def _entry(uri: str, info: pafs.FileInfo) -> FileEntry:
    return FileEntry(uri, info.size, info.mtime_ns or 0)


class Storage:
    """Read, write, list and delete files under local paths and s3:// URIs."""

    def __init__(self, settings: StorageSettings | None = None) -> None:
        self.settings = settings or StorageSettings()
        self._s3: pafs.S3FileSystem | None = None
        self._client = None  # boto3: streamed uploads (see create_output), conditional requests
        self._local = pafs.LocalFileSystem()

    # -- plumbing -----------------------------------------------------------------------------

    def _s3_filesystem(self) -> pafs.S3FileSystem:
        if self._s3 is None:
            s = self.settings
            endpoint = s.endpoint_url
            scheme = "https"
            if endpoint and "://" in endpoint:
                scheme, endpoint = endpoint.split("://", 1)
            secret_key, session_token = reveal(s.secret_access_key), reveal(s.session_token)
            self._s3 = pafs.S3FileSystem(
                access_key=s.access_key_id,
                secret_key=secret_key,
                session_token=session_token,
                region=s.region,
                endpoint_override=endpoint,
                scheme=scheme,
                anonymous=not (s.access_key_id and secret_key),
                retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=_SDK_ATTEMPTS),
                allow_bucket_creation=True,
                allow_bucket_deletion=False,
                connect_timeout=10,
                request_timeout=120,
            )
        return self._s3

    def resolve(self, uri: str) -> tuple[pafs.FileSystem, str]:
        """The filesystem that holds `uri` and the path inside it."""
        if is_s3(uri):
            return self._s3_filesystem(), uri[len("s3://") :].rstrip("/")
        if "://" in uri and not uri.startswith("file://"):
            raise StorageError(f"unsupported URI scheme: {uri} (use a local path or s3://bucket/prefix)")
        path = uri[len("file://") :] if uri.startswith("file://") else uri
        return self._local, os.path.abspath(path)

    def _with_retries(self, action: str, uri: str, operation: Callable[[], T]) -> T:
        """Run `operation`, retrying transient S3 failures with exponential backoff and jitter.

        Local filesystem errors are never transient, so they surface at once.
        """
        attempts = self.settings.max_attempts if is_s3(uri) else 1
        for attempt in range(1, attempts + 1):
            try:
                return operation()
            except Exception as error:  # noqa: BLE001 - classified below
                if attempt == attempts or not _is_transient(error):
                    raise
                delay = backoff_seconds(attempt, self.settings.backoff_seconds)
                log.warning("storage: %s %s failed (%s), retry %d/%d in %.1fs", action, uri, error, attempt, attempts - 1, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    # -- queries ------------------------------------------------------------------------------

    def exists(self, uri: str) -> bool:
        fs, path = self.resolve(uri)
        info = self._with_retries("stat", uri, lambda: fs.get_file_info(path))
        return info.type != pafs.FileType.NotFound

    def size(self, uri: str) -> int:
        return self.stat(uri).size

    def stat(self, uri: str) -> FileEntry:
        fs, path = self.resolve(uri)
        info = self._with_retries("stat", uri, lambda: fs.get_file_info(path))
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(uri)
        return _entry(uri, info)

    def stat_many(self, uris: list[str]) -> dict[str, FileEntry]:
        """Size and mtime of many files, with one listing per folder on S3 (not a request per
        file); files that do not exist are left out."""
        by_folder: dict[str, list[str]] = defaultdict(list)
        for uri in uris:
            by_folder[uri.rsplit("/", 1)[0]].append(uri)
        found: dict[str, FileEntry] = {}
        for folder, members in by_folder.items():
            if not is_s3(folder):
                for uri in members:
                    info = self._local.get_file_info(self.resolve(uri)[1])
                    if info.type == pafs.FileType.File:
                        found[uri] = _entry(uri, info)
                continue
            fs, path = self.resolve(folder)
            selector = pafs.FileSelector(path, recursive=False, allow_not_found=True)
            listed = {info.path: info for info in self._with_retries("list", folder, lambda: fs.get_file_info(selector))}
            for uri in members:
                info = listed.get(self.resolve(uri)[1])
                if info is not None and info.type == pafs.FileType.File:
                    found[uri] = _entry(uri, info)
        return found

    def list(self, prefix: str, suffix: str = "") -> list[FileEntry]:
        """Files below `prefix` (recursive), sorted, optionally only those ending in `suffix`."""
        fs, path = self.resolve(prefix)
        selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
        infos = self._with_retries("list", prefix, lambda: fs.get_file_info(selector))
        base = prefix.rstrip("/")
        entries = []
        for info in infos:
            if info.type != pafs.FileType.File or not info.path.endswith(suffix):
                continue
            relative = info.path[len(path) :].lstrip("/")
            entries.append(_entry(join(base, relative), info))
        return sorted(entries, key=lambda entry: entry.uri)

    def glob(self, pattern: str) -> list[str]:
        """Expand `*`, `?` and `[...]` in a local path or S3 URI (wildcards may span directories)."""
        if not any(char in pattern for char in "*?["):
            return [pattern] if self.exists(pattern) else []
        if not is_s3(pattern):
            pattern = os.path.abspath(pattern)
        first_wild = min(i for i, char in enumerate(pattern) if char in "*?[")
        root = pattern[: pattern.rfind("/", 0, first_wild)]
        return [entry.uri for entry in self.list(root) if fnmatch.fnmatchcase(entry.uri, pattern)]

    # -- reading ------------------------------------------------------------------------------

    def read_bytes(self, uri: str) -> bytes:
        fs, path = self.resolve(uri)

        def read() -> bytes:
            with fs.open_input_stream(path, compression=None) as stream:
                return stream.read()

        return self._with_retries("read", uri, read)

    def read_text(self, uri: str) -> str:
        return self.read_bytes(uri).decode("utf-8")

    def open_input(self, uri: str) -> IO[bytes]:
        """A seekable binary file (for Parquet and random access)."""
        fs, path = self.resolve(uri)
        return self._with_retries("open", uri, lambda: fs.open_input_file(path))

    def open_stream(self, uri: str) -> IO[bytes]:
        """A forward-only binary stream (for WARCs: no seeks, no full download). On S3 it reads
        ranged blocks and resumes at the byte it reached when a block fails."""
        fs, path = self.resolve(uri)
        if fs is self._local:
            return fs.open_input_stream(path, compression=None)
        return _ResumingS3Stream(self, uri)

    # -- writing ------------------------------------------------------------------------------

    def write_bytes(self, uri: str, data: bytes) -> None:
        with self.open_output(uri) as out:
            out.write(data)

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode("utf-8"))

    @contextmanager
    def open_output(self, uri: str) -> Iterator[AtomicOutput]:
        """Write a file atomically, streamed: nothing of it is visible until the block ends
        without an error, and an error leaves nothing behind (see `create_output`)."""
        out = self.create_output(uri)
        try:
            yield out
        except BaseException:
            out.abort()
            raise
        out.commit()

    def create_output(self, uri: str) -> AtomicOutput:
        """A file being written: `write` streams bytes out, `commit` makes it appear whole,
        `abort` drops it. For writers that keep several files open across calls (token shards).

        Memory stays flat in the file's size: a local file is written beside its target and
        renamed on commit; an S3 object is a multipart upload of `S3_PART_BYTES` parts, each
        retried on its own on a transient error, completed on commit and aborted otherwise
        (the object only appears complete; a killed writer leaves an incomplete upload, which
        is invisible and which a bucket lifecycle rule removes).
        """
        fs, path = self.resolve(uri)
        if fs is self._local:
            return _LocalOutput(path)
        return _S3Output(self, uri, path)

    def _s3_client(self):
        """A boto3 client for what pyarrow's S3 streams cannot do: abort a multipart upload, and
        the conditional requests (If-None-Match / If-Match) of the leases."""
        if self._client is None:
            import boto3
            from botocore import UNSIGNED
            from botocore.config import Config

            s = self.settings
            endpoint = s.endpoint_url
            if endpoint and "://" not in endpoint:
                endpoint = f"https://{endpoint}"
            anonymous = not (s.access_key_id and s.secret_access_key)
            config = Config(
                retries={"max_attempts": _SDK_ATTEMPTS, "mode": "standard"},
                connect_timeout=10,
                read_timeout=120,
                signature_version=UNSIGNED if anonymous else None,
                s3={"addressing_style": "path"} if endpoint else None,
            )
            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint,
                region_name=s.region,
                aws_access_key_id=None if anonymous else s.access_key_id,
                aws_secret_access_key=None if anonymous else reveal(s.secret_access_key),
                aws_session_token=None if anonymous else reveal(s.session_token),
                config=config,
            )
        return self._client
    # -- compare-and-swap (leases) ---------------------------------------------------------------

    def read_versioned(self, uri: str) -> tuple[bytes, str] | None:
        """The file's bytes and a version token for `replace_if`/`delete_if`; None if absent."""
        fs, path = self.resolve(uri)
        if fs is self._local:
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except FileNotFoundError:
                return None
            return data, xxhash.xxh64_hexdigest(data)
        bucket, key = path.split("/", 1)
        client = self._s3_client()
        try:
            response = self._with_retries("read", uri, lambda: client.get_object(Bucket=bucket, Key=key))
        except client.exceptions.NoSuchKey:
            return None
        return response["Body"].read(), response["ETag"]

    def create_if_absent(self, uri: str, data: bytes) -> str | None:
        """Write `data` only if no file is there (If-None-Match: *); its version, or None if one was."""
        fs, path = self.resolve(uri)
        if fs is self._local:
            with self._folder_lock(path):
                temporary = self._local_temporary(path, data)
                try:
                    os.link(temporary, path)  # fails if the target exists: atomic create-if-absent
                except FileExistsError:
                    return None
                finally:
                    os.remove(temporary)
            return xxhash.xxh64_hexdigest(data)
        return self._conditional_put(uri, path, data, IfNoneMatch="*")

    def replace_if(self, uri: str, data: bytes, version: str) -> str | None:
        """Overwrite the file only if it is still at `version` (If-Match); the new version, or None."""
        fs, path = self.resolve(uri)
        if fs is self._local:
            with self._folder_lock(path):
                current = self.read_versioned(uri)
                if current is None or current[1] != version:
                    return None
                os.replace(self._local_temporary(path, data), path)
            return xxhash.xxh64_hexdigest(data)
        return self._conditional_put(uri, path, data, IfMatch=version)

    def delete_if(self, uri: str, version: str) -> bool:
        """Delete the file only if it is still at `version`; False otherwise."""
        fs, path = self.resolve(uri)
        if fs is self._local:
            with self._folder_lock(path):
                current = self.read_versioned(uri)
                if current is None or current[1] != version:
                    return False
                os.remove(path)
            return True
        bucket, key = path.split("/", 1)
        client = self._s3_client()
        try:
            self._with_retries("delete", uri, lambda: client.delete_object(Bucket=bucket, Key=key, IfMatch=version))
        except client.exceptions.ClientError as error:
            if _precondition_failed(error):
                return False
            raise
        return True

    def _conditional_put(self, uri: str, path: str, data: bytes, **condition: str) -> str | None:
        bucket, key = path.split("/", 1)
        client = self._s3_client()
        try:
            response = self._with_retries(
                "write", uri, lambda: client.put_object(Bucket=bucket, Key=key, Body=data, **condition)
            )
        except client.exceptions.ClientError as error:
            if _precondition_failed(error):
                return None
            raise
        return response["ETag"]

    @staticmethod
    @contextmanager
    def _folder_lock(path: str) -> Iterator[None]:
        """An exclusive lock on a local file's folder (flock), for compare-and-swap there."""
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    @staticmethod
    def _local_temporary(path: str, data: bytes) -> str:
        temporary = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(temporary, "wb") as out:
            out.write(data)
        return temporary

    def remove_temporaries(self, prefix: str) -> int:
        """Delete what killed local writes left below `prefix` (`<file>.tmp-<hex>`, never read by
        anyone); call it only while holding the output's lease. S3 leaves none: an unfinished
        multipart upload never becomes an object."""
        if is_s3(prefix):
            return 0
        stale = [entry.uri for entry in self.list(prefix) if _TEMPORARY.search(entry.uri)]
        for uri in stale:
            self.delete(uri)
        return len(stale)

    def delete(self, uri: str) -> None:
        fs, path = self.resolve(uri)
        self._with_retries("delete", uri, lambda: fs.delete_file(path))

    def delete_tree(self, uri: str) -> None:
        """Delete a folder (or prefix) and everything below it; a missing one is not an error."""
        fs, path = self.resolve(uri)
        if self._with_retries("stat", uri, lambda: fs.get_file_info(path)).type == pafs.FileType.NotFound:
            return
        self._with_retries("delete", uri, lambda: fs.delete_dir(path))

    def ensure_bucket(self, uri: str) -> None:
        """Create the bucket of an s3:// URI if it is missing (no-op for local paths)."""
        if not is_s3(uri):
            return
        fs, path = self.resolve(uri)
        bucket = path.split("/", 1)[0]
        self._with_retries("create bucket", uri, lambda: fs.create_dir(bucket, recursive=False))

    def check_writable(self, uri: str) -> None:
        """Fail early, with one line, when an output location cannot be written."""
        probe = join(uri, f".crawl2chat-write-probe-{uuid.uuid4().hex}")
        try:
            self.ensure_bucket(uri)
            self.write_bytes(probe, b"")
            self.delete(probe)
        except Exception as error:  # noqa: BLE001 - turned into one line for the user
            raise StorageError(f"cannot write to {uri}: {str(error).splitlines()[0]}") from error


# --- streamed, atomic outputs ------------------------------------------------------------------

S3_PART_BYTES = 8 * 1024 * 1024  # above S3's 5 MiB minimum part; 10,000 parts make 80 GB


class AtomicOutput(abc.ABC):
    """A binary file being written (`write`, `tell`, `flush`): invisible until `commit`, gone
    after `abort`. Both are idempotent, and `abort` after `commit` does nothing."""

    closed = False

    @abc.abstractmethod
    def write(self, data: bytes) -> int: ...

    @abc.abstractmethod
    def tell(self) -> int: ...

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def abort(self) -> None: ...


class _LocalOutput(AtomicOutput):
    """Written to a temporary file beside the target, renamed over it on commit."""

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path, self.temporary = path, f"{path}.tmp-{uuid.uuid4().hex}"
        self.file: IO[bytes] | None = open(self.temporary, "wb")  # noqa: SIM115 - closed by commit/abort

    def write(self, data: bytes) -> int:
        return self.file.write(data)

    def tell(self) -> int:
        return self.file.tell()

    def flush(self) -> None:
        self.file.flush()

    def commit(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
            os.replace(self.temporary, self.path)
        self.closed = True

    def abort(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
            os.remove(self.temporary)
        self.closed = True


class _S3Output(AtomicOutput):
    """Bytes gathered into parts; the first full part starts a multipart upload. An object
    smaller than one part is a single PUT on commit. Each request is retried on its own."""

    def __init__(self, storage: Storage, uri: str, path: str) -> None:
        self.storage, self.uri = storage, uri
        self.bucket, _, self.key = path.partition("/")
        self.buffer = bytearray()
        self.written = 0
        self.upload_id: str | None = None
        self.parts: list[dict[str, object]] = []

    def _call(self, action: str, **kwargs):
        client = self.storage._s3_client()
        return self.storage._with_retries(action, self.uri, lambda: getattr(client, action)(**kwargs))

    def write(self, data: bytes) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        self.written += size
        if self.buffer:  # top up the part being gathered
            room = S3_PART_BYTES - len(self.buffer)
            self.buffer += view[:room]
            view = view[room:]
            if len(self.buffer) < S3_PART_BYTES:
                return size
            self._upload_part(bytes(self.buffer))
            self.buffer = bytearray()
        while len(view) >= S3_PART_BYTES:  # a large write goes out part by part, never copied whole
            self._upload_part(bytes(view[:S3_PART_BYTES]))
            view = view[S3_PART_BYTES:]
        self.buffer += view
        return size

    def tell(self) -> int:
        return self.written

    def _upload_part(self, body: bytes) -> None:
        if self.upload_id is None:
            self.upload_id = self._call("create_multipart_upload", Bucket=self.bucket, Key=self.key)["UploadId"]
        number = len(self.parts) + 1
        response = self._call(
            "upload_part", Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
        )
        self.parts.append({"PartNumber": number, "ETag": response["ETag"]})

    def commit(self) -> None:
        if self.closed:
            return
        try:
            if self.upload_id is None:
                self._call("put_object", Bucket=self.bucket, Key=self.key, Body=bytes(self.buffer))
            else:
                if self.buffer or not self.parts:
                    self._upload_part(bytes(self.buffer))
                self._call(
                    "complete_multipart_upload", Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                    MultipartUpload={"Parts": self.parts},
                )
        except BaseException:
            self.abort()
            raise
        self.buffer = bytearray()
        self.closed = True

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.buffer = bytearray()
        if self.upload_id is not None:
            try:
                self._call("abort_multipart_upload", Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            except Exception as error:  # noqa: BLE001 - the original error matters more
                log.warning("storage: could not abort the upload of %s (%s); it stays invisible", self.uri, error)
def _precondition_failed(error: Exception) -> bool:
    response = getattr(error, "response", {}) or {}
    return response.get("Error", {}).get("Code") in ("PreconditionFailed", "412") or (
        response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412
    )


_TEMPORARY = re.compile(r"\.tmp-[0-9a-f]{32}$")


class _ResumingS3Stream(io.RawIOBase):
    """Read an S3 object front to back in ranged blocks (`read_block_bytes`), resuming at the byte
    reached when a block fails.

    pyarrow's S3 stream sends one ranged GET per read call (FastWARC reads 64 KiB at a time, so
    16,000 requests per 1 GB WARC) and is unusable once one of them fails. Here each block is one
    request, retried with backoff on a fresh handle at the same offset; an object that changed
    size in between is an error, not a silently spliced read.
    """

    def __init__(self, storage: Storage, uri: str) -> None:
        super().__init__()
        self.storage, self.uri = storage, uri
        self.fs, self.path = storage.resolve(uri)
        self.handle = storage._with_retries("open", uri, lambda: self.fs.open_input_file(self.path))
        self.size = self.handle.size()
        self.position = 0
        self.block = b""
        self.offset = 0  # of the next unread byte in `block`

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = self.size - self.position
        if self.offset >= len(self.block):
            if self.position >= self.size:
                return b""
            self.block, self.offset = self._read_block(self.position), 0
        data = self.block[self.offset : self.offset + size]
        self.offset += len(data)
        self.position += len(data)
        return data

    def _read_block(self, start: int) -> bytes:
        wanted = min(self.storage.settings.read_block_bytes, self.size - start)
        attempts = self.storage.settings.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                if self.handle is None:  # the last block failed: a fresh handle, same object
                    self.handle = self.fs.open_input_file(self.path)
                    if self.handle.size() != self.size:
                        raise StorageError(f"{self.uri} changed while it was read (size {self.size} -> {self.handle.size()})")
                data = self.handle.read_at(wanted, start)
                if len(data) == wanted:
                    return data
                problem: object = f"short read of {len(data)} of {wanted} bytes"
            except OSError as error:
                if not _is_transient(error):
                    raise
                problem = error
            self._drop_handle()
            if attempt < attempts:
                delay = backoff_seconds(attempt, self.storage.settings.backoff_seconds)
                log.warning("storage: read %s broke off at byte %d (%s), resuming in %.1fs", self.uri, start, problem, delay)
                time.sleep(delay)
        raise OSError(f"reading {self.uri} failed at byte {start} after {attempts} attempts: {problem}")

    def _drop_handle(self) -> None:
        if self.handle is not None:
            try:
                self.handle.close()
            except OSError:
                pass
            self.handle = None

    def close(self) -> None:
        if not self.closed:
            self._drop_handle()
        super().close()
