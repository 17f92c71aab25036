"""Process-group helpers: who am I, how many are we, and sums / gathers that are no-ops in one process.

Every collective here must be called by every rank (torch.distributed's rule); in a single process,
or before the process group exists, each returns its input unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig


def is_distributed() -> bool:
    """True when a process group of more than one rank is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank: the process group's, else the launcher's RANK, else 0."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def processes_per_machine(cfg: DictConfig) -> int:
    """Processes `cfg.launcher` starts on each machine: 1 for launcher=local; `auto`: one per visible GPU
    (1 without GPUs)."""
    launcher = cfg.launcher
    if launcher.name == "local":
        return 1
    if launcher.num_processes == "auto":
        return max(1, torch.cuda.device_count())
    return int(launcher.num_processes)


def world_size(cfg: DictConfig) -> int:
    """The number of processes `cfg.launcher` starts over all machines (1 for launcher=local)."""
    return processes_per_machine(cfg) * (1 if cfg.launcher.name == "local" else int(cfg.launcher.num_machines))


def collective_device() -> torch.device:
    """NCCL reduces CUDA tensors only; gloo takes CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sum_across_ranks(values: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """The element-wise sum of `values` over all ranks (all_reduce SUM), on `values`' own device."""
    if not is_distributed():
        return values
    reduced = values.to(device or collective_device())
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.to(values.device)


def max_across_ranks(value: int) -> int:
    """The largest `value` over all ranks (all_reduce MAX); `value` itself in a single process."""
    if not is_distributed():
        return value
    reduced = torch.tensor([int(value)], dtype=torch.long, device=collective_device())
    dist.all_reduce(reduced, op=dist.ReduceOp.MAX)
    return int(reduced.item())


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order; `[obj]` in a single process."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def global_token_count(local_count: int | torch.Tensor, device: torch.device | None = None) -> int:
    """Response tokens of this optimizer step summed over ranks: the N of the loss's 1/N.

    `local_count`: this rank's tokens over all of its grad-accum micro-batches
    (`sum(count_response_tokens(b["full_labels"]) for b in micro_batches)`).
    """
    return int(sum_across_ranks(torch.tensor([int(local_count)], dtype=torch.long), device).item())


def merge_stats(stats: Iterable[dict], *, across_ranks: bool = True,
                device: torch.device | None = None) -> dict[str, float | int | None]:
    """Token-weighted means of per-micro-batch stats (`percli.losses.weight_stats`) over one optimizer step,
    and over ranks with `across_ranks` (every rank must call it then). Each dict holds `tokens` and values
    that may be None (no value: left out of that key's mean; None when no micro-batch had one)."""
    stats = list(stats)
    keys = [k for k in (stats[0] if stats else {}) if k != "tokens"]
    # [sum of value*tokens, tokens with a value] per key, plus the total token count.
    acc = torch.zeros(2 * len(keys) + 1, dtype=torch.float64)
    for s in stats:
        n = s["tokens"]
        acc[-1] += n
        for i, k in enumerate(keys):
            if s.get(k) is not None:
                acc[2 * i] += s[k] * n
                acc[2 * i + 1] += n
    if across_ranks:
        acc = sum_across_ranks(acc, device)
    out: dict[str, float | int | None] = {
        k: (float(acc[2 * i] / acc[2 * i + 1]) if acc[2 * i + 1] > 0 else None) for i, k in enumerate(keys)
    }
    out["tokens"] = int(acc[-1])
    return out
