"""tasks.readers.inputs: resolving paths, globs, directories and s3:// prefixes; a snapshot's warc.paths.gz;
streaming WARCs over real HTTP from a local server (busy answers, dropped connections, resumes).
"""

from __future__ import annotations

import gzip
import http.server
import shutil
import threading
from collections import Counter
from pathlib import Path

import pytest

from infra.settings import StorageSettings
from infra.storage import Storage, join
from tasks.readers.inputs import InputError, open_warc, resolve_inputs, snapshot_of, snapshot_warc_urls
from tasks.pipeline import StepStats
from tasks.samples.crawl import generate_sample_crawl
from tasks.readers.warc import WarcReadError, iter_warc_documents

SNAPSHOT = "CC-MAIN-2024-51"


@pytest.fixture(scope="module")
def crawl(tmp_path_factory):
    return generate_sample_crawl(tmp_path_factory.mktemp("crawl"), num_warcs=2, pages_per_warc=20, seed=3)


class CrawlHandler(http.server.BaseHTTPRequestHandler):
    """Serves files under `root` with Range support. Path prefixes stage trouble on a first request:
    /busy/ answers 503, /cut/ drops the connection halfway, /cut-norange/ does too and ignores Range."""

    root: Path
    hits: Counter

    def do_GET(self) -> None:
        self.hits[self.path] += 1
        first = self.hits[self.path] == 1
        trouble, _, rest = self.path.lstrip("/").partition("/")
        if trouble not in ("busy", "cut", "cut-norange"):
            trouble, rest = "", self.path.lstrip("/")
        file = self.root / rest
        if not file.is_file():
            self.send_error(404, "File not found")
            return
        if trouble == "busy" and first:
            self.send_error(503, "Slow Down")
            return
        data = file.read_bytes()
        start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-")) if self.headers["Range"] else 0
        if trouble == "cut-norange":
            start = 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if trouble.startswith("cut") and first:
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        self.wfile.write(data[start:])

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server(crawl, tmp_path_factory):
    """A Common Crawl-shaped tree on a real HTTP server on 127.0.0.1: (base URL, WARC paths, hit counter)."""
    root = tmp_path_factory.mktemp("www")
    warc_dir = root / "crawl-data" / SNAPSHOT / "segments" / "1733066035857.0" / "warc"
    warc_dir.mkdir(parents=True)
    paths = []
    for warc in crawl.warc_paths:
        shutil.copy(warc, warc_dir / warc.name)
        paths.append(str((warc_dir / warc.name).relative_to(root)))
    (root / "crawl-data" / SNAPSHOT / "warc.paths.gz").write_bytes(gzip.compress(("\n".join(paths) + "\n").encode()))
    (root / "crawl-data" / "CC-MAIN-2024-46").mkdir()
    (root / "crawl-data" / "CC-MAIN-2024-46" / "warc.paths.gz").write_bytes(b"not gzip at all")
    handler = type("Handler", (CrawlHandler,), {"root": root, "hits": Counter()})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", paths, handler.hits
    httpd.shutdown()
    httpd.server_close()


def read_docs(uri: str, storage: Storage | None = None) -> tuple[list, StepStats]:
    stats = StepStats()
    with open_warc(uri, storage or Storage(), timeout=5, backoff_seconds=0.01) as stream:
        docs = list(iter_warc_documents(stream, uri, snapshot_of(uri), stats))
    return docs, stats


def local_docs(path: Path) -> list:
    return read_docs(str(path))[0]


# --- snapshot over HTTP ----------------------------------------------------------------------


def test_snapshot_paths_and_streamed_download(server, crawl):
    base, paths, _ = server
    urls = snapshot_warc_urls(SNAPSHOT, base + "/", None, timeout=5)
    assert urls == [f"{base}/{path}" for path in paths]
    assert snapshot_warc_urls(SNAPSHOT, base, 1, timeout=5) == urls[:1]
    for url, local in zip(urls, crawl.warc_paths, strict=True):
        docs, stats = read_docs(url)
        expected = local_docs(local)
        assert [(d.id, d.html) for d in docs] == [(d.id, d.html) for d in expected]
        assert len(docs) > 10 and stats.dropped.keys() <= {"not_200", "not_html"}
        assert {d.snapshot for d in docs} == {SNAPSHOT} and {d.warc_path for d in docs} == {url}


@pytest.mark.parametrize("trouble", ["busy", "cut"])
def test_busy_server_and_dropped_connection_are_survived(server, crawl, trouble):
    base, paths, hits = server
    url = f"{base}/{trouble}/{paths[0]}"
    docs, stats = read_docs(url)
    assert [d.id for d in docs] == [d.id for d in local_docs(crawl.warc_paths[0])]
    assert "truncated_or_corrupt_file" not in stats.dropped
    assert hits[f"/{trouble}/{paths[0]}"] == 2


def test_dropped_connection_without_range_support_is_a_read_error_not_damage(server, crawl):
    """A download that cannot be resumed must fail the unit (and be redone), never be counted as
    a corrupt file and marked done with the rest of the WARC lost."""
    base, paths, _ = server
    url = f"{base}/cut-norange/{paths[1]}"
    stats = StepStats()
    with open_warc(url, Storage(), timeout=5, backoff_seconds=0.01) as stream:
        documents = iter_warc_documents(stream, url, snapshot_of(url), stats)
        with pytest.raises(WarcReadError, match=r"failed at byte \d+: .*cannot resume at byte"):
            list(documents)
    assert "truncated_or_corrupt_file" not in stats.dropped


@pytest.mark.parametrize("bad", ["CC-MAIN-24-51", "CC-MAIN-2024-99", "cc-main-2024-51", "CC-MAIN-2024-51/"])
def test_bad_snapshot_id(server, bad):
    with pytest.raises(InputError, match=r"^invalid snapshot id .*: expected CC-MAIN-YYYY-WW"):
        snapshot_warc_urls(bad, server[0], None, timeout=5)


def test_snapshot_http_errors_are_one_line(server):
    base = server[0]
    with pytest.raises(InputError) as missing:
        snapshot_warc_urls("CC-MAIN-2020-05", base, None, timeout=5)
    assert str(missing.value) == f"cannot read {base}/crawl-data/CC-MAIN-2020-05/warc.paths.gz: HTTP 404 File not found"
    with pytest.raises(InputError, match=r"^cannot read .*CC-MAIN-2024-46/warc.paths.gz: Not a gzipped file"):
        snapshot_warc_urls("CC-MAIN-2024-46", base, None, timeout=5)
    with pytest.raises(InputError, match=r"warc.paths.gz lists no WARC files$"):
        snapshot_warc_urls(SNAPSHOT, base, 0, timeout=5)


def test_open_warc_errors_are_one_line(server, tmp_path):
    base = server[0]
    with pytest.raises(InputError, match=rf"^cannot open {base}/nope.warc.gz: HTTP 404 File not found$"):
        open_warc(f"{base}/nope.warc.gz", Storage(), timeout=5, backoff_seconds=0.01)
    closed_port = f"http://127.0.0.1:{free_port()}/x.warc.gz"
    with pytest.raises(InputError, match=r"^cannot open http://127\.0\.0\.1:\d+/x\.warc\.gz: .*Connection refused$"):
        open_warc(closed_port, Storage(), timeout=5, backoff_seconds=0.01)
    with pytest.raises(InputError, match=r"^cannot open .*missing\.warc\.gz: "):
        open_warc(str(tmp_path / "missing.warc.gz"), Storage())


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- resolving local inputs --------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path, monkeypatch):
    for name in ("a/x.warc.gz", "a/b/y.warc", "a/truth.json", "a/notes.txt", "c/z.warc.gz", "empty/readme.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_directories_globs_files_and_urls(tree):
    storage = Storage(StorageSettings(endpoint_url=None))
    assert resolve_inputs(["a"], storage) == [str(tree / "a/b/y.warc"), str(tree / "a/x.warc.gz")]
    url = "https://data.commoncrawl.org/crawl-data/CC-MAIN-2024-51/x.warc.gz"
    resolved = resolve_inputs(["a/*.warc.gz", str(tree / "a/x.warc.gz"), "c/", url, "a/truth.json", url], storage)
    assert resolved == sorted([str(tree / "a/truth.json"), str(tree / "a/x.warc.gz"), str(tree / "c/z.warc.gz"), url])
    every_warc = [str(tree / p) for p in ("a/b/y.warc", "a/x.warc.gz", "c/z.warc.gz")]
    assert resolve_inputs(["*/*.warc*"], storage) == every_warc


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("missing/x.warc.gz", "input not found: missing/x.warc.gz"),
        ("a/*.arc", "no WARC files match 'a/*.arc'"),
        ("a/*.json", "no WARC files match 'a/*.json'"),
        ("empty", "no WARC files in empty"),
        ("ftp://h/x.warc.gz",
         "unsupported input ftp://h/x.warc.gz: use a local path, s3://bucket/prefix or an http(s) URL"),
    ],
)
def test_resolve_errors(tree, item, message):
    with pytest.raises(InputError) as error:
        resolve_inputs(["a", item], Storage())
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("uri", "snapshot"),
    [
        ("s3://commoncrawl/crawl-data/CC-MAIN-2024-51/segments/17/warc/CC-MAIN-20241201000423-20241201030423-00000.warc.gz",
         "CC-MAIN-2024-51"),
        ("/data/CC-MAIN-2023-06-sample-00001.warc.gz", "CC-MAIN-2023-06"),
        ("CC-MAIN-20241201000423-20241201030423-00000.warc.gz", ""),
        ("/data/crawl.warc.gz", ""),
    ],
)
def test_snapshot_of(uri, snapshot):
    assert snapshot_of(uri) == snapshot


# --- s3 ----------------------------------------------------------------------------------------


@pytest.mark.s3
def test_s3_prefix_glob_and_stream(seaweed, s3_prefix, crawl):
    storage = Storage(seaweed)
    for warc in crawl.warc_paths:
        storage.write_bytes(join(s3_prefix, "crawl", warc.name), warc.read_bytes())
    storage.write_text(join(s3_prefix, "crawl", "truth.json"), "{}")
    expected = [join(s3_prefix, "crawl", warc.name) for warc in crawl.warc_paths]
    assert resolve_inputs([join(s3_prefix, "crawl")], storage) == expected
    assert resolve_inputs([join(s3_prefix, "crawl/*-00001.warc.gz"), expected[0]], storage) == expected
    with pytest.raises(InputError, match=r"^input not found: s3://.*/nothing-here$"):
        resolve_inputs([join(s3_prefix, "nothing-here")], storage)
    docs, _ = read_docs(expected[0], storage)
    assert [d.id for d in docs] == [d.id for d in local_docs(crawl.warc_paths[0])]
    assert docs[0].snapshot == SNAPSHOT
