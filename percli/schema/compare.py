"""`compare` group (conf/compare.yaml): `percli compare`, paired deltas of two runs with bootstrap CIs."""

from __future__ import annotations

from percli.names import SCORE_KEYS
from percli.schema.field import NUMBER, Field, between

GROUP = "compare"
FIELDS: dict[str, Field] = {
    "baseline": Field(str, "a run dir with scores.jsonl (percli eval, or percli train with eval.after_train)",
                      expect="a run dir holding scores.jsonl", required=True),
    "other": Field(str, "a run dir scored on the same examples (same split, same eval.max_examples)",
                   expect="a run dir holding scores.jsonl", required=True),
    "metrics": Field(list, "metrics to compare (null: every metric both runs score)", choices=SCORE_KEYS,
                     nullable=True),
    "resamples": Field(int, "bootstrap resamples, and permutations of the sign-flip test", lambda v: v >= 100,
                       "an integer >= 100 (e.g. 20000)"),
    "confidence": Field(NUMBER, "confidence level of the intervals", between(0, 1, lo_open=True, hi_open=True),
                        "a number in (0, 1) such as 0.95"),
    "method": Field(str, "scipy.stats.bootstrap's interval method", choices=("percentile", "basic", "BCa")),
}
