"""A 2-job multirun on `tiny` where one job fails at run time: the other finishes, and the table shows both."""

from __future__ import annotations

import json
from pathlib import Path


def test_failed_sweep_job_is_recorded_and_the_table_still_builds(cli, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    # Job 1 (data.source=local without data.path) composes and validates, then fails when it loads data.
    result = cli("train", "-m", "debug=smoke", "data.source=synthetic,local", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 1, result.stderr
    assert "1 job(s) failed: job 1: data.source=local needs data.path=DIR" in result.stderr

    assert json.loads((sweep / "0" / "status.json").read_text()) == {"status": "ok"}
    failed = json.loads((sweep / "1" / "status.json").read_text())
    assert (failed["status"], failed["exit_code"]) == ("failed", 1)
    assert failed["error"].startswith("data.source=local needs data.path=DIR")
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    assert {"rouge1", "rougeL", "meteor"} <= set(metrics)

    results = tmp_path / "results"
    # The jobs differ in data.source, so they are two rows; their post-train scores are on val, shown here
    # with table.report_split=val (selection on the reported split, which the table labels).
    table = cli("table", f"table.runs={sweep}", f"table.out_dir={results}", "table.report_split=val")
    assert table.returncode == 0, table.stderr
    md = (results / "table.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| tiny | PerCE [data.source=synthetic] |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:5] == [f"{metrics[k] * 100:.2f}" for k in ("rouge1", "rougeL", "meteor")]
    assert "| tiny | PerCE [data.source=local] | –[1] | –[1] | –[1] |" in md
    assert (f"[1] run {sweep / '1'} failed: data.source=local needs data.path=DIR") in md
    assert "Selection ON THE VAL SPLIT (table.select_split=val)" in md
    assert (results / "table.csv").is_file() and (results / "table.tex").is_file()
