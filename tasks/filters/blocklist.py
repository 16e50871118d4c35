"""URL block lists: how they are laid out, loaded, and imported from UT1 archives.

A block list is a directory in the UT1 layout: `<category>/domains` and `<category>/urls`, one entry
per line (`#` starts a comment), plus three word lists at its root: `banned_words.txt` (a URL
token equal to one drops the URL), `banned_subwords.txt` (a substring of the URL with separators
removed) and `soft_banned_words.txt` (drop when several distinct ones appear). `domains`/`urls` at
the root itself, as in datatrove's archive, belong to no category and always apply. A word list the
directory lacks falls back to the small one shipped in `tasks/filters/resources/blocklist/`.

The full UT1 adult list holds ~4.6 million domains. As a Python set of strings that costs ~0.5 GB
in every process (measured: 0.6 GB peak, 3.4 s to load), and Spark runs one Python process per
core, so domain and URL lists are kept as sorted numpy arrays of 64-bit xxh3 hashes instead (8 bytes
an entry, 36 MB); membership is a binary search (~2 µs). `import_blocklist` stores these arrays as
`<kind>.npy` files, which `load_blocklist` memory-maps: loading takes milliseconds and all processes
on a machine share one copy in the page cache. A raw UT1 directory or .tar.gz loads too, only
slower (~10 s for the full list), since every entry is hashed at load time.
With 4.6 million 64-bit hashes the chance that a given URL collides with some entry is ~2.5e-13.

List entries and crawled URLs pass through the same `url_key` / `host_key`, so an entry and the URL
it names always produce the same key.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np
import xxhash

log = logging.getLogger(__name__)

DEFAULT_BLOCKLIST_DIR = Path(__file__).parent / "resources" / "blocklist"
LIST_KINDS = ("domains", "urls")
WORD_LISTS = ("banned_words.txt", "banned_subwords.txt", "soft_banned_words.txt")
NO_CATEGORY = ""  # lists at the root of a block list apply whatever categories are asked for

_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*://")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


# --- keys ------------------------------------------------------------------------------------


def host_key(authority: str) -> str:
    """A host as lists store it: lowercase, without user info, port, trailing dot or `www.`."""
    host = authority.strip().lower().rpartition("@")[2]
    host = host[: host.find("]") + 1] if host.startswith("[") else host.partition(":")[0]
    host = host.rstrip(".")
    return host[4:] if host.startswith("www.") else host


def url_key(url: str) -> tuple[str, str]:
    """(host, key) of a URL; the key is host + path + query, lowercase, without scheme, fragment
    or trailing '/', which is how UT1 writes its `urls` entries."""
    url = _SCHEME.sub("", url.strip().lower(), count=1).partition("#")[0]
    cut = min((i for i in (url.find("/"), url.find("?")) if i != -1), default=len(url))
    host = host_key(url[:cut])
    return host, host + url[cut:].rstrip("/")


def key_hash(key: str) -> int:
    return xxhash.xxh3_64_intdigest(key.encode("utf-8", "surrogatepass"))


def url_tokens(key: str) -> set[str]:
    """The alphanumeric words of a URL key: 'a.com/free-porn' -> {'a', 'com', 'free', 'porn'}."""
    return set(_NON_ALNUM.split(key)) - {""}


def squeeze(text: str) -> str:
    """Text with every non-alphanumeric removed, the form substring matching works on."""
    return _NON_ALNUM.sub("", text.lower())


# --- the loaded form -------------------------------------------------------------------------


class HashedSet:
    """A read-only set of strings held as a sorted array of their 64-bit hashes."""

    def __init__(self, hashes: np.ndarray) -> None:
        self._hashes = hashes

    def __contains__(self, key: str) -> bool:
        wanted = np.uint64(key_hash(key))
        index = self._hashes.searchsorted(wanted)
        return bool(index < len(self._hashes) and self._hashes[index] == wanted)

    def __len__(self) -> int:
        return len(self._hashes)


def substring_pattern(words: Iterable[str]) -> re.Pattern | None:
    """One regex that finds whether any of `words` occurs, built from a trie of the words.

    A flat alternation `w1|w2|...` makes the regex engine retry every word at every position
    (measured ~19 µs per URL for 134 words); sharing prefixes in a trie makes it ~4x faster.
    Only the existence of a match matters, so a word that extends another is dropped.
    """
    trie: dict[str, dict] = {}
    for word in sorted(set(words), key=len):
        node = trie
        for char in word:
            if "" in node:  # a shorter word already ends here
                break
            node = node.setdefault(char, {})
        else:
            node[""] = {}
    return re.compile(_trie_regex(trie)) if trie else None


def _trie_regex(node: dict[str, dict]) -> str:
    if "" in node:
        return ""
    branches = [re.escape(char) + _trie_regex(child) for char, child in sorted(node.items())]
    return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"


@dataclass(frozen=True)
class Blocklist:
    domains: HashedSet  # registered domains and full hosts, as `host_key` writes them
    urls: HashedSet  # `url_key` keys
    banned_words: frozenset[str]
    banned_subwords: frozenset[str]  # squeezed
    soft_words: frozenset[str]
    subword_pattern: re.Pattern | None  # matches a squeezed URL containing any banned subword


# --- reading lists ---------------------------------------------------------------------------


def _entry_hashes(lines: Iterable[bytes], kind: str) -> np.ndarray:
    """Sorted unique hashes of the keys of a `domains` or `urls` file."""
    to_key = host_key if kind == "domains" else _url_entry_key

    def keys() -> Iterator[int]:
        for raw in lines:
            entry = raw.decode("utf-8", "replace").strip()
            if entry and not entry.startswith("#"):
                yield key_hash(to_key(entry))

    return np.unique(np.fromiter(keys(), dtype=np.uint64))


def _url_entry_key(entry: str) -> str:
    return url_key(entry)[1]


def _words(lines: Iterable[bytes]) -> list[str]:
    words = (raw.decode("utf-8", "replace").strip().lower() for raw in lines)
    return sorted({word for word in words if word and not word.startswith("#")})


def _role(relative_path: str) -> tuple[str, str] | None:
    """(category, kind) of a list file or (NO_CATEGORY, word list name); None for anything else."""
    parts = PurePosixPath(relative_path.strip("/")).parts
    if parts[-1] in WORD_LISTS:
        return NO_CATEGORY, parts[-1]
    if parts[-1] in LIST_KINDS:
        return (parts[-2] if len(parts) > 1 else NO_CATEGORY), parts[-1]
    return None


def _source_files(source: Path) -> Iterator[tuple[str, str, IO[bytes]]]:
    """(category, kind, stream) for every list file in a directory, a tar archive or a word list."""
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            role = path.is_file() and _role(path.relative_to(source).as_posix())
            if role:
                with path.open("rb") as stream:
                    yield *role, stream
    elif tarfile.is_tarfile(source):
        with tarfile.open(source) as archive:
            members = archive.getmembers()
            for member in members:  # all of them first: a refused archive imports nothing
                _refuse_escaping(member, source)
            for member in members:  # links are skipped: UT1 aliases categories with symlinks
                role = member.isfile() and _role(member.name)
                if role:
                    yield *role, archive.extractfile(member)
    elif source.name in WORD_LISTS:
        with source.open("rb") as stream:
            yield NO_CATEGORY, source.name, stream
    else:
        raise ValueError(f"{source} is neither a block list directory, a tar archive nor one of {WORD_LISTS}")


# Where tarfile's "data" filter is asked to place members: a folder that exists nowhere, so the
# answer depends on the member alone, never on what is on this machine's disk.
_ARCHIVE_ROOT = "/crawl2chat-block-list-archive"


def _refuse_escaping(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse an archive whose member would land outside the block list's folder: an absolute
    path, a `..` step (which would also put a list under a category named '..'), a symlink or
    hardlink pointing out, or a device file: tarfile's own "data" filter rules (PEP 706)."""
    if ".." in PurePosixPath(member.name).parts:
        problem = f"member {member.name!r} steps out with '..'"
    elif member.name.startswith("/"):  # the data filter would strip the '/': refuse it instead
        problem = f"member {member.name!r} is an absolute path"
    else:
        try:
            tarfile.data_filter(member, _ARCHIVE_ROOT)
            return
        except tarfile.FilterError as error:
            problem = f"member {str(error).replace(_ARCHIVE_ROOT, 'its folder')}"
    raise ValueError(f"refusing block list archive {archive}: {problem}")


# --- loading ---------------------------------------------------------------------------------


def load_blocklist(path: str | None, categories: Iterable[str] = ("adult",)) -> Blocklist:
    """The block list at `path` (a directory or .tar.gz; None: the shipped one), limited to the
    lists of `categories` plus the uncategorised ones."""
    root = Path(path) if path else DEFAULT_BLOCKLIST_DIR
    if not root.exists():
        raise FileNotFoundError(f"block list not found: {root} (see `crawl2chat blocklist load`)")
    wanted = {NO_CATEGORY, *categories}
    hashes: dict[str, list[np.ndarray]] = defaultdict(list)
    found: set[str] = set()
    words: dict[str, list[str]] = {}
    if root.is_dir():
        for category in sorted(wanted):
            for kind in LIST_KINDS:
                compiled, text = root / category / f"{kind}.npy", root / category / kind
                if compiled.exists():
                    hashes[kind].append(np.load(compiled, mmap_mode="r"))
                elif text.exists():
                    with text.open("rb") as stream:
                        hashes[kind].append(_entry_hashes(stream, kind))
                else:
                    continue
                found.add(category)
    else:
        for category, kind, stream in _source_files(root):
            if kind in WORD_LISTS:
                words[kind] = _words(stream)
            elif category in wanted:
                hashes[kind].append(_entry_hashes(stream, kind))
                found.add(category)
    missing = wanted - found - {NO_CATEGORY}
    if missing:
        log.warning("block list %s has no lists for categories %s; only its others apply", root, sorted(missing))
    for name in WORD_LISTS:  # from the list itself, else the shipped one
        if name not in words:
            source = root / name if root.is_dir() and (root / name).exists() else DEFAULT_BLOCKLIST_DIR / name
            with source.open("rb") as stream:
                words[name] = _words(stream)
    subwords = frozenset(filter(None, map(squeeze, words["banned_subwords.txt"])))
    return Blocklist(
        domains=HashedSet(_merge(hashes["domains"])),
        urls=HashedSet(_merge(hashes["urls"])),
        banned_words=frozenset(words["banned_words.txt"]),
        banned_subwords=subwords,
        soft_words=frozenset(words["soft_banned_words.txt"]),
        subword_pattern=substring_pattern(subwords),
    )


def _merge(arrays: list[np.ndarray]) -> np.ndarray:
    if len(arrays) == 1:
        return arrays[0]  # keeps a memory map a memory map
    return np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, dtype=np.uint64)


# --- importing -------------------------------------------------------------------------------


def import_blocklist(source: str, dest_dir: str) -> dict:
    """Convert block lists at `source` into the fast layout under `dest_dir`; return a summary.

    `source` is a UT1-style directory, a .tar.gz of one (UT1's own `blacklists.tar.gz`, a single
    category's archive, datatrove's `url_filterblacklists*.tar.gz`), an http(s) URL of such an
    archive, or a single word list file. Every list found replaces its counterpart in `dest_dir`;
    lists the source lacks are left alone, so several imports can fill one directory.
    """
    started = time.perf_counter()
    if source.startswith(("http://", "https://")):
        with tempfile.TemporaryDirectory() as scratch:
            archive = Path(scratch) / "download.tar.gz"
            with urllib.request.urlopen(source, timeout=120) as response, archive.open("wb") as out:
                shutil.copyfileobj(response, out)
            summary = _import_local(archive, Path(dest_dir))
    else:
        summary = _import_local(Path(source), Path(dest_dir))
    summary.update(source=source, dest=str(dest_dir), seconds=round(time.perf_counter() - started, 2))
    (Path(dest_dir) / "import.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _import_local(source: Path, dest: Path) -> dict:
    if not source.exists():
        raise FileNotFoundError(f"block list source not found: {source}")
    lists: dict[str, dict[str, int]] = defaultdict(dict)
    word_lists: dict[str, int] = {}
    for category, kind, stream in _source_files(source):
        if kind in WORD_LISTS:
            words = _words(stream)
            _write_atomically(dest / kind, lambda path: path.write_text("".join(w + "\n" for w in words)))
            word_lists[kind] = len(words)
        else:
            hashes = _entry_hashes(stream, kind)
            _write_atomically(dest / category / f"{kind}.npy", lambda path: np.save(path, hashes))
            lists[category or "(uncategorised)"][kind] = len(hashes)
    if not lists and not word_lists:
        raise ValueError(f"no domains, urls or word lists found in {source}")
    return {"lists": dict(lists), "word_lists": word_lists}


def _write_atomically(target: Path, write) -> None:
    """Write through a temporary file beside `target`, so readers never see half a list."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial{target.suffix}")
    write(partial)
    os.replace(partial, target)
