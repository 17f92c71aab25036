"""Workers for the real multi-process (gloo) tests: a module of its own so that spawned processes import
torch and percli.losses only, not the test modules' heavier imports."""

from __future__ import annotations

import torch
import torch.distributed as dist

from percli.losses import global_token_count, merge_stats


def token_count_worker(rank: int, world: int, port: int, queue) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        n = global_token_count(torch.tensor(3 + 4 * rank))
        stats = merge_stats([{"pir_mean": float(rank), "weight_mean": 1.0, "clip_low": 0.0, "clip_high": 0.0,
                              "tokens": 1 + rank}])
        queue.put((rank, n, stats["pir_mean"], stats["tokens"]))
    finally:
        dist.destroy_process_group()
