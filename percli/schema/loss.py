"""`loss` group (conf/loss/*.yaml): the token weights of the cross-entropy."""

from __future__ import annotations

from omegaconf import DictConfig

from percli.errors import ConfigError
from percli.losses import LOSSES
from percli.schema.field import NUMBER, Field, non_negative, positive

GROUP = "loss"
FIELDS: dict[str, Field] = {
    "name": Field(str, "token weights: ce w=1, perce clip(PIR), lossce ~nll, entce ~entropy",
                  choices=LOSSES),
    "min_weight": Field(NUMBER, "lower clip of the token weights", non_negative, "a non-negative number"),
    "max_weight": Field(NUMBER, "upper clip of the token weights", positive, "a positive number"),
    "chunk_size": Field(int, "response positions per LM-head chunk (peak memory chunk_size x vocab)",
                        positive, "a positive integer (LM-head positions per chunk, e.g. 256)"),
}


def check(loss: DictConfig) -> None:
    lo, hi = loss.get("min_weight"), loss.get("max_weight")
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(f"loss.min_weight={lo} is greater than loss.max_weight={hi}; set min_weight <= max_weight")
