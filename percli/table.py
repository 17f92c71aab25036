"""`percli table`: run dirs -> the paper's table (table.md / .csv / .tex) and loss_curves.png.

Each row keeps the lr selected on `table.select_split` (val by default) and shows its checkpoints'
scores on `table.report_split` (test), averaged over seeds, with deltas against the `table.baseline_loss`
row and their paired bootstrap CIs (percli/report/ has the rules). A cell without a result shows `–`
with a footnote naming why (failed with its error, still running, not evaluated on the report split):
never a crash, never a silent zero.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from percli.errors import DataError
from percli.io import atomic_write_text
from percli.log import result
from percli.report.collect import collect, find_run_dirs
from percli.report.layout import DeltaOptions, Footnotes, build_blocks
from percli.report.plot import plot_loss_curves
from percli.report.render import legend, render_csv, render_markdown, render_tex, run_lines
from percli.report.select import build_cells, select


def build_table(runs: str | Path, out_dir: str | Path, metrics: list[str], *, baseline_loss: str = "ce",
                select_metric: str = "meteor", select_split: str = "val", report_split: str = "test",
                confidence: float = 0.95, resamples: int = 20_000, seed: int = 0,
                plots: bool = True) -> dict[str, Path]:
    """Scan `runs`, write table.md/.csv/.tex (and loss_curves.png) into `out_dir`; return the written paths."""
    evaluations, skipped = collect(find_run_dirs(runs))
    if not evaluations:
        raise DataError(f"no train or eval run dirs found under table.runs={runs}; point it at a sweep dir, "
                        "a run dir or a glob such as 'outputs/train/multiruns/*'")
    selections, _ = select(evaluations, select_split, select_metric)
    cells = build_cells(evaluations, selections, report_split)
    notes = Footnotes()
    blocks = build_blocks(cells, selections, list(metrics), notes,
                          DeltaOptions(baseline_loss, confidence, resamples, seed))
    for text in skipped:
        notes.mark(text)
    lines = legend(select_split, report_split, select_metric, baseline_loss, confidence)
    out = Path(out_dir)
    written = {
        "md": atomic_write_text(out / "table.md", render_markdown(blocks, notes, lines,
                                                                  run_lines(selections, select_metric, select_split))),
        "csv": atomic_write_text(out / "table.csv", render_csv(blocks, notes)),
        "tex": atomic_write_text(out / "table.tex", render_tex(blocks, notes, lines)),
    }
    if plots:
        sources = list({id(e.source): e.source for e in evaluations if e.source.run_dir is not None}.values())
        selected = {s.run_dir for sel in selections.values() for s in sel.sources}
        png = plot_loss_curves(sources, selected, out / "loss_curves.png")
        if png is not None:
            written["png"] = png
    return written


def run(cfg: DictConfig, run_dir: Path) -> None:
    t = cfg.table
    written = build_table(t.runs, t.out_dir, list(t.metrics), baseline_loss=t.baseline_loss,
                          select_metric=t.select_metric, select_split=t.select_split, report_split=t.report_split,
                          confidence=float(t.confidence), resamples=int(t.resamples), seed=int(cfg.seed),
                          plots=t.plots)
    result(Path(written["md"]).read_text(encoding="utf-8") + "\nwrote " + ", ".join(str(p) for p in written.values())
           + f" (from table.runs={t.runs})")
