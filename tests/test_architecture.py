"""Layout rules the code relies on: one registry per concept matching conf/, leaf modules at the bottom,
one logger, one atomic writer."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import torch
import yaml

from percli import losses
from percli.data.longlamp import SOURCES
from percli.data.retrieval import RETRIEVERS
from percli.io import atomic_build_dir, atomic_write_bytes
from percli.log import log, result
from percli.losses import LOSSES, register_loss, token_weights
from percli.models import MODEL_SOURCES
from percli.paths import CONF_DIR, conf_options
from percli.schedule import SCHEDULES, Schedule

PACKAGE = Path(__file__).resolve().parents[1] / "percli"
# The four layers of ARCHITECTURE.md, bottom to top. A module imports only from its own layer or those below
# (function-local imports included); a new module must be placed here.
LAYERS: dict[str, tuple[str, ...]] = {
    "leaf": ("errors", "paths", "io", "manifest", "log", "signals", "device", "distributed", "logprobs", "data.example",
             "statistics", "names", "rundir", "batching"),
    "concepts": ("losses", "schedule", "data.retrieval", "data.dense", "data.longlamp", "data.synthetic",
                 "data.synthetic_text", "data.prompts", "models", "assets", "hub", "nltk_data", "schema",
                 "schema.*"),
    "engines": ("data.collate", "launch", "supervisor", "trainer", "training_setup", "sampler", "lr", "checkpoint",
                "generation", "eval_inputs", "metrics", "example_scores", "report.*", "tracking"),
    "commands": ("__main__", "cli", "preflight", "train", "evaluation", "contrast", "data.stats", "table",
                 "compare", "worker"),
}
LEAVES = LAYERS["leaf"]
# Packages whose __init__ only names the package.
_NAMESPACES = {"", "data", "report"}


@pytest.mark.parametrize(("group", "registry"), [("loss", LOSSES), ("schedule", SCHEDULES),
                                                 ("retriever", RETRIEVERS), ("data", SOURCES)])
def test_every_registry_name_has_a_conf_option_and_back(group: str, registry: dict) -> None:
    assert sorted(registry) == list(conf_options(group))
    for option in conf_options(group):  # the option's own `name:` (data: `source:`) is its registry key
        conf = yaml.safe_load((CONF_DIR / group / f"{option}.yaml").read_text())
        assert conf["source" if group == "data" else "name"] == option


def test_every_model_preset_loads_through_a_registered_source() -> None:
    used = {yaml.safe_load(p.read_text())["source"] for p in (CONF_DIR / "model").glob("*.yaml")}
    assert used == set(MODEL_SOURCES)


def test_a_new_loss_is_one_registered_function(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(losses, "LOSSES", dict(LOSSES))  # registered for this test only

    @register_loss("half", "Half", needs_free=True)
    def _half(*, logp_full, logp_free, entropy, row):
        return (logp_full - logp_free) / 2

    w = token_weights("half", logp_full=torch.tensor([-1.0, -3.0]), logp_free=torch.tensor([-5.0, -2.0]),
                      row=torch.tensor([0, 0]), min_weight=0.5, max_weight=1.5)
    assert w.tolist() == [1.5, 0.5]  # PIR 4 and -1, halved to 2 and -0.5, clipped
    schedule = Schedule("half", 0.5, 1.5)
    assert schedule.needs_free_pass(0) and not schedule.with_entropy
    assert losses.LOSSES["half"].label == "Half" and "half" not in LOSSES


def _percli_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "percli":
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "percli")
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer_of(module: str) -> int:
    """The layer index of `module` (dotted, without `percli.`)."""
    for index, members in enumerate(LAYERS.values()):
        for member in members:
            if module == member or (member.endswith(".*") and module.startswith(member[:-1])):
                return index
    raise AssertionError(f"percli/{module.replace('.', '/')}.py is in no layer of tests/test_architecture.py")


def _imported_modules(path: Path) -> set[str]:
    """percli modules `path` imports (`from percli import x` counts as percli.x), without `percli.`."""
    found = set()
    for name in _percli_imports(path):
        found.add(name.removeprefix("percli").removeprefix("."))
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "percli":
            found.update(a.name for a in node.names)
    return found - _NAMESPACES


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if _module_name(p) not in _NAMESPACES)


@pytest.mark.parametrize("path", MODULES, ids=[_module_name(p) for p in MODULES])
def test_every_module_imports_only_its_layer_and_below(path: Path) -> None:
    module = _module_name(path)
    layer = _layer_of(module)
    above = sorted(m for m in _imported_modules(path) if _layer_of(m) > layer)
    assert not above, f"{module} ({list(LAYERS)[layer]}) imports {above} from a higher layer"


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaf_modules_import_nothing_above_them(leaf: str) -> None:
    assert _percli_imports(PACKAGE / f"{leaf.replace('.', '/')}.py") <= {"percli.errors"}


def test_no_print_outside_the_usage_texts() -> None:
    prints = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                prints.append(str(path.relative_to(PACKAGE)))
    assert sorted(prints) == ["cli.py", "worker.py"]  # `percli --help` and the worker's usage line


def test_log_is_quiet_off_rank_zero_except_errors(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    log.info("note")
    log.warning("careful")
    result("the table")
    monkeypatch.setenv("RANK", "1")
    log.info("rank 1 note")
    result("rank 1 table")
    log.error("broke", extra={"rank": 1})
    out, err = capsys.readouterr()
    assert out == "the table\n"
    assert err == "percli: note\npercli: warning: careful\npercli: error (rank 1): broke\n"


def test_atomic_writes_leave_no_temp_files(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "a.png", b"\x89PNG")
    atomic_write_bytes(tmp_path / "a.png", b"new")
    assert (tmp_path / "a.png").read_bytes() == b"new"

    def build(d: Path) -> None:
        (d / "f").write_text("x")

    def fail(d: Path) -> None:
        (d / "f").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_build_dir(tmp_path / "asset", fail)
    assert not (tmp_path / "asset").exists()
    atomic_build_dir(tmp_path / "asset", build)
    atomic_build_dir(tmp_path / "asset", lambda d: (d / "f").write_text("late"))  # published first: kept
    assert (tmp_path / "asset" / "f").read_text() == "x"
    atomic_build_dir(tmp_path / "asset", lambda d: (d / "f").write_text("new"), replace=True)
    assert (tmp_path / "asset" / "f").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "asset"]


def test_table_and_config_checks_never_load_torch() -> None:
    # `percli table` and every config error must stay fast: the registries they read are torch-free.
    import subprocess

    code = "import sys, percli.table, percli.preflight, percli.losses; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent).stdout
    assert out.strip() == "False"
