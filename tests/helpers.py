"""Helpers shared by the tests: run the real CLI in a subprocess, find its run dir, compose configs once."""

from __future__ import annotations

import copy
import functools
import os
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig

from percli.paths import conf_options
from percli.preflight import compose_config

REPO = Path(__file__).resolve().parents[1]
# Test data committed with the tests (the metric parity kit, a heatmap fixture).
DATA = REPO / "tests" / "data"
# The hubs stay unreachable for every CLI a test starts: a networked laptop must not download a 4B model.
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def run_cli(*args: str, output_dir: Path, env: dict | None = None, timeout: float = 600,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`percli <args>` as a user runs it, with runs written under `output_dir` and the hubs offline."""
    full_env = {**os.environ, "PERCLI_OUTPUT_DIR": str(output_dir), "WANDB_MODE": "disabled", **(env or {}),
                **OFFLINE}
    full_env.pop("PERCLI_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "percli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd or REPO)


def only_run_dir(output_dir: Path, command: str) -> Path:
    runs = sorted((output_dir / command / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def composed(command: str, *overrides: str) -> DictConfig:
    """compose_config(command, overrides), composed once per test session (Hydra takes a while): a copy."""
    return copy.deepcopy(_composed(command, overrides))


@functools.cache
def _composed(command: str, overrides: tuple[str, ...]) -> DictConfig:
    return compose_config(command, list(overrides))


# Values a command's config leaves at ??? (required on the command line).
REQUIRED = {"compare": ("compare.baseline=runs/a", "compare.other=runs/b")}


def command_config(command: str) -> DictConfig:
    """A command's default config, with its required values filled in."""
    return composed(command, *REQUIRED.get(command, ()))


# The train config's groups with options to choose from (conf/<group>/*.yaml).
GROUPS = ["model", "task", "data", "retriever", "loss", "schedule", "launcher", "logger", "debug"]


def group_options(group: str) -> list[str]:
    return list(conf_options(group))


def group_option_overrides(group: str, option: str) -> tuple[str, ...]:
    """The overrides that select one option of a group (data=local also needs its path)."""
    return (f"{group}={option}", "data.path=/some/dir") if (group, option) == ("data", "local") else (f"{group}={option}",)
