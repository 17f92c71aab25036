"""Config schema: one module per config group, each declaring every leaf key's type, range or choices, and doc.

Every value a run depends on is checked here before any model loads; a bad one is one ConfigError line
(exit 2) naming the key, the value and what is expected. `percli <command> --help` prints the docs.

Layout: `percli/schema/<group>.py` holds `GROUP` (the config key, "" for top-level keys), `FIELDS` (leaf key
relative to the group -> Field; nested keys are dotted, e.g. "lora.r") and optionally `check(group_cfg)` for
rules that tie keys together. Keys absent from a command's config are skipped, so one schema serves every
command.

To add a config key, e.g. `train.save_every_minutes`: set it in conf/train/default.yaml and add one entry to
`FIELDS` in percli/schema/train.py:

    "save_every_minutes": Field(NUMBER, "also checkpoint every N minutes (null: off)", positive,
                                "a positive number or null", nullable=True),

That is the only schema edit: validation, its error line and `--help` follow. tests/test_schema.py fails for
any leaf key of a composed config without a Field, and for any Field that no config sets.
A key that names a registry entry takes `choices=REGISTRY` (its names) when the registry's module is light
to import, or `choices=<function returning it>` when that module loads torch: `check_names` reads those last.
To add a config group: a new module here, listed in `_MODULES`.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

from omegaconf import DictConfig, OmegaConf

from percli.schema import (
    compare,
    contrast,
    data,
    eval,
    launcher,
    logger,
    loss,
    model,
    paths,
    retriever,
    root,
    schedule,
    table,
    task,
    train,
)
from percli.schema.field import Field

__all__ = ["SCHEMA", "Field", "check_names", "check_values", "describe", "leaf_keys", "validate"]

_MODULES: tuple[ModuleType, ...] = (root, paths, model, task, data, retriever, loss, schedule, launcher, logger,
                                    train, eval, contrast, table, compare)
# Full dotted key -> Field, in group order (the order `validate` checks and `--help` lists them).
SCHEMA: dict[str, Field] = {
    (f"{m.GROUP}.{key}" if m.GROUP else key): field for m in _MODULES for key, field in m.FIELDS.items()
}
_MISSING = object()


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError on the first bad value: `check_values`, then `check_names`."""
    check_values(cfg)
    check_names(cfg)


def check_values(cfg: DictConfig) -> None:
    """Types, ranges, fixed choices and cross-key rules: cheap, nothing heavy is imported."""
    for key, field, value in _present(cfg):
        field.check_type(key, value)
        if not field.lazy:
            field.check_choice(key, value)
    for m in _MODULES:
        group = cfg.get(m.GROUP) if m.GROUP else cfg
        if hasattr(m, "check") and isinstance(group, DictConfig):
            m.check(group)


def check_names(cfg: DictConfig) -> None:
    """Names looked up in a registry (loss.name, ...). Reading a registry imports its implementations
    (torch), so the CLI does this last, once every cheaper check has passed."""
    for key, field, value in _present(cfg):
        if field.lazy:
            field.check_choice(key, value)


def _present(cfg: DictConfig) -> Iterator[tuple[str, Field, object]]:
    """The schema keys `cfg` sets, with their values; a `???` is checked (`Field.required`), not yielded."""
    for key, field in SCHEMA.items():
        if _is_missing(cfg, key):
            field.check_missing(key)
            continue
        value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
        if value is not _MISSING:
            yield key, field, value


def _is_missing(cfg: DictConfig, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    return isinstance(node, DictConfig) and leaf in node.keys() and OmegaConf.is_missing(node, leaf)


def leaf_keys(cfg: DictConfig, prefix: str = "") -> Iterator[str]:
    """Dotted keys of a config's leaves (a null where a mapping may stand counts as a leaf)."""
    for key in cfg.keys():
        node = cfg._get_node(key)
        full = f"{prefix}{key}"
        if isinstance(node, DictConfig) and not node._is_none():
            yield from leaf_keys(node, full + ".")
        else:
            yield full


def describe(cfg: DictConfig) -> list[str]:
    """One line per schema key present in `cfg`: key, current value, what it accepts, and its doc."""
    rows = []
    for key, field in SCHEMA.items():
        value = "???" if _is_missing(cfg, key) else OmegaConf.select(cfg, key, default=_MISSING)
        if value is _MISSING or isinstance(value, DictConfig):
            continue
        rows.append((f"{key}={_yaml(value)}", f"{field.doc} [{field.expected()}]"))
    width = min(40, max((len(k) for k, _ in rows), default=0))
    return [f"  {k:<{width}}  {doc}" for k, doc in rows]


def _yaml(value: object) -> str:
    """A value as an override writes it: null, true, [a, b]."""
    if OmegaConf.is_config(value):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)
