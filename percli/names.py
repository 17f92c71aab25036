"""Names several layers share, each defined once: the scores a run reports, the LongLaMP tasks, and the config
keys that shape a trained checkpoint (what a resume must keep, and what tells two table rows apart)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

# Per-example and corpus scores, in report order (HF evaluate's rouge types, then METEOR).
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
METRIC_KEYS = (*ROUGE_TYPES, "meteor")
# Synthetic data only: the share of a user's planted names that a generation contains.
PLANTED = "planted_recall"
SCORE_KEYS = (*METRIC_KEYS, PLANTED)
# `percli contrast`'s groups of response tokens around a planted name (its weight_shares, the study's probe table).
NAME_GROUPS = ("first token of a name", "later tokens of a name", "token before a name")
FIRST_NAME_TOKEN, LATER_NAME_TOKENS, BEFORE_A_NAME = NAME_GROUPS

TASKS = ("review", "abstract", "topic")

# Config keys whose change would change the loss curve; memory-only keys inside them are not.
RESULT_KEYS = ("seed", "model", "task", "data", "retriever", "loss", "schedule", "train.epochs",
               "train.max_steps", "train.lr", "train.weight_decay", "train.warmup_ratio", "train.lr_scheduler",
               "train.batch_size", "train.grad_accum", "train.max_grad_norm")
NOT_RESULT = ("model.gradient_checkpointing",)


def result_config(cfg: DictConfig) -> dict[str, Any]:
    """Flat {dotted key: value} of the RESULT_KEYS leaves of a config (lists as lists), NOT_RESULT left out."""
    flat: dict[str, Any] = {}
    for key in RESULT_KEYS:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        _flatten(key, value, flat)
    for key in NOT_RESULT:
        flat.pop(key, None)
    return flat


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    else:
        out[prefix] = value
