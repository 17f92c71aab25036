"""Does PerCE beat CE, and what makes LongCE read the profile? The powered, resumable study (`make study`).

    python scripts/study.py               # run what is missing: the lr pilot, then seed-major; report after each seed
    python scripts/study.py --dry-run     # print the plan: which runs are done, which remain
    python scripts/study.py --report-only # only results/study.md from the runs finished so far (none: the design)

Design (conf/experiment/study.yaml; results/study.md gives the arithmetic): SmolLM2-135M-Instruct on synthetic
reviews, 64 train users, 48 val users (the lr pilot), 144 test users, none seen in training; 2 epochs (32 steps
of batch 4) with a 10% warm-up; every target fits the 144-token training and generation length.
- ARMS: CE, PerCE (0.8 / 5), PerCE without its floor (loss.min_weight=0), LongCE, DFT, CE without the profile
  (retriever.k=0). CE and PerCE get SEEDS["ce"] seeds (the primary comparison), the others at least 6.
- lr pilot, per arm on PILOT_SEEDS: every lr of the grid (START_LRS to begin with) is trained and scored on val;
  the selected lr is `percli table`'s rule, report.select.best_lr (the best mean val METEOR over the seeds). While
  it is the smallest or largest lr tried, the grid is extended by a factor 2 that way (within LR_LIMITS), so the
  selected lr ends up interior.
- Then, seed-major: for each seed, every arm that has it trains at its selected lr and is scored on test (the
  pilot seeds' test runs score the pilot checkpoints). results/study.md is rewritten after the pilot and after
  every seed, so a stopped study still reports its finished seeds.
- The mechanism probe: `percli contrast` on val with each pilot seed's checkpoint at the selected lr (and once with
  the untrained model): PIR by position around the planted names and by PIR band, and where each loss puts its
  weight, on users the model never saw.
Resumable: a finished run keeps only its small outputs (config.yaml, metrics.json, scores.jsonl, train_log.jsonl,
contrast_summary.json) in
results/study/<run>/ and a rerun skips it. Checkpoints live in outputs/study/<run>/ until the arm's pilot has been
scored on test, then they are deleted; one that is needed but gone is retrained (same seed, same data).
study_log.jsonl records each process's wall time (the budget).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from percli import statistics  # noqa: E402
from percli.example_scores import align, clusters_of, metric_matrix, read_scores  # noqa: E402
from percli.io import atomic_write_text  # noqa: E402
from percli.names import FIRST_NAME_TOKEN, NAME_GROUPS  # noqa: E402
from percli.report.select import best_lr  # noqa: E402

# arm -> (label, overrides of the study preset)
ARMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ce": ("CE", ("loss=ce",)),
    "perce": ("PerCE", ("loss=perce",)),
    "perce-min0": ("PerCE, no floor", ("loss=perce", "loss.min_weight=0")),
    "longce": ("LongCE", ("loss=longce",)),
    "dft": ("DFT", ("loss=dft",)),
    "ce-k0": ("CE, no profile", ("loss=ce", "retriever.k=0")),
}
SEEDS = {"ce": 12, "perce": 12, "perce-min0": 6, "longce": 6, "dft": 6, "ce-k0": 6}   # seeds 0..n-1 per arm
PILOT_SEEDS = (0, 1)
START_LRS = (1e-4, 2e-4, 4e-4)
LR_LIMITS = (1e-5, 3.2e-3)   # the pilot grid never extends beyond these
PRIMARY = "meteor"
SECONDARY = ("rouge1", "rouge2", "rougeL", "rougeLsum", "planted_recall")
METRICS = (PRIMARY, *SECONDARY)
KEPT = ("config.yaml", "metrics.json", "scores.jsonl", "train_log.jsonl", "contrast_summary.json")
PROBE = "_probe"                 # <pilot run>_probe: `percli contrast` of its checkpoint on val
UNTRAINED_PROBE = "untrained_probe"
RETRAIN = " (retrain for its checkpoint)"   # a planned step: a pilot checkpoint trained again, without scoring
# (baseline, other, the question the delta answers)
COMPARISONS = (
    ("ce", "perce", "does PerCE beat CE (each at its own val-selected lr)? The primary comparison"),
    ("ce", "perce-min0", "does PerCE without its 0.8 floor beat CE?"),
    ("ce", "longce", "does LongCE's ratio weight beat CE?"),
    ("ce", "dft", "does DFT, a known token-weighted loss, beat CE?"),
    ("ce", "ce-k0", "what does retrieval buy? CE without the profile against CE with it"),
    ("perce", "perce-min0", "mechanism: what does PerCE's floor cost or buy?"),
    ("perce", "longce", "mechanism: LongCE against PerCE"),
)
# The variance components of PerCE - CE METEOR (x100) in study v1 (results/study_v1/), and CE's METEOR there.
SEED_SD, USER_SD, RESIDUAL_SD = 1.9, 3.5, 10.9
V1_COMPONENTS = statistics.VarianceComponents(SEED_SD, USER_SD, RESIDUAL_SD)
CE_METEOR = 23.9
TEST_USERS = 144
VAL_USERS = 48
STEPS_PER_RUN = 32    # conf/experiment/study.yaml: 64 examples / batch 4 x 2 epochs
POWER, CONFIDENCE = 0.80, 0.95
MECHANISM_KEYS = ("planted_token_share", "planted_weight_mass", "planted_weight_mean", "other_weight_mean",
                  "planted_pir_mean", "other_pir_mean", "clip_low", "clip_high")


# ---------------------------------------------------------------------------------------------------- power
def mde(seeds: int, users: int = TEST_USERS, *, t_quantiles: bool = True, power: float = POWER,
        confidence: float = CONFIDENCE, components: statistics.VarianceComponents = V1_COMPONENTS) -> float:
    """The minimum detectable effect (METEOR x100) of a paired delta over `seeds` seeds x `users` users (one item
    each) under d_su = delta + a_s + b_u + e_su with the given variance components (default: v1's):
    (q_conf + q_power) x sqrt(SEED_SD^2 / S + USER_SD^2 / U + RESIDUAL_SD^2 / (S U)), with t quantiles on S - 1
    degrees of freedom (the t-interval over seed means must exclude 0 too), or normal ones."""
    se = components.delta_se(seeds, users)
    dist = stats.t(seeds - 1) if t_quantiles else stats.norm()
    return float((dist.ppf(0.5 + confidence / 2) + dist.ppf(power)) * se)


def seeds_needed(effect: float, users: int = TEST_USERS) -> int:
    """The fewest seeds whose t-quantile MDE is at most `effect`."""
    return next(s for s in range(2, 1000) if mde(s, users) <= effect)


def simulated_power(seeds: int, effect: float, *, users: int = TEST_USERS, sims: int = 400,
                    resamples: int = 2000, seed: int = 0) -> float:
    """The share of simulated studies (the variance-component model, true delta `effect`) in which both the
    two-level bootstrap CI and the t-interval exclude 0 (statistics.Delta.significant)."""
    rng = np.random.default_rng(seed)
    hits = 0
    for k in range(sims):
        d = (effect + rng.normal(0, SEED_SD, (seeds, 1)) + rng.normal(0, USER_SD, (1, users))
             + rng.normal(0, RESIDUAL_SD, (seeds, users)))
        hits += statistics.pooled_delta(np.zeros_like(d), d / 100, list(range(users)), resamples=resamples,
                                        seed=k).significant
    return hits / sims


# ---------------------------------------------------------------------------------------------------- runs
def lr_text(lr: float) -> str:
    return f"{lr:.3g}"


def run_name(arm: str, lr: float, seed: int) -> str:
    return f"{arm}_lr{lr_text(lr)}_s{seed}"


class Study:
    def __init__(self, results: Path, work: Path, dry_run: bool, overrides: list[str]):
        self.results, self.work, self.dry_run, self.overrides = results, work, dry_run, overrides
        self.planned: list[str] = []

    # -------------------------------------------------------------------------------------------- state
    def done(self, name: str) -> bool:
        return (self.results / name / "metrics.json").is_file()

    def probed(self, name: str) -> bool:
        return (self.results / name / "contrast_summary.json").is_file()

    def probe_summary(self, name: str) -> dict | None:
        return json.loads((self.results / name / "contrast_summary.json").read_text()) if self.probed(name) else None

    def metrics(self, name: str) -> dict:
        return json.loads((self.results / name / "metrics.json").read_text())

    def _checkpoint(self, name: str) -> Path:
        return self.work / name / "checkpoints" / "final"

    # --------------------------------------------------------------------------------------------- runs
    def _percli(self, name: str, args: list[str]) -> None:
        cmd = [sys.executable, "-m", "percli", *args, *self.overrides]
        print(f"+ percli {' '.join(args)}", flush=True)
        start = time.monotonic()
        code = subprocess.call(cmd, cwd=REPO)
        seconds = time.monotonic() - start
        print(f"  {name}: {seconds:.0f} s, exit {code}", flush=True)
        # The machine's state beside the time: a shared machine's load explains a slow run. Failed runs are
        # logged too: their time was spent (exit -9 is usually the kernel's out-of-memory killer).
        row = {"run": name, "command": args[0], "seconds": round(seconds, 1), "exit": code,
               "finished": datetime.now(UTC).isoformat(timespec="seconds"), "load_avg_15min": os.getloadavg()[2],
               "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
        # One short O_APPEND write: runners on several machines or terminals may share the log.
        self.results.mkdir(parents=True, exist_ok=True)
        with open(self.results / "study_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if code != 0:
            raise SystemExit(f"percli study: run {name} failed (exit {code}); its log is above, the run dir is "
                             f"{self.work / name}. Fix it and rerun: finished runs are kept.")

    def _keep(self, name: str) -> None:
        """Copy the small outputs of work/<name> into results/<name> (whole or not at all)."""
        tmp = self.results / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in KEPT:
            if (self.work / name / f).is_file():
                shutil.copyfile(self.work / name / f, tmp / f)
        shutil.rmtree(self.results / name, ignore_errors=True)
        tmp.rename(self.results / name)

    def _train_args(self, arm: str, lr: float, seed: int) -> list[str]:
        return ["train", "experiment=study", *ARMS[arm][1], f"train.lr={lr_text(lr)}", f"seed={seed}"]

    def train(self, arm: str, lr: float, seed: int, *, evaluate: bool = True) -> None:
        """A pilot run: train and score on val unless results/<name> exists; keeps checkpoints/final."""
        name = run_name(arm, lr, seed)
        if evaluate and self.done(name):
            return
        self.planned.append(name if evaluate else f"{name}{RETRAIN}")
        if self.dry_run:
            return
        shutil.rmtree(self.work / name, ignore_errors=True)
        self._percli(name, [*self._train_args(arm, lr, seed), "eval.split=val",
                            f"eval.after_train={'true' if evaluate else 'false'}", f"hydra.run.dir={self.work / name}"])
        if evaluate:
            self._keep(name)

    def _need_checkpoint(self, arm: str, lr: float, seed: int) -> Path:
        """Pilot run <name>'s checkpoint, retrained (same seed, same data: the same weights) if it is gone."""
        name = run_name(arm, lr, seed)
        planned = {name, f"{name}{RETRAIN}"}   # a dry run has planned it already
        if not self._checkpoint(name).is_dir() and not planned & set(self.planned):
            self.train(arm, lr, seed, evaluate=False)
        return self._checkpoint(name)

    def test_pilot(self, arm: str, lr: float, seed: int) -> None:
        """Score pilot run <name>'s checkpoint on test into <name>_test (retraining it if it is gone)."""
        out = f"{run_name(arm, lr, seed)}_test"
        if self.done(out):
            return
        checkpoint = self._need_checkpoint(arm, lr, seed)
        self.planned.append(out)
        if self.dry_run:
            return
        shutil.rmtree(self.work / out, ignore_errors=True)
        self._percli(out, ["eval", "experiment=study", *(o for o in ARMS[arm][1] if not o.startswith("loss")),
                           f"model.path={checkpoint}", f"seed={seed}", "eval.split=test",
                           f"hydra.run.dir={self.work / out}"])
        self._keep(out)

    def probe(self, arm: str | None, lr: float = 0.0, seed: int = 0) -> None:
        """`percli contrast` on val (users unseen in training) with pilot run <name>'s checkpoint into
        <name>_probe, or with the untrained model (arm None, CE's weights): how far the trained model reads the
        profile, and where the arm's loss puts its weight. Every probe sees the study's top-2 profile, CE without
        the profile included: PIR needs one."""
        out = UNTRAINED_PROBE if arm is None else f"{run_name(arm, lr, seed)}{PROBE}"
        if self.probed(out):
            return
        model = [] if arm is None else [f"model.path={self._need_checkpoint(arm, lr, seed)}"]
        loss = ["loss=ce"] if arm is None else [o for o in ARMS[arm][1] if o.startswith("loss")]
        self.planned.append(out)
        if self.dry_run:
            return
        shutil.rmtree(self.work / out, ignore_errors=True)
        self._percli(out, ["contrast", "experiment=study", *loss, *model, "data.split=val", f"seed={seed}",
                           f"hydra.run.dir={self.work / out}"])
        self._keep(out)

    def train_and_test(self, arm: str, lr: float, seed: int) -> None:
        """A main run: train at the selected lr and score on test in one process, into <name>_test."""
        out = f"{run_name(arm, lr, seed)}_test"
        if self.done(out):
            return
        self.planned.append(out)
        if self.dry_run:
            return
        shutil.rmtree(self.work / out, ignore_errors=True)
        self._percli(out, [*self._train_args(arm, lr, seed), "eval.split=test", "eval.after_train=true",
                           f"hydra.run.dir={self.work / out}"])
        self._keep(out)
        shutil.rmtree(self.work / out / "checkpoints", ignore_errors=True)

    def drop_checkpoints(self, names: list[str]) -> None:
        if not self.dry_run:
            for name in names:
                shutil.rmtree(self.work / name / "checkpoints", ignore_errors=True)

    # -------------------------------------------------------------------------------------------- pilot
    def grid(self, arm: str) -> list[float]:
        """The lrs the pilot has tried for `arm` (START_LRS and any extensions that have results)."""
        tried = set(START_LRS)
        for p in self.results.glob(f"{arm}_lr*_s{PILOT_SEEDS[0]}"):
            tried.add(float(p.name[len(arm) + 3:].rsplit("_s", 1)[0]))
        return sorted(tried)

    def val_means(self, arm: str, grid: list[float]) -> dict[float, float | None]:
        """Per lr, the mean val METEOR over the pilot seeds; None until every pilot seed is scored."""
        out: dict[float, float | None] = {}
        for lr in grid:
            names = [run_name(arm, lr, s) for s in PILOT_SEEDS]
            out[lr] = float(np.mean([self.metrics(n)[PRIMARY] for n in names])) if all(map(self.done, names)) else None
        return out

    def selected_lr(self, arm: str) -> float | None:
        """The pilot's selected lr for `arm` once it is interior (or at LR_LIMITS); None while the pilot runs."""
        grid = self.grid(arm)
        means = self.val_means(arm, grid)
        if any(v is None for v in means.values()):
            return None
        best = best_lr(means)
        if (best == grid[0] and grid[0] / 2 >= LR_LIMITS[0]) or (best == grid[-1] and grid[-1] * 2 <= LR_LIMITS[1]):
            return None
        return best

    def pilot(self, arm: str) -> float | None:
        """Run `arm`'s pilot until its selected lr is interior; score its pilot seeds on test. None in a dry run."""
        while True:
            grid = self.grid(arm)
            for lr in grid:
                for seed in PILOT_SEEDS:
                    self.train(arm, lr, seed)
            means = self.val_means(arm, grid)
            if any(v is None for v in means.values()):   # dry run: the grid is not scored yet
                self.planned.append(f"{arm}: grid extensions while the selected lr is the edge of the grid, "
                                    "then its pilot seeds' test runs")
                return None
            best = self.selected_lr(arm)
            if best is not None:
                break
            edge = best_lr(means)
            self.train(arm, edge / 2 if edge == grid[0] else edge * 2, PILOT_SEEDS[0])
            if self.dry_run:
                return None
        for seed in PILOT_SEEDS:
            self.test_pilot(arm, best, seed)
            self.probe(arm, best, seed)
        self.drop_checkpoints([run_name(arm, lr, s) for lr in self.grid(arm) for s in PILOT_SEEDS])
        return best

    # ------------------------------------------------------------------------------------------ results
    def test_run(self, arm: str, seed: int) -> str | None:
        """results/ name of `arm`'s test run for `seed`, or None while it is not done."""
        lr = self.selected_lr(arm)
        name = None if lr is None else f"{run_name(arm, lr, seed)}_test"
        return name if name is not None and self.done(name) else None

    def train_log(self, arm: str, seed: int) -> list[dict]:
        """The train_log.jsonl rows of `arm`'s selected run for `seed` ([] while it is missing)."""
        lr = self.selected_lr(arm)
        if lr is None:
            return []
        for name in (run_name(arm, lr, seed), f"{run_name(arm, lr, seed)}_test"):
            path = self.results / name / "train_log.jsonl"
            if path.is_file():
                return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        return []


def run_study(study: Study, seeds: list[int], report: Path, arms: list[str] | None = None,
              phase: str = "all") -> None:
    """The pilot for every arm, then seed-major main runs; the report after the pilot and after each seed.
    `arms` and `seeds` limit the work; `phase` runs the pilot alone ("pilot") or only main runs, of arms whose
    pilot is finished ("main"), so several runners can share the machine and the results dir: runners for
    disjoint arms in the pilot, then for disjoint seeds."""
    arms = list(ARMS) if arms is None else arms
    if phase == "main":
        lrs = {arm: study.selected_lr(arm) for arm in arms}
        pending = [a for a, lr in lrs.items() if lr is None or not all(study.test_run(a, s) for s in PILOT_SEEDS)]
        if pending and not study.dry_run:
            raise SystemExit(f"percli study: the lr pilot of {', '.join(pending)} is not finished; run "
                             f"`scripts/study.py --phase pilot --arms {','.join(pending)}` first")
    else:
        study.probe(None)
        lrs = {arm: study.pilot(arm) for arm in arms}
        if not study.dry_run:
            write_report(study, report)
        if phase == "pilot":
            return
    for seed in seeds:
        if seed in PILOT_SEEDS:
            continue
        ran = len(study.planned)
        for arm in arms:
            if seed < SEEDS[arm]:
                if lrs[arm] is None:
                    study.planned.append(f"{arm}_s{seed}: train at the selected lr and score on test")
                else:
                    study.train_and_test(arm, lrs[arm], seed)
        # A resumed runner passes finished seeds without running anything: their report would be unchanged.
        if not study.dry_run and len(study.planned) > ran:
            write_report(study, report)


# ---------------------------------------------------------------------------------------------------- report
def paired_tests(study: Study, base: str, other: str) -> tuple[list[int], dict[str, np.ndarray], list[str] | None]:
    """Seeds where both arms have a test run; per metric the aligned (2 x seeds, examples) scores, base rows
    first; each example's user."""
    seeds = [s for s in range(max(SEEDS.values())) if study.test_run(base, s) and study.test_run(other, s)]
    if not seeds:
        return [], {}, None
    names = [study.test_run(arm, s) for arm in (base, other) for s in seeds]
    runs = [read_scores(study.results / n) for n in names]
    _, positions = align(runs, names)
    matrices = {metric: m for metric in METRICS if (m := metric_matrix(runs, positions, metric)) is not None}
    return seeds, matrices, clusters_of(runs, positions)


def pooled(study: Study, base: str, other: str) -> tuple[list[int], dict[str, statistics.Delta]]:
    """Seeds where both arms have a test run, and per metric the delta pooled over them."""
    seeds, matrices, clusters = paired_tests(study, base, other)
    return seeds, {metric: statistics.pooled_delta(m[:len(seeds)], m[len(seeds):], clusters, max_mc_error=statistics.MC_ERROR_TARGET)
                   for metric, m in matrices.items()}


class Reached(NamedTuple):
    """What a comparison's own paired METEOR differences say about its power."""
    seeds: int
    users: int
    components: statistics.VarianceComponents
    baseline: float          # the baseline arm's mean test METEOR (x100) over the paired seeds

    def mde(self, seeds: int | None = None) -> float:
        return mde(seeds or self.seeds, self.users, components=self.components)


def reached(study: Study, base: str, other: str) -> Reached | None:
    """The variance components of other - base METEOR (x100, per user: the mean of the user's items), once 2
    seeds are paired."""
    seeds, matrices, clusters = paired_tests(study, base, other)
    if len(seeds) < 2 or PRIMARY not in matrices:
        return None
    m = matrices[PRIMARY] * 100
    sums, counts = statistics.cluster_sums(m[len(seeds):] - m[:len(seeds)], clusters)
    return Reached(len(seeds), int(counts.size), statistics.variance_components(sums / counts),
                   float(m[:len(seeds)].mean()))


def reached_lines(study: Study) -> list[str]:
    """The MDE each comparison with CE has reached, and will reach at its planned seeds."""
    lines = ["| comparison | seeds | seed SD | user SD | residual SD | CE's METEOR | MDE now | MDE at the planned "
             "seeds |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for base, other, _ in COMPARISONS:
        r = reached(study, base, other) if base == "ce" else None
        if r is None:
            continue
        v, planned = r.components, min(SEEDS[base], SEEDS[other])
        now, later = r.mde(), r.mde(planned)
        lines.append(f"| {ARMS[other][0]} - {ARMS[base][0]} | {r.seeds} | {v.seed_sd:.2f} | {v.user_sd:.2f} | "
                     f"{v.residual_sd:.2f} | {r.baseline:.2f} | {now:.2f} ({now / r.baseline:.1%}) | {planned}: "
                     f"{later:.2f} ({later / r.baseline:.1%}) |")
    if len(lines) == 2:
        return ["(none yet: no arm has 2 seeds paired with CE's)"]
    return lines


def evidence_p(d: statistics.Delta) -> float:
    """The larger of the sign-flip p and the seed t-test p: a delta counts only when both levels agree."""
    return max(d.p_value, d.t_p_value if d.t_p_value is not None else 0.0)


def secondary_holm(deltas: dict[str, statistics.Delta]) -> dict[str, float]:
    """Holm-adjusted p-values of the secondary metrics (METEOR, the primary, is not in the family)."""
    return statistics.holm({m: evidence_p(deltas[m]) for m in SECONDARY if m in deltas})


def cell(d: statistics.Delta, holm_p: float | None = None) -> str:
    """The delta with both intervals; a secondary metric's Holm-adjusted p beside it, † where it is < 0.05 and
    both intervals exclude 0."""
    text = statistics.format_delta(d)
    if holm_p is not None:
        text = text.rstrip("*") + f" p_Holm={holm_p:.2g}" + ("†" if d.significant and holm_p < 0.05 else "")
    return text


def verdict(d: statistics.Delta | None, seeds: int, power: Reached | None = None) -> str:
    if d is None:
        return "not measured yet"
    both = f"METEOR {statistics.format_delta(d)} over {seeds} seeds"
    if d.significant:
        return f"{'yes' if d.delta > 0 else 'no, it is worse'}: {both}; the bootstrap CI and the t-interval both exclude 0"
    if power is None:
        return f"no detectable difference: {both}; at least one interval includes 0"
    reach = power.mde()
    return (f"no detectable difference: {both}; at least one interval includes 0 (with the variance measured "
            f"here, this many seeds resolve {reach:.1f} METEOR points, {reach / power.baseline:.0%} of CE, at 80% "
            "power)")


def _fmt(x: float | None, scale: float = 100.0, digits: int = 2) -> str:
    return "-" if x is None else f"{x * scale:.{digits}f}"


def design_lines() -> list[str]:
    """The design and its arithmetic, fixed before any run."""
    target = 0.10 * CE_METEOR
    need = seeds_needed(target)
    v_old = SEED_SD ** 2 / 3 + USER_SD ** 2 / 48 + RESIDUAL_SD ** 2 / (3 * 48)
    rows = ["| seeds S | var of the delta | MDE, normal quantiles | MDE, t quantiles (S-1 df) | as % of CE's 23.9 |",
            "|---:|---:|---:|---:|---:|"]
    for s in (3, 6, 8, 9, 10, 12, 16):
        var = SEED_SD ** 2 / s + USER_SD ** 2 / TEST_USERS + RESIDUAL_SD ** 2 / (s * TEST_USERS)
        rows.append(f"| {s} | {var:.3f} | {mde(s, t_quantiles=False):.2f} | {mde(s):.2f} | {mde(s) / CE_METEOR:.1%} |")
    primary, other = SEEDS["perce"], min(SEEDS[a] for a in ARMS if a not in ("ce", "perce"))
    return [
        "## Design (fixed before the runs)", "",
        "Arms, each at its own lr selected on val: " + "; ".join(
            f"{label} (`{' '.join(o)}`, {SEEDS[a]} seeds)" for a, (label, o) in ARMS.items()) + ".",
        "",
        "- Model and data: SmolLM2-135M-Instruct (real weights, fp32, CPU), full fine-tuning, AdamW, grad-norm clip "
        "1.0; synthetic LongLaMP-schema reviews with planted personal names, user setting: 64 train users (1 item "
        "each), 48 val users (the lr pilot), 144 test users, none seen in training; BM25 top-2 profile items; "
        "prompts cut at 384 tokens (conf/experiment/study.yaml).",
        "- Converged regime: 2 epochs = 32 optimizer steps of batch 4, a 10% linear warm-up (4 steps), cosine decay. "
        "Every target is at most 135 tokens + eos, inside the 144-token training length (so every planted mention "
        "is trained on) and the 144-token greedy generation (so planted recall can reach 1: it counts the names the "
        "reference holds within the generation length); tests/test_study_design.py checks both.",
        f"- lr pilot on val with seeds {', '.join(map(str, PILOT_SEEDS))}: grid {', '.join(map(lr_text, START_LRS))} "
        "to begin with; the selected lr is `percli table`'s rule (report/select.py `best_lr`: best mean val METEOR "
        "over the seeds, ties to the smaller lr); while it is the smallest or largest lr tried, the grid is extended "
        f"by a factor 2 that way (within {lr_text(LR_LIMITS[0])}-{lr_text(LR_LIMITS[1])}). The pilot seeds' test "
        "runs score the pilot checkpoints at the selected lr.",
        "- Then seed-major: seed by seed, every arm with that seed trains at its selected lr and is scored on test; "
        "this report is rewritten after the pilot and after every seed (interim reports); a rerun resumes.",
        "- Statistics: per arm against CE, the paired delta over the seeds both have, with a two-level bootstrap CI "
        "(seeds, then users; 20,000 resamples, Monte Carlo error of each limit reported, < 0.1 points) and a "
        "t-interval over the per-seed paired means (S-1 df); a delta is significant only when both exclude 0. "
        "METEOR is the declared primary metric; ROUGE-1/2/L/Lsum and planted recall are secondary, their p-values "
        "(the larger of the sign-flip p and the seed t-test p) Holm-adjusted as one family per comparison.",
        "- A constant loss scale does nothing here: AdamW divides each update by the root of its second moment, and "
        "the gradient norm is clipped before the step, so a loss multiplied by c trains like the loss itself "
        "(tests/test_losses.py). The v1 control 'CE at lr x w' therefore controlled nothing, and is gone.",
        "",
        "### Minimum detectable effect (sized from study v1's variance components)", "",
        f"The per-user paired difference of seed s and test user u is modelled as d_su = delta + a_s + b_u + e_su with "
        f"the components of PerCE - CE METEOR (x100) measured in study v1: seed SD {SEED_SD}, user SD {USER_SD}, "
        f"residual SD {RESIDUAL_SD}. The mean over S seeds and U users has variance "
        f"{SEED_SD}^2/S + {USER_SD}^2/U + {RESIDUAL_SD}^2/(S U); at 80% power and a two-sided 95% level the MDE is "
        "(q_0.975 + q_0.80) x its square root. v1 (S = 3, U = 48): variance "
        f"{SEED_SD ** 2 / 3:.3f} + {USER_SD ** 2 / 48:.3f} + {RESIDUAL_SD ** 2 / 144:.3f} = {v_old:.3f}, seeds carry "
        f"{SEED_SD ** 2 / 3 / v_old:.0%}; MDE with normal quantiles 2.80 x {math.sqrt(v_old):.3f} = "
        f"{mde(3, 48, t_quantiles=False):.2f} points ({mde(3, 48, t_quantiles=False) / CE_METEOR:.0%} of CE's "
        f"{CE_METEOR}), with t quantiles on 2 df {mde(3, 48):.1f}.",
        "",
        f"Here U = {TEST_USERS} (user term {USER_SD ** 2 / TEST_USERS:.4f}, fixed however many seeds), target MDE "
        f"<= 10% of {CE_METEOR} = {target:.2f} points. A delta counts only when the t-interval over seed means "
        "excludes 0 as well, so the design uses t quantiles on S-1 df (normal ones would be optimistic):", "",
        *rows, "",
        f"- {need} seeds are the fewest that reach {target:.2f} ({mde(need):.2f}; {need - 1} give "
        f"{mde(need - 1):.2f}). A simulation of the whole rule (both intervals must exclude 0; 400 simulated "
        "studies of 2,000 resamples each, `simulated_power` in this script with its defaults) gave power 0.85 at "
        f"10 seeds and 0.92 at 12 against an effect of {target:.2f}: the t-quantile arithmetic is slightly "
        "conservative.",
        f"- The seed SD {SEED_SD} comes from 3 seeds (2 df): its 95% interval is 0.99 to 11.9. CE and PerCE "
        f"therefore get {primary} seeds: MDE {mde(primary):.2f} points ({mde(primary) / CE_METEOR:.1%} of CE), "
        "and the target still holds for a seed SD up to 2.3 (10 seeds: up to 2.0).",
        f"- The other arms get {other} seeds each: against CE's first {other} seeds their MDE is {mde(other):.2f} "
        f"points ({mde(other) / CE_METEOR:.1%} of CE), assuming the same variance components (simulated power at "
        "that effect: 0.84).",
        "",
    ]


def work() -> dict[str, int]:
    """What the study runs, before any grid extension (each adds 2 pilot runs)."""
    pilot = len(ARMS) * len(START_LRS) * len(PILOT_SEEDS)
    tests = len(ARMS) * len(PILOT_SEEDS)
    main = sum(SEEDS.values()) - tests
    probes = tests + 1   # one per pilot checkpoint at the selected lr, and the untrained model
    return {"pilot": pilot, "tests": tests, "main": main, "probes": probes, "processes": pilot + tests + main + probes,
            "steps": (pilot + main) * STEPS_PER_RUN, "val_examples": pilot * VAL_USERS,
            "test_examples": (tests + main) * TEST_USERS}


def rates(run_dir: Path) -> dict[str, float]:
    """Seconds per optimizer step (median, the first step left out), per generated example, and generated
    tokens per example, from a run's train_log.jsonl and metrics.json."""
    steps = [json.loads(x)["step_time"] for x in (run_dir / "train_log.jsonl").read_text().splitlines()[1:]]
    gen = json.loads((run_dir / "metrics.json").read_text())["generation"]
    return {"step_s": float(np.median(steps)), "gen_s": gen["seconds"] / gen["prompts"],
            "tokens": gen["new_tokens"] / gen["prompts"], "steps": len(steps) + 1, "examples": gen["prompts"]}


def estimate_lines() -> list[str]:
    """The pre-run budget: the study's work times seconds per step and per generated example, measured by the
    timing run in results/study_timing/ (this preset) and by study v1 (results/study_v1/)."""
    w = work()
    timing_dir, v1_dir = REPO / "results" / "study_timing", REPO / "results" / "study_v1" / "runs"
    if not (timing_dir / "metrics.json").is_file():
        return ["(no timing run in results/study_timing/ yet)"]
    now = rates(timing_dir)
    v1 = rates(v1_dir / "perce_lr1e-4_s0")
    v1_test = json.loads((v1_dir / "perce_lr1e-4_s0_test" / "metrics.json").read_text())["generation"]
    v1_per_token = v1_test["seconds"] / v1_test["new_tokens"]
    examples = w["val_examples"] + w["test_examples"]

    def hours(step_s: float, gen_s: float) -> float:
        return (w["steps"] * step_s + examples * gen_s) / 3600

    def runner_hours(step_s: float, gen_s: float) -> float:
        """Elapsed with 3 runners per phase, each a third of the pilot and then a third of the main runs."""
        pilot = (w["pilot"] * STEPS_PER_RUN * step_s + w["val_examples"] * gen_s + w["tests"] * TEST_USERS * gen_s)
        main = w["main"] * (STEPS_PER_RUN * step_s + TEST_USERS * gen_s)
        return (pilot + main) / 3 / 3600

    note = json.loads((timing_dir / "timing.json").read_text())
    return [
        f"Work: {w['pilot']} pilot runs (train + val scoring; each grid extension adds 2), {w['tests']} pilot test "
        f"scorings, {w['main']} main runs (train + test scoring), {w['probes']} mechanism probes (`percli contrast` on "
        f"val; added while the study ran, after the pilots of CE, PerCE, PerCE without floor and LongCE, whose "
        f"checkpoints are retrained for it): {w['processes']} processes, {w['steps']} optimizer steps, "
        f"{w['val_examples']} val and {w['test_examples']} test generations.",
        "",
        f"Timing run, before the study (results/study_timing/: `{note['command']}`, {note['date']}): "
        f"{now['steps']} steps, median {now['step_s']:.0f} s per step after the first; {now['examples']:.0f} test "
        f"generations, {now['gen_s']:.1f} s each ({now['tokens']:.0f} new tokens on average, batch 8); "
        f"{note['wall_s']:.0f} s wall and {note['cpu_s']:.0f} s CPU for the process, while the 2-core machine ran "
        f"other work (load average {note['load']}). At these rates the study is "
        f"{hours(now['step_s'], now['gen_s']):.0f} h of process time: an upper bound for a loaded machine.",
        f"- At study v1's rates (results/study_v1/: 3 runners, one torch thread each, load 3-4): "
        f"{v1['step_s']:.0f} s per step and {v1_per_token:.3f} s per generated token, i.e. "
        f"{v1_per_token * now['tokens']:.1f} s per generation of this length: "
        f"{hours(v1['step_s'], v1_per_token * now['tokens']):.0f} h of process time, about "
        f"{runner_hours(v1['step_s'], v1_per_token * now['tokens']):.0f} h elapsed with 3 runners of one torch "
        "thread each (OMP_NUM_THREADS=1): `--phase pilot` with `--arms ce,perce`, `--arms perce-min0,longce` and "
        "`--arms dft,ce-k0`, then `--phase main` with `--seeds 2,3`, `--seeds 4,5` and `--seeds 6,7,8,9,10,11` "
        "(12 main runs each). `make study` is one runner doing it all in order.",
        f"- Steps take {w['steps'] * v1['step_s'] / (w['steps'] * v1['step_s'] + examples * v1_per_token * now['tokens']):.0%}"
        " of that; generation the rest.",
    ]


def planned_kind(step: str) -> str | None:
    """pilot / retrain / test / main / probe for a planned step's label; None for a pilot whose extensions are not
    known yet."""
    if step.endswith(PROBE):
        return "probe"
    if step.endswith(RETRAIN):
        return "retrain"
    if step.endswith("score on test"):
        return "main"
    if step.endswith("_test"):
        return "test" if int(step.rsplit("_s", 1)[1][:-len("_test")]) in PILOT_SEEDS else "main"
    return None if "grid extensions" in step else "pilot"


def budget_lines(study: Study, planned: list[str] | None = None) -> list[str]:
    log = study.results / "study_log.jsonl"
    rows = [json.loads(x) for x in log.read_text().splitlines()] if log.is_file() else []
    if not rows:
        return ["No run has finished yet."]
    failed = [r for r in rows if r.get("exit", 0) != 0]
    rows = [r for r in rows if r.get("exit", 0) == 0]
    if not rows:
        return [f"No run has finished yet ({len(failed)} failed)."]
    total = sum(r["seconds"] for r in rows)
    ends = [datetime.fromisoformat(r["finished"]).timestamp() for r in rows]
    starts = [end - r["seconds"] for end, r in zip(ends, rows)]
    lines = [f"Finished: {len(rows)} processes, {total / 3600:.1f} h of process wall time; "
             f"{(max(ends) - min(starts)) / 3600:.1f} h from the first start to the last finish."]
    kinds_done = run_kinds(rows)
    for kind, label in (("pilot", "pilot runs (train + val scoring)"),
                        ("retrain", "pilot checkpoints retrained for the probes and test scorings (train only)"),
                        ("test", "pilot test scorings"), ("main", "main runs (train + test scoring)"),
                        ("probe", "mechanism probes (percli contrast on val)")):
        secs = [r["seconds"] for r, k in zip(rows, kinds_done) if k == kind]
        if secs:
            lines.append(f"- {label}: {len(secs)}, mean {np.mean(secs):.0f} s (min {min(secs):.0f}, max {max(secs):.0f})")
    if failed:
        lines.append(f"- lost: {len(failed)} failed process(es), {sum(r['seconds'] for r in failed) / 60:.0f} min")
    loads = [r["load_avg_15min"] for r in rows if r.get("load_avg_15min") is not None]
    if loads:
        lines.append(f"- 15-min load average when runs ended: {min(loads):.1f} to {max(loads):.1f}")
    kinds = [planned_kind(step) for step in planned or []]
    means = {k: np.mean([r["seconds"] for r, done in zip(rows, kinds_done) if done == k]) for k in set(kinds_done)}
    if kinds and all(k in means for k in kinds if k is not None):
        left = sum(means[k] for k in kinds if k is not None)
        open_grids = kinds.count(None)
        lines.append(f"- still to run, at these means: {left / 3600:.1f} h of process time ({left / 7200:.1f} h with "
                     "two runners)" + (f", plus {open_grids} pilot(s) whose grid is not settled yet" if open_grids
                                      else ""))
    return lines


def run_kinds(rows: list[dict]) -> list[str]:
    """pilot / retrain / test / main / probe for each finished row of the study log. A pilot run's second
    successful training is the retrain of its deleted checkpoint: the log names both alike."""
    kinds, trained = [], set()
    for row in rows:
        if row["command"] == "contrast":
            kinds.append("probe")
        elif row["command"] == "eval":
            kinds.append("test")
        elif row["run"].endswith("_test"):
            kinds.append("main")
        else:
            kinds.append("retrain" if row["run"] in trained else "pilot")
            trained.add(row["run"])
    return kinds


def selection_lines(study: Study) -> list[str]:
    lines = ["| arm | val METEOR per lr (mean over the pilot seeds) | selected lr |", "|---|---|---|"]
    for arm, (label, _) in ARMS.items():
        means = study.val_means(arm, study.grid(arm))
        best = study.selected_lr(arm)
        cells = [f"{lr_text(lr)}: {'**' if lr == best else ''}{_fmt(v)}{'**' if lr == best else ''}"
                 for lr, v in means.items()]
        lines.append(f"| {label} | {'; '.join(cells)} | {lr_text(best) if best is not None else 'pending'} |")
    return lines


def test_lines(study: Study) -> list[str]:
    lines = ["| arm | seeds | lr | " + " | ".join(METRICS) + " |", "|---|---:|---|" + "---:|" * len(METRICS)]
    for arm, (label, _) in ARMS.items():
        names = [n for n in (study.test_run(arm, s) for s in range(SEEDS[arm])) if n]
        cells = []
        for metric in METRICS:
            vals = [v for v in (study.metrics(n).get(metric) for n in names) if v is not None]
            cells.append(f"{_fmt(float(np.mean(vals)))} ({_fmt(float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0)})"
                         if vals else "-")
        lr = study.selected_lr(arm)
        lines.append(f"| {label} | {len(names)} | {lr_text(lr) if lr else '-'} | " + " | ".join(cells) + " |")
    return lines


def mechanism_lines(study: Study) -> list[str]:
    """Per arm: the weight on planted-name tokens against the others during training (train_log.jsonl, mean over
    steps and seeds), the share of tokens whose raw score the loss clips to its floor or its cap, and what the
    test generations do with the names."""
    lines = ["| arm | seeds | planted share of tokens | planted share of weight | mean weight, planted | "
             "mean weight, other | mean PIR, planted | mean PIR, other | tokens at the floor | tokens at the cap | "
             "test planted recall |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for arm, (label, _) in ARMS.items():
        logs = [rows for rows in (study.train_log(arm, s) for s in range(SEEDS[arm])) if rows]
        vals = {}
        for key in MECHANISM_KEYS:
            xs = [r[key] for rows in logs for r in rows if r.get(key) is not None]
            vals[key] = float(np.mean(xs)) if xs else None
        recall = [study.metrics(n).get("planted_recall") for n in (study.test_run(arm, s) for s in range(SEEDS[arm])) if n]
        recall = [r for r in recall if r is not None]
        lines.append(f"| {label} | {len(logs)} | {_fmt(vals['planted_token_share'], digits=1)}% | "
                     f"{_fmt(vals['planted_weight_mass'], digits=1)}% | {_fmt(vals['planted_weight_mean'], 1, 3)} | "
                     f"{_fmt(vals['other_weight_mean'], 1, 3)} | {_fmt(vals['planted_pir_mean'], 1, 3)} | "
                     f"{_fmt(vals['other_pir_mean'], 1, 3)} | {_fmt(vals['clip_low'], digits=1)}% | "
                     f"{_fmt(vals['clip_high'], digits=1)}% | {_fmt(float(np.mean(recall)) if recall else None)} |")
    return lines


def probe_lines(study: Study) -> list[str]:
    """Per arm (mean over the pilot seeds' probes) and for the untrained model: planted AUC, then per group of
    tokens (contrast.weight_shares) the mean PIR and the share of the weight; for the name's first token also
    its log-probability without the profile, for the PIR bands also their share of the tokens."""
    def row(label: str, summaries: list[dict]) -> str:
        if not summaries:
            return f"| {label} | 0 | - |" + " - |" * (len(NAME_GROUPS) + 4)
        groups = [{g["group"]: g for g in s["weight_shares"]} for s in summaries]
        labels = list(groups[0])

        def avg(group: str, key: str) -> float | None:
            xs = [g[group][key] for g in groups if g[group][key] is not None]
            return float(np.mean(xs)) if xs else None

        cells = []
        for group in labels:
            pir, share = avg(group, "pir_mean"), avg(group, "weight_share")
            text = f"{_fmt(pir, 1, 2)}" + (f" ({_fmt(avg(group, 'logp_free_mean'), 1, 2)})"
                                            if group == FIRST_NAME_TOKEN else "")
            if group not in NAME_GROUPS:
                text += f", {_fmt(avg(group, 'token_share'), digits=1)}%"
            cells.append(f"{text}, {_fmt(share, digits=1)}%")
        auc = float(np.mean([s["planted"]["auc"] for s in summaries]))
        return f"| {label} | {len(summaries)} | {auc:.3f} | " + " | ".join(cells) + " |"

    untrained = study.probe_summary(UNTRAINED_PROBE)
    bands = [g["group"] for g in untrained["weight_shares"] if g["group"] not in NAME_GROUPS] if untrained else \
        ["PIR bands"] * 4
    lines = ["| model | seeds | planted AUC | first token of a name: PIR (log P without the profile), weight share | "
             "later tokens of a name: PIR, weight share | token before a name: PIR, weight share | "
             + " | ".join(f"other tokens, {b}: PIR, share of tokens, weight share" for b in bands) + " |",
             "|---|---:|---:|" + "---:|" * (len(NAME_GROUPS) + 4)]
    lines.append(row("untrained (CE's weights)", [untrained] if untrained else []))
    for arm, (label, _) in ARMS.items():
        lr = study.selected_lr(arm)
        names = [] if lr is None else [f"{run_name(arm, lr, s)}{PROBE}" for s in PILOT_SEEDS]
        lines.append(row(label, [x for x in map(study.probe_summary, names) if x]))
    return lines


def paper_claims(rows: list[tuple[str, statistics.Delta]]) -> list[tuple[int, float]]:
    """(row, x100 delta) of the paper's claim on each (baseline arm, delta) row against CE: a gain of 10% of CE's
    mean over that row's seeds."""
    return [(y, 0.1 * d.baseline * 100) for y, (base, d) in enumerate(rows) if base == "ce"]


def plot(results: dict[tuple[str, str], tuple[list[int], dict[str, statistics.Delta]]], path: Path) -> bool:
    import matplotlib  # heavy and only needed for the picture

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(k, v[0], v[1][PRIMARY]) for k, v in results.items() if PRIMARY in v[1]]
    if not shown:
        return False
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(shown) + 1.5))
    for y, (_, _, d) in enumerate(shown):
        color = "tab:green" if d.significant and d.delta > 0 else ("tab:red" if d.significant else "tab:gray")
        ax.errorbar(d.delta * 100, y - 0.12, xerr=[[(d.delta - d.ci_low) * 100], [(d.ci_high - d.delta) * 100]],
                    fmt="o", color=color, capsize=3, label="bootstrap CI" if y == 0 else None)
        ax.errorbar(d.delta * 100, y + 0.12, xerr=[[(d.delta - d.t_low) * 100], [(d.t_high - d.delta) * 100]],
                    fmt="s", color=color, capsize=3, alpha=0.6, label="t-interval over seeds" if y == 0 else None)
    ax.axvline(0, color="black", lw=0.8)
    claims = paper_claims([(base, d) for (base, _), _, d in shown])
    if claims:
        ax.scatter([x for _, x in claims], [y for y, _ in claims], marker="|", s=300, color="tab:blue",
                   label="+10% of CE (the paper's claim)")
    ax.set_yticks(range(len(shown)), [f"{ARMS[o][0]} - {ARMS[b][0]} ({len(s)} seeds)" for (b, o), s, _ in shown])
    ax.invert_yaxis()
    ax.set_xlabel("METEOR delta x100, 95% intervals")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return True


def write_report(study: Study, out: Path) -> None:
    planner = Study(study.results, study.work, True, study.overrides)
    run_study(planner, list(range(max(SEEDS.values()))), out)
    results = {(b, o): pooled(study, b, o) for b, o, _ in COMPARISONS}
    seeds, main = results[("ce", "perce")]
    picture = out.with_name("study_deltas.png")
    drew = plot({k: v for k, v in results.items() if len(v[0]) > 1}, picture)
    done = sum(1 for p in study.results.iterdir() if (p / "metrics.json").is_file()) if study.results.is_dir() else 0
    lines = ["# Does PerCE beat CE? The powered study, and what makes LongCE read the profile", "",
             f"**Answer{'' if not planner.planned else ' so far'}: {verdict(main.get(PRIMARY), len(seeds), reached(study, 'ce', 'perce'))}.**", "",
             f"Status: {'complete' if not planner.planned else 'INCOMPLETE'}: {done} runs finished; "
             + ("every planned run is done." if not planner.planned else
                f"{len(planner.planned)} steps remain (`make study` continues where this stopped; the first few: "
                + "; ".join(planner.planned[:4]) + ")."), "",
             "The first study (3 seeds x 48 users, 12 steps) is in results/study_v1/; it overstated two things: its "
             "'PerCE is worse' star was resampling noise, and its 'CE at lr x w' control controlled nothing.", "",
             "## Each arm against CE on the test split (METEOR primary)", "",
             "Each cell: mean(other) - mean(baseline) x100 over the 144 unseen test users, pooled over the seeds both "
             "arms have: the 95% two-level bootstrap CI [..], the 95% t-interval over per-seed paired means t[..], the "
             "relative change; * (METEOR) = both intervals exclude 0. Secondary metrics carry their Holm-adjusted p "
             "(† = p_Holm < 0.05 and both intervals exclude 0). mc: the largest Monte Carlo error of a bootstrap limit, "
             "in points; where 20,000 resamples leave it above 0.09 the bootstrap is drawn again with the resamples "
             "that reach it (statistics.pooled_delta, max_mc_error; few seeds that differ a lot make it lumpy).",
             "", "| comparison | question | seeds | " + " | ".join(METRICS) + " | mc |",
             "|---|---|---:|" + "---:|" * len(METRICS) + "---:|"]
    for base, other, question in COMPARISONS:
        s, deltas = results[(base, other)]
        holm = secondary_holm(deltas)
        cells = [cell(deltas[m], holm.get(m)) if m in deltas else "-" for m in METRICS]
        mc = max((d.mc_error for d in deltas.values() if d.mc_error is not None), default=None)
        lines.append(f"| {ARMS[other][0]} - {ARMS[base][0]} | {question} | {len(s)} | " + " | ".join(cells)
                     + f" | {_fmt(mc, digits=3)} |")
    lines += ["", f"![METEOR deltas with both intervals]({picture.name})" if drew else
              "(no picture yet: no comparison has 2 seeds)", "",
              "## The minimum detectable effect reached", "",
              "The design below sized the seeds from study v1's variance components. These are the components "
              "measured here, from each comparison's per-user METEOR differences (seed, user and residual SD, "
              "method of moments), and the MDE they give (80% power, two-sided 95%, t quantiles on seeds - 1 df), "
              "in points and as a share of CE's test METEOR over the same seeds. With few seeds the seed SD is "
              "poorly determined (seeds - 1 df; 0 when the seed means differ less than the residual implies), so "
              "the planned-seeds column firms up as seeds finish.", "", *reached_lines(study), "",
              "## Mechanism: weight on planted-name tokens against the others", "",
              "From train_log.jsonl (per step, from the synthetic truth spans; mean over steps and the arm's seeds): "
              "the share of response tokens inside a planted name, the share of the step's weight sum they carry, "
              "the mean weight and mean PIR on planted and on other tokens (PIR only where the loss computes it), and "
              "the share of all tokens whose raw score the loss clips to its floor or to its cap (PerCE: PIR below 0.8 "
              "or above 5; without the floor, PIR below 0 gets weight 0; LongCE: exp(PIR) above 5, i.e. PIR above "
              "1.61, and no floor; CE and DFT clip nothing).", "",
              *mechanism_lines(study), "",
              "## After training: how far each model reads the profile, and where its loss puts the weight", "",
              "`percli contrast` on the 48 val users (none seen in training) with the pilot seeds' checkpoints at the "
              "selected lr (mean over the seeds), and with the untrained model: the AUC of PIR for planted-name "
              "tokens; per group of response tokens, the mean PIR (log P with the profile minus without) and the "
              "share of the arm's loss weight the group gets; for the first token of a name also its mean log P "
              "without the profile, and for the other tokens (by PIR band) their share of the tokens. In these "
              "reviews the token before a name is always ' named'. A model that reads the profile to choose the "
              "person raises the PIR of a name's first token; one that learns names whatever the profile raises "
              "their log P without it.", "", *probe_lines(study), "",
              "## Test scores (x100, mean (sd) over seeds)", "", *test_lines(study), "",
              "## lr pilot on val", "", *selection_lines(study), "",
              *design_lines(),
              "## Budget", "", *estimate_lines(), "", "Measured so far:", "", *budget_lines(study, planner.planned), ""]
    atomic_write_text(out, "\n".join(lines))
    print(f"percli study: wrote {out}" + (f" and {picture}" if drew else ""), flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(REPO / "results" / "study"), help="finished runs' small outputs")
    p.add_argument("--work", default=str(REPO / "outputs" / "study"), help="run dirs with checkpoints")
    p.add_argument("--report", default=str(REPO / "results" / "study.md"), help="the report (picture beside it)")
    p.add_argument("--dry-run", action="store_true", help="print the runs still to do, run nothing")
    p.add_argument("--report-only", action="store_true", help="only write results/study.md from finished runs")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=list(range(max(SEEDS.values()))),
                   help="main-phase seeds to run (default: all); the pilot always runs first")
    p.add_argument("--arms", type=lambda s: s.split(","), default=list(ARMS),
                   help=f"arms to run (default: all of {','.join(ARMS)})")
    p.add_argument("--phase", choices=("all", "pilot", "main"), default="all",
                   help="all: pilot, then main runs; pilot: only the lr pilot (runners for disjoint --arms may run at "
                        "once); main: only main runs, once the pilot is done (runners for disjoint --seeds)")
    args = p.parse_args(argv)
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        p.error(f"--arms {','.join(unknown)}: not an arm; choose from {','.join(ARMS)}")
    study = Study(Path(args.results).resolve(), Path(args.work).resolve(), args.dry_run, overrides)
    report = Path(args.report).resolve()
    start = time.monotonic()
    if not args.report_only:
        run_study(study, args.seeds, report, args.arms, args.phase)
    if args.dry_run:
        print("\n".join(["percli study: to do"] + [f"  {n}" for n in study.planned] if study.planned
                        else ["percli study: every run is done"]))
        return 0
    if not args.report_only:
        print(f"percli study: runs done in {time.monotonic() - start:.0f} s", flush=True)
    # run_study rewrites the report after every step that ran; only a runner that ran nothing still owes one.
    if args.report_only or not study.planned:
        write_report(study, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
