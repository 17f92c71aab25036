"""Fixtures shared by the tests (plain helpers live in helpers.py)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
from helpers import OFFLINE, run_cli

from percli.hub import hub_reachable

# Forced before any test module imports huggingface_hub or datasets (both read these once, at import), and
# inherited by every subprocess a test starts: no test downloads anything, whatever network the machine has.
os.environ.update(OFFLINE)

# `make test` runs pytest-xdist workers, one per core. Each worker (and every CLI it starts) gets an equal
# share of the cores as torch threads; without this each would take them all and they would fight for them.
# Set before any test module imports torch, which reads it once at start-up.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))


@pytest.fixture
def unreachable_hub(monkeypatch: pytest.MonkeyPatch):
    """No connection succeeds and offline mode is not preset, so percli's hub probe itself runs and gives up."""
    import huggingface_hub.constants

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    for var in OFFLINE:
        monkeypatch.delenv(var)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    hub_reachable.cache_clear()
    yield
    hub_reachable.cache_clear()


@pytest.fixture
def cli(tmp_path: Path):
    """cli('train', 'model=tiny', ...) -> CompletedProcess; runs land in tmp_path/outputs."""

    def _run(*args: str, **kw) -> subprocess.CompletedProcess:
        return run_cli(*args, output_dir=tmp_path / "outputs", **kw)

    return _run
