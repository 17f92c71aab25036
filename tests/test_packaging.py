"""Packaging: pyproject declares what percli imports (and nothing it does not, without a reason), and the
package data covers every non-Python file under percli/."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import PurePosixPath

from helpers import REPO

PACKAGE = REPO / "percli"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
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
