"""Reproduce the paper's table (GPU) or its offline demo (CPU) end to end: train, evaluate, `percli table`.

    python scripts/reproduce_table.py demo             # `make demo`, `make reproduce-table SCALE=demo`
    python scripts/reproduce_table.py paper            # `make reproduce-table` (GPU node or SLURM)
    python scripts/reproduce_table.py paper --dry-run  # print the commands only
    python scripts/reproduce_table.py paper -- hydra/launcher=slurm hydra.launcher.partition=gpu

demo (offline, 2-core CPU): SmolLM2-135M-Instruct fine-tuned with CE and with PerCE on synthetic LongLaMP-
schema reviews with planted personal names, equal budgets (experiment=demo, only `loss=` differs); each run
is evaluated after training (ROUGE / METEOR / planted-word recall); PerContrast scores of the test split
under the PerCE model give contrast.html; `percli table` writes results/table.md. Runs land in
outputs/demo/<timestamp>/ so a rerun never mixes with an older one.

paper (GPU): one Hydra sweep over experiment=paper_<model>_<task> x loss x lr (x setting), 3 models x
3 tasks x 4 losses x 5 lrs = 180 train runs (user setting; `--settings user,temporal` doubles it). Then,
per (model, loss, task), the checkpoint with the best METEOR (the same rule as the table) is evaluated on
the two other tasks (cross-task transfer block; `--cross-scenario` also evaluates it on the temporal
setting), and `percli table` writes results/paper/table.md.

GPU-hours, an estimate (not measured: no GPU was available when this was written). Per train run: 2,000
examples x 3 epochs x ~1,700 tokens (Contriever top-4 prompt + response) = ~10M tokens; at 8 x N x tokens
FLOPs (forward + backward + gradient-checkpointing recompute) and ~35% MFU on H100 (~350 TFLOP/s), with
PerCE's extra no-grad forward on the short profile-free stream adding ~10%: Qwen3-4B ~0.3, Llama3-8B
~0.55, Qwen3-14B ~1.0 GPU-h per run (A100: x3). The 180-run sweep: ~100 H100 GPU-h of training.
Evaluation is the larger, less certain part: greedy generation of up to 512 tokens per test example with
the HF backend at ~1-3 s per example (batched) on one GPU puts each evaluation at 1-3 GPU-h per 2,000
test examples, i.e. ~180-550 GPU-h for the 180 in-task evaluations plus 72 transfer evaluations. Total:
roughly 300-650 H100 GPU-hours (x2 with the temporal setting); eval.backend=vllm cuts the evaluation
share several-fold. Disk: every run keeps checkpoints/final (8-28 GB in bf16), ~2.5 TB for the sweep;
`--prune` deletes the checkpoints of the runs that selection did not keep.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from percli.data.prompts import TASKS  # noqa: E402
from percli.losses import LOSSES  # noqa: E402
from percli.preflight import compose_config  # noqa: E402
from percli.report import Evaluation, build_cells, collect, find_run_dirs  # noqa: E402

MODELS = ("qwen3-4b", "llama3-8b", "qwen3-14b")
LRS = ("2e-6", "5e-6", "1e-5", "2e-5", "5e-5")
SELECT_METRIC = "meteor"   # the table's default table.select_metric
# Keys of a train run's data/retriever/eval config that must not follow it into a transfer evaluation.
_NOT_COPIED = {"data.split", "eval.after_train", "eval.predictions"}


def percli(*args: str, dry_run: bool = False) -> int:
    """Run `percli <args>` with this interpreter; return its exit code (failed jobs are in the table)."""
    cmd = [sys.executable, "-m", "percli", *args]
    print("+ percli " + " ".join(args), flush=True)
    if dry_run:
        return 0
    start = time.monotonic()
    code = subprocess.call(cmd, cwd=REPO)
    print(f"  ({time.monotonic() - start:.0f} s, exit {code})", flush=True)
    return code


def _override_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    return text if text.replace("-", "").replace("_", "").replace(".", "").replace("/", "").isalnum() else repr(text)


def _leaves(node: DictConfig, prefix: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in node.items():
        if isinstance(value, DictConfig):
            out |= _leaves(value, f"{prefix}.{key}")
        elif not isinstance(value, ListConfig):
            out[f"{prefix}.{key}"] = value
    return out


def transfer_eval_overrides(train_run: Path, task: str, setting: str) -> list[str]:
    """`percli eval` overrides that score train_run's final checkpoint on (task, setting) with the train run's
    own data / retriever / eval settings, so a transfer number is comparable with the in-task one."""
    cfg = OmegaConf.load(train_run / "config.yaml")
    choices = OmegaConf.load(train_run / ".hydra" / "hydra.yaml").hydra.runtime.choices
    base = [f"model={choices.model}", f"model.path={train_run / 'checkpoints' / 'final'}",
            f"task={task}", f"task.setting={setting}", f"data={choices.data}", f"retriever={choices.retriever}"]
    fresh = compose_config("eval", base)
    extra = []
    for section in ("data", "retriever", "eval"):
        wanted = _leaves(cfg[section], section)
        have = _leaves(fresh[section], section)
        extra += [f"{k}={_override_value(v)}" for k, v in wanted.items()
                  if k in have and have[k] != v and k not in _NOT_COPIED]
    return base + extra


def selected_train_runs(out: Path) -> list[Evaluation]:
    """Per (model, loss, task, setting): the train run the table shows (best METEOR), as the table selects it."""
    evaluations, _ = collect(find_run_dirs(out))
    cells = build_cells([e for e in evaluations if e.in_task and e.trained_on is not None], SELECT_METRIC)
    return [c.selected for c in cells.values()
            if c.selected is not None and (c.selected.run_dir / "checkpoints" / "final").is_dir()]


def prune_checkpoints(out: Path, keep: list[Evaluation]) -> None:
    kept = {e.run_dir for e in keep}
    for run_dir in find_run_dirs(out / "train"):
        final = run_dir / "checkpoints"
        if run_dir not in kept and final.is_dir():
            shutil.rmtree(final)
            print(f"  pruned {final}")


def paper(args: argparse.Namespace) -> int:
    out = Path(args.out or f"outputs/paper/{datetime.now():%Y-%m-%d_%H-%M-%S}").resolve()
    experiments = ",".join(f"paper_{m}_{t}" for m in args.models for t in args.tasks)
    failed = False
    if not args.skip_train:
        failed = percli("train", "-m", f"experiment={experiments}", f"loss={','.join(args.losses)}",
                        f"train.lr={','.join(args.lrs)}", f"task.setting={','.join(args.settings)}",
                        f"hydra.sweep.dir={out / 'train'}", *args.overrides, dry_run=args.dry_run) != 0
    if args.dry_run:
        print("# then: per (model, loss, task) the best-METEOR checkpoint is evaluated on the other tasks, "
              "and `percli table` runs")
    else:
        selected = selected_train_runs(out / "train")
        if args.prune:
            prune_checkpoints(out, selected)
        for ev in sorted(selected, key=lambda e: str(e.run_dir)):
            trained = ev.trained_on
            targets = []
            if args.transfer and trained.setting == "user":
                targets += [(t, "user") for t in args.tasks if t != trained.task]
            if args.cross_scenario and trained.setting == "user":
                targets.append((trained.task, "temporal"))
            for task, setting in targets:
                name = f"{ev.model}_{ev.loss}_{trained.task}-{trained.setting}_to_{task}-{setting}"
                run_dir = out / "transfer" / name
                if (run_dir / "status.json").exists():
                    continue   # a rerun of the script skips transfer evaluations that already ran
                overrides = transfer_eval_overrides(ev.run_dir, task, setting)
                failed |= percli("eval", *overrides, f"hydra.run.dir={run_dir}") != 0
    results = Path(args.results or "results/paper")
    failed |= percli("table", f"table.runs={out}", f"table.out_dir={results}", dry_run=args.dry_run) != 0
    print(f"\ntable: {results / 'table.md'} (.csv, .tex, loss_curves.png); runs: {out}")
    return 1 if failed else 0


def demo(args: argparse.Namespace) -> int:
    start = time.monotonic()
    out = Path(args.out or f"outputs/demo/{datetime.now():%Y-%m-%d_%H-%M-%S}").resolve()
    results = Path(args.results or "results")
    failed = percli("train", "-m", "experiment=demo", "loss=ce,perce", f"hydra.sweep.dir={out / 'train'}",
                    *args.overrides, dry_run=args.dry_run) != 0
    contrast_dir = out / "contrast"
    perce = [] if args.dry_run else [e for e in selected_train_runs(out / "train") if e.loss == "perce"]
    if perce or args.dry_run:
        ckpt = perce[0].run_dir / "checkpoints" / "final" if perce else "<perce run>/checkpoints/final"
        # Scored on the held-out test split, the same examples the table's metrics come from.
        failed |= percli("contrast", "+experiment=demo", f"model.path={ckpt}", "data.split=test",
                         f"hydra.run.dir={contrast_dir}", *args.overrides, dry_run=args.dry_run) != 0
    else:
        print("percli: no PerCE checkpoint to score, so no heatmap (see the table's notes)", flush=True)
        failed = True
    failed |= percli("table", f"table.runs={out}", f"table.out_dir={results}", dry_run=args.dry_run) != 0
    heatmap = contrast_dir / "contrast.html"
    if heatmap.is_file():
        tmp = results / ".contrast.html.tmp"
        shutil.copyfile(heatmap, tmp)
        tmp.replace(results / "contrast.html")
        heatmap = results / "contrast.html"
    print(f"\npercli demo finished in {time.monotonic() - start:.0f} s{' WITH FAILURES' if failed else ''}")
    print(f"  table:   {results / 'table.md'} (.csv, .tex, loss_curves.png)")
    print(f"  heatmap: {heatmap} (PerContrast scores of the test split under the PerCE model)")
    print(f"  runs:    {out}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scale", choices=("paper", "demo"))
    p.add_argument("--out", help="run dir root (default outputs/{paper,demo}/<timestamp>)")
    p.add_argument("--results", help="where the table goes (default results/paper, results)")
    p.add_argument("--dry-run", action="store_true", help="print the percli commands without running them")
    p.add_argument("--models", type=lambda s: s.split(","), default=list(MODELS))
    p.add_argument("--tasks", type=lambda s: s.split(","), default=list(TASKS))
    p.add_argument("--losses", type=lambda s: s.split(","), default=list(LOSSES))
    p.add_argument("--lrs", type=lambda s: s.split(","), default=list(LRS))
    p.add_argument("--settings", type=lambda s: s.split(","), default=["user"])
    p.add_argument("--no-transfer", dest="transfer", action="store_false", help="skip cross-task evaluations")
    p.add_argument("--cross-scenario", action="store_true", help="also evaluate user-trained models on temporal")
    p.add_argument("--skip-train", action="store_true",
                   help="reuse the train runs under --out: only the transfer evaluations (those not run yet) and the table")
    p.add_argument("--prune", action="store_true", help="delete checkpoints of runs the selection did not keep")
    args = p.parse_args(argv)
    args.overrides = overrides
    return paper(args) if args.scale == "paper" else demo(args)


if __name__ == "__main__":
    raise SystemExit(main())
