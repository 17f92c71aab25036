"""`task` group (conf/task/*.yaml): the LongLaMP task and setting."""

from __future__ import annotations

from percli.names import TASKS
from percli.schema.field import Field

GROUP = "task"
FIELDS: dict[str, Field] = {
    "name": Field(str, "the LongLaMP task", choices=TASKS),
    "hub_name": Field(str, "the task's LongLaMP hub config prefix (e.g. product_review)"),
    "setting": Field(str, "user (split by user) or temporal (split by time)", choices=("user", "temporal")),
}
