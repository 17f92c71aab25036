"""`table` group (conf/table.yaml): `percli table` inputs, selection and outputs."""

from __future__ import annotations

from percli.losses import LOSSES
from percli.names import SCORE_KEYS
from percli.schema.field import NUMBER, Field, between

GROUP = "table"




FIELDS: dict[str, Field] = {
    "runs": Field(str, "a sweep dir, a run dir, or a quoted glob", expect="a sweep dir, a run dir or a glob"),
    "out_dir": Field(str, "where table.md/.csv/.tex and loss_curves.png go",
                     expect="a directory for table.md/.csv/.tex"),
    "metrics": Field(list, "metric columns (planted_recall is added where runs report it)", choices=SCORE_KEYS),
    "baseline_loss": Field(str, "deltas (with CIs) are against this loss's row of the same model and settings",
                           choices=LOSSES),
    "select_metric": Field(str, "per row, the lr with the best mean of this metric over seeds is kept",
                           choices=SCORE_KEYS),
    "select_split": Field(str, "the split the lr is selected on (test: the paper's selection, labelled so)",
                          expect="a split name such as val"),
    "report_split": Field(str, "the split the table's values and deltas come from",
                          expect="a split name such as test"),
    "confidence": Field(NUMBER, "confidence level of the delta CIs", between(0, 1, lo_open=True, hi_open=True),
                        "a number in (0, 1) such as 0.95"),
    "resamples": Field(int, "bootstrap resamples per delta", lambda v: v >= 100, "an integer >= 100 (e.g. 20000)"),
    "plots": Field(bool, "write loss_curves.png from each train run's train_log.jsonl"),
}
