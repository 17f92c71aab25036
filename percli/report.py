"""`percli table`: aggregate run dirs into the paper's table (md / csv / tex) and a loss-curve plot.

Every train or eval run dir becomes an *evaluation*: (model, loss, trained-on task) evaluated on a task.
A train run is evaluated on its own task (its metrics.json from eval.after_train); an eval run of a
checkpoint (`model.path=<train run>/checkpoints/final`) inherits model, loss and lr from that train run,
and lands in the cross-task transfer block when it evaluates another task. An eval run of a base model
(no model.path) is the zero-shot "base" row.

Cells are (model, loss, trained-on, evaluated-on). When a cell has several runs (an lr sweep, a rerun),
the one with the best `table.select_metric` wins. That score comes from the split the run was evaluated
on, so with the default eval split (test) this is model selection on the test split: the numbers are
optimistic, and the table says so. A cell without a successful run shows `–` with a footnote naming
why (failed with its error, still running, no metrics, not run): never a crash, never a silent zero.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from percli.errors import DataError
from percli.io import atomic_write_text, read_jsonl
from percli.log import result
from percli.losses import LOSSES

# Display order and names; unknown values sort after the known ones, alphabetically.
LOSS_ORDER = ("base", *LOSSES)
LOSS_NAMES = {"base": "base (no FT)", **{name: loss.label for name, loss in LOSSES.items()}}
TASK_ORDER = ("review", "abstract", "topic")
TASK_NAMES = {"review": "Review", "abstract": "Abstract", "topic": "Topic"}
METRIC_NAMES = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum",
                "meteor": "METEOR", "planted_recall": "Planted recall"}
PLANTED = "planted_recall"
DASH = "–"
# Run dirs hold checkpoints and Hydra's own copies of the config: never descend into them.
_SKIP_DIRS = {".hydra", "checkpoints", "wandb", "__pycache__"}


@dataclass(frozen=True)
class Column:
    """A task column: the task name and its LongLaMP setting (user | temporal)."""

    task: str
    setting: str = "user"

    @property
    def label(self) -> str:
        name = TASK_NAMES.get(self.task, self.task)
        return name if self.setting == "user" else f"{name} ({self.setting})"

    def sort_key(self) -> tuple:
        return (_rank(self.task, TASK_ORDER), self.setting != "user", self.setting)


@dataclass
class Evaluation:
    """One run's contribution to one cell; `metrics` is None when the run has no usable result."""

    model: str
    loss: str
    trained_on: Column | None      # None: a base model, never fine-tuned
    evaluated_on: Column
    run_dir: Path
    lr: float | None = None
    split: str | None = None
    metrics: dict[str, float] | None = None
    problem: str | None = None     # why there is no result (failed / running / no metrics.json)
    curve: list[tuple[int, float]] = field(default_factory=list)
    curve_key: str = ""

    @property
    def in_task(self) -> bool:
        return self.trained_on is None or self.trained_on == self.evaluated_on


@dataclass
class Cell:
    selected: Evaluation | None
    candidates: list[Evaluation]
    problems: list[str]


def _rank(value: str, order: tuple[str, ...]) -> tuple[int, str]:
    return (order.index(value), "") if value in order else (len(order), value)


# ----------------------------------------------------------------------------------------- scanning
def find_run_dirs(spec: str | Path) -> list[Path]:
    """Run dirs (holding config.yaml or status.json) under a sweep dir, a run dir or a glob, sorted."""
    spec = str(spec)
    roots = [Path(p) for p in sorted(glob.glob(spec, recursive=True))] if glob.has_magic(spec) else [Path(spec)]
    found: set[Path] = set()
    for root in roots:
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            if "config.yaml" in filenames or "status.json" in filenames:
                found.add(Path(dirpath))
    return sorted(found)


def _load_config(run_dir: Path) -> DictConfig | None:
    """The resolved config.yaml; Hydra's .hydra/config.yaml when the job failed before writing it."""
    for path in (run_dir / "config.yaml", run_dir / ".hydra" / "config.yaml"):
        if path.is_file():
            try:
                cfg = OmegaConf.load(path)
            except Exception:  # noqa: BLE001 - an unreadable config is reported by the caller as a note
                continue
            if isinstance(cfg, DictConfig):
                return cfg
    return None


def _get(cfg: DictConfig, key: str, default: Any = None) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=default, throw_on_missing=False)
    except Exception:  # noqa: BLE001 - unresolvable interpolation in Hydra's unresolved copy
        return default


def _read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _status(run_dir: Path) -> tuple[str, str | None]:
    """('ok' | 'failed' | 'unknown', problem text or None)."""
    status = _read_json(run_dir / "status.json")
    if status is None:
        return "unknown", "no status.json: still running, or killed before it finished"
    if status.get("status") == "ok":
        return "ok", None
    error = " ".join(str(status.get("error") or "no error message recorded").split())
    return "failed", f"failed: {error}"


def _metrics(run_dir: Path) -> tuple[dict[str, float] | None, str | None]:
    """Numeric metrics from metrics.json (in the run dir, or eval/ below it) and the split, if stated."""
    for path in (run_dir / "metrics.json", run_dir / "eval" / "metrics.json"):
        raw = _read_json(path)
        if raw is not None:
            values = {k: float(v) for k, v in raw.items()
                      if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
            split = raw.get("split") if isinstance(raw.get("split"), str) else None
            return values, split
    return None, None


def _column(cfg: DictConfig) -> Column | None:
    task = _get(cfg, "task.name")
    return Column(str(task), str(_get(cfg, "task.setting", "user") or "user")) if task else None


def _source_train_run(path: str | None, depth: int = 0) -> tuple[Path | None, DictConfig | None]:
    """The train run a checkpoint (or a predictions file) belongs to: the nearest ancestor train run dir."""
    if not path or depth > 1:
        return None, None
    p = Path(path).resolve()
    for anc in [p, *list(p.parents)[:4]]:
        cfg = _load_config(anc) if (anc / "config.yaml").is_file() else None
        if cfg is None:
            continue
        command = _get(cfg, "command")
        if command == "train":
            return anc, cfg
        if command == "eval":  # a predictions file written by an eval run of a checkpoint
            return _source_train_run(_get(cfg, "model.path"), depth + 1)
        return None, None
    return None, None


def _curve(run_dir: Path) -> tuple[list[tuple[int, float]], str]:
    """(step, loss) points from train_log.jsonl; plain CE when logged, since weighted losses don't compare."""
    path = run_dir / "train_log.jsonl"
    if not path.is_file():
        return [], ""
    try:
        rows = read_jsonl(path)
    except (OSError, ValueError):
        return [], ""
    key = "ce_loss" if any("ce_loss" in r for r in rows) else "loss"
    points = [(int(r["step"]), float(r[key])) for r in rows
              if isinstance(r.get("step"), int | float) and isinstance(r.get(key), int | float)]
    return points, key


def collect(run_dirs: list[Path], split: str | None = None) -> tuple[list[Evaluation], list[str]]:
    """Evaluations from run dirs, plus notes about run dirs that could not be placed in the table."""
    evaluations: list[Evaluation] = []
    notes: list[str] = []
    for run_dir in run_dirs:
        cfg = _load_config(run_dir)
        if cfg is None:
            notes.append(f"{run_dir}: no readable config.yaml; skipped")
            continue
        command = _get(cfg, "command")
        if command not in ("train", "eval"):
            continue  # table / contrast / data runs have nothing to aggregate
        status, problem = _status(run_dir)
        metrics, metrics_split = _metrics(run_dir)
        run_split = metrics_split or _get(cfg, "eval.split")
        if status == "ok" and metrics is None:
            problem = ("finished without metrics.json (eval.after_train=false?); score it with "
                       f"`percli eval model.path={run_dir}/checkpoints/final`")
        column = _column(cfg)
        if column is None:
            notes.append(f"{run_dir}: config.yaml has no task.name; skipped")
            continue
        if command == "train":
            ev = Evaluation(model=str(_get(cfg, "model.name", "?")), loss=str(_get(cfg, "loss.name", "?")),
                            trained_on=column, evaluated_on=column, run_dir=run_dir, lr=_get(cfg, "train.lr"))
            ev.curve, ev.curve_key = _curve(run_dir)
        else:
            traced = _get(cfg, "model.path") or _get(cfg, "eval.predictions")
            if traced:
                src_dir, src_cfg = _source_train_run(traced)
                if src_cfg is None or _column(src_cfg) is None:
                    notes.append(f"{run_dir}: evaluates {traced}, which is not inside a train run dir; skipped")
                    continue
                ev = Evaluation(model=str(_get(src_cfg, "model.name", "?")),
                                loss=str(_get(src_cfg, "loss.name", "?")), trained_on=_column(src_cfg),
                                evaluated_on=column, run_dir=run_dir, lr=_get(src_cfg, "train.lr"))
            else:
                ev = Evaluation(model=str(_get(cfg, "model.name", "?")), loss="base", trained_on=None,
                                evaluated_on=column, run_dir=run_dir)
        ev.split = run_split
        if problem is not None:
            ev.problem = problem
        elif split is not None and run_split != split:
            notes.append(f"{run_dir}: evaluated on split {run_split!r}, not table.split={split!r}; ignored")
            continue
        else:
            ev.metrics = metrics
        evaluations.append(ev)
    return evaluations, notes


# ----------------------------------------------------------------------------------------- the table
CellKey = tuple[str, str, Column | None, Column]  # model, loss, trained_on, evaluated_on


def build_cells(evaluations: list[Evaluation], select_metric: str) -> dict[CellKey, Cell]:
    """Group evaluations into cells and pick each cell's best run by `select_metric` (ties: first run dir)."""
    groups: dict[CellKey, list[Evaluation]] = defaultdict(list)
    for ev in evaluations:
        groups[(ev.model, ev.loss, ev.trained_on, ev.evaluated_on)].append(ev)
    cells: dict[CellKey, Cell] = {}
    for key, evs in groups.items():
        evs.sort(key=lambda e: str(e.run_dir))
        ok = [e for e in evs if e.metrics is not None]
        scored = [e for e in ok if select_metric in e.metrics]
        pool = scored or ok
        selected = max(pool, key=lambda e: e.metrics.get(select_metric, -math.inf)) if pool else None
        problems = [f"run {e.run_dir} {e.problem}" for e in evs if e.problem]
        cells[key] = Cell(selected, evs, problems)
    return cells


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
    """One rendered cell: the value (x100) and gain over the baseline row in %, or a footnote number."""

    value: float | None = None
    gain: float | None = None
    note: int | None = None
    diagonal: bool = False   # transfer block: the in-task cell, shown in the main block


@dataclass
class Block:
    title: str
    transfer: bool
    columns: list[Column]
    metrics: dict[Column, list[str]]
    rows: list[tuple[str, str, Column | None]]   # model, loss, trained_on (transfer block only)
    entries: dict[tuple[int, Column, str], Entry]


def _row_label(model: str, loss: str) -> tuple[str, str]:
    return model, LOSS_NAMES.get(loss, loss)


def build_blocks(cells: dict[CellKey, Cell], metric_keys: list[str], baseline: str,
                 notes: Footnotes) -> list[Block]:
    """The in-task block (rows model x loss) and, when present, the transfer block (rows add trained-on)."""
    blocks = []
    for transfer in (False, True):
        keys = [k for k in cells if (k[2] is not None and k[2] != k[3]) == transfer]
        if not keys:
            continue
        columns = sorted({k[3] for k in keys}, key=Column.sort_key)
        rows = sorted({(k[0], k[1], k[2] if transfer else None) for k in keys},
                      key=lambda r: (r[0], r[2].sort_key() if r[2] else (), _rank(r[1], LOSS_ORDER)))
        metrics = {}
        for col in columns:
            has_planted = any(c.selected and PLANTED in c.selected.metrics
                              for k, c in cells.items() if k[3] == col and k in keys)
            metrics[col] = list(metric_keys) + ([PLANTED] if has_planted and PLANTED not in metric_keys else [])
        entries: dict[tuple[int, Column, str], Entry] = {}
        for i, (model, loss, trained_on) in enumerate(rows):
            for col in columns:
                key = (model, loss, trained_on if transfer else col, col)
                if not transfer and loss == "base":
                    key = (model, loss, None, col)
                cell = cells.get(key)
                base_cell = cells.get((model, baseline, trained_on if transfer else col, col))
                for m in metrics[col]:
                    entries[(i, col, m)] = _entry(cell, base_cell, m, loss, baseline, notes,
                                                  diagonal=transfer and trained_on == col)
        title = ("Cross-task transfer (rows: trained on; columns: evaluated on)" if transfer
                 else "In-task results")
        blocks.append(Block(title, transfer, columns, metrics, rows, entries))
    return blocks


def _entry(cell: Cell | None, base_cell: Cell | None, metric: str, loss: str, baseline: str,
           notes: Footnotes, diagonal: bool) -> Entry:
    if diagonal:
        return Entry(diagonal=True)
    if cell is None:
        return Entry(note=notes.mark("no run found for this cell"))
    if cell.selected is None:
        return Entry(note=notes.mark("; ".join(cell.problems)))
    value = cell.selected.metrics.get(metric)
    if value is None:
        return Entry(note=notes.mark(f"run {cell.selected.run_dir}: metrics.json has no '{metric}'"))
    # Failed siblings (another lr of a sweep, a rerun) stay visible next to the value that is shown.
    note = (notes.mark("; ".join(cell.problems) + f"; the cell shows run {cell.selected.run_dir}")
            if cell.problems else None)
    gain = None
    if loss not in (baseline, "base") and base_cell and base_cell.selected:
        ref = base_cell.selected.metrics.get(metric)
        if ref:  # no gain over a missing or zero baseline
            gain = (value - ref) / ref * 100.0
    return Entry(value=value * 100.0, gain=gain, note=note)


# ----------------------------------------------------------------------------------------- rendering
def _fmt(entry: Entry, tex: bool = False) -> str:
    if entry.diagonal:
        return "$\\cdot$" if tex else "·"
    if entry.value is None:
        return f"--$^{{{entry.note}}}$" if tex else f"{DASH}[{entry.note}]"
    text = f"{entry.value:.2f}"
    if entry.gain is not None:
        text += f" {{\\scriptsize({entry.gain:+.2f}\\%)}}" if tex else f" ({entry.gain:+.2f}%)"
    if entry.note is not None:
        text += f"$^{{{entry.note}}}$" if tex else f" [{entry.note}]"
    return text


def render_markdown(blocks: list[Block], notes: Footnotes, legend: list[str], runs: list[str]) -> str:
    out = ["# Results", ""]
    for block in blocks:
        out += [f"## {block.title}", ""]
        head = ["Model", "Loss"] + (["Trained on"] if block.transfer else [])
        head += [f"{c.label} {METRIC_NAMES.get(m, m)}" for c in block.columns for m in block.metrics[c]]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(["---"] * (2 + block.transfer) + ["---:"] * (len(head) - 2 - block.transfer)) + "|")
        for i, (model, loss, trained_on) in enumerate(block.rows):
            cells = list(_row_label(model, loss)) + ([trained_on.label] if block.transfer else [])
            cells += [_fmt(block.entries[(i, c, m)]) for c in block.columns for m in block.metrics[c]]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    out += legend + [""]
    if notes.texts:
        out += ["Notes:", ""] + [f"[{i}] {t}  " for i, t in enumerate(notes.texts, 1)] + [""]
    if runs:
        out += ["Runs (selected = shown in the table):", ""] + [f"- {r}" for r in runs] + [""]
    return "\n".join(out)


def render_csv(blocks: list[Block], notes: Footnotes) -> str:
    """One row per table row; values x100, gains in %, empty where the table shows a dash (see notes)."""
    columns = []
    for block in blocks:
        for c in block.columns:
            for m in block.metrics[c]:
                if (c, m) not in columns:
                    columns.append((c, m))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["block", "model", "loss", "trained_on"]
    for c, m in columns:
        header += [f"{c.label}/{m}", f"{c.label}/{m}/gain_pct"]
    writer.writerow(header + ["notes"])
    for block in blocks:
        for i, (model, loss, trained_on) in enumerate(block.rows):
            row = ["transfer" if block.transfer else "in-task", model, loss, trained_on.label if trained_on else ""]
            row_notes = []
            for c, m in columns:
                e = block.entries.get((i, c, m))
                if e is None or e.diagonal:
                    row += ["", ""]
                    continue
                row += ["" if e.value is None else f"{e.value:.4f}", "" if e.gain is None else f"{e.gain:.4f}"]
                if e.note is not None:
                    row_notes.append(f"{c.label}: {notes.texts[e.note - 1]}")
            writer.writerow(row + [" | ".join(dict.fromkeys(row_notes))])
    return buf.getvalue()


def _tex_escape(text: str) -> str:
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", DASH: "--",
            "·": r"$\cdot$"}
    return "".join(repl.get(ch, ch) for ch in text)


def render_tex(blocks: list[Block], notes: Footnotes, legend: list[str]) -> str:
    """A booktabs table fragment for \\input{} (needs \\usepackage{booktabs})."""
    out = ["% Generated by `percli table`. Needs \\usepackage{booktabs}.", "\\begin{table}[t]", "\\centering",
           "\\small"]
    for block in blocks:
        lead = 3 if block.transfer else 2
        widths = [len(block.metrics[c]) for c in block.columns]
        out.append(f"\\begin{{tabular}}{{{'l' * lead}{''.join('c' * w for w in widths)}}}")
        out.append("\\toprule")
        groups, rules, start = [], [], lead + 1
        for c, w in zip(block.columns, widths):
            groups.append(f"\\multicolumn{{{w}}}{{c}}{{{_tex_escape(c.label)}}}")
            rules.append(f"\\cmidrule(lr){{{start}-{start + w - 1}}}")
            start += w
        out.append(" & " * lead + " & ".join(groups) + " \\\\")
        out.append("".join(rules))
        head = ["Model", "Loss"] + (["Trained on"] if block.transfer else [])
        head += [_tex_escape(METRIC_NAMES.get(m, m)) for c in block.columns for m in block.metrics[c]]
        out += [" & ".join(head) + " \\\\", "\\midrule"]
        for i, (model, loss, trained_on) in enumerate(block.rows):
            cells = [_tex_escape(x) for x in _row_label(model, loss)]
            cells += [_tex_escape(trained_on.label)] if block.transfer else []
            cells += [_fmt(block.entries[(i, c, m)], tex=True) for c in block.columns for m in block.metrics[c]]
            out.append(" & ".join(cells) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}", "\\par\\medskip"]
    out.append("\\footnotesize " + _tex_escape(" ".join(legend)))
    for i, text in enumerate(notes.texts, 1):
        out.append(f"\\par $^{{{i}}}$ {_tex_escape(text)}")
    out += ["\\end{table}", ""]
    return "\n".join(out)


def _legend(evaluations: list[Evaluation], baseline: str, select_metric: str) -> list[str]:
    splits = sorted({e.split for e in evaluations if e.metrics is not None and e.split}) or ["unknown"]
    selection = (f"Selection: when a cell has several runs (e.g. an lr sweep), the run with the best "
                 f"{METRIC_NAMES.get(select_metric, select_metric)} is shown, measured on the split it was "
                 f"evaluated on ({', '.join(splits)})")
    selection += (": this is model selection on the test split, so the numbers are optimistic."
                  if "test" in splits else ".")
    return [
        f"Scores x100 on split(s): {', '.join(splits)}. (+x%) = relative gain over the "
        f"{LOSS_NAMES.get(baseline, baseline)} row of the same model (same trained-on task in the transfer block).",
        selection,
        f"{DASH}[n]: no result for this cell, see note n; a value with [n]: some runs of the cell failed, "
        "see note n. ·: in-task cell (see the in-task block).",
    ]


def _run_lines(cells: dict[CellKey, Cell], select_metric: str) -> list[str]:
    lines = []
    order = sorted(cells, key=lambda k: (k[0], _rank(k[1], LOSS_ORDER), k[2].sort_key() if k[2] else (),
                                          k[3].sort_key()))
    for key in order:
        cell = cells[key]
        model, loss, trained_on, col = key
        where = col.label if trained_on in (None, col) else f"{trained_on.label} -> {col.label}"
        parts = []
        for e in cell.candidates:
            if e.metrics is None:
                continue
            score = e.metrics.get(select_metric)
            tag = "selected, " if e is cell.selected else ""
            score_text = f"{score * 100:.2f}" if score is not None else "n/a"
            lr = "zero-shot" if e.trained_on is None else f"lr={e.lr}"
            parts.append(f"{lr} ({tag}{METRIC_NAMES.get(select_metric, select_metric)} "
                         f"{score_text}) {e.run_dir}")
        if parts:
            lines.append(f"{model} / {LOSS_NAMES.get(loss, loss)} / {where}: " + "; ".join(parts))
    return lines


# ----------------------------------------------------------------------------------------- plots
def plot_loss_curves(evaluations: list[Evaluation], selected: set[Path], path: Path) -> Path | None:
    """One panel per (model, task), one line per train run; the runs shown in the table drawn bold."""
    runs = [e for e in evaluations if e.curve and e.trained_on is not None and e.in_task
            and (e.run_dir / "train_log.jsonl").is_file()]
    if not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[tuple[str, Column], list[Evaluation]] = defaultdict(list)
    for e in runs:
        panels[(e.model, e.evaluated_on)].append(e)
    keys = sorted(panels, key=lambda k: (k[0], k[1].sort_key()))
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.6 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for e in sorted(panels[key], key=lambda e: (_rank(e.loss, LOSS_ORDER), e.lr or 0, str(e.run_dir))):
            steps, losses = zip(*e.curve)
            bold = e.run_dir in selected
            ax.plot(steps, losses, linewidth=2.0 if bold else 0.8, alpha=1.0 if bold else 0.6,
                    label=f"{LOSS_NAMES.get(e.loss, e.loss)} lr={e.lr}{' *' if bold else ''}")
        ax.set_title(f"{key[0]} / {key[1].label}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("plain CE on the train batch" if panels[key][0].curve_key == "ce_loss" else "train loss")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return path


# ----------------------------------------------------------------------------------------- command
def build_table(runs: str | Path, out_dir: str | Path, metrics: list[str], baseline_loss: str = "ce",
                select_metric: str = "meteor", split: str | None = None, plots: bool = True) -> dict[str, Path]:
    """Scan `runs`, write table.md/.csv/.tex (and loss_curves.png) into `out_dir`; return the written paths."""
    run_dirs = find_run_dirs(runs)
    evaluations, skipped = collect(run_dirs, split=split)
    if not evaluations:
        raise DataError(f"no train or eval run dirs found under table.runs={runs}; point it at a sweep dir, "
                        "a run dir or a glob such as 'outputs/train/multiruns/*'")
    cells = build_cells(evaluations, select_metric)
    notes = Footnotes()
    blocks = build_blocks(cells, list(metrics), baseline_loss, notes)
    for text in skipped:
        notes.mark(text)
    legend = _legend(evaluations, baseline_loss, select_metric)
    out = Path(out_dir)
    written = {
        "md": atomic_write_text(out / "table.md", render_markdown(blocks, notes, legend,
                                                                  _run_lines(cells, select_metric))),
        "csv": atomic_write_text(out / "table.csv", render_csv(blocks, notes)),
        "tex": atomic_write_text(out / "table.tex", render_tex(blocks, notes, legend)),
    }
    if plots:
        selected = {c.selected.run_dir for c in cells.values() if c.selected is not None}
        png = plot_loss_curves(evaluations, selected, out / "loss_curves.png")
        if png is not None:
            written["png"] = png
    return written


def run(cfg: DictConfig, run_dir: Path) -> None:
    t = cfg.table
    written = build_table(t.runs, t.out_dir, list(t.metrics), baseline_loss=t.baseline_loss,
                          select_metric=t.select_metric, split=t.split, plots=t.plots)
    result(Path(written["md"]).read_text(encoding="utf-8") + "\nwrote " + ", ".join(str(p) for p in written.values())
           + f" (from table.runs={t.runs})")
