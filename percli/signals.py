"""How a run is asked to stop: the signals that mean "checkpoint and exit", the file a launching parent
writes, and how a training process sees either.

SIGTERM (SLURM preemption, `kill`), SIGUSR1 (a `#SBATCH --signal=B:USR1@...` of one's own) and SIGUSR2
(hydra-submitit-launcher's signal before a SLURM time-out) all ask for the same thing: finish the current
optimizer step, save a resumable checkpoint, exit with 128 + signal. Workers get the signal from SLURM or
from their parent (percli.supervisor); the ranks agree through the step's all-reduce, so every rank stops
at the same step even when only one of them saw the signal.
"""

from __future__ import annotations

import signal
from typing import Any

from percli.errors import PercliError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class TrainingStopped(PercliError):
    """Stopped on request (a stop signal or the stop file) after saving a resumable checkpoint."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopRequest:
    """A stop signal to this process, remembered from the moment the handlers are installed.

    Installing them also unblocks the stop signals: a supervised worker starts with them blocked, so a
    signal that arrived during start-up is delivered now, to these handlers."""

    def __init__(self):
        self.signum = 0
        self._previous: dict[int, Any] = {}
        try:
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread (e.g. a test harness): nothing to listen to
            return
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def _handle(self, signum: int, _frame) -> None:
        if not self.signum:  # the first signal names the stop; a repeat (group + parent) changes nothing
            self.signum = signum

    def poll(self) -> int:
        """The signal number asked for, 0 while nobody asked."""
        return self.signum

    def restore(self) -> None:
        """Put back the handlers that were installed before (submitit's, the CLI's, the defaults)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
