"""Shared test helpers: run the real CLI in a subprocess, compose configs, find ../shared."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def run_cli(*args: str, output_dir: Path, env: dict | None = None, timeout: float = 600,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`percli <args>` as a user runs it, with runs written under `output_dir`."""
    full_env = {**os.environ, "PERCLI_OUTPUT_DIR": str(output_dir), "WANDB_MODE": "disabled", **(env or {})}
    full_env.pop("PERCLI_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "percli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd or REPO)


@pytest.fixture
def cli(tmp_path: Path):
    """cli('train', 'model=tiny', ...) -> CompletedProcess; runs land in tmp_path/outputs."""

    def _run(*args: str, **kw) -> subprocess.CompletedProcess:
        return run_cli(*args, output_dir=tmp_path / "outputs", **kw)

    return _run


def only_run_dir(output_dir: Path, command: str) -> Path:
    runs = sorted((output_dir / command / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]
