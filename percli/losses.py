"""Token weights for `loss=ce|perce|lossce|entce` and the weighted CE with global token normalisation.

All four losses share one form, so they differ only in the weights:

    L = -(1/N) * sum_t w_t * log P(y_t | p, x, y<t)

N is the number of response tokens in the GLOBAL batch (every gradient-accumulation micro-batch on every
rank), not the sum of the weights, and w_t is detached. Definitions of w_t (min/max = loss.min_weight /
loss.max_weight, defaults 0.8 / 5.0):

- ce:     w_t = 1                                                  (plain token-mean CE)
- perce:  w_t = clip(PIR_t, min, max),  PIR_t = log P(y_t|p,x,y<t) - log P(y_t|x,y<t)   (the paper)
- lossce: w_t = clip(l_t / mean_e(l), min, max),  l_t = -log P(y_t|p,x,y<t) (detached token NLL,
          Rho-1 style: hard tokens weigh more)
- entce:  w_t = clip(H_t / mean_e(H), min, max),  H_t = predictive entropy (nats) of P(. | p,x,y<t), detached
          (uncertain positions weigh more)

mean_e(.) is the mean over the response tokens of the token's own example, so LossCE and EntCE weights are
scale-free with mean 1 before clipping, comparable with PerCE weights (PIR in nats, clipped to the same
range). An example whose score is zero everywhere (mean 0) gets w_t = 1.

Using it under gradient accumulation and several ranks (see `global_token_count`):

    n_local = sum(count_response_tokens(b["full_labels"]) for b in micro_batches_of_this_step)
    N = global_token_count(n_local)                       # all_reduce(SUM) when torch.distributed is up
    loss = weighted_nll(scores.logp, weights, N) * world_size
    backward(loss)                                        # once per micro-batch, then one optimizer step

The `* world_size` undoes the MEAN that DDP / DeepSpeed apply to gradients across ranks, so the summed
gradient equals that of one big batch. Do not let accelerate or DeepSpeed also divide by the number of
accumulation steps: the 1/N already covers every micro-batch.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor

from percli.contrast import count_response_tokens

LOSSES = ("ce", "perce", "lossce", "entce")
_EPS = 1e-12

__all__ = ["LOSSES", "count_response_tokens", "global_token_count", "merge_stats", "raw_scores",
           "token_weights", "weight_stats", "weighted_nll"]


def _example_mean(x: Tensor, row: Tensor) -> Tensor:
    """For each token, the mean of x over the tokens of its own example (same row)."""
    n_rows = int(row.max()) + 1 if row.numel() else 0
    sums = torch.zeros(n_rows, dtype=x.dtype, device=x.device).index_add_(0, row, x)
    counts = torch.bincount(row, minlength=n_rows).to(x.dtype)
    return (sums / counts)[row]


def _normalised(score: Tensor, row: Tensor) -> Tensor:
    mean = _example_mean(score, row)
    return torch.where(mean > _EPS, score / mean.clamp(min=_EPS), torch.ones_like(score))


def raw_scores(name: str, *, logp_full: Tensor, logp_free: Tensor | None = None,
               entropy: Tensor | None = None, row: Tensor) -> Tensor | None:
    """The detached score before clipping (PIR for perce, normalised NLL / entropy); None for ce."""
    if name == "ce":
        return None
    if name == "perce":
        if logp_free is None:
            raise ValueError("loss=perce needs logp_free (the profile-free pass)")
        return logp_full.detach().float() - logp_free.detach().float()
    if name == "lossce":
        return _normalised(-logp_full.detach().float(), row)
    if name == "entce":
        if entropy is None:
            raise ValueError("loss=entce needs the entropy: score the full stream with with_entropy=True")
        return _normalised(entropy.detach().float(), row)
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")


def clip_weights(raw: Tensor | None, like: Tensor, min_weight: float, max_weight: float) -> Tensor:
    if raw is None:
        return torch.ones_like(like, dtype=torch.float32).detach()
    return raw.clamp(min=min_weight, max=max_weight)


def token_weights(name: str, *, logp_full: Tensor, logp_free: Tensor | None = None,
                  entropy: Tensor | None = None, row: Tensor, min_weight: float,
                  max_weight: float) -> Tensor:
    """[N] detached fp32 weights for `loss=name` (definitions in the module docstring)."""
    raw = raw_scores(name, logp_full=logp_full, logp_free=logp_free, entropy=entropy, row=row)
    return clip_weights(raw, logp_full, min_weight, max_weight)


def weighted_nll(logp: Tensor, weights: Tensor, num_tokens_global: int | Tensor) -> Tensor:
    """-(w * logp).sum() / N with detached w. N counts the global batch's response tokens."""
    return -(weights.detach().to(logp.dtype) * logp).sum() / num_tokens_global


def weight_stats(weights: Tensor, *, raw: Tensor | None = None, pir: Tensor | None = None,
                 min_weight: float, max_weight: float) -> dict[str, float | int | None]:
    """Per-micro-batch statistics for the training log.

    pir_mean: mean PIR (None when no PIR was computed, e.g. loss=ce); weight_mean: mean weight;
    clip_low / clip_high: fraction of tokens whose raw score fell below min_weight / above max_weight.
    `tokens` lets `merge_stats` weight micro-batches by their token count.
    """
    n = int(weights.numel())
    return {
        "pir_mean": float(pir.float().mean()) if pir is not None and n else None,
        "weight_mean": float(weights.float().mean()) if n else None,
        "clip_low": int((raw < min_weight).sum()) / n if raw is not None and n else 0.0,
        "clip_high": int((raw > max_weight).sum()) / n if raw is not None and n else 0.0,
        "tokens": n,
    }


_STAT_KEYS = ("pir_mean", "weight_mean", "clip_low", "clip_high")


def merge_stats(stats: Iterable[dict], *, across_ranks: bool = True,
                device: torch.device | None = None) -> dict[str, float | int | None]:
    """Token-weighted means of micro-batch stats over one optimizer step (and over ranks when
    torch.distributed is initialised and across_ranks=True: every rank must call it)."""
    stats = list(stats)
    # [sum of value*tokens, tokens with a value] per key, plus the total token count.
    acc = torch.zeros(2 * len(_STAT_KEYS) + 1, dtype=torch.float64)
    for s in stats:
        n = s["tokens"]
        acc[-1] += n
        for i, k in enumerate(_STAT_KEYS):
            if s.get(k) is not None:
                acc[2 * i] += s[k] * n
                acc[2 * i + 1] += n
    if across_ranks and _distributed():
        acc = acc.to(device or _collective_device())
        dist.all_reduce(acc, op=dist.ReduceOp.SUM)
        acc = acc.cpu()
    out: dict[str, float | int | None] = {
        k: (float(acc[2 * i] / acc[2 * i + 1]) if acc[2 * i + 1] > 0 else None) for i, k in enumerate(_STAT_KEYS)
    }
    out["tokens"] = int(acc[-1])
    return out


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _collective_device() -> torch.device:
    """NCCL reduces CUDA tensors only; gloo takes CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def global_token_count(local_count: int | Tensor, device: torch.device | None = None) -> int:
    """Response tokens of this optimizer step summed over ranks (all_reduce SUM; every rank must call it).

    `local_count`: this rank's tokens over all of its grad-accum micro-batches
    (`sum(count_response_tokens(b["full_labels"]) for b in micro_batches)`).
    """
    n = int(local_count)
    if not _distributed():
        return n
    t = torch.tensor([n], dtype=torch.long, device=device or _collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return int(t.item())
