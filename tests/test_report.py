"""`percli table` on hand-written run dirs: exact table contents, hand-computed gains, failures as footnotes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from percli.config import validate
from percli.errors import ConfigError, DataError
from percli.preflight import compose_config
from percli.report import build_table, find_run_dirs, run


def make_run(run_dir: Path, command: str, *, model: str = "smollm2-135m", task: str = "review",
             loss: str | None = "ce", lr: float = 1e-5, status: dict | None = None, metrics: dict | None = None,
             model_path: str | None = None, log: list[dict] | None = None, setting: str = "user") -> Path:
    """A run dir as the CLI leaves it: config.yaml (resolved), status.json, metrics.json, train_log.jsonl."""
    run_dir.mkdir(parents=True)
    cfg = {"command": command, "model": {"name": model, "path": model_path},
           "task": {"name": task, "setting": setting}, "eval": {"split": "test"}}
    if command == "train":
        cfg |= {"loss": {"name": loss}, "train": {"lr": lr}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    if status is not None:
        (run_dir / "status.json").write_text(json.dumps(status))
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    if log is not None:
        (run_dir / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return run_dir


OK = {"status": "ok"}
LOG = [{"step": 1, "loss": 3.0, "ce_loss": 2.5}, {"step": 2, "loss": 2.0, "ce_loss": 1.5}]


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    s = tmp_path / "sweep"
    make_run(s / "0", "train", loss="ce", status=OK, log=LOG,
             metrics={"rouge1": 0.40, "rougeL": 0.20, "meteor": 0.20, "planted_recall": 0.10, "split": "test"})
    make_run(s / "1", "train", loss="perce", status=OK, log=LOG,
             metrics={"rouge1": 0.42, "rougeL": 0.21, "meteor": 0.25, "planted_recall": 0.30})
    # Higher ROUGE-1 but lower METEOR than job 1: the selection rule (best METEOR) must skip it.
    make_run(s / "2", "train", loss="perce", lr=2e-5, status=OK, log=LOG,
             metrics={"rouge1": 0.50, "rougeL": 0.30, "meteor": 0.24, "planted_recall": 0.50})
    make_run(s / "3", "train", loss="ce", task="abstract", status=OK,
             metrics={"rouge1": 0.30, "rougeL": 0.15, "meteor": 0.16})
    make_run(s / "4", "train", loss="perce", task="abstract",
             status={"status": "failed", "exit_code": 1, "error": "DataError: data.path=/nope does not exist"})
    # Cross-task transfer: the review checkpoints of jobs 0 and 1 evaluated on topic.
    make_run(s / "5", "eval", task="topic", model_path=str(s / "0" / "checkpoints" / "final"), status=OK,
             metrics={"rouge1": 0.20, "rougeL": 0.10, "meteor": 0.12})
    make_run(s / "6", "eval", task="topic", model_path=str(s / "1" / "checkpoints" / "final"), status=OK,
             metrics={"rouge1": 0.22, "rougeL": 0.11, "meteor": 0.15})
    # Zero-shot base model, and a table run that must be ignored.
    make_run(s / "7", "eval", model="smollm2-135m", status=OK, metrics={"rouge1": 0.30, "rougeL": 0.10, "meteor": 0.10})
    make_run(s / "8", "table", status=OK)
    # Hydra's own copy and checkpoints are never scanned as runs.
    (s / "0" / ".hydra").mkdir()
    (s / "0" / ".hydra" / "config.yaml").write_text("command: train\n")
    (s / "0" / "checkpoints" / "final").mkdir(parents=True)
    return s


def table_cfg(runs: Path | str, out: Path, *extra: str):
    cfg = compose_config("table", [f"table.runs={runs}", f"table.out_dir={out}", *extra])
    validate(cfg)
    return cfg


EXPECTED_MD = """\
# Results

## In-task results

| Model | Loss | Review ROUGE-1 | Review ROUGE-L | Review METEOR | Review Planted recall | Abstract ROUGE-1 | Abstract ROUGE-L | Abstract METEOR |
|---|---|---:|---:|---:|---:|---:|---:|---:|
| smollm2-135m | base (no FT) | 30.00 | 10.00 | 10.00 | –[1] | –[2] | –[2] | –[2] |
| smollm2-135m | CE | 40.00 | 20.00 | 20.00 | 10.00 | 30.00 | 15.00 | 16.00 |
| smollm2-135m | PerCE | 42.00 (+5.00%) | 21.00 (+5.00%) | 25.00 (+25.00%) | 30.00 (+200.00%) | –[3] | –[3] | –[3] |

## Cross-task transfer (rows: trained on; columns: evaluated on)

| Model | Loss | Trained on | Topic ROUGE-1 | Topic ROUGE-L | Topic METEOR |
|---|---|---|---:|---:|---:|
| smollm2-135m | CE | Review | 20.00 | 10.00 | 12.00 |
| smollm2-135m | PerCE | Review | 22.00 (+10.00%) | 11.00 (+10.00%) | 15.00 (+25.00%) |
"""


def test_table_layout_gains_selection_and_failure_notes(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    run(table_cfg(sweep, out), tmp_path / "table_run")
    md = (out / "table.md").read_text()
    assert md.startswith(EXPECTED_MD), md
    notes = md[len(EXPECTED_MD):]
    assert f"[1] run {sweep / '7'}: metrics.json has no 'planted_recall'" in notes
    assert "[2] no run found for this cell" in notes
    assert f"[3] run {sweep / '4'} failed: DataError: data.path=/nope does not exist" in notes
    assert "this is model selection on the test split, so the numbers are optimistic" in notes
    # Both lrs are listed for the PerCE review cell, the lower-METEOR one not selected.
    assert (f"smollm2-135m / PerCE / Review: lr=1e-05 (selected, METEOR 25.00) {sweep / '1'}; "
            f"lr=2e-05 (METEOR 24.00) {sweep / '2'}") in notes
    assert f"smollm2-135m / base (no FT) / Review: zero-shot (selected, METEOR 10.00) {sweep / '7'}" in notes
    assert f"smollm2-135m / CE / Review -> Topic: lr=1e-05 (selected, METEOR 12.00) {sweep / '5'}" in notes


def test_csv_and_tex(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    written = build_table(sweep, out, ["rouge1", "rougeL", "meteor"])
    assert set(written) == {"md", "csv", "tex", "png"}
    rows = (out / "table.csv").read_text().splitlines()
    assert rows[0] == ("block,model,loss,trained_on,Review/rouge1,Review/rouge1/gain_pct,Review/rougeL,"
                       "Review/rougeL/gain_pct,Review/meteor,Review/meteor/gain_pct,Review/planted_recall,"
                       "Review/planted_recall/gain_pct,Abstract/rouge1,Abstract/rouge1/gain_pct,Abstract/rougeL,"
                       "Abstract/rougeL/gain_pct,Abstract/meteor,Abstract/meteor/gain_pct,Topic/rouge1,"
                       "Topic/rouge1/gain_pct,Topic/rougeL,Topic/rougeL/gain_pct,Topic/meteor,Topic/meteor/gain_pct,"
                       "notes")
    assert rows[3] == ("in-task,smollm2-135m,perce,,42.0000,5.0000,21.0000,5.0000,25.0000,25.0000,30.0000,200.0000,"
                       ",,,,,,,,,,,,Abstract: run " + str(sweep / "4") + " failed: DataError: data.path=/nope "
                       "does not exist")
    assert rows[5] == "transfer,smollm2-135m,perce,Review,,,,,,,,,,,,,,,22.0000,10.0000,11.0000,10.0000,15.0000,25.0000,"
    tex = (out / "table.tex").read_text()
    assert ("smollm2-135m & PerCE & 42.00 {\\scriptsize(+5.00\\%)} & 21.00 {\\scriptsize(+5.00\\%)} & "
            "25.00 {\\scriptsize(+25.00\\%)} & 30.00 {\\scriptsize(+200.00\\%)} & --$^{3}$ & --$^{3}$ & --$^{3}$ \\\\") in tex
    assert "\\multicolumn{4}{c}{Review} & \\multicolumn{3}{c}{Abstract}" in tex
    assert "data.path=/nope" in tex and "\\_" not in "smollm2-135m"
    png = out / "loss_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_glob_missing_metrics_running_and_split_filter(tmp_path: Path) -> None:
    make_run(tmp_path / "a" / "run1", "train", loss="ce", status=OK,
             metrics={"rouge1": 0.5, "rougeL": 0.25, "meteor": 0.2})
    make_run(tmp_path / "a" / "run0", "train", loss="ce", lr=5e-5,                  # a failed lr of the sweep
             status={"status": "failed", "error": "RuntimeError: loss is nan at step 3"})
    make_run(tmp_path / "a" / "run2", "train", loss="perce", status=OK)            # eval.after_train=false
    make_run(tmp_path / "b" / "run3", "train", loss="lossce")                       # no status.json yet
    make_run(tmp_path / "c" / "run4", "train", loss="entce", status=OK,
             metrics={"rouge1": 0.6, "rougeL": 0.3, "meteor": 0.3, "split": "val"})
    assert find_run_dirs(tmp_path / "*") == [tmp_path / d for d in ("a/run0", "a/run1", "a/run2", "b/run3", "c/run4")]
    out = tmp_path / "results"
    build_table(str(tmp_path / "[ab]"), out, ["meteor"], plots=False)
    md = (out / "table.md").read_text()
    assert "| smollm2-135m | CE | 20.00 [1] |" in md
    assert "| smollm2-135m | PerCE | –[2] |" in md and "| smollm2-135m | LossCE | –[3] |" in md
    assert (f"[1] run {tmp_path / 'a/run0'} failed: RuntimeError: loss is nan at step 3; the cell shows run "
            f"{tmp_path / 'a/run1'}") in md
    assert f"[2] run {tmp_path / 'a/run2'} finished without metrics.json (eval.after_train=false?)" in md
    assert f"[3] run {tmp_path / 'b/run3'} no status.json: still running, or killed before it finished" in md
    assert not (out / "loss_curves.png").exists()
    build_table(tmp_path, out, ["meteor"], split="test", plots=False)
    md = (out / "table.md").read_text()
    assert f"{tmp_path / 'c/run4'}: evaluated on split 'val', not table.split='test'; ignored" in md
    assert "EntCE" not in md


def test_no_runs_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no train or eval run dirs found under table.runs="):
        build_table(tmp_path, tmp_path / "results", ["meteor"])


def test_table_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="table.select_metric='bleu' is out of range"):
        table_cfg(tmp_path, tmp_path, "table.select_metric=bleu")
