"""percli.statistics: paired deltas, cluster and two-level bootstrap CIs, the sign-flip p-value, CI coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from percli.statistics import (
    DEFAULT_RESAMPLES,
    cluster_sums,
    format_delta,
    holm,
    paired_delta,
    pooled_delta,
    sign_flip_p_value,
    t_interval,
    two_level_bootstrap,
    variance_components,
)


def test_identical_scores_give_zero_delta_and_a_zero_width_ci() -> None:
    scores = [0.1, 0.5, 0.3, 0.9]
    d = paired_delta(scores, scores, ["u1", "u1", "u2", "u3"])
    assert (d.delta, d.ci_low, d.ci_high, d.p_value, d.rel_delta) == (0.0, 0.0, 0.0, 1.0, 0.0)
    assert not d.significant and (d.n_examples, d.n_clusters) == (4, 3)


def test_constant_shift_is_recovered_exactly() -> None:
    base = np.array([0.2, 0.4, 0.6, 0.8])
    d = paired_delta(base, base + 0.05)
    assert d.delta == pytest.approx(0.05) and d.ci_low == pytest.approx(0.05) and d.ci_high == pytest.approx(0.05)
    assert d.rel_delta == pytest.approx(0.05 / 0.5) and d.rel_ci_low == pytest.approx(0.1)
    assert d.baseline == pytest.approx(0.5) and d.other == pytest.approx(0.55) and d.significant


def test_noisy_shift_is_inside_its_ci_and_the_ci_excludes_zero() -> None:
    rng = np.random.default_rng(3)
    base = rng.uniform(0.2, 0.4, 200)
    other = base + 0.03 + rng.normal(0, 0.02, 200)
    d = paired_delta(base, other, resamples=999)
    assert d.delta == pytest.approx(float(np.mean(other - base)))
    assert d.ci_low < 0.03 < d.ci_high and d.ci_low > 0 and d.p_value < 0.01


def test_cluster_sums_by_first_appearance() -> None:
    sums, counts = cluster_sums(np.array([1.0, 2.0, 3.0, 4.0]), ["a", "b", "a", "c"])
    assert sums.tolist() == [4.0, 2.0, 4.0] and counts.tolist() == [2.0, 1.0, 1.0]
    sums, counts = cluster_sums(np.array([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]]), ["x", "y", "x"])
    assert sums.tolist() == [[4.0, 2.0], [40.0, 20.0]] and counts.tolist() == [2.0, 1.0]


def test_users_with_shared_effects_widen_the_ci() -> None:
    """Items of one user move together: resampling items would understate the uncertainty."""
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(10), 5)
    base = rng.uniform(0.2, 0.4, 50)
    other = base + rng.normal(0, 0.05, 10)[users] + rng.normal(0, 0.005, 50)
    by_item = paired_delta(base, other, resamples=999)
    by_user = paired_delta(base, other, users.tolist(), resamples=999)
    assert by_user.delta == pytest.approx(by_item.delta)
    assert (by_user.ci_high - by_user.ci_low) > 1.8 * (by_item.ci_high - by_item.ci_low)
    assert by_user.n_clusters == 10


def test_sign_flip_p_value_is_exact_for_few_clusters() -> None:
    # 2^4 sign patterns of [1, 2, -0.5, 3] (sum 5.5): |sum| >= 5.5 for (+,+,-,+), (+,+,+,+) and their negations.
    assert sign_flip_p_value(np.array([1.0, 2.0, -0.5, 3.0])) == pytest.approx(4 / 16)
    assert sign_flip_p_value(np.zeros(5)) == 1.0


def test_one_seed_pooled_is_the_paired_delta() -> None:
    base, other = [0.1, 0.4, 0.2, 0.6, 0.3], [0.2, 0.3, 0.5, 0.6, 0.4]
    assert pooled_delta([base], [other], seed=1) == paired_delta(base, other, seed=1)


def test_two_level_draws_mix_whole_seeds() -> None:
    # One cluster per seed: a draw averages 2 seeds drawn with replacement: 0, 1 or their mean.
    draws = two_level_bootstrap(np.array([[0.0], [1.0]]), np.array([1.0]), resamples=500)
    assert set(np.round(draws, 6)) == {0.0, 0.5, 1.0}


def test_pooled_delta_is_the_mean_over_seeds() -> None:
    base = np.array([[0.1, 0.2, 0.3], [0.2, 0.2, 0.2]])
    other = base + np.array([[0.1], [0.3]])
    d = pooled_delta(base, other)
    assert d.delta == pytest.approx(0.2) and d.n_seeds == 2 and d.ci_low == pytest.approx(0.1)
    assert d.ci_high == pytest.approx(0.3)


def test_format_delta() -> None:
    d = paired_delta([0.2, 0.4], [0.25, 0.45])
    assert format_delta(d) == "+5.00 [+5.00, +5.00] (+16.7%)*"


def test_t_interval_over_seed_means_by_hand() -> None:
    """Seed means 1, 2, 6: mean 3, sd sqrt(7), se sqrt(7/3); t(0.975, 2) from scipy by hand."""
    low, high, p = t_interval([1.0, 2.0, 6.0])
    se = np.sqrt(7 / 3)
    q = stats.t.ppf(0.975, 2)
    assert (low, high) == pytest.approx((3 - q * se, 3 + q * se))
    assert p == pytest.approx(2 * stats.t.sf(3 / se, 2))
    assert (round(low, 4), round(high, 4)) == (-3.5724, 9.5724)
    with pytest.raises(ValueError, match="2 or more seeds, got 1"):
        t_interval([1.0])


def test_pooled_delta_carries_the_t_interval_of_its_seed_means() -> None:
    # 3 seeds x 2 users, one item each: seed means of the difference are 0.01, 0.02 and 0.06.
    base = np.zeros((3, 2))
    other = np.array([[0.0, 0.02], [0.01, 0.03], [0.05, 0.07]])
    d = pooled_delta(base, other, ["a", "b"], resamples=2000)
    low, high, p = t_interval([0.01, 0.02, 0.06])
    assert (d.t_low, d.t_high, d.t_p_value) == pytest.approx((low, high, p))
    # Every bootstrap draw is positive (all differences are >= 0, most > 0), but the t-interval includes 0:
    # not significant, and format_delta shows both intervals.
    assert d.ci_low > 0 and d.t_low < 0 < d.t_high and not d.significant
    assert format_delta(d) == f"+3.00 [{d.ci_low * 100:+.2f}, {d.ci_high * 100:+.2f}] t[-3.57, +9.57]"


def test_variance_components_by_hand() -> None:
    """[[1, 3], [2, 8]]: grand 3.5, seed means 2 and 5, user means 1.5 and 5.5, residuals +-1.
    MS_seed = 2 x 4.5 = 9, MS_user = 2 x 8 = 16, MS_res = 4 / 1 = 4, so s_a^2 = (9 - 4) / 2 = 2.5,
    s_b^2 = (16 - 4) / 2 = 6, s_e^2 = 4."""
    v = variance_components(np.array([[1.0, 3.0], [2.0, 8.0]]))
    assert (v.seed_sd, v.user_sd, v.residual_sd) == pytest.approx((np.sqrt(2.5), np.sqrt(6.0), 2.0))
    assert v.delta_se(2, 2) == pytest.approx(np.sqrt(2.5 / 2 + 6 / 2 + 4 / 4))
    # Seed means that differ less than the residual implies: the seed component is 0, not negative.
    assert variance_components(np.array([[0.0, 4.0], [4.0, 0.0]])).seed_sd == 0.0
    with pytest.raises(ValueError, match="2\\+ of each, got shape \\(1, 3\\)"):
        variance_components(np.zeros((1, 3)))


def test_variance_components_recover_a_simulated_layout() -> None:
    rng = np.random.default_rng(0)
    d = rng.normal(0, 2.0, (40, 1)) + rng.normal(0, 3.0, (1, 400)) + rng.normal(0, 10.0, (40, 400))
    v = variance_components(d)
    assert (v.seed_sd, v.user_sd, v.residual_sd) == pytest.approx((2.0, 3.0, 10.0), rel=0.25)


def test_holm_adjusts_step_down() -> None:
    """m = 3: p sorted 0.01, 0.02, 0.04 -> 0.03, 0.04, max(0.04, 0.04) = 0.04; capped at 1."""
    assert holm({"a": 0.04, "b": 0.01, "c": 0.02}) == pytest.approx({"b": 0.03, "c": 0.04, "a": 0.04})
    assert holm({"a": 0.5, "b": 0.6}) == pytest.approx({"a": 1.0, "b": 1.0})
    assert holm({}) == {}


def _study_like(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """3 seeds x 48 users with the study's variance components of PerCE - CE (x100: seed SD 1.9, user SD 3.5,
    residual 10.9) around a delta of -3 points."""
    base = rng.normal(0.24, 0.08, (3, 48))
    other = base - 0.03 + rng.normal(0, 0.019, (3, 1)) + rng.normal(0, 0.035, (1, 48)) + rng.normal(0, 0.109, (3, 48))
    return base, other, list(range(48))


def _limit_spread(resamples: int) -> tuple[float, float]:
    """(largest SD of a CI limit over 20 bootstrap RNG seeds, largest reported mc_error), one-seed and pooled."""
    base, other, users = _study_like(np.random.default_rng(0))
    spreads, reported = [], []
    for deltas in ([paired_delta(base[0], other[0], users, resamples=resamples, seed=s) for s in range(20)],
                   [pooled_delta(base, other, users, resamples=resamples, seed=s) for s in range(20)]):
        spreads += [np.std([d.ci_low for d in deltas], ddof=1), np.std([d.ci_high for d in deltas], ddof=1)]
        reported += [d.mc_error for d in deltas]
    return float(max(spreads)), float(max(reported))


def test_ci_limits_have_a_monte_carlo_error_below_a_tenth_of_a_point() -> None:
    """At the default resamples a CI limit moves by < 0.001 (0.1 points x100) between bootstrap RNG seeds, and
    the reported mc_error says so; at 2,000 resamples (the old default) both exceed it, so this test fails there."""
    spread, reported = _limit_spread(DEFAULT_RESAMPLES)
    assert DEFAULT_RESAMPLES >= 20_000 and spread < 0.001 and reported < 0.001, (spread, reported)
    spread, reported = _limit_spread(2000)
    assert spread > 0.001 and reported > 0.001, (spread, reported)


def test_a_lumpy_bootstrap_is_redrawn_until_its_monte_carlo_error_is_below_the_target() -> None:
    """3 seeds far apart (-30, 0, -10 points) with little user noise: the two-level bootstrap's distribution is
    lumpy and 20,000 draws leave a limit's Monte Carlo error above 0.1 points; max_mc_error redraws with the
    resamples the 1/sqrt law asks for (at least twice as many) until the error is below the target."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.6, (3, 40))
    other = base + np.array([[-0.3], [0.0], [-0.1]]) + rng.normal(0, 0.05, (3, 40))
    plain = pooled_delta(base, other, list(range(40)))
    assert plain.resamples == DEFAULT_RESAMPLES and plain.mc_error > 0.001
    redrawn = pooled_delta(base, other, list(range(40)), max_mc_error=0.0009)
    assert redrawn.resamples >= max(2 * DEFAULT_RESAMPLES,
                                    math.ceil(DEFAULT_RESAMPLES * 1.2 * (plain.mc_error / 0.0009) ** 2))
    assert redrawn.mc_error < 0.0009 and redrawn.delta == plain.delta and redrawn.t_low == plain.t_low
    # the interval is the one that many resamples give directly
    direct = pooled_delta(base, other, list(range(40)), resamples=redrawn.resamples)
    assert (direct.ci_low, direct.ci_high, direct.mc_error) == (redrawn.ci_low, redrawn.ci_high, redrawn.mc_error)
    # a bootstrap already below the target is left alone
    assert pooled_delta(base, other, list(range(40)), max_mc_error=0.01) == plain


# Coverage: 400 simulated studies with a known mean difference of 0.02 and users with shared effects
# (60 users x 2 items). A 95% CI should contain 0.02 in about 95% of them. With 400 studies the
# standard error of an estimated coverage of 0.95 is sqrt(0.95 * 0.05 / 400) = 0.011, and the
# percentile bootstrap undercovers by about a point at 60 clusters (0.925-0.935 measured over three
# generator seeds, where a t-interval gave 0.93-0.945): the tolerance is 0.04, three standard errors
# plus that point. A CI that ignored the users (or, pooled, counted them once per seed) lands far
# lower (0.69 measured for the latter).
COVERAGE_TOL = 0.04


def _simulated(rng: np.random.Generator, seeds: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(seeds, 120) baseline and other scores and the users; seeds > 1 adds a per-seed shift (a CI of one
    run pair is about that pair's examples, so it has none)."""
    users = np.repeat(np.arange(60), 2)
    base = rng.normal(0.3, 0.1, (seeds, 120))
    seed_shift = rng.normal(0, 0.01, (seeds, 1)) if seeds > 1 else 0.0
    other = base + 0.02 + rng.normal(0, 0.1, 60)[users] + seed_shift + rng.normal(0, 0.05, (seeds, 120))
    return base, other, users


def test_paired_ci_coverage_on_simulated_data() -> None:
    rng = np.random.default_rng(1)
    hits = 0
    for sim in range(400):
        base, other, users = _simulated(rng, 1)
        d = paired_delta(base[0], other[0], users.tolist(), resamples=999, seed=sim)
        hits += d.ci_low <= 0.02 <= d.ci_high
    assert abs(hits / 400 - 0.95) <= COVERAGE_TOL, hits / 400


def test_pooled_ci_coverage_on_simulated_data() -> None:
    """5 seeds sharing one test set: the two-level bootstrap must keep the user effect (shared by all seeds)."""
    rng = np.random.default_rng(2)
    hits = 0
    for sim in range(400):
        base, other, users = _simulated(rng, 5)
        d = pooled_delta(base, other, users.tolist(), resamples=999, seed=sim)
        hits += d.ci_low <= 0.02 <= d.ci_high
    assert abs(hits / 400 - 0.95) <= COVERAGE_TOL, hits / 400


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="different shapes"):
        paired_delta([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="method='exact'"):
        paired_delta([0.1], [0.2], method="exact")
    with pytest.raises(ValueError, match="finite"):
        paired_delta([0.1, float("nan")], [0.1, 0.2])
