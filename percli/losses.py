"""Token weights for `loss=ce|perce|longce|lossce|entce|dft` and the weighted CE with global token normalisation.

All six losses share one form, so they differ only in the weights:

    L = -(1/N) * sum_t w_t * log P(y_t | p, x, y<t)

N is the number of response tokens in the GLOBAL batch (every gradient-accumulation micro-batch on every
rank), not the sum of the weights, and w_t is detached. Definitions of w_t (min/max = loss.min_weight /
loss.max_weight, defaults 0.8 / 5.0):

- ce:     w_t = 1                                                  (plain token-mean CE)
- perce:  w_t = clip(PIR_t, min, max),  PIR_t = log P(y_t|p,x,y<t) - log P(y_t|x,y<t)   (the paper)
- longce: w_t = clip(exp(PIR_t), min, max), conf/loss/longce.yaml sets min 0 (no floor), max 5: the
          probability ratio P(y_t|p,x,y<t) / P(y_t|x,y<t) capped at 5, LongCE's weight (the same
          authors' earlier method, with the long context in the place of the profile)
- lossce: w_t = clip(l_t / mean_e(l), min, max),  l_t = -log P(y_t|p,x,y<t) (detached token NLL,
          Rho-1 style: hard tokens weigh more)
- entce:  w_t = clip(H_t / mean_e(H), min, max),  H_t = predictive entropy (nats) of P(. | p,x,y<t), detached
          (uncertain positions weigh more)
- dft:    w_t = clip(P(y_t|p,x,y<t), min, max), conf/loss/dft.yaml sets [0, 1] (no clipping): the token's own
          probability, detached, as TRL's SFT `loss_type="dft"` (Dynamic Fine-Tuning; confident tokens weigh more)

mean_e(.) is the mean over the response tokens of the token's own example, so LossCE and EntCE weights are
scale-free with mean 1 before clipping, comparable with PerCE weights (PIR in nats, clipped to the same
range). An example whose score is zero everywhere (mean 0) gets w_t = 1.

Only the relative weights matter to the optimizer here: AdamW divides each update by the root of its second
moment, so a constant factor c on the loss scales the gradient and that root alike and cancels (up to eps),
and clipping the gradient norm before the step cancels it too, so training CE with the loss times a PerCE
run's mean weight is training CE, not CE at a smaller step size (tests/test_losses.py checks both).

`LOSSES` is the registry: `loss=NAME` (conf/loss/NAME.yaml, `name: NAME`) selects `LOSSES[NAME]`. Adding a
loss is one `@register_loss` function returning the detached raw score (or None for w=1) and one YAML file.

Using it under gradient accumulation and several ranks (`global_token_count` in percli.distributed):

    n_local = sum(count_response_tokens(b["full_labels"]) for b in micro_batches_of_this_step)
    N = global_token_count(n_local)                       # all_reduce(SUM) when torch.distributed is up
    loss = weighted_nll(scores.logp, weights, N) * world_size
    backward(loss)                                        # once per micro-batch, then one optimizer step

The `* world_size` undoes the MEAN that DDP / DeepSpeed apply to gradients across ranks, so the summed
gradient equals that of one big batch. Do not let accelerate or DeepSpeed also divide by the number of
accumulation steps: the 1/N already covers every micro-batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from percli.errors import ConfigError

if TYPE_CHECKING:  # Tensor methods only: `percli table` and config checks read LOSSES without loading torch
    from torch import Tensor

_EPS = 1e-12
# A loss's raw weights: (logp_full, logp_free, entropy, row) -> detached [N] before clipping, or None for w = 1.
RawWeightFn = Callable[..., "Tensor | None"]


@dataclass(frozen=True)
class Loss:
    name: str
    label: str  # how tables and plots name it
    raw_weight: RawWeightFn  # the token weights before clipping (None: w = 1)
    needs_free: bool = False  # needs the profile-free pass (PIR)
    needs_entropy: bool = False  # needs the full stream's predictive entropy


LOSSES: dict[str, Loss] = {}


def register_loss(name: str, label: str, *, needs_free: bool = False,
                  needs_entropy: bool = False) -> Callable[[RawWeightFn], RawWeightFn]:
    """Add a score function to LOSSES under `name` (the `name:` of its conf/loss YAML)."""
    def add(fn: RawWeightFn) -> RawWeightFn:
        LOSSES[name] = Loss(name, label, fn, needs_free, needs_entropy)
        return fn
    return add


def get_loss(name: str) -> Loss:
    if name not in LOSSES:
        raise ConfigError(f"loss.name={name!r} is not a known loss; choose one of: {', '.join(LOSSES)}")
    return LOSSES[name]


def _example_mean(x: Tensor, row: Tensor) -> Tensor:
    """For each token, the mean of x over the tokens of its own example (same row)."""
    n_rows = int(row.max()) + 1 if row.numel() else 0
    sums = x.new_zeros(n_rows).index_add_(0, row, x)
    counts = row.bincount(minlength=n_rows).to(x.dtype)
    return (sums / counts)[row]


def _normalised(score: Tensor, row: Tensor) -> Tensor:
    mean = _example_mean(score, row)
    return (score / mean.clamp(min=_EPS)).where(mean > _EPS, score.new_ones(()))


@register_loss("ce", "CE")
def _ce(*, logp_full: Tensor, logp_free: Tensor | None, entropy: Tensor | None, row: Tensor) -> None:
    return None


@register_loss("perce", "PerCE", needs_free=True)
def _perce(*, logp_full: Tensor, logp_free: Tensor | None, entropy: Tensor | None, row: Tensor) -> Tensor:
    if logp_free is None:
        raise ValueError("loss=perce needs logp_free (the profile-free pass)")
    return logp_full.detach().float() - logp_free.detach().float()


@register_loss("longce", "LongCE", needs_free=True)
def _longce(*, logp_full: Tensor, logp_free: Tensor | None, entropy: Tensor | None, row: Tensor) -> Tensor:
    if logp_free is None:
        raise ValueError("loss=longce needs logp_free (the profile-free pass)")
    return (logp_full.detach().float() - logp_free.detach().float()).exp()


@register_loss("lossce", "LossCE")
def _lossce(*, logp_full: Tensor, logp_free: Tensor | None, entropy: Tensor | None, row: Tensor) -> Tensor:
    return _normalised(-logp_full.detach().float(), row)


@register_loss("entce", "EntCE", needs_entropy=True)
def _entce(*, logp_full: Tensor, logp_free: Tensor | None, entropy: Tensor | None, row: Tensor) -> Tensor:
    if entropy is None:
        raise ValueError("loss=entce needs the entropy: score the full stream with with_entropy=True")
    return _normalised(entropy.detach().float(), row)


@register_loss("dft", "DFT")
def _dft(*, logp_full: Tensor, logp_free: Tensor | None, entropy: Tensor | None, row: Tensor) -> Tensor:
    return logp_full.detach().float().exp()


def raw_weights(name: str, *, logp_full: Tensor, logp_free: Tensor | None = None,
               entropy: Tensor | None = None, row: Tensor) -> Tensor | None:
    """The detached score before clipping (PIR for perce, exp(PIR) for longce, normalised NLL / entropy,
    the token probability for dft); None for ce."""
    return get_loss(name).raw_weight(logp_full=logp_full, logp_free=logp_free, entropy=entropy, row=row)


def clip_weights(raw: Tensor | None, like: Tensor, min_weight: float, max_weight: float) -> Tensor:
    if raw is None:
        return like.detach().new_ones(like.shape).float()
    return raw.clamp(min=min_weight, max=max_weight)


def token_weights(name: str, *, logp_full: Tensor, logp_free: Tensor | None = None,
                  entropy: Tensor | None = None, row: Tensor, min_weight: float,
                  max_weight: float) -> Tensor:
    """[N] detached fp32 weights for `loss=name` (definitions in the module docstring)."""
    raw = raw_weights(name, logp_full=logp_full, logp_free=logp_free, entropy=entropy, row=row)
    return clip_weights(raw, logp_full, min_weight, max_weight)


def weighted_nll(logp: Tensor, weights: Tensor, num_tokens_global: int | Tensor) -> Tensor:
    """-(w * logp).sum() / N with detached w. N counts the global batch's response tokens."""
    return -(weights.detach().to(logp.dtype) * logp).sum() / num_tokens_global


def weight_stats(weights: Tensor, *, raw: Tensor | None = None, pir: Tensor | None = None,
                 min_weight: float, max_weight: float, planted: Tensor | None = None) -> dict[str, float | int | None]:
    """Per-micro-batch statistics for the training log.

    pir_mean: mean PIR (None when no PIR was computed, e.g. loss=ce); weight_mean: mean weight;
    clip_low / clip_high: fraction of tokens whose raw score fell below min_weight / above max_weight.
    `tokens` lets `merge_stats` weight micro-batches by their token count.

    `planted` ([N] bool, synthetic data's truth spans) adds per-token sums over planted and other tokens
    (`_planted_*` / `_other_*`, each divided by N, so merge_stats' token-weighted mean is the exact sum over the
    step divided by its tokens); `planted_summary` turns them into the logged shares and means.
    """
    n = int(weights.numel())
    stats: dict[str, float | int | None] = {
        "pir_mean": float(pir.float().mean()) if pir is not None and n else None,
        "weight_mean": float(weights.float().mean()) if n else None,
        "clip_low": int((raw < min_weight).sum()) / n if raw is not None and n else 0.0,
        "clip_high": int((raw > max_weight).sum()) / n if raw is not None and n else 0.0,
        "tokens": n,
    }
    if planted is not None and n:
        mask = planted.to(weights.device).bool()
        for part, sel in (("_planted", mask), ("_other", ~mask)):
            stats[f"{part}_tokens"] = int(sel.sum()) / n
            stats[f"{part}_weight"] = float(weights.float()[sel].sum()) / n
            stats[f"{part}_pir"] = float(pir.float()[sel].sum()) / n if pir is not None else None
    return stats


def planted_summary(merged: dict[str, float | int | None]) -> dict[str, float | None]:
    """The training log's planted-vs-other columns from merged `weight_stats` (empty without truth spans):
    planted_token_share, planted_weight_mass (share of the step's weight sum on planted tokens), and the mean
    weight and mean PIR on planted and on other tokens (PIR None where none was computed)."""
    if merged.get("_planted_tokens") is None:
        return {}

    def ratio(num: float | int | None, den: float | int | None) -> float | None:
        return float(num) / float(den) if num is not None and den else None

    total = (merged["_planted_weight"] or 0.0) + (merged["_other_weight"] or 0.0)
    return {"planted_token_share": merged["_planted_tokens"],
            "planted_weight_mass": ratio(merged["_planted_weight"], total),
            **{f"{part}_{what}_mean": ratio(merged[f"_{part}_{what}"], merged[f"_{part}_tokens"])
               for part in ("planted", "other") for what in ("weight", "pir")}}
