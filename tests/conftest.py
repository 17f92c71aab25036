"""Fixtures shared by the tests (plain helpers live in helpers.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import run_cli


@pytest.fixture
def cli(tmp_path: Path):
    """cli('train', 'model=tiny', ...) -> CompletedProcess; runs land in tmp_path/outputs."""

    def _run(*args: str, **kw) -> subprocess.CompletedProcess:
        return run_cli(*args, output_dir=tmp_path / "outputs", **kw)

    return _run
