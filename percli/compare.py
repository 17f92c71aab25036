"""`percli compare compare.baseline=RUN_DIR compare.other=RUN_DIR`: paired deltas with bootstrap CIs.

Both runs' per-example scores (scores.jsonl) are paired by example id; each metric gets
delta = mean(other) - mean(baseline), its CI (paired bootstrap over users when a user has several
items, else over examples) and a sign-flip permutation p-value (percli/statistics.py says how).
Writes compare.json into the run dir:
{"n_examples", "n_clusters", "cluster_by", "resamples", "confidence", "method", "p_value_test",
 "baseline", "other", "metrics": {metric: {baseline, other, delta, rel_delta, ci_low, ci_high, p_value, mc_error, ...}},
 "primary": "meteor", "p_holm": {secondary metric: Holm-adjusted p_value}}
METEOR is the declared primary metric; the others are secondary, their p-values Holm-adjusted as one family.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from percli import statistics
from percli.errors import DataError
from percli.example_scores import align, clusters_of, metric_matrix, read_scores
from percli.io import atomic_write_json
from percli.log import result
from percli.names import SCORE_KEYS

P_VALUE_TEST = "two-sided paired sign-flip permutation test over clusters (scipy.stats.permutation_test)"
PRIMARY = "meteor"


def compare_runs(baseline: str | Path, other: str | Path, metrics: Sequence[str] | None = None, *,
                 resamples: int = statistics.DEFAULT_RESAMPLES, confidence: float = statistics.DEFAULT_CONFIDENCE,
                 method: str = "percentile", seed: int = 0) -> dict:
    """The compare.json dict for two run dirs (or scores.jsonl files); `metrics=None`: every metric both have."""
    runs = [read_scores(baseline), read_scores(other)]
    ids, positions = align(runs, ["compare.baseline", "compare.other"])
    clusters = clusters_of(runs, positions)
    wanted = list(metrics) if metrics else [k for k in SCORE_KEYS if all(k in r.values for r in runs)]
    out: dict[str, dict] = {}
    for metric in wanted:
        matrix = metric_matrix(runs, positions, metric)
        if matrix is None:
            raise DataError(f"compare.metrics has {metric!r}, which {baseline} or {other} does not score for every "
                            f"example; drop it from compare.metrics (available: "
                            f"{', '.join(k for k in SCORE_KEYS if all(k in r.values for r in runs))})")
        d = statistics.paired_delta(matrix[0], matrix[1], clusters, confidence=confidence, resamples=resamples,
                                    seed=seed, method=method)
        out[metric] = d.as_dict()
    n_clusters = len(set(clusters)) if clusters is not None else len(ids)
    return {"n_examples": len(ids), "n_clusters": n_clusters,
            "cluster_by": "user" if clusters is not None and n_clusters < len(ids) else "example",
            "resamples": resamples, "confidence": confidence, "method": method, "p_value_test": P_VALUE_TEST,
            "baseline": str(runs[0].path), "other": str(runs[1].path), "metrics": out, "primary": PRIMARY,
            "p_holm": statistics.holm({m: d["p_value"] for m, d in out.items() if m != PRIMARY})}


def summary(res: dict) -> str:
    """A few lines for the terminal: one per metric, deltas x100 with the CI, * where the CI excludes 0."""
    errors = [m["mc_error"] for m in res["metrics"].values() if m.get("mc_error") is not None]
    head = (f"other - baseline over {res['n_examples']} paired examples ({res['n_clusters']} "
            f"{res['cluster_by']} clusters), {res['confidence']:.0%} CI, {res['resamples']} resamples"
            + (f" (Monte Carlo error of the CI limits <= {max(errors) * 100:.3f} points)" if errors else "")
            + "; * = CI excludes 0")
    lines = [head]
    for metric, m in res["metrics"].items():
        d = statistics.Delta(**m)
        holm = res["p_holm"].get(metric)
        lines.append(f"  {metric:<15} {d.baseline * 100:6.2f} -> {d.other * 100:6.2f}  "
                     f"{statistics.format_delta(d)}  p={d.p_value:.3g}"
                     + (" (primary)" if metric == res["primary"] else f" p_Holm={holm:.3g}"))
    return "\n".join(lines)


def run(cfg: DictConfig, run_dir: Path) -> None:
    c = cfg.compare
    out = compare_runs(c.baseline, c.other, list(c.metrics) if c.metrics else None, resamples=int(c.resamples),
                       confidence=float(c.confidence), method=str(c.method), seed=int(cfg.seed))
    path = atomic_write_json(Path(run_dir) / "compare.json", out)
    result(summary(out) + f"\nwrote {path}")
