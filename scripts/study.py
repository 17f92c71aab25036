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
Seed-major order: each seed's comparison is complete before the next seed starts.

Resumable: a finished run keeps only its small outputs (config.yaml, metrics.json, scores.jsonl,
train_log.jsonl) in results/study/<run>/ and a rerun skips it. Checkpoints live in outputs/study/<run>/ until
the (loss, seed) selection has been scored on test, then they are deleted; one that is needed but gone is
retrained (same seed, same data). study_log.jsonl records each run's wall time (the budget).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from percli.io import atomic_write_jsonl  # noqa: E402

LRS = ("5e-5", "1e-4", "2e-4")
SEEDS = (0, 1, 2)
GRID_LOSSES = ("ce", "perce")
SELECT_METRIC = "meteor"
KEPT = ("config.yaml", "metrics.json", "scores.jsonl", "train_log.jsonl")


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
        if code != 0:
            raise SystemExit(f"percli study: run {name} failed (exit {code}); its log is above, the run dir is "
                             f"{self.work / name}. Fix it and rerun: finished runs are kept.")
        log = self.results / "study_log.jsonl"
        rows = [json.loads(x) for x in log.read_text().splitlines()] if log.is_file() else []
        rows.append({"run": name, "command": args[0], "seconds": round(seconds, 1),
                     "finished": datetime.now(UTC).isoformat(timespec="seconds")})
        atomic_write_jsonl(log, rows)

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
        if not self._checkpoint(name).is_dir():
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
        for loss in GRID_LOSSES:
            for lr in LRS:
                self.train(run_name(loss, lr, seed), loss, lr, seed)
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


def run_name(loss: str, lr: str, seed: int) -> str:
    return f"{loss}_lr{lr}_s{seed}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(REPO / "results" / "study"), help="finished runs' small outputs")
    p.add_argument("--work", default=str(REPO / "outputs" / "study"), help="run dirs with checkpoints")
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
    print(f"percli study: runs done in {time.monotonic() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
