"""loss_curves.png: one panel per (model, task), one line per train run; the runs the table shows in bold."""

from __future__ import annotations

import math
import os
import tempfile
from collections import defaultdict
from pathlib import Path

from percli.report.collect import Column, Source
from percli.report.layout import LOSS_ORDER, column_sort_key, rank
from percli.report.render import LOSS_NAMES, column_label


def plot_loss_curves(sources: list[Source], selected: set[Path], path: Path) -> Path | None:
    """Write the figure to `path` (atomically); None when no train run logged a curve."""
    runs = [s for s in sources if s.curve and s.run_dir is not None and (s.run_dir / "train_log.jsonl").is_file()]
    if not runs:
        return None
    # matplotlib is imported here: it costs a second, and `percli table table.plots=false` never needs it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[tuple[str, Column], list[Source]] = defaultdict(list)
    for s in runs:
        panels[(s.model, s.trained_on)].append(s)
    keys = sorted(panels, key=lambda k: (k[0], column_sort_key(k[1])))
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.6 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for s in sorted(panels[key], key=lambda s: (rank(s.loss, LOSS_ORDER), s.lr or 0, str(s.run_dir))):
            steps, losses = zip(*s.curve)
            bold = s.run_dir in selected
            ax.plot(steps, losses, linewidth=2.0 if bold else 0.8, alpha=1.0 if bold else 0.6,
                    label=f"{LOSS_NAMES.get(s.loss, s.loss)} lr={s.lr}{' *' if bold else ''}")
        ax.set_title(f"{key[0]} / {column_label(key[1])}")
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
