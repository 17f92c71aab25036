"""Run dirs -> evaluations: what `percli table` and scripts/reproduce_table.py read.

Every train or eval run dir is an *evaluation*: a checkpoint scored on a (task, setting) column and a
split. The checkpoint (`Source`) is a train run: its own metrics.json comes from eval.after_train, and an
eval run with `model.path=<train run>/checkpoints/final` scores the same checkpoint on another split or
task. An eval run of a model that was never fine-tuned (no model.path) is the zero-shot "base" source.
A train run's source also carries what selection needs: its lr, its seed and its other hyper-parameters
(the resolved config's leaves that shape training, bookkeeping left out).

Nothing here raises on a bad run dir: an unreadable config becomes a note, a failed or unfinished run an
evaluation with a `problem`, so the table shows why a cell is empty.
"""

from __future__ import annotations

import glob
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from percli.io import read_jsonl
from percli.names import result_config
from percli.paths import shown
from percli.rundir import run_status

# Run dirs hold checkpoints and Hydra's own copies of the config: never descend into them (nor into any
# hidden dir, where scripts/reproduce_table.py keeps failed attempts it re-ran).
_SKIP_DIRS = {"checkpoints", "wandb", "__pycache__"}
# Result-shaping keys (names.RESULT_KEYS) that are not hyper-parameters of a table row: its identity (model,
# loss), its column (task.*), what selection ranges over (lr, seed), and what changes memory, not results.
NOT_HYPER = {"seed", "model.name", "model.path", "model.source", "model.hub_id", "loss.name", "train.lr", "data.split",
             "data.eval_split", "loss.chunk_size", "retriever.batch_size"}


@dataclass(frozen=True)
class Column:
    """A task column: the task name and its LongLaMP setting (user | temporal)."""

    task: str
    setting: str = "user"


@dataclass(eq=False)
class Source:
    """The checkpoint an evaluation scores: a train run, or a base model (loss 'base', no train run)."""

    model: str
    loss: str
    trained_on: Column | None
    run_dir: Path | None = None
    lr: float | None = None
    seed: int | None = None
    hyper: dict[str, str] = field(default_factory=dict)
    problem: str | None = None          # the train run failed / is unfinished
    curve: list[tuple[int, float]] = field(default_factory=list)
    curve_key: str = ""


@dataclass(eq=False)
class Evaluation:
    """One metrics.json (or why there is none) of one source on one column and split."""

    source: Source
    evaluated_on: Column
    run_dir: Path
    split: str | None = None
    metrics: dict[str, float] | None = None
    problem: str | None = None

    @property
    def in_task(self) -> bool:
        return self.source.trained_on is None or self.source.trained_on == self.evaluated_on


def find_run_dirs(spec: str | Path) -> list[Path]:
    """Run dirs (holding config.yaml or status.json) under a sweep dir, a run dir or a glob, sorted; relative to
    the working directory where they lie inside it (`paths.shown`)."""
    spec = str(spec)
    roots = [Path(p) for p in sorted(glob.glob(spec, recursive=True))] if glob.has_magic(spec) else [Path(spec)]
    found: set[Path] = set()
    for root in roots:
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
            if "config.yaml" in filenames or "status.json" in filenames:
                found.add(shown(Path(dirpath)))
    return sorted(found)


def load_config(run_dir: Path) -> DictConfig | None:
    """The resolved config.yaml; Hydra's .hydra/config.yaml when the job failed before writing it."""
    for path in (run_dir / "config.yaml", run_dir / ".hydra" / "config.yaml"):
        if path.is_file():
            try:
                cfg = OmegaConf.load(path)
            except Exception:  # noqa: BLE001 - an unreadable config is reported by the caller as a note
                continue
            if isinstance(cfg, DictConfig):
                return cfg
    return None


def _get(cfg: DictConfig, key: str, default: Any = None) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=default, throw_on_missing=False)
    except Exception:  # noqa: BLE001 - unresolvable interpolation in Hydra's unresolved copy
        return default


def _read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _metrics(run_dir: Path) -> tuple[dict[str, float] | None, str | None]:
    """Numeric metrics from metrics.json (in the run dir, or eval/ below it) and the split, if stated."""
    for path in (run_dir / "metrics.json", run_dir / "eval" / "metrics.json"):
        raw = _read_json(path)
        if raw is not None:
            values = {k: float(v) for k, v in raw.items()
                      if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
            split = raw.get("split") if isinstance(raw.get("split"), str) else None
            return values, split
    return None, None


def _column(cfg: DictConfig) -> Column | None:
    task = _get(cfg, "task.name")
    return Column(str(task), str(_get(cfg, "task.setting", "user") or "user")) if task else None


def hyper_parameters(cfg: DictConfig) -> dict[str, str]:
    """The config values that shape a trained checkpoint (names.result_config) beyond NOT_HYPER, as text."""
    try:
        shaping = result_config(cfg)
    except Exception:  # noqa: BLE001 - only Hydra's unresolved copy (a job killed before config.yaml) fails
        shaping = {}
    return {k: str(v) for k, v in shaping.items() if k not in NOT_HYPER and not k.startswith("task.")}


def _curve(run_dir: Path) -> tuple[list[tuple[int, float]], str]:
    """(step, loss) points from train_log.jsonl; plain CE when logged, since weighted losses don't compare."""
    path = run_dir / "train_log.jsonl"
    if not path.is_file():
        return [], ""
    try:
        rows = read_jsonl(path)
    except (OSError, ValueError):
        return [], ""
    key = "ce_loss" if any("ce_loss" in r for r in rows) else "loss"
    points = [(int(r["step"]), float(r[key])) for r in rows
              if isinstance(r.get("step"), int | float) and isinstance(r.get(key), int | float)]
    return points, key


def _train_source(run_dir: Path, cfg: DictConfig, column: Column) -> Source:
    seed = _get(cfg, "seed")
    src = Source(model=str(_get(cfg, "model.name", "?")), loss=str(_get(cfg, "loss.name", "?")), trained_on=column,
                 run_dir=run_dir, lr=_get(cfg, "train.lr"), seed=seed if isinstance(seed, int) else None,
                 hyper=hyper_parameters(cfg))
    src.curve, src.curve_key = _curve(run_dir)
    return src


def _train_run_of(path: str, train_runs: dict[Path, Source], depth: int = 0) -> Source | None:
    """The train run a checkpoint (or a predictions file) belongs to: its nearest ancestor train run dir."""
    if depth > 1:
        return None
    p = Path(path).resolve()
    for anc in [p, *list(p.parents)[:4]]:
        if anc in train_runs:
            return train_runs[anc]
        cfg = load_config(anc) if (anc / "config.yaml").is_file() else None
        if cfg is None:
            continue
        command = _get(cfg, "command")
        if command == "train":
            column = _column(cfg)
            if column is None:
                return None
            train_runs[anc] = _train_source(anc, cfg, column)
            return train_runs[anc]
        if command == "eval" and _get(cfg, "model.path"):  # a predictions file of an eval run of a checkpoint
            return _train_run_of(str(_get(cfg, "model.path")), train_runs, depth + 1)
        return None
    return None


def collect(run_dirs: list[Path]) -> tuple[list[Evaluation], list[str]]:
    """Evaluations from run dirs, plus notes about run dirs that could not be placed in the table."""
    configs = {d: load_config(d) for d in run_dirs}
    notes = [f"{d}: no readable config.yaml; skipped" for d, c in configs.items() if c is None]
    train_runs: dict[Path, Source] = {}
    for d, cfg in configs.items():
        if cfg is not None and _get(cfg, "command") == "train":
            column = _column(cfg)
            if column is None:
                notes.append(f"{d}: config.yaml has no task.name; skipped")
            else:
                train_runs[d.resolve()] = _train_source(d, cfg, column)
    base_sources: dict[tuple[str, int | None], Source] = {}
    evaluations: list[Evaluation] = []
    for run_dir, cfg in configs.items():
        if cfg is None or _get(cfg, "command") not in ("train", "eval"):
            continue  # table / compare / contrast / data runs have nothing to aggregate
        column = _column(cfg)
        if column is None:
            if _get(cfg, "command") == "eval":
                notes.append(f"{run_dir}: config.yaml has no task.name; skipped")
            continue
        status, problem = run_status(run_dir)
        metrics, split = _metrics(run_dir)
        if status == "ok" and metrics is None:
            problem = ("finished without metrics.json (eval.after_train=false?); score it with "
                       f"`percli eval model.path={run_dir}/checkpoints/final`")
        if _get(cfg, "command") == "train":
            source = train_runs[run_dir.resolve()]
            source.problem = problem if status != "ok" else None
        else:
            traced = _get(cfg, "model.path") or _get(cfg, "eval.predictions")
            if traced:
                found = _train_run_of(str(traced), train_runs)
                if found is None:
                    notes.append(f"{run_dir}: evaluates {traced}, which is not inside a train run dir; skipped")
                    continue
                source = found
            else:  # one base source per (model, seed), whatever columns it is evaluated on
                seed = _get(cfg, "seed")
                key = (str(_get(cfg, "model.name", "?")), seed if isinstance(seed, int) else None)
                source = base_sources.setdefault(key, Source(model=key[0], loss="base", trained_on=None,
                                                             seed=key[1]))
        evaluations.append(Evaluation(source, column, run_dir, split or _get(cfg, "eval.split"),
                                      None if problem else metrics, problem))
    return evaluations, notes
