"""One config key's contract: type, range or allowed values, and a one-line doc.

`Field.check(key, value)` raises a one-line ConfigError naming the key, the bad value and what is expected,
so every config error reads the same way whatever group it comes from.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from percli.errors import ConfigError

NUMBER = (int, float)
# A YAML list or mapping arrives as an OmegaConf container.
_CONTAINERS: dict[type, tuple[type, ...]] = {list: (list, ListConfig), dict: (dict, DictConfig)}


@dataclass(frozen=True)
class Field:
    """A leaf key of a config group.

    kind: the accepted Python type(s); NUMBER for int-or-float; list / dict for YAML containers.
    doc: one line, shown by `percli <command> --help`.
    check: a range predicate on a non-null value; `expect` then says in words what it accepts.
    choices: the allowed values (a tuple, or a registry dict: its names), or a zero-argument function
        returning them, for a registry whose module is heavy to import (read by `check_names` only); for a
        list, every item must be one of them.
    nullable: null is allowed (it means "off" or "not set"; `doc` says which).
    required: a `???` left in the config fails before the run (otherwise the command reports it).
    """

    kind: type | tuple[type, ...]
    doc: str
    check: Callable[[Any], bool] | None = None
    expect: str = ""
    choices: Collection[Any] | Callable[[], Iterable[Any]] | None = None
    nullable: bool = False
    required: bool = False

    @property
    def lazy(self) -> bool:
        """Its choices come from a heavy registry module: `check_names` checks it, after every other key."""
        return callable(self.choices)

    def allowed(self) -> tuple[Any, ...]:
        if self.choices is None:
            return ()
        return tuple(self.choices() if callable(self.choices) else self.choices)

    def expected(self) -> str:
        """What the key accepts, in words: the `expect` text, the choices, or the type."""
        if self.expect:
            return self.expect
        if self.choices is not None:
            names = [str(c) for c in self.allowed()]
            text = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
            if self.kind is list:
                text = f"a list of {text}" + (", or null" if self.nullable else "")
                return text
            return f"{text} or null" if self.nullable else text
        return type_name(self.kind) + (" or null" if self.nullable else "")

    def check_missing(self, key: str) -> None:
        """The config leaves the key at `???`."""
        if self.required:
            raise ConfigError(f"{key} is required (the config has ???); set {key}=... ({self.expected()})")

    def check_type(self, key: str, value: Any) -> None:
        """Null-ness, type and range; choices are left to `check_choice`."""
        if value is None:
            if self.nullable:
                return
            raise ConfigError(f"{key}=null is not allowed; expected {self.expected()}")
        kinds = _accepted(self.kind)
        # bool is an int subclass: reject True where a number is expected, and 1 where a bool is.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ConfigError(f"{key}={_show(value)} has the wrong type ({_type_of(value)}); "
                              f"expected {self.expected()}")
        if self.check is not None and not self.check(value):
            raise ConfigError(f"{key}={_show(value)} is out of range; expected {self.expected()}")

    def check_choice(self, key: str, value: Any) -> None:
        if self.choices is None or value is None:
            return
        allowed = self.allowed()
        items = list(value) if isinstance(value, (list, ListConfig)) else [value]
        for item in items:
            if item not in allowed:
                raise ConfigError(f"{key}={_show(value)} is out of range; expected {self.expected()}")


def type_name(kind: type | tuple[type, ...]) -> str:
    if kind == NUMBER:
        return "a number"
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a mapping"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _accepted(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return tuple(t for k in kinds for t in _CONTAINERS.get(k, (k,)))


def _type_of(value: Any) -> str:
    return "list" if isinstance(value, ListConfig) else "dict" if isinstance(value, DictConfig) else type(value).__name__


def _show(value: Any) -> str:
    if isinstance(value, (ListConfig, DictConfig)):
        value = OmegaConf.to_container(value)
    return repr(value)


# Range predicates, each with the words its `expect` text uses.
def positive(v: Any) -> bool:
    return v > 0


def non_negative(v: Any) -> bool:
    return v >= 0


def between(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Callable[[Any], bool]:
    """lo <= v <= hi, each end open when asked."""
    return lambda v: (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)
