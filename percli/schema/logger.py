"""`logger` group (conf/logger/*.yaml): experiment tracking (the run dir always has train_log.jsonl)."""

from __future__ import annotations

from percli.schema.field import Field

GROUP = "logger"
FIELDS: dict[str, Field] = {
    "name": Field(str, "experiment tracker", choices=("none", "wandb")),
    "project": Field(str, "W&B project", expect="a W&B project name"),
    "entity": Field(str, "W&B entity (null: your default)", nullable=True),
    "group": Field(str, "W&B group (null: none)", nullable=True),
    "tags": Field(list, "W&B tags, e.g. [smoke,test]"),
    "mode": Field(str, "W&B mode; a W&B failure warns once and never stops training",
                  choices=("online", "offline", "disabled")),
}
