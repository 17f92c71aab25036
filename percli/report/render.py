"""The table as markdown, csv and LaTeX (booktabs), from layout blocks; plus its legend and run list."""

from __future__ import annotations

import csv
import io

from percli.losses import LOSSES
from percli.names import SCORE_KEYS
from percli.report.collect import Column
from percli.report.layout import LOSS_ORDER, Block, Entry, Footnotes, rank
from percli.report.select import RowKey, Selection
from percli.statistics import format_delta

LOSS_NAMES = {"base": "base (no FT)", **{name: loss.label for name, loss in LOSSES.items()}}
METRIC_NAMES = dict(zip(SCORE_KEYS, ("ROUGE-1", "ROUGE-2", "ROUGE-L", "ROUGE-Lsum", "METEOR", "Planted recall"),
                        strict=True))
DASH = "–"


def column_label(c: Column) -> str:
    name = c.task.capitalize()
    return name if c.setting == "user" else f"{name} ({c.setting})"


def loss_label(row: RowKey) -> str:
    name = LOSS_NAMES.get(row.loss, row.loss)
    return name + (" [" + ", ".join(f"{k}={v}" for k, v in row.variant) + "]" if row.variant else "")


def metric_label(m: str) -> str:
    return METRIC_NAMES.get(m, m)


def _fmt(entry: Entry, tex: bool = False) -> str:
    if entry.diagonal:
        return "$\\cdot$" if tex else "·"
    if entry.delta is not None:
        text = format_delta(entry.delta)
        return text.replace("%", "\\%").replace("*", "$^{*}$") if tex else text
    if entry.value is None:
        return f"--$^{{{entry.note}}}$" if tex else f"{DASH}[{entry.note}]"
    text = f"{entry.value:.2f}"
    if entry.spread is not None:
        text += f" $\\pm$ {entry.spread:.2f}" if tex else f" ± {entry.spread:.2f}"
    if entry.note is not None:
        text += f"$^{{{entry.note}}}$" if tex else f" [{entry.note}]"
    return text


def _lead(block: Block, row: RowKey) -> list[str]:
    return [row.model, loss_label(row)] + ([column_label(row.trained_on)] if block.transfer else [])


def render_markdown(blocks: list[Block], notes: Footnotes, legend: list[str], runs: list[str]) -> str:
    out = ["# Results", ""]
    for block in blocks:
        out += [f"## {block.title}", ""]
        head = ["Model", "Loss"] + (["Trained on"] if block.transfer else [])
        head += [f"{column_label(c)} {metric_label(m)}" for c in block.columns for m in block.metrics[c]]
        lead = 2 + block.transfer
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(["---"] * lead + ["---:"] * (len(head) - lead)) + "|")
        for i, row in enumerate(block.rows):
            cells = _lead(block, row) + [_fmt(block.entries[(i, c, m)]) for c in block.columns
                                         for m in block.metrics[c]]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    out += legend + [""]
    if notes.texts:
        out += ["Notes:", ""] + [f"[{i}] {t}  " for i, t in enumerate(notes.texts, 1)] + [""]
    if runs:
        out += ["Runs (selected = shown in the table):", ""] + [f"- {r}" for r in runs] + [""]
    return "\n".join(out)


def render_csv(blocks: list[Block], notes: Footnotes) -> str:
    """One row per table row; values x100 (mean over seeds), deltas x100 with their CI and the relative
    delta in %; empty where the table shows a dash (see notes)."""
    columns = []
    for block in blocks:
        for c in block.columns:
            for m in block.metrics[c]:
                if (c, m) not in columns:
                    columns.append((c, m))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["block", "model", "loss", "variant", "trained_on"]
    for c, m in columns:
        name = f"{column_label(c)}/{m}"
        header += [name, f"{name}/sd", f"{name}/seeds", f"{name}/delta", f"{name}/delta_low", f"{name}/delta_high",
                   f"{name}/rel_delta_pct", f"{name}/p_value"]
    writer.writerow(header + ["notes"])
    for block in blocks:
        kind = ("transfer" if block.transfer else "in-task") + ("-delta" if block.deltas else "")
        for i, row in enumerate(block.rows):
            line = [kind, row.model, row.loss, " ".join(f"{k}={v}" for k, v in row.variant),
                    column_label(row.trained_on) if row.trained_on and block.transfer else ""]
            row_notes = []
            for c, m in columns:
                e = block.entries.get((i, c, m))
                line += _csv_fields(e)
                if e is not None and e.note is not None:
                    row_notes.append(f"{column_label(c)}: {notes.texts[e.note - 1]}")
            writer.writerow(line + [" | ".join(dict.fromkeys(row_notes))])
    return buf.getvalue()


def _csv_fields(e: Entry | None) -> list[str]:
    def num(x: float | None, scale: float = 1.0) -> str:
        return "" if x is None else f"{x * scale:.4f}"

    if e is None or e.diagonal:
        return [""] * 8
    if e.delta is not None:
        d = e.delta
        return ["", "", str(e.seeds), num(d.delta, 100), num(d.ci_low, 100), num(d.ci_high, 100),
                num(d.rel_delta, 100), f"{d.p_value:.4g}"]
    return [num(e.value), num(e.spread), str(e.seeds) if e.value is not None else ""] + [""] * 5


def _tex_escape(text: str) -> str:
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", DASH: "--",
            "·": r"$\cdot$", "±": r"$\pm$"}
    return "".join(repl.get(ch, ch) for ch in text)


def render_tex(blocks: list[Block], notes: Footnotes, legend: list[str]) -> str:
    """A booktabs table fragment for \\input{} (needs \\usepackage{booktabs})."""
    out = ["% Generated by `percli table`. Needs \\usepackage{booktabs}.", "\\begin{table}[t]", "\\centering",
           "\\small"]
    for block in blocks:
        lead = 3 if block.transfer else 2
        widths = [len(block.metrics[c]) for c in block.columns]
        out.append(f"\\textbf{{{_tex_escape(block.title)}}}\\par")
        out.append(f"\\begin{{tabular}}{{{'l' * lead}{''.join('c' * w for w in widths)}}}")
        out.append("\\toprule")
        groups, rules, start = [], [], lead + 1
        for c, w in zip(block.columns, widths):
            groups.append(f"\\multicolumn{{{w}}}{{c}}{{{_tex_escape(column_label(c))}}}")
            rules.append(f"\\cmidrule(lr){{{start}-{start + w - 1}}}")
            start += w
        out.append(" & " * lead + " & ".join(groups) + " \\\\")
        out.append("".join(rules))
        head = ["Model", "Loss"] + (["Trained on"] if block.transfer else [])
        head += [_tex_escape(metric_label(m)) for c in block.columns for m in block.metrics[c]]
        out += [" & ".join(head) + " \\\\", "\\midrule"]
        for i, row in enumerate(block.rows):
            cells = [_tex_escape(x) for x in _lead(block, row)]
            cells += [_fmt(block.entries[(i, c, m)], tex=True) for c in block.columns for m in block.metrics[c]]
            out.append(" & ".join(cells) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}", "\\par\\medskip"]
    out.append("\\footnotesize " + _tex_escape(" ".join(legend)))
    for i, text in enumerate(notes.texts, 1):
        out.append(f"\\par $^{{{i}}}$ {_tex_escape(text)}")
    out += ["\\end{table}", ""]
    return "\n".join(out)


def legend(select_split: str, report_split: str, select_metric: str, baseline_loss: str, confidence: float) -> list[str]:
    metric = metric_label(select_metric)
    if select_split == report_split:
        selection = (f"Selection ON THE {report_split.upper()} SPLIT (table.select_split={select_split}): each row "
                     f"keeps the lr with the best mean {metric} on the split it reports, so the numbers are "
                     "optimistic, not estimates on unseen data.")
    else:
        selection = (f"Selection: each row keeps the lr with the best mean {metric} over seeds on the "
                     f"{select_split} split; its values are on the {report_split} split.")
    base = LOSS_NAMES.get(baseline_loss, baseline_loss)
    return [
        f"Values: scores x100 on the {report_split} split, mean over seeds (± sd over seeds when there are "
        "several). Rows differ in the loss and in any hyper-parameter shown in brackets.",
        selection,
        f"Deltas: other - {base} of the same model, trained-on task and hyper-parameters outside the loss, x100, "
        f"with the {confidence:.0%} CI of a paired bootstrap (seeds, then users), t[...] the t-interval over the "
        "per-seed paired means (2+ seeds), and the relative delta; * = every interval shown excludes 0.",
        f"{DASH}[n]: no result for this cell, see note n; a value with [n]: some runs of the cell failed, "
        "see note n. ·: in-task cell (see the in-task block).",
    ]


def run_lines(selections: dict[RowKey, Selection], select_metric: str, select_split: str) -> list[str]:
    """One line per row: each lr with its selection score and seeds, the selected one marked."""
    lines = []
    order = sorted(selections, key=lambda r: (r.model, rank(r.loss, LOSS_ORDER), r.trained_on.task
                                              if r.trained_on else "", r.variant))
    for row in order:
        sel = selections[row]
        where = column_label(row.trained_on) if row.trained_on else "zero-shot"
        if row.loss == "base":
            parts = [f"{len(sel.sources)} run(s)"]
        else:
            parts = []
            for lr, (score, n) in sorted(sel.by_lr.items(), key=lambda kv: kv[0] or 0):
                tag = "selected, " if lr == sel.lr and sel.sources else ""
                score_text = f"{score * 100:.2f}" if score is not None else "n/a"
                parts.append(f"lr={lr} ({tag}{select_split} {metric_label(select_metric)} {score_text}, {n} seed(s))")
            parts += [str(s.run_dir) for s in sel.sources]
        lines.append(f"{row.model} / {loss_label(row)} / {where}: " + "; ".join(parts))
    return lines
