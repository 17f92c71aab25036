"""Per-example scores (a run's scores.jsonl) read and paired across runs by example id.

`percli eval` (and `percli train` with eval.after_train) writes one row per example:
{"id", "user_id", "rouge1", ..., "meteor"[, "planted_recall"]}. Runs are compared on the examples
they share by id; two runs that scored different example sets are not comparable, and pairing them
fails with one line rather than silently comparing the intersection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from percli.errors import DataError
from percli.io import numbered_jsonl
from percli.names import SCORE_KEYS

SCORES_FILE = "scores.jsonl"


@dataclass(frozen=True)
class Scores:
    """One run's per-example scores: ids in file order, metric -> values, and each example's user (or None)."""

    path: Path
    ids: tuple[str, ...]
    values: dict[str, np.ndarray]
    users: tuple[str, ...] | None


def scores_path(spec: str | Path) -> Path:
    """A run dir's scores.jsonl (also under eval/), or the file itself."""
    p = Path(spec).expanduser()
    for candidate in (p, p / SCORES_FILE, p / "eval" / SCORES_FILE):
        if candidate.is_file():
            return candidate
    raise DataError(f"{spec} has no {SCORES_FILE}; point at a run dir of `percli eval` (or of `percli train` with "
                    "eval.after_train=true) or at a scores.jsonl file")


def read_scores(spec: str | Path) -> Scores:
    """Read a run's scores.jsonl; a duplicated id or a malformed row fails with one line."""
    path = scores_path(spec)
    ids: list[str] = []
    users: list[str | None] = []
    columns: dict[str, list[float]] = {k: [] for k in SCORE_KEYS}
    for lineno, row in numbered_jsonl(path):
        if not isinstance(row, dict) or "id" not in row:
            raise DataError(f"{path}:{lineno} has no 'id'; scores.jsonl rows are {{\"id\": ..., \"rouge1\": ...}}")
        ids.append(str(row["id"]))
        users.append(None if row.get("user_id") is None else str(row["user_id"]))
        for key in SCORE_KEYS:
            columns[key].append(float(row[key]) if isinstance(row.get(key), int | float) else np.nan)
    if not ids:
        raise DataError(f"{path} has no rows")
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"{path} scores example id {dup!r} more than once; ids must be unique")
    values = {k: np.asarray(v) for k, v in columns.items() if not np.isnan(v).all()}
    return Scores(path, tuple(ids), values, None if None in users else tuple(users))


def align(runs: Sequence[Scores], names: Sequence[str]) -> tuple[list[str], list[np.ndarray]]:
    """The common example order and, per run, the positions of those examples; different id sets fail.

    `names` label the runs in the error (e.g. the config keys that named them).
    """
    order = sorted(runs[0].ids)
    ref = set(order)
    for run, name in zip(runs[1:], names[1:]):
        have = set(run.ids)
        if have != ref:
            missing, extra = sorted(ref - have), sorted(have - ref)
            raise DataError(
                f"{name}={run.path} and {names[0]}={runs[0].path} score different examples "
                f"({len(missing)} missing, e.g. {missing[:1]}; {len(extra)} extra, e.g. {extra[:1]}); compare runs "
                "evaluated on the same split with the same eval.max_examples")
    positions = []
    for run in runs:
        where = {i: n for n, i in enumerate(run.ids)}
        positions.append(np.array([where[i] for i in order]))
    return order, positions


def clusters_of(runs: Sequence[Scores], positions: Sequence[np.ndarray]) -> list[str] | None:
    """Each aligned example's user when the runs record one (the first run's labels), else None."""
    for run, pos in zip(runs, positions):
        if run.users is not None:
            return [run.users[i] for i in pos]
    return None


def metric_matrix(runs: Sequence[Scores], positions: Sequence[np.ndarray], metric: str) -> np.ndarray | None:
    """(runs, examples) aligned values of `metric`, or None when some run lacks it for some example."""
    rows = []
    for run, pos in zip(runs, positions):
        values = run.values.get(metric)
        if values is None or np.isnan(values[pos]).any():
            return None
        rows.append(values[pos])
    return np.stack(rows)
