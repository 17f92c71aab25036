"""How a run is asked to stop: the signals a trainer checkpoints on, and the file a launching parent writes."""

from __future__ import annotations

import signal

# A preempting scheduler sends SIGTERM (SLURM: SIGUSR1 before the time limit): checkpoint, then exit.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# run_dir/.stop: written by the parent of `accelerate launch` workers, which poll it at step boundaries.
STOP_FILE = ".stop"
