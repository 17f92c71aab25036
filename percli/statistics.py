"""Paired comparisons of two systems scored on the same examples: the delta, its bootstrap CI and a p-value.

The unit of resampling is the *cluster*: a user when users have several scored items (LongLaMP's
temporal setting, the synthetic data), else the example itself. Resampling examples when one user
contributes several of them would treat correlated items as independent and make the CI too narrow.

- `paired_delta`: one run against one run. The CI is `scipy.stats.bootstrap` over clusters (paired: a
  resampled cluster brings both systems' scores), of the statistic sum(other - baseline) / items, i.e.
  the example-weighted mean difference. The p-value is a two-sided paired sign-flip permutation test
  (`scipy.stats.permutation_test`, permutation_type='samples'): under H0 "the two systems are
  exchangeable", the sign of each cluster's summed difference is a coin flip. It is exact when
  2^clusters <= resamples.
- `pooled_delta`: several seeds of each system (seed s of one paired with seed s of the other). A
  two-level bootstrap: draw seeds with replacement, then clusters with replacement (one draw shared by
  the drawn seeds: they scored the same test set); the statistic is the mean over drawn seeds of the
  paired mean difference. scipy has no
  hierarchical bootstrap, so this level is numpy (vectorised, in batches). The p-value is the sign-flip
  test on the seed-averaged cluster differences.
- Beside the two-level bootstrap, `pooled_delta` gives a t-interval over the per-seed paired means
  (`t_interval`, S - 1 degrees of freedom). With few seeds the bootstrap's seed level is too narrow (3 seeds
  give only 10 distinct seed multisets), while the t-interval pays for the small df; a delta counts as
  significant only when both intervals exclude 0 (`Delta.significant`).
- `mc_error`: the Monte Carlo standard error of the bootstrap CI limits, from the spread of the limits over
  20 equal batches of the draws (the larger of the two limits'). DEFAULT_RESAMPLES = 20,000 keeps it below
  0.001 (0.1 points on a x100 scale) on data like the study's; at 2,000 it is about three times larger,
  enough to make a limit near 0 flip sign between bootstrap seeds. With few seeds that differ a lot, the
  two-level bootstrap's distribution is lumpy (3 seeds give 10 seed multisets) and 20,000 draws are not
  enough: `pooled_delta(max_mc_error=...)` then redraws with the resamples that reach the target (the error
  falls as 1/sqrt(resamples)) until it is reached, up to MAX_RESAMPLES.
- `variance_components`: the seed, user and residual SDs of a (seeds, users) matrix of paired differences
  (two-way random effects without replication, method of moments), which size a design's MDE.
- `holm`: Holm's step-down adjustment of the p-values of a family of secondary metrics (the primary metric is
  declared in advance and not adjusted).

A leaf module: numpy and scipy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

DEFAULT_RESAMPLES = 20_000
DEFAULT_CONFIDENCE = 0.95
METHODS = ("percentile", "basic", "BCa")
_BATCH_CELLS = 2_000_000   # int64 indices drawn at once by the two-level bootstrap (~16 MB)
MC_BATCHES = 20            # batches of bootstrap draws whose CI limits estimate the Monte Carlo error
MAX_RESAMPLES = 2_000_000  # the most draws pooled_delta(max_mc_error=...) takes (a few seconds for 12 x 144)
MC_ERROR_TARGET = 0.0009   # what the reports pass as max_mc_error: a limit's error below 0.1 points on x100


@dataclass(frozen=True)
class Delta:
    """mean(other) - mean(baseline) over paired examples, with its CI; rel_* are relative to the baseline mean."""

    baseline: float
    other: float
    delta: float
    rel_delta: float | None
    ci_low: float
    ci_high: float
    rel_ci_low: float | None
    rel_ci_high: float | None
    p_value: float
    n_examples: int
    n_clusters: int
    n_seeds: int = 1
    mc_error: float | None = None       # Monte Carlo standard error of the bootstrap CI limits
    t_low: float | None = None          # t-interval over per-seed paired means (2+ seeds)
    t_high: float | None = None
    t_p_value: float | None = None      # the one-sample t-test of the per-seed paired means
    resamples: int | None = None        # bootstrap draws behind the CI

    @property
    def significant(self) -> bool:
        """The bootstrap CI excludes 0, and so does the t-interval over seeds where there is one."""
        boot = self.ci_low > 0 or self.ci_high < 0
        return boot and (self.t_low is None or self.t_low > 0 or self.t_high < 0)

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def cluster_sums(values: np.ndarray, clusters: Sequence[object] | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums of `values` (last axis) and item counts; clusters in order of first appearance.

    `values` may be (items,) or (seeds, items); `clusters=None` makes every item its own cluster.
    """
    values = np.asarray(values, dtype=float)
    if clusters is None:
        return values, np.ones(values.shape[-1])
    if len(clusters) != values.shape[-1]:
        raise ValueError(f"{len(clusters)} cluster labels for {values.shape[-1]} items")
    index: dict[object, int] = {}
    codes = np.array([index.setdefault(c, len(index)) for c in clusters])
    sums = np.zeros(values.shape[:-1] + (len(index),))
    np.add.at(sums, (..., codes), values)
    return sums, np.bincount(codes, minlength=len(index)).astype(float)


def _check_pair(baseline: np.ndarray, other: np.ndarray) -> None:
    if baseline.shape != other.shape:
        raise ValueError(f"baseline and other have different shapes {baseline.shape} and {other.shape}")
    if baseline.shape[-1] == 0:
        raise ValueError("no paired examples")
    if not (np.isfinite(baseline).all() and np.isfinite(other).all()):
        raise ValueError("scores must be finite")


def _relative(delta: float, low: float, high: float, base: float) -> tuple[float | None, float | None, float | None]:
    if base == 0:
        return None, None, None
    return delta / abs(base), low / abs(base), high / abs(base)


def sign_flip_p_value(cluster_diffs: np.ndarray, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> float:
    """Two-sided paired permutation p-value of H0 "mean difference 0": random sign flips of cluster sums."""
    diffs = np.asarray(cluster_diffs, dtype=float)
    if not np.any(diffs):
        return 1.0
    res = stats.permutation_test((diffs,), lambda d, axis=-1: d.sum(axis=axis), permutation_type="samples",
                                 vectorized=True, n_resamples=resamples, alternative="two-sided",
                                 rng=np.random.default_rng(seed))
    return float(res.pvalue)


def mc_error(draws: np.ndarray, confidence: float = DEFAULT_CONFIDENCE, batches: int = MC_BATCHES) -> float:
    """Monte Carlo standard error of the percentile CI limits of `draws` (iid bootstrap draws): the standard
    deviation of each limit over `batches` equal batches, divided by sqrt(batches); the larger limit's."""
    draws = np.asarray(draws, dtype=float)
    usable = draws[:len(draws) // batches * batches].reshape(batches, -1)
    alpha = (1 - confidence) / 2
    limits = np.quantile(usable, [alpha, 1 - alpha], axis=1)          # (2, batches)
    return float(limits.std(axis=1, ddof=1).max() / math.sqrt(batches))


def t_interval(seed_means: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float, float]:
    """(low, high, two-sided p) of the one-sample t-interval and t-test over per-seed paired means (df = S - 1)."""
    x = np.asarray(seed_means, dtype=float)
    if x.size < 2:
        raise ValueError(f"a t-interval over seeds needs 2 or more seeds, got {x.size}")
    mean, se = float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))
    if se == 0:
        return mean, mean, 1.0 if mean == 0 else 0.0
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1)) * se
    return mean - half, mean + half, float(2 * stats.t.sf(abs(mean) / se, x.size - 1))


@dataclass(frozen=True)
class VarianceComponents:
    """SDs of d_su = delta + a_s + b_u + e_su: seed effect a, user effect b, residual e."""
    seed_sd: float
    user_sd: float
    residual_sd: float

    def delta_se(self, seeds: int, users: int) -> float:
        """Standard error of the mean of d over `seeds` x `users`."""
        return math.sqrt(self.seed_sd ** 2 / seeds + self.user_sd ** 2 / users
                         + self.residual_sd ** 2 / (seeds * users))


def variance_components(diffs: np.ndarray) -> VarianceComponents:
    """Method-of-moments components of a (seeds, users) matrix, one value per seed and user (the expected mean
    squares of the two-way layout: MS_seed = U s_a^2 + s_e^2, MS_user = S s_b^2 + s_e^2, MS_res = s_e^2). A
    component whose estimate is negative (its mean square below the residual's) is 0."""
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 2 or min(d.shape) < 2:
        raise ValueError(f"variance components need a (seeds, users) matrix with 2+ of each, got shape {d.shape}")
    n_seeds, n_users = d.shape
    grand, seed_means, user_means = d.mean(), d.mean(axis=1), d.mean(axis=0)
    ms_seed = n_users * float(((seed_means - grand) ** 2).sum()) / (n_seeds - 1)
    ms_user = n_seeds * float(((user_means - grand) ** 2).sum()) / (n_users - 1)
    resid = d - seed_means[:, None] - user_means[None, :] + grand
    ms_res = float((resid ** 2).sum()) / ((n_seeds - 1) * (n_users - 1))
    return VarianceComponents(seed_sd=math.sqrt(max(0.0, (ms_seed - ms_res) / n_users)),
                              user_sd=math.sqrt(max(0.0, (ms_user - ms_res) / n_seeds)),
                              residual_sd=math.sqrt(ms_res))


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values of one family of tests (key -> p): the k-th smallest of m is
    multiplied by m - k + 1, made non-decreasing in that order and capped at 1."""
    order = sorted(p_values, key=lambda k: p_values[k])
    out, running = {}, 0.0
    for rank, key in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[key]))
        out[key] = running
    return out


def paired_delta(baseline: Sequence[float], other: Sequence[float], clusters: Sequence[object] | None = None, *,
                 confidence: float = DEFAULT_CONFIDENCE, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                 method: str = "percentile") -> Delta:
    """Compare two systems' per-example scores (same examples, same order); `clusters` labels each example's user.

    The CI is a paired cluster bootstrap (`scipy.stats.bootstrap`, `method` one of METHODS); see the module doc.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}; choose one of {', '.join(METHODS)}")
    b, o = np.asarray(baseline, dtype=float), np.asarray(other, dtype=float)
    _check_pair(b, o)
    diff_sums, counts = cluster_sums(o - b, clusters)
    delta = float(diff_sums.sum() / counts.sum())
    if np.all(diff_sums == diff_sums[0]) and np.all(counts == counts[0]):
        low = high = delta   # every resample is the same: scipy would warn about degenerate data
        error = 0.0
    else:
        res = stats.bootstrap((diff_sums, counts), lambda d, n, axis=-1: d.sum(axis=axis) / n.sum(axis=axis),
                              paired=True, vectorized=True, n_resamples=resamples, confidence_level=confidence,
                              method=method, rng=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        error = mc_error(res.bootstrap_distribution, confidence)   # of the percentile limits for every method
    base_mean = float(b.mean())
    rel, rel_low, rel_high = _relative(delta, low, high, base_mean)
    return Delta(baseline=base_mean, other=float(o.mean()), delta=delta, rel_delta=rel, ci_low=low, ci_high=high,
                 rel_ci_low=rel_low, rel_ci_high=rel_high,
                 p_value=sign_flip_p_value(diff_sums, resamples=resamples, seed=seed),
                 n_examples=int(b.size), n_clusters=int(counts.size), mc_error=error, resamples=resamples)


def two_level_bootstrap(diff_sums: np.ndarray, counts: np.ndarray, *, resamples: int = DEFAULT_RESAMPLES,
                        seed: int = 0) -> np.ndarray:
    """`resamples` draws of the pooled mean difference: seeds with replacement, then clusters with replacement.

    diff_sums: (seeds, clusters) summed paired differences; counts: (clusters,) items per cluster. Every
    seed scored the same test set, so one draw of clusters serves all the drawn seeds of a replicate:
    drawing clusters independently per seed would count each user's effect as `seeds` independent
    observations and shrink the CI (0.69 coverage instead of 0.95 in a simulation with user effects).
    """
    rng = np.random.default_rng(seed)
    n_seeds, n_clusters = diff_sums.shape
    out = np.empty(resamples)
    step = max(1, _BATCH_CELLS // max(n_seeds, n_clusters))
    for start in range(0, resamples, step):
        size = min(step, resamples - start)
        seed_weights = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=size) / n_seeds
        idx = rng.integers(n_clusters, size=(size, n_clusters))
        seed_mean = seed_weights @ diff_sums                       # (size, clusters)
        out[start:start + size] = (np.take_along_axis(seed_mean, idx, axis=1).sum(axis=1)
                                   / counts[idx].sum(axis=1))
    return out


def pooled_delta(baseline: Sequence[Sequence[float]], other: Sequence[Sequence[float]],
                 clusters: Sequence[object] | None = None, *, confidence: float = DEFAULT_CONFIDENCE,
                 resamples: int = DEFAULT_RESAMPLES, seed: int = 0, method: str = "percentile",
                 max_mc_error: float | None = None) -> Delta:
    """Compare two systems over seeds: row s of `baseline` and of `other` are seed s's per-example scores.

    Every row scores the same examples in the same order. One seed is `paired_delta`; more use the
    two-level percentile bootstrap (see the module doc); `method` applies to the one-seed case only.
    `max_mc_error`: with 2+ seeds, while the CI limits' Monte Carlo error exceeds it, the bootstrap is drawn
    again with max(2, 1.2 * (error / max_mc_error)^2) times as many draws (at most MAX_RESAMPLES).
    """
    b, o = np.atleast_2d(np.asarray(baseline, dtype=float)), np.atleast_2d(np.asarray(other, dtype=float))
    _check_pair(b, o)
    if b.shape[0] == 1:
        return paired_delta(b[0], o[0], clusters, confidence=confidence, resamples=resamples, seed=seed,
                            method=method)
    diff_sums, counts = cluster_sums(o - b, clusters)
    seed_means = diff_sums.sum(axis=-1) / counts.sum()
    delta = float(seed_means.mean())
    draws = two_level_bootstrap(diff_sums, counts, resamples=resamples, seed=seed)
    error = mc_error(draws, confidence)
    while max_mc_error is not None and error > max_mc_error and draws.size < MAX_RESAMPLES:
        # the error estimate is itself noisy: redraw until one is below the target
        more = min(MAX_RESAMPLES, max(2 * draws.size, math.ceil(draws.size * 1.2 * (error / max_mc_error) ** 2)))
        draws = two_level_bootstrap(diff_sums, counts, resamples=more, seed=seed)
        error = mc_error(draws, confidence)
    alpha = (1 - confidence) / 2
    low, high = (float(x) for x in np.quantile(draws, [alpha, 1 - alpha]))
    t_low, t_high, t_p = t_interval(seed_means, confidence)
    base_mean = float(b.mean())
    rel, rel_low, rel_high = _relative(delta, low, high, base_mean)
    return Delta(baseline=base_mean, other=float(o.mean()), delta=delta, rel_delta=rel, ci_low=low, ci_high=high,
                 rel_ci_low=rel_low, rel_ci_high=rel_high,
                 p_value=sign_flip_p_value(diff_sums.mean(axis=0), resamples=resamples, seed=seed),
                 n_examples=int(b.shape[1]), n_clusters=int(counts.size), n_seeds=int(b.shape[0]),
                 mc_error=error, t_low=t_low, t_high=t_high, t_p_value=t_p, resamples=int(draws.size))


def format_delta(d: Delta, scale: float = 100.0) -> str:
    """'+1.23 [+0.40, +2.05] t[+0.10, +2.36] (+4.1%)*': absolute delta x scale, its bootstrap CI, the t-interval
    over seeds (2+ seeds), the relative delta; * = significant (every interval shown excludes 0)."""
    text = f"{d.delta * scale:+.2f} [{d.ci_low * scale:+.2f}, {d.ci_high * scale:+.2f}]"
    if d.t_low is not None and d.t_high is not None:
        text += f" t[{d.t_low * scale:+.2f}, {d.t_high * scale:+.2f}]"
    if d.rel_delta is not None and math.isfinite(d.rel_delta):
        text += f" ({d.rel_delta * 100:+.1f}%)"
    return text + ("*" if d.significant else "")


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(a positive scores above a negative), ties counting 1/2: Mann-Whitney U / (n_pos n_neg); nan if a side
    is empty."""
    if not positives or not negatives:
        return float("nan")
    u = stats.mannwhitneyu(positives, negatives, alternative="two-sided", method="asymptotic").statistic
    return float(u / (len(positives) * len(negatives)))
