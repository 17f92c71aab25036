"""scripts/study.py: per-seed selection on val, the controls' lr, what a rerun skips, and the report's deltas."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
IDS = [f"review-test-u{u:03d}-0" for u in range(72, 80)]


@pytest.fixture(scope="module")
def study() -> SimpleNamespace:
    return SimpleNamespace(**runpy.run_path(str(REPO / "scripts" / "study.py")))


def fake_run(results: Path, name: str, meteor: float, *, scores: list[float] | None = None,
             weights: list[float] | None = None) -> None:
    """A finished run as the study keeps it: metrics.json, and scores.jsonl / train_log.jsonl when given."""
    d = results / name
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"meteor": meteor, "rouge1": meteor}))
    if scores is not None:
        (d / "scores.jsonl").write_text("".join(json.dumps({"id": i, "meteor": s, "rouge1": s}) + "\n"
                                                for i, s in zip(IDS, scores)))
    if weights is not None:
        (d / "train_log.jsonl").write_text("".join(
            json.dumps({"step": k, "weight_mean": w, "clip_low": 0.8, "clip_high": 0.02, "pir_mean": 0.3}) + "\n"
            for k, w in enumerate(weights, 1)))


def seed_done(study, results: Path, seed: int, *, controls: bool = True) -> None:
    """Seed `seed` finished: val METEOR peaks at lr 1e-4 for CE and at 5e-5 for PerCE (mean weight 1.2)."""
    base = [0.20 + 0.01 * k for k in range(len(IDS))]
    for lr, val in zip(study.LRS, (0.30, 0.35, 0.31)):
        fake_run(results, study.run_name("ce", lr, seed), val)
    for lr, val in zip(study.LRS, (0.40, 0.33, 0.32)):
        fake_run(results, study.run_name("perce", lr, seed), val, weights=[1.1, 1.3])
    fake_run(results, f"{study.run_name('ce', '1e-4', seed)}_test", 0.3, scores=base)
    # PerCE is exactly 2 METEOR points above CE on every test example
    fake_run(results, f"{study.run_name('perce', '5e-5', seed)}_test", 0.3, scores=[b + 0.02 for b in base])
    if controls:
        for name in ("ce-scaled_lr6e-05", "longce_lr5e-5"):
            fake_run(results, f"{name}_s{seed}", 0.3)
            fake_run(results, f"{name}_s{seed}_test", 0.3, scores=[b + 0.005 for b in base])


def test_selection_is_per_seed_on_val_and_the_control_lr_is_lr_times_the_mean_weight(study, tmp_path: Path) -> None:
    results = tmp_path / "results"
    seed_done(study, results, 0)
    s = study.Study(results, tmp_path / "work", True, [])
    assert s.selected_lr("ce", 0) == "1e-4" and s.selected_lr("perce", 0) == "5e-5"
    assert s.selected_lr("ce", 1) is None
    assert s.mean_weight(study.run_name("perce", "5e-5", 0)) == pytest.approx(1.2)
    assert s.test_run("ce-scaled", 0) == "ce-scaled_lr6e-05_s0_test"   # 5e-5 x 1.2
    assert s.test_run("longce", 0) == "longce_lr5e-5_s0_test"


def test_a_rerun_plans_only_what_is_missing(study, tmp_path: Path) -> None:
    results = tmp_path / "results"
    seed_done(study, results, 0)
    seed_done(study, results, 1, controls=False)
    s = study.Study(results, tmp_path / "work", True, [])
    for seed in study.SEEDS:
        s.run_seed(seed)
    # seed 1's controls lack their checkpoints too: the plan retrains the control before its test run
    assert s.planned[:4] == ["ce-scaled_lr6e-05_s1", "ce-scaled_lr6e-05_s1_test", "longce_lr5e-5_s1",
                             "longce_lr5e-5_s1_test"]
    grid = [study.run_name(loss, lr, 2) for lr in study.LRS for loss in ("ce", "perce")]   # CE/PerCE pairs first
    assert s.planned[4:] == [*grid, "ce_s2: test run of the lr selected on val",
                             "perce_s2: test run of the lr selected on val",
                             "controls of seed 2 (ce-scaled, longce at PerCE's selected lr)"]


def test_report_pools_the_paired_deltas_over_seeds(study, tmp_path: Path) -> None:
    results = tmp_path / "results"
    seed_done(study, results, 0)
    seed_done(study, results, 1)
    s = study.Study(results, tmp_path / "work", False, [])
    report = tmp_path / "study.md"
    study.write_report(s, report, tmp_path / "study_deltas.png")
    text = report.read_text()
    # a constant +0.02 per example and seed: delta +2.00 with a zero-width CI, +8.5% of CE's mean 0.235
    assert "**Answer so far: yes: METEOR +2.00 [+2.00, +2.00] (+8.5%)*, the 95% CI excludes 0.**" in text
    assert ("Status: INCOMPLETE: 16 of 24 train runs (each scored on val) and 8 of 12 test scorings are done."
            in text and "- controls of seed 2" in text)
    row = next(line for line in text.splitlines() if line.startswith("| PerCE - CE at lr x w |"))
    assert "| 2 | +1.50 [+1.50, +1.50] (+6.2%)* |" in row   # rouge1: 0.02 - 0.005 over the same examples
    assert (tmp_path / "study_deltas.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_process_is_logged_and_the_budget_counts_the_elapsed_span(study, tmp_path: Path, monkeypatch) -> None:
    results = tmp_path / "results"                     # not there yet: the first run's log row creates it
    s = study.Study(results, tmp_path / "work", False, [])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    s._percli("help", ["--help"])
    row = json.loads((results / "study_log.jsonl").read_text())
    assert (row["run"], row["command"], row["exit"], row["omp_num_threads"]) == ("help", "--help", 0, "1")
    # two overlapping runners: 10 + 8 min of process time in a 12-min span
    log = [{"run": "a", "command": "train", "seconds": 600.0, "exit": 0, "finished": "2026-12-02T01:10:00+00:00",
            "omp_num_threads": "1"},
           {"run": "b", "command": "eval", "seconds": 480.0, "exit": 0, "finished": "2026-12-02T01:12:00+00:00",
            "omp_num_threads": "1"}]
    (results / "study_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    assert study.budget(s)[:3] == [
        "Finished runs: 2 processes, 18 min of process wall time in all; 12 min elapsed from the first start to "
        "the last finish (2026-12-02T01:00+00:00 to 2026-12-02T01:12+00:00; torch threads per run "
        "(OMP_NUM_THREADS): 1).",
        "- train + val scoring: 1 runs, mean 600 s (min 600, max 600)",
        "- test scoring: 1 runs, mean 480 s"]
