"""`percli table` on hand-written run dirs: selection on val, values on test, deltas with CIs, failures as notes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from percli.errors import ConfigError, DataError
from percli.preflight import compose_config
from percli.report.collect import collect, find_run_dirs
from percli.report.select import select
from percli.schema import validate
from percli.table import build_table, run

OK = {"status": "ok"}
LOG = [{"step": 1, "loss": 3.0, "ce_loss": 2.5}, {"step": 2, "loss": 2.0, "ce_loss": 1.5}]
IDS = ["e0", "e1", "e2", "e3"]
USERS = ["u0", "u0", "u1", "u1"]


def make_run(run_dir: Path, command: str, *, model: str = "smollm2-135m", task: str = "review",
             loss: str | None = "ce", lr: float = 1e-5, seed: int = 0, split: str = "val",
             status: dict | None = None, metrics: dict | None = None, model_path: str | None = None,
             log: list[dict] | None = None, setting: str = "user", scores: dict[str, list[float]] | None = None,
             extra: dict | None = None) -> Path:
    """A run dir as the CLI leaves it: config.yaml (resolved), status.json, metrics.json, scores.jsonl, train log.

    `scores` (metric -> per-example values over IDS) also fills metrics.json with their means.
    """
    run_dir.mkdir(parents=True)
    cfg = {"command": command, "seed": seed, "model": {"name": model, "path": model_path},
           "task": {"name": task, "setting": setting}, "eval": {"split": split}}
    if command == "train":
        cfg |= {"loss": {"name": loss}, "train": {"lr": lr}}
    for key, value in (extra or {}).items():
        section, leaf = key.split(".")
        cfg.setdefault(section, {})[leaf] = value
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    if status is not None:
        (run_dir / "status.json").write_text(json.dumps(status))
    if scores is not None:
        metrics = {m: sum(v) / len(v) for m, v in scores.items()} | {"split": split}
        rows = [{"id": i, "user_id": u, **{m: v[n] for m, v in scores.items()}} for n, (i, u) in enumerate(zip(IDS, USERS))]
        (run_dir / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    if log is not None:
        (run_dir / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return run_dir


def flat(value: float) -> dict[str, list[float]]:
    return {"meteor": [value] * 4}


def train_and_test(root: Path, name: str, *, val: float, test: float | dict, **kw) -> Path:
    """A train run evaluated after training on val, and an eval run of its checkpoint on test."""
    train = make_run(root / "train" / name, "train", status=OK, scores=flat(val), log=LOG, **kw)
    make_run(root / "eval" / name, "eval", split="test", status=OK, seed=kw.get("seed", 0),
             model_path=str(train / "checkpoints" / "final"), task=kw.get("task", "review"),
             scores=test if isinstance(test, dict) else flat(test))
    return train


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    s = tmp_path / "sweep"
    # CE: lr 1e-5 is best on val (0.20 > 0.10), lr 2e-5 best on test (0.50): the table must show lr 1e-5.
    ce0 = train_and_test(s, "ce-1e-5-s0", loss="ce", val=0.20, test=0.20, seed=0)
    train_and_test(s, "ce-1e-5-s1", loss="ce", val=0.20, test=0.30, seed=1)
    train_and_test(s, "ce-2e-5-s0", loss="ce", lr=2e-5, val=0.10, test=0.50, seed=0)
    train_and_test(s, "ce-2e-5-s1", loss="ce", lr=2e-5, val=0.10, test=0.50, seed=1)
    # PerCE: +0.10 over CE with seed 0, +0.05 with seed 1, on every example.
    train_and_test(s, "perce-1e-5-s0", loss="perce", val=0.25, test=0.30, seed=0)
    train_and_test(s, "perce-1e-5-s1", loss="perce", val=0.25, test=0.35, seed=1)
    make_run(s / "train" / "perce-5e-5-s0", "train", loss="perce", lr=5e-5,
             status={"status": "failed", "exit_code": 1, "error": "RuntimeError: loss is nan at step 3"})
    # The CE review checkpoint of seed 0 evaluated on topic (cross-task transfer), and a zero-shot base model.
    make_run(s / "transfer" / "ce-s0-topic", "eval", task="topic", split="test", status=OK,
             model_path=str(ce0 / "checkpoints" / "final"), scores=flat(0.12))
    make_run(s / "base", "eval", split="test", status=OK, scores=flat(0.10))
    make_run(s / "table-run", "table", status=OK)
    (ce0 / ".hydra").mkdir()
    (ce0 / ".hydra" / "config.yaml").write_text("command: train\n")
    (ce0 / "checkpoints" / "final").mkdir(parents=True)
    return s


def table_cfg(runs: Path | str, out: Path, *extra: str):
    cfg = compose_config("table", [f"table.runs={runs}", f"table.out_dir={out}", "table.metrics=[meteor]", *extra])
    validate(cfg)
    return cfg


EXPECTED_MD = """\
# Results

## In-task results

| Model | Loss | Review METEOR |
|---|---|---:|
| smollm2-135m | base (no FT) | 10.00 |
| smollm2-135m | CE | 25.00 ± 7.07 |
| smollm2-135m | PerCE | 32.50 ± 3.54 [1] |

## In-task results: delta against CE

| Model | Loss | Review METEOR |
|---|---|---:|
| smollm2-135m | PerCE | +7.50 [+5.00, +10.00] t[-24.27, +39.27] (+30.0%) |

## Cross-task transfer (rows: trained on; columns: evaluated on)

| Model | Loss | Trained on | Topic METEOR |
|---|---|---|---:|
| smollm2-135m | CE | Review | 12.00 [2] |
"""


def test_selects_on_val_and_reports_test_with_pooled_deltas(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    run(table_cfg(sweep, out), tmp_path / "table_run")
    md = (out / "table.md").read_text()
    assert md.startswith(EXPECTED_MD), md
    rest = md[len(EXPECTED_MD):]
    assert (f"[1] run {sweep / 'train/perce-5e-5-s0'} failed: RuntimeError: loss is nan at step 3; the cell shows "
            f"run(s) {sweep / 'eval/perce-1e-5-s0'}, {sweep / 'eval/perce-1e-5-s1'}") in rest
    assert (f"[2] checkpoint {sweep / 'train/ce-1e-5-s1'} has no evaluation on split 'test' of topic/user; run "
            f"`percli eval model.path={sweep / 'train/ce-1e-5-s1'}/checkpoints/final task=topic task.setting=user "
            "eval.split=test` (make reproduce-table does); the cell shows run(s) "
            f"{sweep / 'transfer/ce-s0-topic'}") in rest
    assert ("Selection: each row keeps the lr with the best mean METEOR over seeds on the val split; its values "
            "are on the test split.") in rest
    assert (f"smollm2-135m / CE / Review: lr=1e-05 (selected, val METEOR 20.00, 2 seed(s)); lr=2e-05 (val METEOR "
            f"10.00, 2 seed(s)); {sweep / 'train/ce-1e-5-s0'}; {sweep / 'train/ce-1e-5-s1'}") in rest
    csv_rows = (out / "table.csv").read_text().splitlines()
    assert csv_rows[0] == ("block,model,loss,variant,trained_on,Review/meteor,Review/meteor/sd,Review/meteor/seeds,"
                           "Review/meteor/delta,Review/meteor/delta_low,Review/meteor/delta_high,"
                           "Review/meteor/rel_delta_pct,Review/meteor/p_value,Topic/meteor,Topic/meteor/sd,"
                           "Topic/meteor/seeds,Topic/meteor/delta,Topic/meteor/delta_low,Topic/meteor/delta_high,"
                           "Topic/meteor/rel_delta_pct,Topic/meteor/p_value,notes")
    assert csv_rows[2] == "in-task,smollm2-135m,ce,,,25.0000,7.0711,2,,,,,,,,,,,,,,"
    assert csv_rows[4].startswith("in-task-delta,smollm2-135m,perce,,,,,2,7.5000,5.0000,10.0000,30.0000,")
    tex = (out / "table.tex").read_text()
    assert "smollm2-135m & PerCE & +7.50 [+5.00, +10.00] t[-24.27, +39.27] (+30.0\\%) \\\\" in tex
    assert (out / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_selection_on_test_is_an_explicit_labelled_option(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    build_table(sweep, out, ["meteor"], select_split="test", plots=False)
    md = (out / "table.md").read_text()
    assert "| smollm2-135m | CE | 50.00 ± 0.00 |" in md   # the lr that is best on test
    assert "Selection ON THE TEST SPLIT (table.select_split=test)" in md and "optimistic" in md


def test_rows_are_keyed_by_every_differing_hyper_parameter(tmp_path: Path) -> None:
    s = tmp_path / "s"
    train_and_test(s, "ce", loss="ce", val=0.2, test=0.2, extra={"schedule.name": "online"})
    train_and_test(s, "perce-online", loss="perce", val=0.3, test=0.3, extra={"schedule.name": "online"})
    # Better on val, but a different schedule: its own row, never a candidate of the online row.
    train_and_test(s, "perce-periodic", loss="perce", val=0.9, test=0.1, extra={"schedule.name": "periodic"})
    evaluations, _ = collect(find_run_dirs(s))
    selections, _ = select(evaluations, "val", "meteor")
    assert sorted((r.loss, r.variant) for r in selections) == [
        ("ce", ()), ("perce", (("schedule.name", "online"),)), ("perce", (("schedule.name", "periodic"),))]
    build_table(s, tmp_path / "out", ["meteor"], plots=False)
    md = (tmp_path / "out" / "table.md").read_text()
    assert "| smollm2-135m | PerCE [schedule.name=online] | 30.00 |" in md
    assert "| smollm2-135m | PerCE [schedule.name=periodic] | 10.00 |" in md
    assert "| smollm2-135m | PerCE [schedule.name=online] | +10.00 [+10.00, +10.00] (+50.0%)* |" in md
    assert "| smollm2-135m | PerCE [schedule.name=periodic] | –[1] |" in md
    assert "[1] no single ce row with the same hyper-parameters outside loss.* (0 match)" in md


def test_missing_test_evaluation_failed_runs_and_unfinished_ones(tmp_path: Path) -> None:
    make_run(tmp_path / "a" / "run1", "train", loss="ce", status=OK, scores=flat(0.2))
    make_run(tmp_path / "a" / "run0", "train", loss="ce", lr=5e-5,                  # a failed lr of the sweep
             status={"status": "failed", "error": "RuntimeError: loss is nan at step 3"})
    make_run(tmp_path / "a" / "run2", "train", loss="perce", status=OK)            # eval.after_train=false
    make_run(tmp_path / "b" / "run3", "train", loss="lossce")                       # no status.json yet
    make_run(tmp_path / "c" / "run4", "train", loss="entce", status=OK, scores=flat(0.3))
    assert find_run_dirs(tmp_path / "*") == [tmp_path / d for d in ("a/run0", "a/run1", "a/run2", "b/run3", "c/run4")]
    out = tmp_path / "results"
    build_table(str(tmp_path / "[ab]"), out, ["meteor"], plots=False)
    md = (out / "table.md").read_text()
    assert "| smollm2-135m | CE | –[1] |" in md
    assert "| smollm2-135m | PerCE | –[2] |" in md and "| smollm2-135m | LossCE | –[3] |" in md
    assert (f"[1] run {tmp_path / 'a/run0'} failed: RuntimeError: loss is nan at step 3; checkpoint "
            f"{tmp_path / 'a/run1'} has no evaluation on split 'test' of review/user") in md
    assert f"run {tmp_path / 'a/run2'} finished without metrics.json (eval.after_train=false?)" in md
    assert f"[3] run {tmp_path / 'b/run3'} no status.json: still running, or killed before it finished" in md
    assert "EntCE" not in md


def test_no_runs_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no train or eval run dirs found under table.runs="):
        build_table(tmp_path, tmp_path / "results", ["meteor"])


def test_table_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="table.select_metric='bleu' is out of range"):
        table_cfg(tmp_path, tmp_path, "table.select_metric=bleu")
    with pytest.raises(ConfigError, match="table.confidence=1.5 is out of range"):
        table_cfg(tmp_path, tmp_path, "table.confidence=1.5")


def test_a_table_made_in_a_checkout_names_its_runs_relative_to_it(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A committed table must not carry the absolute paths of the machine that made it."""
    checkout = tmp_path / "checkout"
    train_and_test(checkout / "outputs" / "demo", "ce", val=0.2, test=0.3)
    monkeypatch.chdir(checkout)
    build_table(str(checkout / "outputs" / "demo"), "results", ["meteor"], plots=False)
    md = (checkout / "results" / "table.md").read_text()
    assert "smollm2-135m / CE / Review: lr=1e-05 (selected, val METEOR 20.00, 1 seed(s)); outputs/demo/train/ce\n" in md
    assert str(tmp_path) not in md
