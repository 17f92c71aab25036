"""Run directories: a new run never writes into another run's non-empty directory."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from percli.errors import ConfigError

# What Hydra itself writes into a run dir before the job starts.
_HYDRA_FILES = {".hydra"}


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
