"""The worker processes of one machine, started and supervised by the `percli` process itself.

Why not `accelerate launch` (torch's elastic launcher): it handles only TERM/INT/HUP/QUIT, so the USR1 /
USR2 that SLURM sends to every process of a job step before a time-out kill it, and on TERM it
force-kills its workers after 30 s. Either way the job could end while the workers are still writing
their checkpoint. Here the parent is the launcher:

- each local rank is one `python -m percli.worker ...` process in the parent's process group, with the
  environment torchrun and `accelerate launch` would give it (rank, world, rendezvous, `ACCELERATE_*`);
- a stop signal reaches the workers whether it was sent to the whole group (SLURM, `kill -- -PGID`) or to
  the parent alone (which forwards it): each worker finishes its step, the ranks agree on the stop
  through the step's all-reduce, one checkpoint is written and every worker exits with 128 + signal;
- workers start with the stop signals blocked, so one that arrives while a worker is still importing or
  loading its model stays pending until the worker's handler is in place (`percli.signals.StopRequest`
  unblocks them) instead of killing it with nothing saved;
- the parent waits up to `stop_grace_s` seconds after the first stop signal and only then kills what is
  left; a further stop signal meanwhile changes nothing;
- when a worker fails, the others, likely blocked in a collective, get `FAIL_GRACE_S` seconds to exit on
  their own before they are killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from percli.log import log
from percli.signals import STOP_SIGNALS, signal_name

FAIL_GRACE_S = 10.0
POLL_S = 0.05


@dataclass
class Outcome:
    """How the workers ended: exit codes in local-rank order (negative: killed by that signal)."""

    exit_codes: list[int]
    stop_signal: int = 0          # the first stop signal the parent received, 0 if none
    killed_after_grace: bool = False
    seconds_to_stop: float | None = None  # from the first stop signal to the last worker's exit
    notes: list[str] = field(default_factory=list)


def worker_env(base: dict[str, str], *, rank: int, local_rank: int, world: int, local_world: int,
               machine_rank: int, master_addr: str, master_port: int) -> dict[str, str]:
    """What torchrun sets for one worker: torch.distributed's env:// rendezvous and the rank layout."""
    env = dict(base)
    env.update(RANK=str(rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(local_world),
               GROUP_RANK=str(machine_rank), ROLE_RANK=str(rank), MASTER_ADDR=master_addr,
               MASTER_PORT=str(master_port))
    # torchrun's rule: several processes on one machine share its cores unless told otherwise.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // local_world)))
    return env


def run_workers(cmd: Sequence[str], envs: Sequence[dict[str, str]], cwd: Path, stop_grace_s: float) -> Outcome:
    """Start one process per env, supervise them until all have exited, and say how they ended."""
    procs: list[subprocess.Popen] = []
    outcome = Outcome(exit_codes=[])
    stop_at: float | None = None

    def on_stop(signum: int, _frame) -> None:
        nonlocal stop_at
        if stop_at is not None:
            return
        stop_at = time.monotonic()
        outcome.stop_signal = signum
        log.info(f"{signal_name(signum)}: asking {len(procs)} workers to finish the step and save "
                 f"(up to launcher.stop_grace_s={stop_grace_s:g} s)")
        for p in procs:  # a group-wide signal reached them already; a second delivery is harmless
            if p.poll() is None:
                _send(p, signum)

    previous = {}
    try:
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, on_stop)
    except ValueError:  # not the main thread: group-wide signals still reach the workers directly
        pass
    try:
        for env in envs:
            # The blocked mask is inherited by the child; here, a signal meanwhile waits for the unblock.
            unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                procs.append(subprocess.Popen(list(cmd), env=env, cwd=cwd))
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
        failed_at: float | None = None
        while any(p.poll() is None for p in procs):
            now = time.monotonic()
            if stop_at is not None and now - stop_at > stop_grace_s:
                outcome.killed_after_grace = True
                outcome.notes.append(f"workers still running {stop_grace_s:g} s after {signal_name(outcome.stop_signal)}"
                                     " (launcher.stop_grace_s) were killed")
                _kill_all(procs)
                break
            if failed_at is None and any(p.returncode not in (None, 0) and not _stopped(p.returncode)
                                         for p in procs):
                failed_at = now
            if failed_at is not None and now - failed_at > FAIL_GRACE_S:
                outcome.notes.append(f"a worker failed; the others were killed {FAIL_GRACE_S:g} s later")
                _kill_all(procs)
                break
            time.sleep(POLL_S)
        for p in procs:
            p.wait()
        if stop_at is not None:
            outcome.seconds_to_stop = round(time.monotonic() - stop_at, 2)
    finally:
        for p in procs:  # an exception here (Ctrl-C in the parent) must not leave orphans
            if p.poll() is None:
                p.kill()
                p.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    outcome.exit_codes = [p.returncode for p in procs]
    return outcome


def _stopped(code: int) -> bool:
    """Exit status of a worker that stopped on request after saving (percli.signals.TrainingStopped)."""
    return code - 128 in {int(s) for s in STOP_SIGNALS}


def _send(proc: subprocess.Popen, signum: int) -> None:
    try:
        proc.send_signal(signum)
    except ProcessLookupError:
        pass


def _kill_all(procs: Sequence[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            _send(p, signal.SIGKILL)
