"""The learning rate of each optimizer step: linear warm-up, then cosine / linear / constant."""

from __future__ import annotations

import math

from omegaconf import DictConfig


def lr_at(step: int, total: int, train_cfg: DictConfig) -> float:
    """LR of optimizer step `step` (0-based) of `total`: linear warmup over ceil(warmup_ratio x total) steps
    to train.lr, then train.lr_scheduler. A pure function of the step, so it needs no checkpointed state."""
    warmup = math.ceil(float(train_cfg.warmup_ratio) * total)
    if step < warmup:
        return train_cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if train_cfg.lr_scheduler == "cosine":
        return train_cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if train_cfg.lr_scheduler == "linear":
        return train_cfg.lr * (1.0 - progress)
    return float(train_cfg.lr)
