"""Top-level keys of every command's config (conf/<command>.yaml)."""

from __future__ import annotations

from percli.schema.field import Field, non_negative

GROUP = ""
FIELDS: dict[str, Field] = {
    "command": Field(str, "the command this config belongs to (set by conf/<command>.yaml)"),
    "seed": Field(int, "global seed: model init, data order, sampling (same seed, same run)",
                  non_negative, "a non-negative integer"),
}
