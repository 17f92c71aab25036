"""scripts/study.py: the MDE arithmetic, the lr pilot (percli table's selection rule, grid extension), the
seed-major plan, what a rerun skips, and the report's pooled deltas, intervals and mechanism table."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_report import OK, make_run

from percli import statistics
from percli.report.collect import collect, find_run_dirs
from percli.report.select import select
from percli.statistics import variance_components

REPO = Path(__file__).resolve().parents[1]
IDS = [f"review-test-u{u:03d}-0" for u in range(112, 120)]
# lr -> val METEOR of pilot seeds 0 and 1. Per seed the best lr differs (seed 0: 1e-4, seed 1: 4e-4); the mean
# over seeds (percli table's rule) picks 2e-4, which is interior, so the pilot stops there.
VAL = {1e-4: (0.40, 0.10), 2e-4: (0.31, 0.31), 4e-4: (0.05, 0.35)}


@pytest.fixture(scope="module")
def study() -> SimpleNamespace:
    return SimpleNamespace(**runpy.run_path(str(REPO / "scripts" / "study.py")))


def fake_run(results: Path, name: str, meteor: float, *, scores: list[float] | None = None,
             log: list[dict] | None = None) -> None:
    """A finished run as the study keeps it: metrics.json, and scores.jsonl / train_log.jsonl when given."""
    d = results / name
    d.mkdir(parents=True)
    metrics = {"meteor": meteor, "rouge1": meteor}
    if scores is not None:
        (d / "scores.jsonl").write_text("".join(json.dumps({"id": i, "meteor": s, "rouge1": s}) + "\n"
                                                for i, s in zip(IDS, scores)))
        metrics |= {"meteor": sum(scores) / len(scores), "rouge1": sum(scores) / len(scores)}
    (d / "metrics.json").write_text(json.dumps(metrics))
    if log is not None:
        (d / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))


LOG = [{"step": 1, "planted_token_share": 0.07, "planted_weight_mass": 0.20, "planted_weight_mean": 3.0,
        "other_weight_mean": 0.95, "planted_pir_mean": 3.6, "other_pir_mean": 0.1, "clip_low": 0.85, "clip_high": 0.03},
       {"step": 2, "planted_token_share": 0.09, "planted_weight_mass": 0.22, "planted_weight_mean": 3.2,
        "other_weight_mean": 0.93, "planted_pir_mean": 3.8, "other_pir_mean": 0.3, "clip_low": 0.90, "clip_high": 0.04}]


def probe_summary(first_pir: float, auc: float = 0.9) -> dict:
    """A contrast_summary.json as a probe keeps it: the planted AUC and weight_shares (first-token PIR varies)."""
    groups = [("first token of a name", first_pir, -7.0, 0.0, 0.08), ("later tokens of a name", 3.5, -4.0, 0.0, 0.17),
              ("token before a name", 0.0, -0.1, 0.0, 0.02), ("PIR in (-inf, -0.50)", -1.0, -3.0, 0.05, 0.04),
              ("PIR in [-0.50, 0.50)", 0.0, -0.5, 0.80, 0.65), ("PIR in [0.50, 1.61)", 0.9, -2.0, 0.04, 0.03),
              ("PIR in [1.61, inf)", 3.0, -5.0, 0.01, 0.01)]
    return {"planted": {"auc": auc}, "weight_shares": [
        {"group": g, "pir_mean": pir, "logp_free_mean": free, "token_share": share, "weight_share": weight}
        for g, pir, free, share, weight in groups]}


def fake_probe(results: Path, name: str, summary: dict) -> None:
    (results / name).mkdir(parents=True)
    (results / name / "contrast_summary.json").write_text(json.dumps(summary))


def base_scores(seed: int) -> list[float]:
    return [0.20 + 0.01 * k + 0.003 * seed for k in range(len(IDS))]


def pilot_done(study, results: Path, arm: str, shift: float | list[list[float]] = 0.0) -> None:
    """`arm`'s pilot on VAL, its pilot seeds' test runs at 2e-4 (per-example test scores + `shift`: one number,
    or one per seed and example) and their probes (first-token PIR 2 + seed)."""
    for lr, vals in VAL.items():
        for seed, val in zip(study.PILOT_SEEDS, vals):
            fake_run(results, study.run_name(arm, lr, seed), val, log=LOG)
    for seed in study.PILOT_SEEDS:
        add = shift[seed] if isinstance(shift, list) else [shift] * len(IDS)
        fake_run(results, f"{study.run_name(arm, 2e-4, seed)}_test", 0.0,
                 scores=[b + a for b, a in zip(base_scores(seed), add)])
        fake_probe(results, f"{study.run_name(arm, 2e-4, seed)}_probe", probe_summary(2.0 + seed))


def test_the_mde_arithmetic(study) -> None:
    """v1 (3 seeds x 48 users, normal quantiles): 2.80 x sqrt(3.61/3 + 12.25/48 + 118.81/144) = 4.23 points (the
    review's 'about 4.3'); at 144 users the t-quantile rule needs 10 seeds for 10% of 23.9 = 2.39."""
    assert study.mde(3, 48, t_quantiles=False) == pytest.approx(4.234, abs=1e-3)
    assert study.seeds_needed(2.39) == 10 and study.mde(9) > 2.39 >= study.mde(10)
    assert study.mde(12) == pytest.approx(3.0770 * 0.67430, abs=2e-3)
    assert study.SEEDS["ce"] == study.SEEDS["perce"] >= 10 and min(study.SEEDS.values()) >= 6


def test_study_and_percli_table_pick_the_same_lr(study, tmp_path: Path) -> None:
    results = tmp_path / "results"
    pilot_done(study, results, "ce")
    s = study.Study(results, tmp_path / "work", True, [])
    assert s.selected_lr("ce") == 2e-4
    # The same val scores as percli table reads them: one train run per (lr, seed), evaluated on val.
    sweep = tmp_path / "sweep"
    for lr, vals in VAL.items():
        for seed, val in zip(study.PILOT_SEEDS, vals):
            make_run(sweep / f"ce-{lr}-s{seed}", "train", loss="ce", lr=lr, seed=seed, status=OK,
                     scores={"meteor": [val] * 4})
    evaluations, _ = collect(find_run_dirs(sweep))
    (selection,) = select(evaluations, "val", "meteor")[0].values()
    assert selection.lr == 2e-4


def test_the_pilot_extends_the_grid_until_the_selected_lr_is_interior(study, tmp_path: Path) -> None:
    results = tmp_path / "results"
    for lr, val in zip(study.START_LRS, (0.1, 0.2, 0.3)):      # best at the top of the grid
        for seed in study.PILOT_SEEDS:
            fake_run(results, study.run_name("ce", lr, seed), val)
    s = study.Study(results, tmp_path / "work", True, [])
    assert s.selected_lr("ce") is None and s.pilot("ce") is None
    assert s.planned == ["ce_lr0.0008_s0"]
    for seed in study.PILOT_SEEDS:
        fake_run(results, study.run_name("ce", 8e-4, seed), 0.25)
    s = study.Study(results, tmp_path / "work", True, [])
    assert s.grid("ce") == [1e-4, 2e-4, 4e-4, 8e-4] and s.selected_lr("ce") == 4e-4
    # its pilot seeds' checkpoints at the selected lr are gone: retrained once each, then scored on test and probed
    assert s.pilot("ce") == 4e-4 and s.planned == ["ce_lr0.0004_s0 (retrain for its checkpoint)",
                                                    "ce_lr0.0004_s0_test", "ce_lr0.0004_s0_probe",
                                                    "ce_lr0.0004_s1 (retrain for its checkpoint)",
                                                    "ce_lr0.0004_s1_test", "ce_lr0.0004_s1_probe"]


def test_the_plan_is_pilot_first_then_seed_major(study, tmp_path: Path) -> None:
    results = tmp_path / "results"
    for arm in study.ARMS:
        pilot_done(study, results, arm)
    s = study.Study(results, tmp_path / "work", True, [])
    study.run_study(s, list(range(max(study.SEEDS.values()))), tmp_path / "study.md")
    assert s.planned.pop(0) == "untrained_probe"     # the probe of the untrained model comes first
    # every pilot is done: seed 2 of every arm, then seed 3, ...; arms with 6 seeds stop after seed 5
    assert s.planned[:7] == [f"{arm}_lr0.0002_s2_test" for arm in study.ARMS] + ["ce_lr0.0002_s3_test"]
    assert s.planned[-2:] == ["ce_lr0.0002_s11_test", "perce_lr0.0002_s11_test"]
    assert len(s.planned) == sum(n - len(study.PILOT_SEEDS) for n in study.SEEDS.values())


def test_report_pools_the_paired_deltas_with_both_intervals(study, tmp_path: Path) -> None:
    results = tmp_path / "results"
    pilot_done(study, results, "ce")
    pilot_done(study, results, "perce", shift=0.02)
    s = study.Study(results, tmp_path / "work", False, [])
    report = tmp_path / "study.md"
    study.write_report(s, report)
    text = report.read_text()
    # +0.02 on every example of both seeds: a zero-width bootstrap CI and a zero-width t-interval
    assert "**Answer so far: yes: METEOR +2.00 [+2.00, +2.00] t[+2.00, +2.00] (+8.5%)* over 2 seeds;" in text
    row = next(line for line in text.splitlines() if line.startswith("| PerCE - CE |"))
    assert "| 2 | +2.00 [+2.00, +2.00] t[+2.00, +2.00] (+8.5%)* |" in row
    assert "p_Holm=0.0078† |" in row          # rouge1, the one secondary metric here: both intervals exclude 0
    mech = next(line for line in text.splitlines() if line.startswith("| PerCE | 2 |"))
    assert mech.startswith("| PerCE | 2 | 8.0% | 21.0% | 3.100 | 0.940 | 3.700 | 0.200 | 87.5% | 3.5% |")
    # the probes: PerCE's two seeds (first-token PIR 2 and 3) average to 2.50; the untrained model is not run yet
    probe = [line for line in text.splitlines() if line.startswith("| PerCE | 2 | 0.900 |")]
    assert probe == ["| PerCE | 2 | 0.900 | 2.50 (-7.00), 8.0% | 3.50, 17.0% | 0.00, 2.0% | -1.00, 5.0%, 4.0% | "
                     "0.00, 80.0%, 65.0% | 0.90, 4.0%, 3.0% | 3.00, 1.0%, 1.0% |"]
    assert "| untrained (CE's weights) | 0 | - |" in text
    assert "12 seeds: MDE 2.07 points (8.7% of CE)" in text and "10 seeds are the fewest that reach 2.39" in text
    assert (tmp_path / "study_deltas.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_picture_marks_the_papers_claim_on_rows_against_ce(study) -> None:
    def delta(baseline: float) -> statistics.Delta:
        return statistics.Delta(baseline=baseline, other=0.0, delta=0.0, rel_delta=None, ci_low=0.0, ci_high=0.0,
                                rel_ci_low=None, rel_ci_high=None, p_value=1.0, n_examples=1, n_clusters=1)
    # +10% of CE's 0.3982 is 3.982 METEOR points; the row against PerCE gets no mark.
    assert study.paper_claims([("ce", delta(0.3982)), ("perce", delta(0.39)), ("ce", delta(0.25))]) == [
        (0, pytest.approx(3.982)), (2, pytest.approx(2.5))]


def test_report_gives_the_mde_reached_from_the_measured_variance_components(study, tmp_path: Path) -> None:
    # PerCE - CE METEOR x100 per user: seed 1 is 2 points above seed 0, users alternate +-3 around it, and
    # one residual of +-1 breaks the additivity.
    diffs = [[3.0, -3.0] * 4, [5.0, -1.0] * 4]
    diffs[1][0] += 1.0
    diffs[1][1] -= 1.0
    results = tmp_path / "results"
    pilot_done(study, results, "ce")
    pilot_done(study, results, "perce", shift=[[d / 100 for d in row] for row in diffs])
    report = tmp_path / "study.md"
    study.write_report(study.Study(results, tmp_path / "work", False, []), report)
    v = variance_components(np.array(diffs))
    assert v.seed_sd > 0 and v.user_sd > 0 and v.residual_sd > 0
    ce = 100 * float(np.mean([base_scores(0), base_scores(1)]))
    now, later = study.mde(2, 8, components=v), study.mde(12, 8, components=v)
    text = report.read_text()
    assert (f"at least one interval includes 0 (with the variance measured here, this many seeds resolve "
            f"{now:.1f} METEOR points, {now / ce:.0%} of CE, at 80% power).**") in text
    row = next(line for line in text.splitlines() if line.startswith("| PerCE - CE | 2 | "))
    assert row == (f"| PerCE - CE | 2 | {v.seed_sd:.2f} | {v.user_sd:.2f} | {v.residual_sd:.2f} | {ce:.2f} | "
                   f"{now:.2f} ({now / ce:.1%}) | 12: {later:.2f} ({later / ce:.1%}) |")
    # the v1 components give the design's numbers back
    assert study.mde(12, components=study.V1_COMPONENTS) == study.mde(12)


def test_each_process_is_logged_and_the_budget_counts_the_elapsed_span(study, tmp_path: Path, monkeypatch) -> None:
    results = tmp_path / "results"                     # not there yet: the first run's log row creates it
    s = study.Study(results, tmp_path / "work", False, [])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    s._percli("help", ["--help"])
    row = json.loads((results / "study_log.jsonl").read_text())
    assert (row["run"], row["command"], row["exit"], row["omp_num_threads"]) == ("help", "--help", 0, "1")
    log = [{"run": "ce_lr0.0002_s0", "command": "train", "seconds": 1800.0, "exit": 0,
            "finished": "2026-12-02T01:30:00+00:00"},
           {"run": "ce_lr0.0002_s2_test", "command": "train", "seconds": 2700.0, "exit": 0,
            "finished": "2026-12-02T02:15:00+00:00"},
           # The pilot's checkpoint trained again for a probe: same name, no scoring, not a pilot run.
           {"run": "ce_lr0.0002_s0", "command": "train", "seconds": 900.0, "exit": 0,
            "finished": "2026-12-02T02:30:00+00:00"}]
    (results / "study_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    assert study.budget_lines(s)[:4] == [
        "Finished: 3 processes, 1.5 h of process wall time; 1.5 h from the first start to the last finish.",
        "- pilot runs (train + val scoring): 1, mean 1800 s (min 1800, max 1800)",
        "- pilot checkpoints retrained for the probes and test scorings (train only): 1, mean 900 s (min 900, "
        "max 900)",
        "- main runs (train + test scoring): 1, mean 2700 s (min 2700, max 2700)"]
    # What is left, at the measured means: a pilot run (1800 s), a retrain (900 s) and two main runs (2700 s
    # each) = 2.25 h.
    planned = ["perce_lr0.0002_s0", "perce_lr0.0002_s1 (retrain for its checkpoint)", "ce_lr0.0002_s3_test",
               "dft_s4: train at the selected lr and score on test",
               "longce: grid extensions while the selected lr is the edge of the grid, then its pilot seeds' test runs"]
    assert study.budget_lines(s, planned)[-1] == ("- still to run, at these means: 2.2 h of process time (1.1 h with "
                                                  "two runners), plus 1 pilot(s) whose grid is not settled yet")
    # A pilot seed's test scoring has no measured mean here: no projection rather than a wrong one.
    assert "still to run" not in study.budget_lines(s, ["perce_lr0.0002_s1_test"])[-1]
    assert [study.planned_kind(x) for x in planned + ["ce_lr0.0002_s0_probe"]] == ["pilot", "retrain", "main",
                                                                                    "main", None, "probe"]
    assert study.run_kinds([{"run": "ce_lr0.0002_s0_probe", "command": "contrast"},
                            {"run": "ce_lr0.0002_s0_test", "command": "eval"}, *log]) == [
        "probe", "test", "pilot", "main", "retrain"]


def test_main_phase_runners_take_disjoint_seeds_once_the_pilot_is_done(study, tmp_path: Path, monkeypatch) -> None:
    results = tmp_path / "results"
    for arm in study.ARMS:
        if arm != "dft":
            pilot_done(study, results, arm)
    s = study.Study(results, tmp_path / "work", False, [])
    with pytest.raises(SystemExit, match=r"the lr pilot of dft is not finished; run `scripts/study.py --phase "
                                         r"pilot --arms dft` first"):
        study.run_study(s, [2, 3], tmp_path / "study.md", phase="main")
    pilot_done(study, results, "dft")
    s = study.Study(results, tmp_path / "work", True, [])
    study.run_study(s, [6, 7], tmp_path / "study.md", phase="main")
    assert s.planned == ["ce_lr0.0002_s6_test", "perce_lr0.0002_s6_test", "ce_lr0.0002_s7_test",
                         "perce_lr0.0002_s7_test"]
    # A resumed runner passes the seeds that are done: the report is rewritten only after a seed that ran.
    reports: list[int] = []
    # runpy's functions read their own globals, not the namespace the fixture returns.
    monkeypatch.setitem(study.run_study.__globals__, "write_report", lambda st, out: reports.append(len(st.planned)))
    s = study.Study(results, tmp_path / "work", False, [])
    monkeypatch.setattr(s, "train_and_test", lambda arm, lr, seed: s.planned.append(f"{arm}_s{seed}")
                        if seed == 7 else None)
    study.run_study(s, [6, 7, 8], tmp_path / "study.md", phase="main")
    assert reports == [2]
