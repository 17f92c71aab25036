"""The one place that decides the device and the floating-point precision a process computes in."""

from __future__ import annotations

import gc
import os

import torch
from omegaconf import DictConfig

from percli.errors import EnvironmentProblem


def default_device() -> torch.device:
    """This process's GPU when one is visible (a launched worker's LOCAL_RANK picks it), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def visible_gpus() -> int:
    return torch.cuda.device_count()


def release_device_memory() -> None:
    """Return cached GPU memory once a model is gone, so that the next job in this process starts clean."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_dtype(name: str) -> torch.dtype:
    """`auto` is bf16 on a GPU that supports it, fp32 on CPU; otherwise the torch dtype of that name."""
    if name == "auto":
        return torch.bfloat16 if bf16_supported() else torch.float32
    return getattr(torch, name)


def precision(cfg: DictConfig) -> str:
    """`bf16` (mixed precision / DeepSpeed bf16) or `no` (fp32), from `launcher.mixed_precision`."""
    choice = cfg.launcher.mixed_precision
    if choice == "auto":
        return "bf16" if bf16_supported() else "no"
    if choice == "bf16" and not bf16_supported():
        raise EnvironmentProblem("launcher.mixed_precision=bf16 needs a bf16-capable GPU and none is visible; "
                                 "use launcher.mixed_precision=auto (fp32 on CPU)")
    return choice


def precision_dtype(cfg: DictConfig) -> torch.dtype:
    """The dtype a model computes in under `precision(cfg)`."""
    return torch.bfloat16 if precision(cfg) == "bf16" else torch.float32
