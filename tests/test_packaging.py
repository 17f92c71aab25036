"""Packaging: pyproject declares what percli imports (and nothing it does not, without a reason), the
package data covers every non-Python file under percli/, requirements.lock (what `make setup` installs)
satisfies pyproject, and every extra resolves with the core (pip's resolver, against the package index)."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import PurePosixPath

import pytest
from helpers import REPO
from packaging.requirements import Requirement

PACKAGE = REPO / "percli"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
LOCK = REPO / "requirements.lock"
# Declared although no percli module imports them: name -> why.
NOT_IMPORTED = {
    "deepspeed": "launcher=deepspeed: accelerate's DeepSpeed plugin imports it",
    "gguf": "transformers reads the SmolLM2 GGUF with it (percli.assets)",
    "hydra-submitit-launcher": "the slurm extra: Hydra loads it for hydra/launcher=slurm",
    "trl": "the bench extra: scripts/bench compares percli's CE step with TRL's SFTTrainer",
}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _canonical(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0])


def _declared() -> set[str]:
    project = PYPROJECT["project"]
    extras = [r for name, reqs in project["optional-dependencies"].items() if name != "dev" for r in reqs]
    return {_requirement_name(r) for r in [*project["dependencies"], *extras]}


def _imported_distributions() -> set[str]:
    """Distributions of the third-party modules percli imports (an extra not installed here: its module name)."""
    modules = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    modules -= {*sys.stdlib_module_names, "percli", "__future__"}
    dists = importlib.metadata.packages_distributions()
    return {_canonical(d) for m in modules for d in dists.get(m, [m])}


def test_every_import_is_declared_and_every_dependency_is_used() -> None:
    declared, imported = _declared(), _imported_distributions()
    assert sorted(imported - declared) == []
    assert sorted(declared - imported) == sorted(NOT_IMPORTED)


def test_package_data_covers_every_non_python_file() -> None:
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["percli"]
    files = [PurePosixPath(p.relative_to(PACKAGE).as_posix()) for p in PACKAGE.rglob("*")
             if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert PurePosixPath("templates/qwen3_chat.jinja") in files
    assert [str(f) for f in files if not any(f.match(p) for p in patterns)] == []


def _expanded(extra: str | None) -> list[Requirement]:
    """The core's requirements and an extra's, with the extras it names (percli[bench], ...) expanded."""
    reqs, todo = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]], [extra] if extra else []
    while todo:
        for req in map(Requirement, EXTRAS[todo.pop()]):
            if req.name == "percli":
                todo += sorted(req.extras)
            else:
                reqs.append(req)
    return reqs


def _unmet(requirements: list[Requirement], versions: dict[str, str]) -> list[str]:
    """Each requirement that `versions` (canonical name -> version) lacks or does not satisfy."""
    return [f"{req} (got {versions.get(_canonical(req.name), 'nothing')})" for req in requirements
            if not req.specifier.contains(versions.get(_canonical(req.name), "0+absent"), prereleases=True)
            or _canonical(req.name) not in versions]


def test_the_lock_satisfies_pyproject_and_pins_the_cpu_torch() -> None:
    """Fails when pyproject.toml and requirements.lock disagree: rerun `make lock`."""
    pins = dict(line.split("==") for line in LOCK.read_text(encoding="utf-8").splitlines()
                if line and not line.startswith("#"))
    locked = {_canonical(name): version for name, version in pins.items()}
    assert _unmet(_expanded("dev"), locked) == []
    assert locked["torch"] == "2.13.0"   # the CPU build the tests run on; pyproject allows the vLLM one too
    assert "percli" not in locked


def _index_reachable(host: str = "pypi.org") -> bool:
    try:
        socket.create_connection((host, 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_every_extra_resolves_with_the_core(extra: str) -> None:
    """pip's resolver, as a fresh `pip install '.[extra]'` runs it (nothing is installed); about a minute each."""
    if not _index_reachable():
        pytest.skip("the package index (pypi.org:443) cannot be reached, so pip cannot resolve")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--report", "-", f".[{extra}]"], capture_output=True, text=True, cwd=REPO, timeout=1200)
    conflict = [line for line in r.stderr.splitlines() if not line.startswith("WARNING: Location")]
    assert r.returncode == 0, "\n".join(conflict[-25:])
    installs = {_canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in json.loads(r.stdout)["install"]}
    assert _unmet(_expanded(extra), installs) == []
