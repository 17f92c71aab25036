"""`paths` group (conf/paths/default.yaml): where runs, caches and tables live."""

from __future__ import annotations

from percli.schema.field import Field

GROUP = "paths"
FIELDS: dict[str, Field] = {
    "output_dir": Field(str, "root of run dirs (<output_dir>/<command>/runs/...); env PERCLI_OUTPUT_DIR"),
    "cache_dir": Field(str, "offline assets and data caches; env PERCLI_CACHE"),
    "results_dir": Field(str, "default directory of `percli table` outputs"),
}
