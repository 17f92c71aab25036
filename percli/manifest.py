"""Directory manifests: every file's size and content hash, so a directory can later prove it is unchanged.

A checkpoint is complete when it is renamed into place (percli.io), but a copy cut short, a bad sector or
a quota hit can damage it afterwards. `manifest.json`, written last, lists each file under the directory
(subdirectories included) with its size in bytes and its xxh3-128 hash over the whole file; `find_damage`
compares the directory with it: a missing file, a different size (found by `stat` alone, before any
hashing), or a different hash.

xxh3-128 rather than a cryptographic hash: it guards against accidents, not attackers, and hashes at
memory speed (~13 GB/s on one core vs ~0.9 GB/s for blake2b), which keeps it a small part of a save.
"""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path
from typing import Any

import xxhash

MANIFEST = "manifest.json"
HASH = "xxh3_128"


def file_hash(path: Path) -> str:
    """xxh3-128 of the whole file. Mapped, not read: hashing straight from the page cache skips a copy into
    Python buffers and halves the time (0.18 s vs 0.39 s for a 1.5 GiB SmolLM2 checkpoint)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:  # an empty file cannot be mapped
            return xxhash.xxh3_128().hexdigest()
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return xxhash.xxh3_128(mapped).hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def build_manifest(directory: Path) -> dict[str, Any]:
    """{"hash": "xxh3_128", "files": {relative path: {"size": bytes, "xxh3_128": hex}}} of every file but
    the manifest itself."""
    directory = Path(directory)
    files = {p.relative_to(directory).as_posix(): {"size": p.stat().st_size, HASH: file_hash(p)}
             for p in _files(directory)}
    return {"hash": HASH, "files": files}


def find_damage(directory: Path) -> str | None:
    """The first thing wrong with `directory` against its manifest, as '<file>: <what>' (missing, size,
    hash, or an unreadable manifest); None when every listed file matches. The directory must hold a
    manifest (`has_manifest`)."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        listed = {str(name): (int(entry["size"]), str(entry[manifest["hash"]]))
                  for name, entry in manifest["files"].items()}
        if manifest["hash"] != HASH:
            return f"{MANIFEST}: hash {manifest['hash']!r} is not {HASH!r}, the only one this version checks"
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{MANIFEST}: unreadable ({type(e).__name__}: {e})"
    for name, (size, _) in listed.items():  # every size first: stat only, no file is read
        path = directory / name
        if not path.is_file():
            return f"{name}: missing"
        actual = path.stat().st_size
        if actual != size:
            return f"{name}: size {actual} bytes, the manifest says {size}"
    for name, (_, digest) in listed.items():
        if file_hash(directory / name) != digest:
            return f"{name}: hash differs from the manifest's (same size, changed content)"
    return None


def has_manifest(directory: Path) -> bool:
    return (Path(directory) / MANIFEST).is_file()


def stat_signature(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of every file, manifest included: cheap to take, and it changes when a file is
    rewritten, truncated, added or removed, so an earlier full check of the directory can be reused."""
    directory = Path(directory)
    out = []
    for p in sorted(p for p in directory.rglob("*") if p.is_file()):
        st = p.stat()
        out.append((p.relative_to(directory).as_posix(), st.st_size, st.st_mtime_ns))
    return tuple(out)
