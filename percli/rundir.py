"""Run directories: a new run never writes into another run's non-empty directory, and its status.json
(written by the CLI's error boundary) says how it ended."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from percli.errors import ConfigError

# What Hydra itself writes into a run dir before the job starts.
HYDRA_DIR = ".hydra"
_HYDRA_FILES = {HYDRA_DIR}


def is_resuming(cfg: DictConfig) -> bool:
    return OmegaConf.select(cfg, "train.resume", default=None) is not None


def check_fresh_run_dir(run_dir: Path, cfg: DictConfig) -> None:
    """Refuse to start in a run dir that already holds results, unless the run resumes there."""
    if is_resuming(cfg) or not run_dir.exists():
        return
    leftovers = [p.name for p in run_dir.iterdir() if p.name not in _HYDRA_FILES and p.suffix != ".log"]
    if leftovers:
        raise ConfigError(
            f"run dir {run_dir} already holds a run ({', '.join(sorted(leftovers)[:3])}, ...); "
            "choose a new hydra.run.dir or resume it with train.resume=auto"
        )


def run_status(run_dir: Path) -> tuple[str, str | None]:
    """('ok' | 'stopped' | 'failed' | 'unknown', problem text or None) from the run dir's status.json.

    'stopped': a stop signal ended training after a resumable checkpoint (train.resume=auto continues it)."""
    try:
        status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        status = None
    if not isinstance(status, dict):
        return "unknown", "no status.json: still running, or killed before it finished"
    if status.get("status") == "ok":
        return "ok", None
    error = " ".join(str(status.get("error") or "no error message recorded").split())
    if status.get("status") == "stopped":
        return "stopped", f"stopped: {error}"
    return "failed", f"failed: {error}"


def sweep_failures(sweep_dir: Path, num_jobs: int) -> list[str]:
    """`job <dir>: <why>` for each job of a finished sweep that did not end ok, read from the jobs' own
    status.json, so the answer is the same whichever Hydra launcher ran them (a SLURM job runs elsewhere).
    A job is a dir under `sweep_dir` holding Hydra's `.hydra`; jobs that never started count too."""
    jobs = sorted({p.parent for p in sweep_dir.rglob(HYDRA_DIR)}) if sweep_dir.is_dir() else []
    failures = []
    for job in jobs:
        status, problem = run_status(job)
        if status != "ok":
            failures.append(f"job {job.relative_to(sweep_dir).as_posix()}: {problem.removeprefix('failed: ')}")
    if len(jobs) < num_jobs:
        failures.append(f"{num_jobs - len(jobs)} of {num_jobs} jobs never started (no job dir under {sweep_dir})")
    return failures
