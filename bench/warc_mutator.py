"""Seeded mutations of real WARC files, for fuzzing the WARC reader (bench/fuzz_warc.py).

A `Seed` is one real WARC file (or a run of consecutive records cut from one) with the byte span
of each of its records. `mutate(seeds, case)` turns case number `case` into one damaged file,
the same bytes for the same case on every machine (a `random.Random(case)` picks everything),
so any failure the fuzzer reports is replayed with its case number alone.

Mutations are damage in the bytes, the kinds a real crawl or a broken disk or transfer produces:
bit flips and overwritten runs, truncation (anywhere, or at a record boundary), inserted and
deleted spans, files spliced from two others (mid-record or at record boundaries), records
dropped, duplicated or reordered, wrong WARC and HTTP Content-Length values, broken WARC and
HTTP headers, lying Transfer-/Content-Encoding headers and decompression bombs, and gzip member
damage (header, deflate data, CRC and size trailer, garbage or another compression between
members), and LZ4 frame damage (descriptor, block sizes, end mark, checksums). Header mutations decompress one record, edit it and recompress it, so every byte
before that record stays as it was.
"""

from __future__ import annotations

import bz2
import gzip
import io
import random
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fastwarc.warc import ArchiveIterator

GZIP_MAGIC = b"\x1f\x8b"
LZ4_MAGIC = b"\x04\x22\x4d\x18"
EXCERPT_SHARE = 0.3  # of cases cut from the one big file (377 real pages); the rest from the 32 small ones


@dataclass(frozen=True)
class Seed:
    """A real WARC and where its records lie; `gzip` is True when each record is its own member."""

    name: str
    data: bytes
    spans: tuple[tuple[int, int], ...]  # (start, end) of every record; one span when unknown
    gzip: bool  # one gzip member per record: records can be decompressed, edited, recompressed
    plain: bool  # uncompressed WARC: records can be edited in place
    lz4: bool = False  # one LZ4 frame per record

    @property
    def structured(self) -> bool:
        return self.gzip or self.plain


def record_spans(data: bytes) -> tuple[tuple[int, int], ...]:
    """The byte span of each record, from FastWARC's record offsets; () for no WARC records."""
    starts = [record.stream_pos for record in ArchiveIterator(io.BytesIO(data), parse_http=False, quirks_mode=True)]
    return tuple(zip(starts, [*starts[1:], len(data)]))


def make_seed(name: str, data: bytes) -> Seed:
    spans = record_spans(data)
    ordered = bool(spans) and all(start < end for start, end in spans)
    gzip_members = ordered and data[:2] == GZIP_MAGIC and all(_one_member(data[s:e]) for s, e in spans)
    plain = ordered and data.startswith(b"WARC/")
    lz4_frames = ordered and all(data[s : s + 4] == LZ4_MAGIC for s, _ in spans)
    if not (gzip_members or plain or lz4_frames):
        spans = ((0, len(data)),)  # record offsets inside one compressed stream say nothing here
    return Seed(name, data, spans, gzip_members, plain, lz4_frames)


def _one_member(member: bytes) -> bool:
    inflater = zlib.decompressobj(31)
    try:
        inflater.decompress(member)
    except zlib.error:
        return False
    return inflater.eof and not inflater.unused_data


def load_seeds(warc_dir: Path, excerpt_records: int = 6, whole_limit: int = 2_000_000) -> list[Seed]:
    """Every file under `warc_dir`; a file larger than `whole_limit` bytes (realpages.warc.gz, 10 MB)
    is cut into excerpts of `excerpt_records` consecutive records, so one case stays milliseconds."""
    seeds = []
    for path in sorted(p for p in warc_dir.rglob("*") if p.is_file()):
        name, whole = str(path.relative_to(warc_dir)), make_seed(str(path.relative_to(warc_dir)), path.read_bytes())
        if len(whole.data) <= whole_limit or not whole.structured:
            seeds.append(whole)
            continue
        for first in range(0, len(whole.spans), excerpt_records):
            chosen = whole.spans[first : first + excerpt_records]
            start, end = chosen[0][0], chosen[-1][1]
            seeds.append(make_seed(f"{name}[{first}:{first + len(chosen)}]", whole.data[start:end]))
    return seeds


# --- helpers ---------------------------------------------------------------------------------


def _records(seed: Seed) -> list[bytes]:
    """The uncompressed bytes of each record."""
    pieces = [seed.data[start:end] for start, end in seed.spans]
    return [gzip.decompress(piece) for piece in pieces] if seed.gzip else pieces


def _rebuild(seed: Seed, index: int, record: bytes) -> bytes:
    """`seed` with record `index` replaced by `record` (recompressed when the seed is gzipped)."""
    start, end = seed.spans[index]
    piece = gzip.compress(record, mtime=0) if seed.gzip else record
    return seed.data[:start] + piece + seed.data[end:]


def _split_head(record: bytes) -> tuple[bytes, bytes]:
    """(WARC header block including its blank line, the rest); the rest is b"" without a blank line."""
    cut = record.find(b"\r\n\r\n")
    return (record[: cut + 4], record[cut + 4 :]) if cut >= 0 else (record, b"")


def _pick_record(rng: random.Random, records: list[bytes]) -> int:
    """A record index, mostly an HTTP response's (where the reader does most of its work)."""
    responses = [i for i, record in enumerate(records) if b"WARC-Type: response" in record[:2048]]
    if responses and rng.random() < 0.8:
        return rng.choice(responses)
    return rng.randrange(len(records))


# --- byte-level mutations (any file) ---------------------------------------------------------


def bit_flips(rng: random.Random, seed: Seed, seeds: list[Seed]) -> tuple[bytes, str]:
    data = bytearray(seed.data)
    flips = rng.choice((1, 1, 2, 4, 16))
    for _ in range(flips):
        position = rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)
    return bytes(data), f"bit_flips:{flips}"


def overwrite_run(rng: random.Random, seed: Seed, seeds: list[Seed]) -> tuple[bytes, str]:
    size = rng.choice((1, 4, 64, 512))
    start = rng.randrange(len(seed.data))
    fill = rng.choice(("random", "zeros", "ones"))
    run = {"random": rng.randbytes(size), "zeros": bytes(size), "ones": b"\xff" * size}[fill]
    return seed.data[:start] + run + seed.data[start + size :], f"overwrite:{fill}"


def truncate(rng: random.Random, seed: Seed, seeds: list[Seed]) -> tuple[bytes, str]:
    if rng.random() < 0.5 and len(seed.spans) > 1:
        boundary = rng.choice(seed.spans)[rng.randrange(2)]
        cut = max(0, min(len(seed.data) - 1, boundary + rng.choice((-1, 0, 1, 10))))
        return seed.data[:cut], "truncate:near_boundary"
    return seed.data[: rng.randrange(len(seed.data))], "truncate:anywhere"


def insert_garbage(rng: random.Random, seed: Seed, seeds: list[Seed]) -> tuple[bytes, str]:
    at = rng.choice(seed.spans)[0] if rng.random() < 0.5 else rng.randrange(len(seed.data) + 1)
    kind = rng.choice(("random", "crlf", "nul", "warc_line"))
    garbage = {
        "random": rng.randbytes(rng.randrange(1, 300)),
        "crlf": b"\r\n" * rng.randrange(1, 50),
        "nul": bytes(rng.randrange(1, 5000)),
        "warc_line": b"WARC/1.0\r\n",  # a record start with no header after it
    }[kind]
    return seed.data[:at] + garbage + seed.data[at:], f"insert:{kind}"


def delete_span(rng: random.Random, seed: Seed, seeds: list[Seed]) -> tuple[bytes, str]:
    start = rng.randrange(len(seed.data))
    size = rng.choice((1, 2, 16, 1000, 20_000))
    return seed.data[:start] + seed.data[start + size :], "delete_span"


def duplicate_span(rng: random.Random, seed: Seed, seeds: list[Seed]) -> tuple[bytes, str]:
    start = rng.randrange(len(seed.data))
    span = seed.data[start : start + rng.choice((8, 200, 5000))]
    return seed.data[:start] + span + span + seed.data[start + len(span) :], "duplicate_span"


def splice(rng: random.Random, seed: Seed, seeds: list[Seed]) -> tuple[bytes, str]:
    """The head of this file, the tail of another: mid-record, or at record boundaries of both
    (which may mix a gzip file with a plain one)."""
    other = rng.choice(seeds)
    if rng.random() < 0.5:
        head = seed.data[: rng.randrange(len(seed.data) + 1)]
        return head + other.data[rng.randrange(len(other.data)) :], "splice:mid_record"
    head = seed.data[: rng.choice(seed.spans)[1]]
    return head + other.data[rng.choice(other.spans)[0] :], "splice:records"


# --- record-level mutations (gzip-per-record and plain files) --------------------------------


def reorder_records(rng: random.Random, seed: Seed, seeds: list[Seed]) -> tuple[bytes, str]:
    pieces = [seed.data[start:end] for start, end in seed.spans]
    action = rng.choice(("drop", "duplicate", "shuffle"))
    index = rng.randrange(len(pieces))
    if action == "drop":
        del pieces[index]
    elif action == "duplicate":
        pieces.insert(index, pieces[index])
    else:
        rng.shuffle(pieces)
    return seed.data[: seed.spans[0][0]] + b"".join(pieces), f"records:{action}"


CONTENT_LENGTHS = ("0", "1", "-1", "minus_one", "plus_one", "half", "double", "2147483648",
                   "9223372036854775807", "18446744073709551621", "12abc", "", " 7 ", "0x10", "twice")


def warc_content_length(rng: random.Random, seed: Seed, seeds: list[Seed]) -> tuple[bytes, str]:
    records = _records(seed)
    index = _pick_record(rng, records)
    record = records[index]
    match = re.search(rb"(?im)^content-length:[ \t]*(\d+)[ \t]*\r?$", _split_head(record)[0])
    if not match:
        return record_header(rng, seed, seeds)
    true_length = int(match.group(1))
    choice = rng.choice(CONTENT_LENGTHS)
    value = {
        "minus_one": str(true_length - 1), "plus_one": str(true_length + 1),
        "half": str(true_length // 2), "double": str(true_length * 2),
    }.get(choice, choice)
    line = f"Content-Length: {value}".encode()
    if choice == "twice":
        line = f"Content-Length: {true_length}\r\nContent-Length: {true_length + 100}".encode()
    edited = record[: match.start()] + line + record[match.end() :]
    return _rebuild(seed, index, edited), f"warc_content_length:{choice}"


def record_header(rng: random.Random, seed: Seed, seeds: list[Seed]) -> tuple[bytes, str]:
    """Damage to the WARC header block of one record."""
    records = _records(seed)
    index = _pick_record(rng, records)
    record = records[index]
    head, rest = _split_head(record)
    choice = rng.choice(("version", "no_blank_line", "lf_only", "no_colon", "nul", "bad_date", "no_type",
                         "unknown_type", "long_line", "no_record_id", "target_uri", "utf8_junk"))
    if choice == "version":
        head = re.sub(rb"^WARC/[\d.]+", rng.choice((b"WARC/9.9", b"XARC/1.0", b"WARC/", b"warc/1.0", b"")), head)
    elif choice == "no_blank_line":
        head = head[:-2]
    elif choice == "lf_only":
        head = head.replace(b"\r\n", b"\n")
    elif choice == "no_colon":
        head = head.replace(b"\r\n", b"\r\nthis line has no colon\r\n", 1)
    elif choice == "nul":
        head = head.replace(b": ", b":\x00 ", 1)
    elif choice == "bad_date":
        head = re.sub(rb"(?m)^WARC-Date:.*\r$", rng.choice((b"WARC-Date: 2024-13-45T99:99:99Z\r", b"WARC-Date: \r")), head)
    elif choice == "no_type":
        head = re.sub(rb"(?m)^WARC-Type:.*\r\n", b"", head)
    elif choice == "unknown_type":
        head = re.sub(rb"(?m)^WARC-Type:.*\r$", rng.choice((b"WARC-Type: responses\r", b"WARC-Type: \r")), head)
    elif choice == "long_line":
        head = head.replace(b"\r\n", b"\r\nX-Long: " + b"a" * rng.choice((9_000, 200_000)) + b"\r\n", 1)
    elif choice == "no_record_id":
        head = re.sub(rb"(?m)^WARC-Record-ID:.*\r\n", b"", head)
    elif choice == "target_uri":
        uri = rng.choice((b"", b"not a url", b"http://" + b"x" * 70_000, "http://ex\u00e4mple.com/\U0001f600".encode()))
        head = re.sub(rb"(?m)^WARC-Target-URI:.*\r$", b"WARC-Target-URI: " + uri + b"\r", head)
    elif choice == "utf8_junk":
        head = head.replace(b"\r\n", b"\r\nX-Junk: \xff\xfe\xc3\x28\xa0\xa1\r\n", 1)
    return _rebuild(seed, index, head + rest), f"warc_header:{choice}"


def http_header(rng: random.Random, seed: Seed, seeds: list[Seed]) -> tuple[bytes, str]:
    """Damage to the HTTP head or body of one response record, keeping its WARC Content-Length true."""
    records = _records(seed)
    index = _pick_record(rng, records)
    record = records[index]
    head, block = _split_head(record)
    http_head, separator, body = block.partition(b"\r\n\r\n")
    choice = rng.choice(("status_line", "status_code", "content_type", "charset", "chunked_lie", "bad_chunks",
                         "gzip_lie", "br_lie", "gzip_bomb", "no_separator", "huge_header", "http_content_length"))
    if choice == "status_line":
        http_head = re.sub(rb"^[^\r\n]*", rng.choice((b"", b"HTTP/1.1", b"garbage", b"HTTP/1.1 OK 200")), http_head, count=1)
    elif choice == "status_code":
        http_head = re.sub(rb"^(HTTP/[\d.]+) \d+", rb"\1 " + rng.choice((b"99999999999999999999", b"-1", b"2OO")), http_head)
    elif choice == "content_type":
        http_head = re.sub(rb"(?im)^content-type:.*$", rng.choice((b"Content-Type:", b"Content-Type: ;;;=", b"Content-Type: text/html; charset")), http_head)
    elif choice == "charset":
        charset = rng.choice((b"x-unknown-42", b"utf-7", b"\xff\xfe", b"utf-16", b"a" * 5000))
        http_head = re.sub(rb"(?im)^content-type:.*$", b"Content-Type: text/html; charset=" + charset, http_head)
    elif choice == "chunked_lie":
        http_head += b"\r\nTransfer-Encoding: chunked"
    elif choice == "bad_chunks":
        http_head += b"\r\nTransfer-Encoding: chunked"
        body = rng.choice((b"ffffffffffffffff\r\n", b"zz\r\n", b"5\r\nab")) + body
    elif choice == "gzip_lie":
        http_head += b"\r\nContent-Encoding: gzip"
        if rng.random() < 0.5:
            body = gzip.compress(body, mtime=0)[: rng.randrange(1, 64)]  # a gzip body cut short
    elif choice == "br_lie":
        http_head += b"\r\nContent-Encoding: br"
    elif choice == "gzip_bomb":  # ~50 KB stored, 50 MB inflated
        http_head = re.sub(rb"(?im)^content-encoding:.*\r\n?", b"", http_head) + b"\r\nContent-Encoding: gzip"
        body = gzip.compress(b"<html>" + b"\x20" * 50_000_000, compresslevel=9, mtime=0)
    elif choice == "no_separator":
        separator = b""
    elif choice == "huge_header":
        http_head += b"\r\nX-Huge: " + b"b" * 1_000_000
    elif choice == "http_content_length":
        http_head = re.sub(rb"(?im)^content-length:.*$", b"", http_head) + b"\r\nContent-Length: 99999999999"
    block = http_head + separator + body
    head = re.sub(rb"(?im)^content-length:.*\r$", f"Content-Length: {len(block)}\r".encode(), head)
    return _rebuild(seed, index, head + block), f"http:{choice}"


# --- gzip member damage (gzip-per-record files) ----------------------------------------------


def gzip_member(rng: random.Random, seed: Seed, seeds: list[Seed]) -> tuple[bytes, str]:
    index = _pick_record(rng, _records(seed))
    start, end = seed.spans[index]
    member = bytearray(seed.data[start:end])
    choice = rng.choice(("magic", "method", "flags", "extra_length", "deflate_bits", "crc", "isize", "no_trailer",
                         "cut_member", "stored_random", "garbage_between", "bzip2_member", "raw_record", "empty_member"))
    if choice == "magic":
        member[rng.randrange(2)] ^= 0xFF
    elif choice == "method":
        member[2] = rng.choice((0, 7, 9, 255))
    elif choice == "flags":
        member[3] |= rng.choice((0x04, 0x08, 0x10, 0xE0))  # FEXTRA/FNAME/FCOMMENT without their fields, reserved bits
    elif choice == "extra_length":
        member[3] |= 0x04
        member[10:10] = b"\xff\xff"  # claims 65535 bytes of extra field
    elif choice == "deflate_bits":
        position = rng.randrange(10, max(11, len(member) - 8))
        member[position] ^= 1 << rng.randrange(8)
    elif choice == "crc":
        member[-8] ^= 0x01
    elif choice == "isize":
        member[-4:] = rng.randbytes(4)
    elif choice == "no_trailer":
        del member[-8:]
    elif choice == "cut_member":
        del member[rng.randrange(10, len(member)) :]
    elif choice == "stored_random":  # a valid gzip member holding random bytes instead of a record
        member = bytearray(gzip.compress(rng.randbytes(rng.randrange(1, 4000)), mtime=0))
    elif choice == "garbage_between":
        member += rng.randbytes(rng.randrange(1, 100))
    elif choice == "bzip2_member":
        member = bytearray(bz2.compress(gzip.decompress(bytes(member))))
    elif choice == "raw_record":  # the record uncompressed among gzip members
        member = bytearray(gzip.decompress(bytes(member)))
    elif choice == "empty_member":
        member = bytearray(gzip.compress(b"", mtime=0)) + member
    return seed.data[:start] + bytes(member) + seed.data[end:], f"gzip:{choice}"


def lz4_frame(rng: random.Random, seed: Seed, seeds: list[Seed]) -> tuple[bytes, str]:
    """Damage to one LZ4 frame: its descriptor, a block size, the end mark or the content checksum."""
    start, end = rng.choice(seed.spans)
    frame = bytearray(seed.data[start:end])
    choice = rng.choice(("flags", "header_checksum", "block_size", "block_data", "end_mark", "content_checksum", "cut"))
    if choice == "flags":
        frame[4] ^= 1 << rng.randrange(8)
    elif choice == "header_checksum":
        frame[6] ^= 0xFF
    elif choice == "block_size":
        frame[7:11] = rng.choice((b"\xff\xff\xff\x7f", b"\x00\x00\x00\x00", b"\x01\x00\x00\x00"))
    elif choice == "block_data":
        frame[rng.randrange(11, max(12, len(frame) - 8))] ^= 1 << rng.randrange(8)
    elif choice == "end_mark":
        del frame[-8:-4]
    elif choice == "content_checksum":
        frame[-1 - rng.randrange(4)] ^= 1 << rng.randrange(8)
    elif choice == "cut":
        del frame[rng.randrange(4, len(frame)) :]
    return seed.data[:start] + bytes(frame) + seed.data[end:], f"lz4:{choice}"


Mutation = Callable[[random.Random, Seed, list[Seed]], tuple[bytes, str]]
ANY_FILE: tuple[Mutation, ...] = (bit_flips, overwrite_run, truncate, insert_garbage, delete_span, duplicate_span, splice)
STRUCTURED: tuple[Mutation, ...] = (reorder_records, warc_content_length, warc_content_length, record_header, http_header, http_header)
GZIP_MEMBERS: tuple[Mutation, ...] = (gzip_member, gzip_member)
LZ4_FRAMES: tuple[Mutation, ...] = (lz4_frame, lz4_frame, lz4_frame)


def mutate(seeds: list[Seed], case: int) -> tuple[Seed, bytes, str]:
    """Case number `case` as (the seed it came from, the damaged bytes, what was done)."""
    rng = random.Random(case)
    excerpts = [seed for seed in seeds if "[" in seed.name]  # realpages' records, a few at a time
    files = [seed for seed in seeds if "[" not in seed.name]
    seed = rng.choice(excerpts if excerpts and (rng.random() < EXCERPT_SHARE or not files) else files)
    choices = ANY_FILE + (STRUCTURED if seed.structured else ()) + (GZIP_MEMBERS if seed.gzip else ()) + (LZ4_FRAMES if seed.lz4 else ())
    # A few mutations stack, as real damage often does (a cut transfer of a file with a bad disk block).
    data, kinds = seed.data, []
    current = seed
    for _ in range(1 if rng.random() < 0.85 else 2):
        data, kind = rng.choice(choices)(rng, current, seeds)
        kinds.append(kind)
        if not data:
            break
        current = Seed(seed.name, data, ((0, len(data)),), False, False)
        choices = ANY_FILE
    return seed, data, "+".join(kinds)
