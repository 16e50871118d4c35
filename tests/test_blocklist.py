"""Block list keys, loading and importing (tasks/blocklist.py), on hand-made and real UT1 lists."""

from __future__ import annotations

import functools
import http.server
import io
import shutil
import tarfile
import threading
from pathlib import Path

import pytest

from tasks.filters.blocklist import (
    host_key,
    import_blocklist,
    load_blocklist,
    substring_pattern,
    url_key,
    url_tokens,
)

from tests.conftest import REALDATA, needs_realdata


@pytest.mark.parametrize(
    ("url", "host", "key"),
    [
        ("https://www.Example.com/Path/?q=1#top", "example.com", "example.com/path/?q=1"),
        ("HTTP://user:pw@shop.example.co.uk:8080/cart/", "shop.example.co.uk", "shop.example.co.uk/cart"),
        ("example.com/a/b/", "example.com", "example.com/a/b"),
        ("https://example.com", "example.com", "example.com"),
        ("https://example.com.?x", "example.com", "example.com?x"),
        ("http://[2001:db8::1]:80/x", "[2001:db8::1]", "[2001:db8::1]/x"),
        ("", "", ""),
    ],
)
def test_url_key(url, host, key):
    assert url_key(url) == (host, key)


def test_host_key_and_tokens():
    assert host_key("WWW.Example.COM.") == "example.com"
    assert host_key("www2.example.com") == "www2.example.com"  # only the plain www. prefix is noise
    assert url_tokens("example.com/free-porn_videos?id=7") == {"example", "com", "free", "porn", "videos", "id", "7"}


def test_substring_pattern_finds_any_word_and_only_them():
    pattern = substring_pattern(["porn", "pornhub", "xnxx", "xvideos", "camgirl"])
    assert pattern.pattern == "(?:camgirl|porn|x(?:nxx|videos))"  # 'pornhub' adds nothing to 'porn'
    for text in ("freepornvideos", "wwwxnxxcom", "xvideos", "hotcamgirls"):
        assert pattern.search(text), text
    for text in ("sussexuniversity", "xvideo", "campaigning", "popcorn"):
        assert not pattern.search(text), text
    assert substring_pattern([]) is None


def test_shipped_default_list():
    blocklist = load_blocklist(None, ["adult"])
    # The sample crawl relies on these two.
    assert "porn-example-tube.com" in blocklist.domains
    assert "xxx-casino-example.net" in blocklist.domains
    assert "casino-bonus-example.com" not in blocklist.domains  # gambling: not asked for
    assert "free-hosting-example.org/galleries/private" in blocklist.urls
    assert {"porn", "xxx"} <= blocklist.banned_words
    assert "hot" in blocklist.soft_words and "porn" in blocklist.banned_subwords
    both = load_blocklist(None, ["adult", "gambling"])
    assert "casino-bonus-example.com" in both.domains and "porn-example-tube.com" in both.domains


def _write_ut1_dir(root: Path) -> Path:
    (root / "adult").mkdir(parents=True)
    (root / "adult" / "domains").write_text("# comment\nbad-example.com\nWWW.Worse-Example.net\n\n")
    (root / "adult" / "urls").write_text("good-example.org/hidden/page/\n")
    (root / "gambling").mkdir()
    (root / "gambling" / "domains").write_text("bets-example.com\n")
    (root / "banned_words.txt").write_text("badword\n#notaword\n")
    return root


def test_raw_ut1_directory_loads_by_category(tmp_path):
    blocklist = load_blocklist(str(_write_ut1_dir(tmp_path / "ut1")), ["adult"])
    assert len(blocklist.domains) == 2
    assert "bad-example.com" in blocklist.domains and "worse-example.net" in blocklist.domains
    assert "bets-example.com" not in blocklist.domains
    assert "good-example.org/hidden/page" in blocklist.urls
    assert blocklist.banned_words == {"badword"}
    # word lists the directory lacks come from the shipped ones
    assert "hot" in blocklist.soft_words and "porn" in blocklist.banned_subwords


def test_import_directory_then_word_list_file(tmp_path):
    source, dest = _write_ut1_dir(tmp_path / "ut1"), tmp_path / "imported"
    summary = import_blocklist(str(source), str(dest))
    assert summary["lists"] == {"adult": {"domains": 2, "urls": 1}, "gambling": {"domains": 1}}
    assert summary["word_lists"] == {"banned_words.txt": 1}
    assert (dest / "adult" / "domains.npy").is_file() and (dest / "import.json").is_file()
    imported = load_blocklist(str(dest), ["adult", "gambling"])
    for domain in ("bad-example.com", "worse-example.net", "bets-example.com"):
        assert domain in imported.domains
    assert "fine-example.com" not in imported.domains and len(imported.domains) == 3

    words = tmp_path / "soft_banned_words.txt"
    words.write_text("Alpha\nbeta\n")
    summary = import_blocklist(str(words), str(dest))
    assert summary["lists"] == {} and summary["word_lists"] == {"soft_banned_words.txt": 2}
    merged = load_blocklist(str(dest), ["adult"])
    assert merged.soft_words == {"alpha", "beta"} and merged.banned_words == {"badword"}
    assert "bad-example.com" in merged.domains  # the second import left the lists alone


def _ut1_archive(path: Path) -> Path:
    """A tar.gz in UT1's own layout, including the symlinked alias category UT1 ships."""
    with tarfile.open(path, "w:gz") as archive:
        for name, text in [("blacklists/adult/domains", b"bad-example.com\n"), ("blacklists/adult/usage", b"black\n")]:
            member = tarfile.TarInfo(name)
            member.size = len(text)
            archive.addfile(member, io.BytesIO(text))
        alias = tarfile.TarInfo("blacklists/porn")
        alias.type, alias.linkname = tarfile.SYMTYPE, "adult"
        archive.addfile(alias)
    return path


def test_tar_archive_loads_directly_and_imports(tmp_path):
    archive = _ut1_archive(tmp_path / "blacklists.tar.gz")
    assert "bad-example.com" in load_blocklist(str(archive), ["adult"]).domains
    summary = import_blocklist(str(archive), str(tmp_path / "out"))
    assert summary["lists"] == {"adult": {"domains": 1}}


def test_import_from_http_url(tmp_path):
    (tmp_path / "served").mkdir()
    archive = _ut1_archive(tmp_path / "served" / "adult.tar.gz")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/adult.tar.gz"
        summary = import_blocklist(url, str(tmp_path / "out"))
    finally:
        server.shutdown()
    assert summary["source"] == url and summary["lists"] == {"adult": {"domains": 1}}
    assert "bad-example.com" in load_blocklist(str(tmp_path / "out"), ["adult"]).domains


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_blocklist(str(tmp_path / "missing"), ["adult"])
    with pytest.raises(FileNotFoundError):
        import_blocklist(str(tmp_path / "missing"), str(tmp_path / "out"))
    stray = tmp_path / "notes.txt"
    stray.write_text("hello\n")
    with pytest.raises(ValueError):
        import_blocklist(str(stray), str(tmp_path / "out"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError):
        import_blocklist(str(tmp_path / "empty"), str(tmp_path / "out"))


@needs_realdata
def test_real_ut1_files(tmp_path):
    """The raw UT1 gambling domains and adult URLs (olbat/ut1-blacklists), in UT1's layout."""
    raw = REALDATA / "blocklist" / "ut1_olbat"
    for category, kind in [("gambling", "domains"), ("adult", "urls")]:
        (tmp_path / category).mkdir(exist_ok=True)
        shutil.copy(raw / f"{category}__{kind}", tmp_path / category / kind)
    gambling = load_blocklist(str(tmp_path), ["gambling"])
    lines = {line.strip() for line in (raw / "gambling__domains").read_text().splitlines() if line.strip()}
    assert len(gambling.domains) == len(lines) > 10_000
    assert "000-online-casino.com" in gambling.domains and "wikipedia.org" not in gambling.domains
    adult = load_blocklist(str(tmp_path), ["adult"])
    assert "101soundboards.com/boards/231587-bbw-bdsm-erotic-audio-clips" in adult.urls
    assert "000-online-casino.com" not in adult.domains


def _crafted_archive(path: Path, member: tarfile.TarInfo, text: bytes = b"evil-example.com\n") -> Path:
    """A UT1-looking archive with one good list and one crafted `member`."""
    with tarfile.open(path, "w:gz") as archive:
        good = tarfile.TarInfo("blacklists/adult/domains")
        good.size = len(b"bad-example.com\n")
        archive.addfile(good, io.BytesIO(b"bad-example.com\n"))
        if member.isfile():
            member.size = len(text)
            archive.addfile(member, io.BytesIO(text))
        else:
            archive.addfile(member)
    return path


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, target
    return member


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (tarfile.TarInfo("blacklists/../../outside/domains"), "steps out with '..'"),
        (tarfile.TarInfo("blacklists/adult/../../../domains"), "steps out with '..'"),
        (tarfile.TarInfo("/etc/crawl2chat/domains"), "absolute path"),
        (_link("blacklists/escape", "/etc", tarfile.SYMTYPE), "absolute"),
        (_link("blacklists/escape", "../../../../etc", tarfile.SYMTYPE), "outside the destination"),
        (_link("blacklists/adult/urls", "../../../../etc/passwd", tarfile.LNKTYPE), "outside the destination"),
        (_link("blacklists/device", "", tarfile.CHRTYPE), "special file"),
    ],
    ids=["dotdot", "dotdot-inside-category", "absolute", "symlink-absolute", "symlink-out", "hardlink-out", "device"],
)
def test_archive_members_landing_outside_are_refused(tmp_path, member, message):
    archive = _crafted_archive(tmp_path / "crafted.tar.gz", member)
    dest = tmp_path / "lists" / "imported"
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ValueError, match=message) as refused:
        import_blocklist(str(archive), str(dest))
    assert "\n" not in str(refused.value) and str(refused.value).startswith("refusing block list archive")
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, inside or out
    with pytest.raises(ValueError, match=message):
        load_blocklist(str(archive))  # reading the archive directly refuses it too


def test_links_inside_the_archive_still_import(tmp_path):
    archive = _crafted_archive(tmp_path / "aliases.tar.gz", _link("blacklists/porn", "adult", tarfile.SYMTYPE))
    summary = import_blocklist(str(archive), str(tmp_path / "lists"))
    assert summary["lists"] == {"adult": {"domains": 1}}
