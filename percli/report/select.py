"""Selection and cells: which checkpoints a table row shows, on which split, and their deltas against a baseline.

A *row* is (model, loss, trained-on column, variant). The variant holds every hyper-parameter whose
value differs between the train runs of one (model, loss, trained-on), apart from lr and seed (schedule,
retriever, clip range, ...): runs that differ in it are different rows, never maximised over.

Selection: per row, the lr whose checkpoints (one per seed) have the best mean `select_metric` on
`select_split` (in-task evaluations; ties go to the smaller lr). A row with a single lr needs no
selection. The row's cells then show, per evaluated-on column, those checkpoints' evaluations on
`report_split`, averaged over seeds. With select_split == report_split the numbers are selected on the
split they report (the table says so).

Deltas: a row's cell against the `baseline_loss` row with the same model, trained-on column and
hyper-parameters outside `loss.*`: seeds paired by seed value, per-example scores paired by example id,
`statistics.pooled_delta` (two-level bootstrap over seeds and users).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from percli.errors import PercliError
from percli.example_scores import Scores, align, clusters_of, metric_matrix, read_scores
from percli.report.collect import Column, Evaluation, Source
from percli.statistics import MC_ERROR_TARGET, Delta, pooled_delta


@dataclass(frozen=True)
class RowKey:
    model: str
    loss: str
    trained_on: Column | None
    variant: tuple[tuple[str, str], ...] = ()


@dataclass
class Selection:
    """A row's chosen lr and its checkpoints; by_lr: lr -> (mean select metric or None, seeds scored)."""

    row: RowKey
    sources: list[Source]
    lr: float | None = None
    by_lr: dict[float | None, tuple[float | None, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    note: str | None = None


@dataclass
class Cell:
    """The selected checkpoints' report-split evaluations on one column (one per seed)."""

    row: RowKey
    column: Column
    evaluations: list[Evaluation]
    problems: list[str]

    def value(self, metric: str) -> float | None:
        values = [e.metrics.get(metric) for e in self.evaluations]
        return float(np.mean(values)) if values and None not in values else None

    def spread(self, metric: str) -> float | None:
        """The standard deviation over seeds (ddof 1), when there are several."""
        values = [e.metrics.get(metric) for e in self.evaluations]
        return float(np.std(values, ddof=1)) if len(values) > 1 and None not in values else None


def _variants(sources: list[Source]) -> dict[int, tuple[tuple[str, str], ...]]:
    """id(source) -> its values of the hyper-parameters that differ within its (model, loss, trained-on)."""
    groups: dict[tuple, list[Source]] = defaultdict(list)
    for s in sources:
        groups[(s.model, s.loss, s.trained_on)].append(s)
    out = {}
    for group in groups.values():
        keys = sorted({k for s in group for k in s.hyper})
        differing = [k for k in keys if len({s.hyper.get(k) for s in group}) > 1]
        for s in group:
            out[id(s)] = tuple((k, s.hyper.get(k, "unset")) for k in differing)
    return out


def row_of(source: Source, variants: dict[int, tuple]) -> RowKey:
    return RowKey(source.model, source.loss, source.trained_on, variants.get(id(source), ()))


def _unique_sources(evaluations: list[Evaluation]) -> list[Source]:
    return list({id(e.source): e.source for e in evaluations}.values())


def best_lr(mean_by_lr: Mapping[float | None, float | None]) -> float | None:
    """The selection rule, the one `percli table` and scripts/study.py share: the lr whose checkpoints have the
    best mean select metric over seeds (not the best per seed); ties go to the smaller lr; lrs without a
    value are skipped. None when no lr has a value."""
    ranked = sorted((lr for lr, v in mean_by_lr.items() if v is not None), key=lambda lr: (-mean_by_lr[lr], lr or 0))
    return ranked[0] if ranked else None


def select(evaluations: list[Evaluation], select_split: str, select_metric: str
           ) -> tuple[dict[RowKey, Selection], dict[int, tuple]]:
    """Per row, the selected lr and its checkpoints (see the module doc); also the variant of each source."""
    sources = _unique_sources(evaluations)
    variants = _variants([s for s in sources if s.run_dir is not None])
    rows: dict[RowKey, list[Source]] = defaultdict(list)
    for s in sources:
        rows[row_of(s, variants)].append(s)
    selections = {}
    for row, members in rows.items():
        members.sort(key=lambda s: (s.seed is None, s.seed or 0, str(s.run_dir)))
        # The row's own train runs that failed, are unfinished, or finished without metrics.
        own = {s.run_dir for s in members if s.run_dir is not None}
        problems = [f"run {e.run_dir} {e.problem}" for e in evaluations if e.problem and e.run_dir in own]
        if row.loss == "base":
            selections[row] = Selection(row, members, problems=problems)
            continue
        by_lr: dict[float | None, list[Source]] = defaultdict(list)
        for s in members:
            if s.problem is None:
                by_lr[s.lr].append(s)
        scored = {}
        for lr, group in by_lr.items():
            values = [e.metrics[select_metric] for e in evaluations
                      if any(e.source is s for s in group) and e.in_task and e.split == select_split
                      and e.metrics is not None and select_metric in e.metrics]
            scored[lr] = (float(np.mean(values)) if values else None, len(values))
        sel = Selection(row, [], by_lr=scored, problems=problems)
        if any(mean is not None for mean, _ in scored.values()):
            sel.lr = best_lr({lr: mean for lr, (mean, _) in scored.items()})
        elif len(by_lr) == 1:
            sel.lr = next(iter(by_lr))   # a single lr: nothing to select
        elif by_lr:
            sel.note = (f"no in-task evaluation on split {select_split!r} to select among lr "
                        f"{', '.join(str(lr) for lr in sorted(by_lr, key=lambda x: x or 0))}; evaluate the sweep on "
                        f"{select_split} (eval.split={select_split})")
        sel.sources = by_lr.get(sel.lr, []) if sel.note is None else []
        selections[row] = sel
    return selections, variants


def build_cells(evaluations: list[Evaluation], selections: dict[RowKey, Selection],
                report_split: str) -> dict[tuple[RowKey, Column], Cell]:
    """Per row and evaluated-on column: the selected checkpoints' latest successful report-split evaluation."""
    cells: dict[tuple[RowKey, Column], Cell] = {}
    for row, sel in selections.items():
        chosen = {id(s) for s in sel.sources}
        columns = {e.evaluated_on for e in evaluations if id(e.source) in chosen}
        if row.trained_on is not None:
            columns.add(row.trained_on)
        for col in columns:
            found, problems = [], []
            for s in sel.sources:
                evs = [e for e in evaluations if e.source is s and e.evaluated_on == col and e.split == report_split]
                ok = [e for e in evs if e.metrics is not None]
                problems += [f"run {e.run_dir} {e.problem}" for e in evs if e.problem and not ok]
                if ok:
                    found.append(ok[-1])
                elif not evs:
                    what = f"checkpoint {s.run_dir}" if s.run_dir else f"model {s.model}"
                    problems.append(f"{what} has no evaluation on split {report_split!r} of {col.task}/{col.setting}"
                                    + (f"; run `percli eval model.path={s.run_dir}/checkpoints/final "
                                       f"task={col.task} task.setting={col.setting} eval.split={report_split}` "
                                       "(make reproduce-table does)" if s.run_dir else ""))
            if col == row.trained_on or row.trained_on is None:
                problems = sel.problems + ([sel.note] if sel.note else []) + problems
            cells[(row, col)] = Cell(row, col, found, problems)
    return cells


def baseline_row(row: RowKey, selections: dict[RowKey, Selection], baseline_loss: str) -> tuple[RowKey | None, str]:
    """The baseline_loss row with the same model, trained-on column and non-loss hyper-parameters."""
    mine = selections[row].sources
    if not mine:
        return None, ""
    candidates = [r for r, s in selections.items() if r.loss == baseline_loss and r.model == row.model
                  and r.trained_on == row.trained_on and s.sources]
    same = [r for r in candidates if _same_setup(mine[0], selections[r].sources[0])]
    if len(same) == 1:
        return same[0], ""
    if not candidates:
        return None, f"no {baseline_loss} row of {row.model} trained on the same task to compare with"
    return None, (f"no single {baseline_loss} row with the same hyper-parameters outside loss.* "
                  f"({len(same)} match); deltas need runs that differ only in the loss")


def _same_setup(a: Source, b: Source) -> bool:
    keys = {k for k in a.hyper.keys() | b.hyper.keys() if not k.startswith("loss.")}
    return all(a.hyper.get(k) == b.hyper.get(k) for k in keys)


class ScoreCache:
    """scores.jsonl of evaluation run dirs, read once."""

    def __init__(self) -> None:
        self._scores: dict[Path, Scores] = {}

    def get(self, run_dir: Path) -> Scores:
        if run_dir not in self._scores:
            self._scores[run_dir] = read_scores(run_dir)
        return self._scores[run_dir]


def cell_delta(cell: Cell, base: Cell, metric: str, cache: ScoreCache, *, confidence: float, resamples: int,
               seed: int = 0) -> tuple[Delta | None, str | None]:
    """The pooled paired delta of `cell` over `base` on `metric`, or None and why not."""
    mine = {e.source.seed: e for e in cell.evaluations}
    theirs = {e.source.seed: e for e in base.evaluations}
    seeds = sorted((s for s in mine.keys() & theirs.keys()), key=lambda s: (s is None, s or 0))
    if not seeds:
        if len(mine) == 1 and len(theirs) == 1:   # one run each: pair them whatever their seeds
            pairs = [(next(iter(theirs.values())), next(iter(mine.values())))]
        else:
            return None, "no seed in common with the baseline row"
    else:
        pairs = [(theirs[s], mine[s]) for s in seeds]
    runs = [e.run_dir for pair in pairs for e in pair]
    try:
        scores = [cache.get(r) for r in runs]
        _, positions = align(scores, [f"run {r}" for r in runs])
    except PercliError as e:
        return None, str(e)
    matrix = metric_matrix(scores, positions, metric)
    if matrix is None:
        return None, None   # the metric is missing from some scores: the value cell already says why
    return pooled_delta(matrix[0::2], matrix[1::2], clusters_of(scores, positions), confidence=confidence,
                        resamples=resamples, seed=seed, max_mc_error=MC_ERROR_TARGET), None
