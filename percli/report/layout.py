"""The table's layout: blocks of rows x (column, metric) entries with footnotes, independent of the format.

Two blocks of values: in-task (rows: model x loss x variant) and, when present, cross-task transfer (rows
add the trained-on task). Each value block has a delta block: every row against its baseline row, with
the CI, pooled over seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

from percli.losses import LOSSES
from percli.names import PLANTED, TASKS
from percli.report.collect import Column
from percli.report.select import Cell, RowKey, ScoreCache, Selection, baseline_row, cell_delta
from percli.statistics import DEFAULT_RESAMPLES, Delta

# Display order: the registries' order; unknown values sort after the known ones, alphabetically.
LOSS_ORDER = ("base", *LOSSES)


def rank(value: str, order: tuple[str, ...]) -> tuple[int, str]:
    return (order.index(value), "") if value in order else (len(order), value)


def column_sort_key(c: Column) -> tuple:
    return (rank(c.task, TASKS), c.setting != "user", c.setting)


def row_sort_key(r: RowKey) -> tuple:
    return (r.model, column_sort_key(r.trained_on) if r.trained_on else (), rank(r.loss, LOSS_ORDER), r.variant)


class Footnotes:
    """Numbered footnotes; the same text gets the same number."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def mark(self, text: str) -> int:
        if text not in self.texts:
            self.texts.append(text)
        return self.texts.index(text) + 1


@dataclass
class Entry:
    """One cell of a value block (x100, mean over seeds) or of a delta block; `note` a footnote number."""

    value: float | None = None
    spread: float | None = None      # sd over seeds, x100
    seeds: int = 0
    delta: Delta | None = None
    note: int | None = None
    diagonal: bool = False           # transfer block: the in-task cell, shown in the in-task block


@dataclass
class Block:
    title: str
    transfer: bool
    deltas: bool                     # a delta block (entries hold `delta`) rather than values
    columns: list[Column]
    metrics: dict[Column, list[str]]
    rows: list[RowKey]
    entries: dict[tuple[int, Column, str], Entry]


@dataclass(frozen=True)
class DeltaOptions:
    baseline_loss: str = "ce"
    confidence: float = 0.95
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0


def build_blocks(cells: dict[tuple[RowKey, Column], Cell], selections: dict[RowKey, Selection],
                 metric_keys: list[str], notes: Footnotes, opts: DeltaOptions) -> list[Block]:
    """Value blocks (in-task, transfer) and their delta blocks against the baseline rows."""
    blocks = []
    cache = ScoreCache()
    for transfer in (False, True):
        keys = [k for k in cells if (k[0].trained_on is not None and k[0].trained_on != k[1]) == transfer]
        if not keys:
            continue
        columns = sorted({k[1] for k in keys}, key=column_sort_key)
        rows = sorted({k[0] for k in keys}, key=row_sort_key)
        metrics = {}
        for col in columns:
            planted = any(PLANTED in e.metrics for k in keys if k[1] == col for e in cells[k].evaluations)
            metrics[col] = list(metric_keys) + ([PLANTED] if planted and PLANTED not in metric_keys else [])
        values = {(i, col, m): Entry(diagonal=True) if transfer and row.trained_on == col
                  else _value(cells.get((row, col)), m, notes)
                  for i, row in enumerate(rows) for col in columns for m in metrics[col]}
        delta_rows = [r for r in rows if r.loss not in (opts.baseline_loss, "base")]
        deltas: dict[tuple[int, Column, str], Entry] = {}
        for j, row in enumerate(delta_rows):
            base, why = baseline_row(row, selections, opts.baseline_loss)
            for col in columns:
                for m in metrics[col]:
                    deltas[(j, col, m)] = Entry(diagonal=True) if transfer and row.trained_on == col else \
                        _delta(cells.get((row, col)), cells.get((base, col)) if base else None, m, why, notes,
                               cache, opts)
        title = ("Cross-task transfer (rows: trained on; columns: evaluated on)" if transfer else "In-task results")
        blocks.append(Block(title, transfer, False, columns, metrics, rows, values))
        if delta_rows:
            base_label = LOSSES[opts.baseline_loss].label if opts.baseline_loss in LOSSES else opts.baseline_loss
            blocks.append(Block(f"{title}: delta against {base_label}", transfer, True, columns, metrics,
                                delta_rows, deltas))
    return blocks


def _value(cell: Cell | None, metric: str, notes: Footnotes) -> Entry:
    if cell is None:
        return Entry(note=notes.mark("no run found for this cell"))
    value = cell.value(metric)
    if value is None:
        if cell.evaluations:
            missing = next(e.run_dir for e in cell.evaluations if metric not in e.metrics)
            return Entry(note=notes.mark(f"run {missing}: metrics.json has no '{metric}'"))
        return Entry(note=notes.mark("; ".join(cell.problems) or "no run found for this cell"))
    spread = cell.spread(metric)
    # Failed siblings (another lr of a sweep, a rerun) stay visible next to the value that is shown.
    note = (notes.mark("; ".join(cell.problems) + "; the cell shows run(s) "
                       + ", ".join(str(e.run_dir) for e in cell.evaluations)) if cell.problems else None)
    return Entry(value=value * 100, spread=None if spread is None else spread * 100, seeds=len(cell.evaluations),
                 note=note)


def _delta(cell: Cell | None, base: Cell | None, metric: str, why: str, notes: Footnotes, cache: ScoreCache,
           opts: DeltaOptions) -> Entry:
    if cell is None or not cell.evaluations or cell.value(metric) is None:
        return Entry(note=notes.mark("no value for this cell (see the value table)"))
    if base is None or not base.evaluations:
        return Entry(note=notes.mark(why or f"the {opts.baseline_loss} row has no value in this column"))
    delta, problem = cell_delta(cell, base, metric, cache, confidence=opts.confidence, resamples=opts.resamples,
                                seed=opts.seed)
    if delta is None:
        return Entry(note=notes.mark(problem or f"some runs have no per-example '{metric}' in scores.jsonl"))
    return Entry(delta=delta, seeds=delta.n_seeds)
