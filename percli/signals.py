"""How a run is asked to stop: the signals that mean "checkpoint and exit", the file a launching parent
writes, and how a training process sees either.

SIGTERM (SLURM preemption, `kill`), SIGUSR1 (a `#SBATCH --signal=B:USR1@...` of one's own) and SIGUSR2
(hydra-submitit-launcher's signal before a SLURM time-out) all ask for the same thing: finish the current
optimizer step, save a resumable checkpoint, exit with 128 + signal. A launching parent that has workers
forwards the request by writing `run_dir/.stop`, which rank 0 polls; the ranks agree through the step's
all-reduce, so every rank stops at the same step.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from percli.errors import PercliError

STOP_FILE = ".stop"
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
    """A stop signal to this process, or run_dir/.stop written by the launching parent (when `watch_file`)."""

    def __init__(self, run_dir: Path, watch_file: bool):
        self.file = Path(run_dir) / STOP_FILE
        self.watch_file = watch_file
        self.signum = 0
        self._previous: dict[int, Any] = {}
        try:
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread (e.g. a test harness): the stop file still works
            pass

    def _handle(self, signum: int, _frame) -> None:
        self.signum = signum

    def poll(self) -> int:
        """The signal number asked for, 0 while nobody asked."""
        if not self.signum and self.watch_file and self.file.is_file():
            try:
                self.signum = int(self.file.read_text().strip() or signal.SIGTERM)
            except ValueError:
                self.signum = int(signal.SIGTERM)
        return self.signum

    def restore(self) -> None:
        """Put back the handlers that were installed before (submitit's, the CLI's, the defaults)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
