"""Workers for the real multi-process (gloo) tests: a module of its own so that spawned processes import
torch and percli.losses only, not the test modules' heavier imports."""

from __future__ import annotations

import torch
import torch.distributed as dist

from percli.distributed import global_token_count, merge_stats


def token_count_worker(rank: int, world: int, port: int, queue) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        n = global_token_count(torch.tensor(3 + 4 * rank))
        stats = merge_stats([{"pir_mean": float(rank), "weight_mean": 1.0, "clip_low": 0.0, "clip_high": 0.0,
                              "tokens": 1 + rank}])
        queue.put((rank, n, stats["pir_mean"], stats["tokens"]))
    finally:
        dist.destroy_process_group()


def ddp_perce_worker(rank: int, world: int, port: int, queue) -> None:
    """One PerCE step through a DDP-wrapped TokenScorer (train forward + the schedule's no-grad free pass)."""
    from perce_util import collate, make_pairs, small_lm

    from percli.logprobs import TokenScorer, count_response_tokens
    from percli.losses import weighted_nll
    from percli.schedule import Schedule

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        scorer = torch.nn.parallel.DistributedDataParallel(TokenScorer(small_lm(seed=0), chunk_size=2))
        pairs = make_pairs(4, seed=4)
        mine = [collate(pairs[rank::world][i:i + 1], "right") for i in range(2)]  # 2 micro-batches per rank
        n = global_token_count(sum(count_response_tokens(b["full_labels"]) for b in mine))
        schedule = Schedule("perce", 0.8, 5.0)
        for i, batch in enumerate(mine):
            ctx = scorer.no_sync() if i == 0 else torch.enable_grad()
            with ctx:
                scores = scorer(batch["full_input_ids"], batch["full_attention_mask"], batch["full_labels"])
                weights, _ = schedule.weights(0, scorer, batch, scores)
                (weighted_nll(scores.logp, weights, n) * world).backward()
        # numpy, not tensors: torch queues share tensor storage with a process that is about to exit
        queue.put((rank, {k: p.grad.numpy().copy() for k, p in scorer.module.causal_lm.named_parameters()}))
    finally:
        dist.destroy_process_group()
