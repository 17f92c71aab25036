"""Reproduce the paper's table (GPU) or its offline demo (CPU) end to end: train, evaluate, `percli table`.

    python scripts/reproduce_table.py demo             # `make demo`, `make reproduce-table SCALE=demo`
    python scripts/reproduce_table.py paper            # `make reproduce-table` (GPU node or SLURM)
    python scripts/reproduce_table.py paper --dry-run  # print the commands only
    python scripts/reproduce_table.py paper -- hydra/launcher=slurm hydra.launcher.partition=gpu

Protocol (both scales): every train run is evaluated after training on `val`; per (model, loss, task,
setting, variant) the lr with the best mean METEOR over seeds on val is selected (the table's rule,
percli/report/select.py); only the selected checkpoints (every seed of that lr) are then evaluated on the
whole `test` split, in-task and on the transfer targets; `percli table` shows those test scores with
paired bootstrap CIs of each loss against CE. Evaluation runs are named after their source checkpoint
(`<train run>_on_<task>-<setting>_<split>`), so a changed selection evaluates the newly selected
checkpoint; a rerun skips those that finished and re-runs those that failed (the failed attempt moves to
eval/.failed/) or never ran.

Everything a sweep does goes through its Hydra launcher: the test evaluations are one `percli eval -m`
sweep with the training sweep's `hydra/launcher=...` and `hydra.launcher.*` overrides (on SLURM, one job
per evaluation), into a new sweep dir eval/<start time>/<run name>/. Each evaluation's settings are one
config of the `eval_job` group, written to eval/.jobs/eval_job/<run name>.yaml and chosen with
`+eval_job=<run name>,...`.

demo (offline, 2-core CPU): SmolLM2-135M-Instruct fine-tuned with CE and with PerCE on synthetic LongLaMP-
schema reviews with planted personal names, equal budgets (experiment=demo, only `loss=` differs); the
selected checkpoints are scored on test (ROUGE / METEOR / planted-word recall); PerContrast scores of the
test split under the PerCE model give contrast.html; `percli table` writes results/table.md. Runs land in
outputs/demo/<timestamp>/ so a rerun never mixes with an older one.

paper (GPU): one Hydra sweep over experiment=paper_<model>_<task> x loss x lr (x setting), 3 models x
3 tasks x 4 losses x 5 lrs = 180 train runs (user setting; `--settings user,temporal` doubles it), each
scored on val. Then the selected checkpoints are scored on test, in-task and on the two other tasks
(cross-task transfer block; `--cross-scenario` also on the temporal setting), and `percli table` writes
results/paper/table.md.

GPU-hours, an estimate (not measured: no GPU was available when this was written). Per train run: 2,000
examples x 3 epochs x ~1,700 tokens (Contriever top-4 prompt + response) = ~10M tokens; at 8 x N x tokens
FLOPs (forward + backward + gradient-checkpointing recompute) and ~35% MFU on H100 (~350 TFLOP/s), with
PerCE's extra no-grad forward on the short profile-free stream adding ~10%: Qwen3-4B ~0.3, Llama3-8B
~0.55, Qwen3-14B ~1.0 GPU-h per run (A100: x3). The 180-run sweep: ~100 H100 GPU-h of training.
Evaluation is the larger, less certain part: greedy generation of up to 512 tokens per test example with
the HF backend at ~1-3 s per example (batched) on one GPU puts each evaluation at 1-3 GPU-h per 2,000
examples: the 180 val evaluations plus 36 in-task and 72 transfer test evaluations of the selected
checkpoints (whole test splits, up to ~4.5k rows), i.e. roughly 300-900 GPU-h of evaluation. Total:
roughly 400-1,000 H100 GPU-hours (x2 with the temporal setting); eval.backend=vllm cuts the evaluation
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
from percli.io import atomic_write_text  # noqa: E402
from percli.preflight import compose_config  # noqa: E402
from percli.report.collect import Source, collect, find_run_dirs  # noqa: E402
from percli.report.select import select  # noqa: E402
from percli.rundir import run_status  # noqa: E402

MODELS = ("qwen3-4b", "llama3-8b", "qwen3-14b")
LRS = ("2e-6", "5e-6", "1e-5", "2e-5", "5e-5")
SELECT_METRIC = "meteor"   # the table's defaults: table.select_metric, select_split and report_split
SELECT_SPLIT = "val"
REPORT_SPLIT = "test"
PAPER_LOSSES = ("ce", "perce", "lossce", "entce")   # the paper's table; --losses adds others (e.g. longce)
# Keys of a train run's data/retriever/eval config that must not follow it into an evaluation of its checkpoint.
_NOT_COPIED = {"data.split", "eval.after_train", "eval.predictions", "eval.split"}
# The config group holding one config per test evaluation (eval/.jobs/eval_job/<run name>.yaml).
EVAL_JOB = "eval_job"
# The paper's evaluations generate data-parallel on every GPU of their node (launcher.num_processes=auto).
PAPER_EVAL_LAUNCHER = ("launcher=ddp",)


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


def checkpoint_eval_config(train_run: Path, task: str, setting: str,
                           split: str = REPORT_SPLIT) -> tuple[dict[str, str], dict[str, object]]:
    """The group choices and key values with which `percli eval` scores train_run's final checkpoint on (task,
    setting, split) with the train run's own data / retriever / eval settings, so every number of a
    checkpoint is comparable."""
    cfg = OmegaConf.load(train_run / "config.yaml")
    choices = OmegaConf.load(train_run / ".hydra" / "hydra.yaml").hydra.runtime.choices
    groups = {"model": str(choices.model), "task": task, "data": str(choices.data),
              "retriever": str(choices.retriever)}
    values: dict[str, object] = {"model.path": str(train_run / "checkpoints" / "final"), "task.setting": setting,
                                 "eval.split": split}
    fresh = compose_config("eval", [f"{g}={o}" for g, o in groups.items()]
                           + [f"{k}={_override_value(v)}" for k, v in values.items()])
    for section in ("data", "retriever", "eval"):
        wanted = _leaves(cfg[section], section)
        have = _leaves(fresh[section], section)
        values |= {k: v for k, v in wanted.items() if k in have and have[k] != v and k not in _NOT_COPIED}
    return groups, values


def eval_job_yaml(groups: dict[str, str], values: dict[str, object]) -> str:
    """One evaluation as a config of the eval_job group: the group choices as defaults-list overrides, then
    the values (the package is global, as for experiment presets)."""
    node = OmegaConf.create({"defaults": [{f"override /{g}": o} for g, o in groups.items()]})
    for key, value in values.items():
        OmegaConf.update(node, key, value, force_add=True)
    return "# @package _global_\n" + OmegaConf.to_yaml(node)


def eval_sweep_args(out: Path, sweep_dir: Path, names: list[str]) -> list[str]:
    """`percli eval` arguments of one sweep over the eval_job configs `names` (under out/eval/.jobs); each
    job's run dir is sweep_dir/<name>."""
    return ["-m", f"+{EVAL_JOB}={','.join(names)}", f"hydra.searchpath=[file://{out / 'eval' / '.jobs'}]",
            f"hydra.sweep.dir={sweep_dir}", f"hydra.sweep.subdir=${{hydra.runtime.choices.{EVAL_JOB}}}"]


def launcher_overrides(overrides: list[str]) -> list[str]:
    """The overrides that choose or configure the Hydra launcher: every sweep of the pipeline gets them."""
    return [o for o in overrides if o.startswith(("hydra/launcher=", "hydra.launcher."))]


def selected_checkpoints(train_dir: Path) -> list[Source]:
    """Every seed's checkpoint of each row's selected lr (the table's rule: best mean METEOR on val)."""
    evaluations, _ = collect(find_run_dirs(train_dir))
    selections, _ = select(evaluations, SELECT_SPLIT, SELECT_METRIC)
    return sorted((s for sel in selections.values() for s in sel.sources
                   if s.run_dir is not None and (s.run_dir / "checkpoints" / "final").is_dir()),
                  key=lambda s: str(s.run_dir))


def eval_run_name(out: Path, source: Source, task: str, setting: str, split: str = REPORT_SPLIT) -> str:
    """Named after the source checkpoint (its run dir relative to `out`), so another selection gets another name."""
    run = source.run_dir.resolve()
    name = "-".join(run.relative_to(out).parts) if run.is_relative_to(out) else run.name
    return f"{name}_on_{task}-{setting}_{split}"


def needs_run(eval_dir: Path, name: str) -> bool:
    """True unless an earlier sweep under eval_dir holds a finished run `name`; failed or unfinished attempts
    are moved to eval/.failed/."""
    attempts = sorted(p for p in eval_dir.glob(f"*/{name}") if not p.parent.name.startswith("."))
    if any(run_status(p)[0] == "ok" for p in attempts):
        return False
    for run_dir in attempts:
        aside = eval_dir / ".failed" / f"{name}.{datetime.now():%Y%m%d-%H%M%S-%f}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        run_dir.rename(aside)
        print(f"  re-running {name} (the earlier attempt did not finish: {aside})")
    return True


def evaluate_selected(out: Path, *, transfer_tasks: list[str], cross_scenario: bool, overrides: list[str]) -> bool:
    """Score every selected checkpoint on test (in-task and transfer targets) in one `percli eval` sweep with
    `overrides`; True if an evaluation failed."""
    jobs: dict[str, str] = {}
    for src in selected_checkpoints(out / "train"):
        trained = src.trained_on
        targets = [(trained.task, trained.setting)]
        if trained.setting == "user":
            targets += [(t, "user") for t in transfer_tasks if t != trained.task]
            if cross_scenario:
                targets.append((trained.task, "temporal"))
        for task, setting in targets:
            name = eval_run_name(out, src, task, setting)
            if needs_run(out / "eval", name):
                jobs[name] = eval_job_yaml(*checkpoint_eval_config(src.run_dir, task, setting))
    if not jobs:
        return False
    for name, text in jobs.items():
        atomic_write_text(out / "eval" / ".jobs" / EVAL_JOB / f"{name}.yaml", text)
    sweep_dir = out / "eval" / f"{datetime.now():%Y-%m-%d_%H-%M-%S-%f}"
    return percli("eval", *eval_sweep_args(out, sweep_dir, list(jobs)), *overrides) != 0


def prune_checkpoints(out: Path, keep: list[Source]) -> None:
    kept = {s.run_dir for s in keep}
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
                        f"eval.split={SELECT_SPLIT}", f"hydra.sweep.dir={out / 'train'}", *args.overrides,
                        dry_run=args.dry_run) != 0
    eval_overrides = [*PAPER_EVAL_LAUNCHER, *launcher_overrides(args.overrides)]
    if args.dry_run:
        print("# then: per (model, loss, task) the checkpoints of the lr with the best val METEOR are scored on "
              "test (in-task and transfer) in one sweep:")
        percli("eval", *eval_sweep_args(out, out / "eval" / "<start time>", ["<selected checkpoint x target>,..."]),
               *eval_overrides, dry_run=True)
    else:
        if args.prune:
            prune_checkpoints(out, selected_checkpoints(out / "train"))
        failed |= evaluate_selected(out, transfer_tasks=list(args.tasks) if args.transfer else [],
                                    cross_scenario=args.cross_scenario, overrides=eval_overrides)
    results = Path(args.results or "results/paper")
    failed |= percli("table", f"table.runs={out}", f"table.out_dir={results}", dry_run=args.dry_run) != 0
    print(f"\ntable: {results / 'table.md'} (.csv, .tex, loss_curves.png); runs: {out}")
    return 1 if failed else 0


def demo(args: argparse.Namespace) -> int:
    start = time.monotonic()
    out = Path(args.out or f"outputs/demo/{datetime.now():%Y-%m-%d_%H-%M-%S}").resolve()
    results = Path(args.results or "results")
    failed = percli("train", "-m", "experiment=demo", "loss=ce,perce", f"eval.split={SELECT_SPLIT}",
                    f"hydra.sweep.dir={out / 'train'}", *args.overrides, dry_run=args.dry_run) != 0
    if args.dry_run:
        percli("eval", *eval_sweep_args(out, out / "eval" / "<start time>", ["<selected checkpoint>,..."]),
               *launcher_overrides(args.overrides), dry_run=True)
    else:
        failed |= evaluate_selected(out, transfer_tasks=[], cross_scenario=False,
                                    overrides=launcher_overrides(args.overrides))
    contrast_dir = out / "contrast"
    perce = [] if args.dry_run else [s for s in selected_checkpoints(out / "train") if s.loss == "perce"]
    if perce or args.dry_run:
        ckpt = perce[0].run_dir / "checkpoints" / "final" if perce else "<perce run>/checkpoints/final"
        # Scored on the held-out test split, the same examples the table's metrics come from.
        failed |= percli("contrast", "experiment=demo", f"model.path={ckpt}", "data.split=test",
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
    p.add_argument("--losses", type=lambda s: s.split(","), default=list(PAPER_LOSSES))
    p.add_argument("--lrs", type=lambda s: s.split(","), default=list(LRS))
    p.add_argument("--settings", type=lambda s: s.split(","), default=["user"])
    p.add_argument("--no-transfer", dest="transfer", action="store_false", help="skip cross-task evaluations")
    p.add_argument("--cross-scenario", action="store_true", help="also evaluate user-trained models on temporal")
    p.add_argument("--skip-train", action="store_true",
                   help="reuse the train runs under --out: only the test evaluations (those not finished yet) and the table")
    p.add_argument("--prune", action="store_true", help="delete checkpoints of runs the selection did not keep")
    args = p.parse_args(argv)
    args.overrides = overrides
    return paper(args) if args.scale == "paper" else demo(args)


if __name__ == "__main__":
    raise SystemExit(main())
