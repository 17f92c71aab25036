"""Does PerCE beat CE here? The resumable CE-vs-PerCE study on SmolLM2-135M-Instruct (`make study`).

    python scripts/study.py               # run what is missing, then write results/study.md + study_deltas.png
    python scripts/study.py --dry-run     # print the plan: which runs are done, which remain
    python scripts/study.py --report-only # only the report, from the runs finished so far

Design (conf/experiment/study.yaml: synthetic reviews, 48 train users, 24 val and 48 test users never seen
in training, 12 steps of batch 4, greedy 64-token generation):
- CE and PerCE, each over the lr grid LRS and the seeds SEEDS; every run is scored on val.
- Selection per (loss, seed): the lr with the best val METEOR; only that run is scored on test.
- Two controls per seed, at PerCE's selected lr L of that seed, each scored on test:
  ce-scaled: CE at lr L x w, w = the mean PerCE weight of that PerCE run (train_log.jsonl `weight_mean`),
    so CE gets the same average step size; a PerCE gain that survives it is not a learning-rate effect;
  longce: the LongCE-style ratio weight min(exp(PIR), 5), no floor (conf/loss/longce.yaml).
Seed-major order: each seed's comparison is complete before the next seed starts; within a seed, CE and PerCE
alternate over the grid. Runners for disjoint seeds may run at once (`--seeds 0` and `--seeds 1`).

Resumable: a finished run keeps only its small outputs (config.yaml, metrics.json, scores.jsonl,
train_log.jsonl) in results/study/<run>/ and a rerun skips it. Checkpoints live in outputs/study/<run>/ until
the (loss, seed) selection has been scored on test, then they are deleted; one that is needed but gone is
retrained (same seed, same data). study_log.jsonl records each run's wall time (the budget).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from percli import statistics  # noqa: E402
from percli.io import atomic_write_text  # noqa: E402
from percli.scores import align, clusters_of, metric_matrix, read_scores  # noqa: E402

LRS = ("5e-5", "1e-4", "2e-4")
SEEDS = (0, 1, 2)
GRID_LOSSES = ("ce", "perce")
SELECT_METRIC = "meteor"
KEPT = ("config.yaml", "metrics.json", "scores.jsonl", "train_log.jsonl")
METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "meteor", "planted_recall")
SYSTEMS = {"ce": "CE", "perce": "PerCE", "ce-scaled": "CE at lr x w", "longce": "LongCE"}
# (baseline, other, the question the delta answers)
COMPARISONS = (
    ("ce", "perce", "does PerCE beat CE (each at its own val-selected lr)?"),
    ("ce-scaled", "perce", "is it more than the step size? CE at PerCE's lr x PerCE's mean weight"),
    ("ce", "longce", "does the floor-free ratio weight (LongCE) beat CE?"),
    ("ce", "ce-scaled", "does CE itself change at PerCE's effective step size?"),
)


class Study:
    def __init__(self, results: Path, work: Path, dry_run: bool, overrides: list[str]):
        self.results, self.work, self.dry_run, self.overrides = results, work, dry_run, overrides
        self.planned: list[str] = []

    # ------------------------------------------------------------------------------------------ state
    def done(self, name: str) -> bool:
        return (self.results / name / "metrics.json").is_file()

    def metrics(self, name: str) -> dict:
        return json.loads((self.results / name / "metrics.json").read_text())

    def mean_weight(self, name: str) -> float:
        rows = [json.loads(line) for line in (self.results / name / "train_log.jsonl").read_text().splitlines()]
        values = [r["weight_mean"] for r in rows if r.get("weight_mean") is not None]
        return sum(values) / len(values)

    def _checkpoint(self, name: str) -> Path:
        return self.work / name / "checkpoints" / "final"

    # ------------------------------------------------------------------------------------------- runs
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
        # One short O_APPEND write: runners for different seeds (--seeds) may share the log.
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

    def train(self, name: str, loss: str, lr: str, seed: int, *, evaluate: bool = True) -> None:
        """Train (and score on val) unless results/<name> exists; keep checkpoints/final for the test run."""
        if evaluate and self.done(name):
            return
        self.planned.append(name if evaluate else f"{name} (retrain for its checkpoint)")
        if self.dry_run:
            return
        shutil.rmtree(self.work / name, ignore_errors=True)
        self._percli(name, ["train", "experiment=study", f"loss={loss}", f"train.lr={lr}", f"seed={seed}",
                            "eval.split=val", f"eval.after_train={'true' if evaluate else 'false'}",
                            f"hydra.run.dir={self.work / name}"])
        if evaluate:
            self._keep(name)

    def test(self, name: str, loss: str, lr: str, seed: int) -> None:
        """Score train run <name>'s checkpoint on test into <name>_test (retraining it if it is gone)."""
        out = f"{name}_test"
        if self.done(out):
            return
        if not self._checkpoint(name).is_dir() and name not in self.planned:   # planned: a dry run trains it
            self.train(name, loss, lr, seed, evaluate=False)
        self.planned.append(out)
        if self.dry_run:
            return
        shutil.rmtree(self.work / out, ignore_errors=True)
        self._percli(out, ["eval", "experiment=study", f"model.path={self._checkpoint(name)}", f"seed={seed}",
                           "eval.split=test", f"hydra.run.dir={self.work / out}"])
        self._keep(out)

    def drop_checkpoints(self, names: list[str]) -> None:
        if not self.dry_run:
            for name in names:
                shutil.rmtree(self.work / name / "checkpoints", ignore_errors=True)

    # ------------------------------------------------------------------------------------------- plan
    def selected_lr(self, loss: str, seed: int) -> str | None:
        """The grid lr with the best val METEOR for (loss, seed); None until all of them are scored."""
        names = [run_name(loss, lr, seed) for lr in LRS]
        if not all(self.done(n) for n in names):
            return None
        return max(LRS, key=lambda lr: self.metrics(run_name(loss, lr, seed))[SELECT_METRIC])

    def run_seed(self, seed: int) -> None:
        # lr-major: CE and PerCE at the same lr finish together, so a study stopped early still pairs them.
        for lr in LRS:
            for loss in GRID_LOSSES:
                self.train(run_name(loss, lr, seed), loss, lr, seed)
        for loss in GRID_LOSSES:
            best = self.selected_lr(loss, seed)
            if best is None:   # dry run: the grid is not scored yet
                self.planned.append(f"{loss}_s{seed}: test run of the lr selected on val")
                continue
            self.test(run_name(loss, best, seed), loss, best, seed)
            self.drop_checkpoints([run_name(loss, lr, seed) for lr in LRS])
        lr = self.selected_lr("perce", seed)
        if lr is None:
            self.planned.append(f"controls of seed {seed} (ce-scaled, longce at PerCE's selected lr)")
            return
        scaled = f"{float(lr) * self.mean_weight(run_name('perce', lr, seed)):.3g}"
        for loss, name, run_lr in (("ce", f"ce-scaled_lr{scaled}_s{seed}", scaled),
                                   ("longce", run_name("longce", lr, seed), lr)):
            self.train(name, loss, run_lr, seed)
            self.test(name, loss, run_lr, seed)
            self.drop_checkpoints([name])


    def test_run(self, system: str, seed: int) -> str | None:
        """results/ name of `system`'s test run for `seed`, or None while it is not done."""
        if system in GRID_LOSSES:
            lr = self.selected_lr(system, seed)
            name = None if lr is None else f"{run_name(system, lr, seed)}_test"
        else:
            lr = self.selected_lr("perce", seed)
            pattern = f"ce-scaled_lr*_s{seed}_test" if system == "ce-scaled" else f"longce_lr{lr}_s{seed}_test"
            found = sorted(p.name for p in self.results.glob(pattern)) if lr is not None else []
            name = found[0] if found else None
        return name if name is not None and self.done(name) else None


def run_name(loss: str, lr: str, seed: int) -> str:
    return f"{loss}_lr{lr}_s{seed}"

# ------------------------------------------------------------------------------------------------ report
def pooled(study: Study, base: str, other: str) -> tuple[list[int], dict[str, statistics.Delta]]:
    """Seeds where both systems have a test run, and per metric the delta pooled over them."""
    seeds = [s for s in SEEDS if study.test_run(base, s) and study.test_run(other, s)]
    if not seeds:
        return [], {}
    runs = [read_scores(study.results / study.test_run(sys_, s)) for sys_ in (base, other) for s in seeds]
    _, positions = align(runs, [f"{sys_}_s{s}" for sys_ in (base, other) for s in seeds])
    clusters = clusters_of(runs, positions)
    out = {}
    for metric in METRICS:
        m = metric_matrix(runs, positions, metric)
        if m is not None:
            out[metric] = statistics.pooled_delta(m[:len(seeds)], m[len(seeds):], clusters)
    return seeds, out


def _fmt(x: float) -> str:
    return f"{x * 100:.2f}"


def verdict(d: statistics.Delta | None) -> str:
    if d is None:
        return "not measured yet"
    if d.ci_low > 0:
        return f"yes: METEOR {statistics.format_delta(d)}, the 95% CI excludes 0"
    if d.ci_high < 0:
        return f"no, it is worse: METEOR {statistics.format_delta(d)}, the 95% CI excludes 0"
    return (f"no detectable difference: METEOR {statistics.format_delta(d)}; the 95% CI includes 0 "
            f"(this design resolves differences larger than about {max(-d.ci_low, d.ci_high) * 100:.1f} points)")


def budget(study: Study) -> list[str]:
    log = study.results / "study_log.jsonl"
    rows = [json.loads(x) for x in log.read_text().splitlines()] if log.is_file() else []
    if not rows:
        return ["No run has finished yet."]
    failed = [r for r in rows if r.get("exit", 0) != 0]
    rows = [r for r in rows if r.get("exit", 0) == 0]
    train = [r["seconds"] for r in rows if r["command"] == "train"]
    evals = [r["seconds"] for r in rows if r["command"] == "eval"]
    total = sum(r["seconds"] for r in rows)
    ends = [datetime.fromisoformat(r["finished"]).timestamp() for r in rows]
    starts = [end - r["seconds"] for end, r in zip(ends, rows)]
    threads = sorted({r.get("omp_num_threads") or "default" for r in rows})
    # Runners for different seeds overlap, so the elapsed span, not the sum, is what the study cost in time.
    lines = [f"Finished runs: {len(rows)} processes, {total / 60:.0f} min of process wall time in all; "
             f"{(max(ends) - min(starts)) / 60:.0f} min elapsed from the first start to the last finish "
             f"({datetime.fromtimestamp(min(starts), UTC).isoformat(timespec='minutes')} to "
             f"{datetime.fromtimestamp(max(ends), UTC).isoformat(timespec='minutes')}; torch threads per run "
             f"(OMP_NUM_THREADS): {', '.join(threads)})."]
    if failed:
        lines.append(f"- lost: {len(failed)} run(s) killed before they finished, {sum(r['seconds'] for r in failed) / 60:.0f}"
                     f" min of wall time (" + ", ".join(f"{r['run']} exit {r['exit']}" for r in failed)
                     + "; exit -9: the out-of-memory killer of the shared machine); a rerun starts them again")
    if train:
        lines.append(f"- train + val scoring: {len(train)} runs, mean {sum(train) / len(train):.0f} s "
                     f"(min {min(train):.0f}, max {max(train):.0f})")
    if evals:
        lines.append(f"- test scoring: {len(evals)} runs, mean {sum(evals) / len(evals):.0f} s")
    loads = [r["load_avg_15min"] for r in rows if r.get("load_avg_15min") is not None]
    if loads:
        lines.append(f"- 15-min load average when runs ended: {min(loads):.1f} to {max(loads):.1f} on 2 cores "
                     f"(an idle machine reads about 1)")
    return lines


def selection_table(study: Study) -> list[str]:
    lines = ["| loss | seed | " + " | ".join(f"val METEOR, lr {lr}" for lr in LRS) + " | selected lr |",
             "|---|---:|" + "---:|" * len(LRS) + "---|"]
    for loss in GRID_LOSSES:
        for seed in SEEDS:
            cells = [_fmt(study.metrics(run_name(loss, lr, seed))["meteor"]) if study.done(run_name(loss, lr, seed))
                     else "-" for lr in LRS]
            best = study.selected_lr(loss, seed)
            if best is not None:
                cells[LRS.index(best)] = f"**{cells[LRS.index(best)]}**"
            lines.append(f"| {SYSTEMS[loss]} | {seed} | " + " | ".join(cells) + f" | {best or 'pending'} |")
    return lines


def test_table(study: Study) -> list[str]:
    lines = ["| system | seeds | lr per seed | " + " | ".join(METRICS) + " |", "|---|---:|---|" + "---:|" * len(METRICS)]
    for system, label in SYSTEMS.items():
        names = [(s, study.test_run(system, s)) for s in SEEDS]
        names = [(s, n) for s, n in names if n]
        if not names:
            lines.append(f"| {label} | 0 | | " + " | ".join("-" for _ in METRICS) + " |")
            continue
        lrs = ", ".join(n.split("_lr")[1].split("_s")[0] for _, n in names)
        cells = []
        for metric in METRICS:
            vals = [study.metrics(n).get(metric) for _, n in names]
            vals = [v for v in vals if v is not None]
            if not vals:
                cells.append("-")
                continue
            mean = sum(vals) / len(vals)
            sd = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
            cells.append(f"{_fmt(mean)} ({sd * 100:.2f})")
        lines.append(f"| {label} | {len(names)} | {lrs} | " + " | ".join(cells) + " |")
    return lines


def weight_table(study: Study) -> list[str]:
    lines = ["| seed | PerCE lr | mean weight w | tokens at the 0.8 floor | at the 5.0 cap | mean PIR |",
             "|---:|---|---:|---:|---:|---:|"]
    for seed in SEEDS:
        lr = study.selected_lr("perce", seed)
        if lr is None:
            continue
        rows = [json.loads(x) for x in (study.results / run_name("perce", lr, seed) / "train_log.jsonl")
                .read_text().splitlines()]
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("weight_mean", "clip_low", "clip_high", "pir_mean")}
        lines.append(f"| {seed} | {lr} | {mean['weight_mean']:.3f} | {mean['clip_low']:.1%} | "
                     f"{mean['clip_high']:.1%} | {mean['pir_mean']:.3f} |")
    return lines


def plot(results: dict[tuple[str, str], tuple[list[int], dict[str, statistics.Delta]]], path: Path) -> bool:
    import matplotlib  # heavy and only needed for the picture

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(k, v) for k, v in results.items() if v[1]]
    if not shown:
        return False
    fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 3.4), sharey=True, squeeze=False)
    for ax, ((base, other), (seeds, deltas)) in zip(axes[0], shown):
        names = [m for m in METRICS if m in deltas]
        for y, m in enumerate(names):
            d = deltas[m]
            color = "tab:green" if d.ci_low > 0 else ("tab:red" if d.ci_high < 0 else "tab:gray")
            ax.errorbar(d.delta * 100, y, xerr=[[(d.delta - d.ci_low) * 100], [(d.ci_high - d.delta) * 100]],
                        fmt="o", color=color, capsize=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(names)), names)
        ax.set_title(f"{SYSTEMS[other]} - {SYSTEMS[base]}\n({len(seeds)} seed{'s' * (len(seeds) != 1)})", fontsize=9)
        ax.set_xlabel("delta x100, 95% CI")
    axes[0][0].invert_yaxis()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return True


def _direction(d: statistics.Delta) -> str:
    return "higher" if d.ci_low > 0 else ("lower" if d.ci_high < 0 else "no detectable difference")


def findings(study: Study, results: dict) -> list[str]:
    """What the deltas say, comparison by comparison, and the design's limits that the data point to."""
    lines = []
    for base, other, _ in COMPARISONS:
        seeds, deltas = results[(base, other)]
        if not deltas:
            continue
        said = [f"{m} {_direction(deltas[m])} ({statistics.format_delta(deltas[m])})"
                for m in ("meteor", "rougeL", "planted_recall") if m in deltas]
        lines.append(f"- {SYSTEMS[other]} against {SYSTEMS[base]} ({len(seeds)} seeds): " + "; ".join(said) + ".")
    for loss in GRID_LOSSES:
        edge = [s for s in SEEDS if study.selected_lr(loss, s) == LRS[-1]]
        if edge:
            lines.append(f"- {SYSTEMS[loss]}'s val-selected lr is the top of the grid ({LRS[-1]}) for seed(s) "
                         f"{', '.join(map(str, edge))}: a wider grid might raise it further.")
    return lines


def write_report(study: Study, out: Path, picture: Path) -> None:
    planner = Study(study.results, study.work, True, study.overrides)
    for seed in SEEDS:
        planner.run_seed(seed)
    results = {(b, o): pooled(study, b, o) for b, o, _ in COMPARISONS}
    main_delta = results[("ce", "perce")][1].get("meteor")
    finished = [p.name for p in study.results.iterdir() if (p / "metrics.json").is_file()]
    done_test = sum(name.endswith("_test") for name in finished)
    done_train = len(finished) - done_test
    drew = plot(results, picture)
    lines = ["# Does PerCE beat CE here? The CE-vs-PerCE study", "",
             f"**Answer{'' if not planner.planned else ' so far'}: {verdict(main_delta)}.**", "",
             f"Status: {'complete' if not planner.planned else 'INCOMPLETE'}: {done_train} of "
             f"{len(GRID_LOSSES) * len(LRS) * len(SEEDS) + 2 * len(SEEDS)} train runs (each scored on val) and "
             f"{done_test} of {(len(GRID_LOSSES) + 2) * len(SEEDS)} test scorings are done. "
             + ("Every planned run is done." if not planner.planned else
                f"{len(planner.planned)} steps remain; `make study` continues where this stopped:"), ""]
    lines += [f"- {n}" for n in planner.planned] + ([""] if planner.planned else [])
    lines += ["## Deltas on the test split (pooled over seeds)", "",
              "Each cell: mean(other) - mean(baseline) x100 over the 48 unseen test users, 95% CI of a two-level "
              "paired bootstrap (seeds, then users; percli/statistics.py), relative change, * where the CI "
              "excludes 0. Seed s of one system is paired with seed s of the other. p: two-sided sign-flip "
              "permutation test over users of the seed-averaged difference; it holds the trained models fixed, "
              "while the CI also resamples seeds (the training recipe's own variance), so a small p with a CI "
              "that includes 0 means 'these three models differ', not 'the recipe does'. Read the CI.", "",
              "| comparison | question | seeds | " + " | ".join(METRICS) + " | p (METEOR) |",
              "|---|---|---:|" + "---:|" * len(METRICS) + "---:|"]
    for base, other, question in COMPARISONS:
        seeds, deltas = results[(base, other)]
        cells = [statistics.format_delta(deltas[m]) if m in deltas else "-" for m in METRICS]
        p = f"{deltas['meteor'].p_value:.3g}" if "meteor" in deltas else "-"
        lines.append(f"| {SYSTEMS[other]} - {SYSTEMS[base]} | {question} | {len(seeds)} | " + " | ".join(cells)
                     + f" | {p} |")
    lines += ["", f"![deltas with 95% CIs]({picture.name})" if drew else "(no picture yet: no comparison done)", "",
              "## What was and was not found", "", *findings(study, results), "",
              "Not found, and out of this design's reach: whether PerCE helps a 4B-14B model trained for 3 epochs "
              "on real LongLaMP data, as in the paper. This is a 135M model, 12 optimizer steps, synthetic users "
              "whose personal signal is a few planted names; each of those (model size, steps, clip range "
              "`loss.min_weight` / `loss.max_weight`, real data) can change the answer.", "",
              "## Test scores (x100, mean (sd) over seeds)", "", *test_table(study), "",
              "## Selection on val (per loss and seed: the lr with the best val METEOR; only it is scored on test)",
              "", *selection_table(study), "",
              "## PerCE's weights during training (selected runs; train_log.jsonl, mean over steps)", "",
              *weight_table(study), "",
              "## Design", "",
              "- Model: SmolLM2-135M-Instruct (real pretrained weights, fp32, CPU), full fine-tuning, AdamW, cosine "
              "schedule, no warm-up, grad-norm clip 1.0 (conf/experiment/study.yaml).",
              "- Data: synthetic LongLaMP-schema product reviews with planted personal names, user setting: 48 train "
              "users (1 item each), 24 val users, 48 test users, none of them seen in training; BM25 top-2 profile "
              "items; prompts cut at 384 tokens, targets at 64 tokens.",
              f"- Training: 1 epoch = 12 steps of batch 4. lr grid {', '.join(LRS)}; seeds {', '.join(map(str, SEEDS))} "
              "(the seed sets the training order; the data are fixed).",
              "- Selection: per (loss, seed), the lr with the best val METEOR; that run alone is scored on test.",
              "- Controls, per seed, at PerCE's selected lr L: CE at lr L x w (w = PerCE's mean token weight in that "
              "run) and LongCE (w_t = min(exp(PIR_t), 5), no floor) at lr L.",
              "- Generation: greedy, 64 new tokens, batch 8. Metrics: ROUGE-1/2/L/Lsum and METEOR (HF evaluate "
              "parity), planted recall (share of the user's planted names that the generation contains).", "",
              "## Budget", "",
              "Sized before running from the idle-machine timings in the README (`make demo`: about 10 s per "
              "optimizer step of batch 4 at ~400 tokens; 67 generated tokens/s at batch 8): ~165 s per train run "
              "and ~66 s per test scoring, ~80 min for the whole study with one runner. The measured cost is "
              "below; `make study` runs one runner with the default threads, and `--seeds` lets runners for "
              "different seeds share a machine.", "",
              *budget(study), ""]
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
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=list(SEEDS),
                   help="seeds to run (default: all)")
    args = p.parse_args(argv)
    study = Study(Path(args.results).resolve(), Path(args.work).resolve(), args.dry_run, overrides)
    start = time.monotonic()
    if not args.report_only:
        for seed in args.seeds:
            study.run_seed(seed)
    if args.dry_run:
        print("\n".join(["percli study: to do"] + [f"  {n}" for n in study.planned] if study.planned
                        else ["percli study: every run is done"]))
        return 0
    if not args.report_only:
        print(f"percli study: runs done in {time.monotonic() - start:.0f} s", flush=True)
    report = Path(args.report).resolve()
    write_report(study, report, report.with_name("study_deltas.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
