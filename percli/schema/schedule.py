"""`schedule` group (conf/schedule/*.yaml): when the token weights are recomputed during training."""

from __future__ import annotations

from collections.abc import Iterable

from percli.schema.field import Field, non_negative, positive

GROUP = "schedule"


def _schedules() -> Iterable[str]:
    # Function-local: percli.schedule loads torch (seconds), which a config error need not wait for.
    from percli.schedule import SCHEDULES

    return SCHEDULES

FIELDS: dict[str, Field] = {
    "name": Field(str, "when PerContrast weights are recomputed (online: every step, as the paper)",
                  choices=_schedules),
    "every": Field(int, "periodic: recompute the whole train set's weights every N optimizer steps",
                   positive, "a positive integer"),
    "warmup_steps": Field(int, "warmup: plain CE for the first N optimizer steps", non_negative,
                          "a non-negative integer"),
}
