"""percli.supervisor with real child processes: stop signals reach workers that are still starting,
the grace time bounds a stop, and one failed worker brings the others down."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest
from helpers import REPO

from percli import supervisor
from percli.supervisor import run_workers

# A worker that installs its stop handlers only after `delay` seconds of "start-up", then waits for a stop
# and exits as a stopped percli worker does (128 + signal), or with `code` when nobody asks.
WORKER = """
import sys, time
time.sleep({delay})
from percli.signals import StopRequest
stop = StopRequest()
deadline = time.monotonic() + {wait}
while not stop.poll() and time.monotonic() < deadline:
    time.sleep(0.01)
sys.exit(128 + stop.poll() if stop.poll() else {code})
"""


def _cmd(delay: float = 0.0, wait: float = 30.0, code: int = 0) -> list[str]:
    return [sys.executable, "-c", WORKER.format(delay=delay, wait=wait, code=code)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _signal_self_after(seconds: float, signum: int) -> None:
    threading.Timer(seconds, os.kill, (os.getpid(), signum)).start()


def test_a_stop_during_start_up_waits_for_the_handler_and_every_worker_stops():
    # The signal arrives while both workers are still "importing": it must stay pending (blocked at spawn),
    # not kill them, and reach their handlers once installed.
    _signal_self_after(0.5, signal.SIGUSR2)
    outcome = run_workers(_cmd(delay=2.0), [_env(), _env()], REPO, stop_grace_s=60)
    assert outcome.exit_codes == [128 + signal.SIGUSR2] * 2
    assert outcome.stop_signal == signal.SIGUSR2 and not outcome.killed_after_grace
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL  # the parent's handler is gone again


def test_workers_that_do_not_stop_are_killed_after_the_grace_time():
    _signal_self_after(0.5, signal.SIGTERM)
    start = time.monotonic()
    # This worker never installs a handler in time: it sleeps 60 s with the signal blocked.
    outcome = run_workers(_cmd(delay=60.0), [_env()], REPO, stop_grace_s=1.5)
    assert outcome.killed_after_grace and outcome.exit_codes == [-signal.SIGKILL]
    assert 1.5 < time.monotonic() - start < 10
    assert outcome.notes == ["workers still running 1.5 s after SIGTERM (launcher.stop_grace_s) were killed"]


def test_one_failed_worker_brings_down_the_others(monkeypatch):
    monkeypatch.setattr(supervisor, "FAIL_GRACE_S", 0.5)
    start = time.monotonic()
    outcome = run_workers(_cmd(wait=0.0, code=3), [_env()], REPO, stop_grace_s=60)
    assert outcome.exit_codes == [3]
    outcome = run_workers([sys.executable, "-c", "import sys, time, os; "
                           "time.sleep(60) if os.environ['RANK'] == '1' else sys.exit(3)"],
                          [{**_env(), "RANK": "0"}, {**_env(), "RANK": "1"}], REPO, stop_grace_s=60)
    assert outcome.exit_codes == [3, -signal.SIGKILL]
    assert outcome.notes == ["a worker failed; the others were killed 0.5 s later"]
    assert time.monotonic() - start < 20


@pytest.mark.parametrize("rank", [0, 1])
def test_worker_env_is_torchruns_layout(rank):
    env = supervisor.worker_env({"OMP_NUM_THREADS": "3"}, rank=8 + rank, local_rank=rank, world=16, local_world=8,
                                machine_rank=1, master_addr="10.0.0.1", master_port=29500)
    assert {k: env[k] for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                                "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS")} == {
        "RANK": str(8 + rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8",
        "GROUP_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500", "OMP_NUM_THREADS": "3"}
