"""`percli compare`: compare.json of paired runs, user clusters, mismatched ids, required keys."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from percli.compare import compare_runs, summary
from percli.errors import DataError
from percli.example_scores import read_scores


def write_scores(run_dir: Path, rows: list[dict]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


def rows_for(values: dict[str, list[float]], users: list[str] | None = None) -> list[dict]:
    n = len(next(iter(values.values())))
    return [{"id": f"ex{i:03d}", **({"user_id": users[i]} if users else {}), **{k: v[i] for k, v in values.items()}}
            for i in range(n)]


def test_a_run_against_itself_gives_zero_delta_and_ci_through_the_cli(cli, tmp_path: Path) -> None:
    run = write_scores(tmp_path / "a", rows_for({"rouge1": [0.1, 0.3, 0.5], "meteor": [0.2, 0.2, 0.4]},
                                                ["u1", "u1", "u2"]))
    proc = cli("compare", f"compare.baseline={run}", f"compare.other={run}", f"hydra.run.dir={tmp_path / 'cmp'}")
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert (out["n_examples"], out["n_clusters"], out["cluster_by"], out["resamples"], out["confidence"]) == \
        (3, 2, "user", 20000, 0.95)
    assert list(out["metrics"]) == ["rouge1", "meteor"]
    for m in out["metrics"].values():
        assert (m["delta"], m["ci_low"], m["ci_high"], m["p_value"]) == (0.0, 0.0, 0.0, 1.0)
    assert "rouge1" in proc.stdout and "+0.00 [+0.00, +0.00] (+0.0%)" in proc.stdout


def test_known_shift_is_recovered_within_the_ci(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.4, 60)
    users = [f"u{i // 3}" for i in range(60)]
    a = write_scores(tmp_path / "a", rows_for({"rouge1": base.tolist(), "meteor": base.tolist()}, users))
    shifted = base + 0.04 + rng.normal(0, 0.01, 60)
    b = write_scores(tmp_path / "b", rows_for({"rouge1": shifted.tolist(), "meteor": (base + 0.1).tolist()}, users))
    out = compare_runs(a, b, resamples=999)
    r1, met = out["metrics"]["rouge1"], out["metrics"]["meteor"]
    assert r1["delta"] == pytest.approx(float(np.mean(shifted - base)))
    assert r1["ci_low"] < 0.04 < r1["ci_high"] and r1["ci_low"] > 0
    assert r1["rel_delta"] == pytest.approx(r1["delta"] / float(base.mean()))
    assert (met["delta"], met["ci_low"], met["ci_high"]) == pytest.approx((0.1, 0.1, 0.1))
    assert (out["n_clusters"], out["cluster_by"]) == (20, "user")
    assert met["mc_error"] < 1e-12 < r1["mc_error"]
    assert summary(out).splitlines()[0] == ("other - baseline over 60 paired examples (20 user clusters), 95% CI, "
                                            f"999 resamples (Monte Carlo error of the CI limits <= "
                                            f"{r1['mc_error'] * 100:.3f} points); * = CI excludes 0")


def test_default_resamples_keep_the_monte_carlo_error_below_a_tenth_of_a_point(tmp_path: Path) -> None:
    """48 users with a residual SD of 10.9 points (the study's): at the default resamples every metric's CI
    limits carry a Monte Carlo error below 0.1 points; at 2,000 they do not."""
    rng = np.random.default_rng(0)
    base = rng.normal(0.24, 0.08, 48)
    other = base - 0.03 + rng.normal(0, 0.109, 48)
    a = write_scores(tmp_path / "a", rows_for({"meteor": base.tolist()}))
    b = write_scores(tmp_path / "b", rows_for({"meteor": other.tolist()}))
    assert compare_runs(a, b)["metrics"]["meteor"]["mc_error"] < 0.001
    assert compare_runs(a, b, resamples=2000)["metrics"]["meteor"]["mc_error"] > 0.001


def test_planted_recall_is_compared_where_present(tmp_path: Path) -> None:
    a = write_scores(tmp_path / "a", rows_for({"meteor": [0.1, 0.2], "planted_recall": [0.0, 0.5]}))
    b = write_scores(tmp_path / "b", rows_for({"meteor": [0.1, 0.2], "planted_recall": [1.0, 0.5]}))
    out = compare_runs(a, b, resamples=200)
    assert out["metrics"]["planted_recall"]["delta"] == pytest.approx(0.5)
    assert out["cluster_by"] == "example" and out["n_clusters"] == 2
    with pytest.raises(DataError, match=r"compare.metrics has 'rouge1', which .* does not score for every example"):
        compare_runs(a, b, ["rouge1"], resamples=200)


def test_different_example_ids_fail_with_one_line(cli, tmp_path: Path) -> None:
    a = write_scores(tmp_path / "a", rows_for({"rouge1": [0.1, 0.2, 0.3]}))
    b = write_scores(tmp_path / "b", rows_for({"rouge1": [0.1, 0.2]}))
    proc = cli("compare", f"compare.baseline={a}", f"compare.other={b}", f"hydra.run.dir={tmp_path / 'cmp'}")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"percli: error: compare.other={b / 'scores.jsonl'} and compare.baseline={a / 'scores.jsonl'} score "
        "different examples (1 missing, e.g. ['ex002']; 0 extra, e.g. []); compare runs evaluated on the same "
        "split with the same eval.max_examples"]


def test_missing_run_and_duplicate_ids(cli, tmp_path: Path) -> None:
    proc = cli("compare", f"compare.baseline={tmp_path}")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("percli: error: compare.other is required (the config has ???); set "
                                   "compare.other=... (a run dir holding scores.jsonl)")
    with pytest.raises(DataError, match="has no scores.jsonl"):
        read_scores(tmp_path / "nowhere")
    dup = write_scores(tmp_path / "dup", [{"id": "x", "rouge1": 0.1}, {"id": "x", "rouge1": 0.2}])
    with pytest.raises(DataError, match="scores example id 'x' more than once"):
        read_scores(dup)


def test_secondary_metrics_are_holm_adjusted_and_meteor_is_primary(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    base = rng.uniform(0.2, 0.4, 40)
    a = write_scores(tmp_path / "a", rows_for({"rouge1": base.tolist(), "rouge2": base.tolist(),
                                               "meteor": base.tolist()}))
    b = write_scores(tmp_path / "b", rows_for({"rouge1": (base + rng.normal(0.01, 0.02, 40)).tolist(),
                                               "rouge2": (base + rng.normal(0.0, 0.02, 40)).tolist(),
                                               "meteor": (base + rng.normal(0.01, 0.02, 40)).tolist()}))
    out = compare_runs(a, b, resamples=999)
    p1, p2 = out["metrics"]["rouge1"]["p_value"], out["metrics"]["rouge2"]["p_value"]
    low, high = sorted((p1, p2))
    expected = {"rouge1": min(1.0, 2 * p1) if p1 <= p2 else max(min(1.0, 2 * low), high),
                "rouge2": min(1.0, 2 * p2) if p2 < p1 else max(min(1.0, 2 * low), high)}
    assert out["primary"] == "meteor" and out["p_holm"] == pytest.approx(expected)
    lines = summary(out).splitlines()
    assert lines[3].endswith("(primary)") and f"p_Holm={expected['rouge1']:.3g}" in lines[1]
