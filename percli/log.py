"""One logger for the whole package, quiet on every rank but 0.

- `log` (logger "percli"): progress, notes and warnings on stderr, one line each, prefixed
  `percli: ` (`percli: warning: `, `percli: error: `). On ranks other than 0 only errors get through, so
  code never checks its rank before logging.
- `result(text)`: what a command was asked for (a summary table, the metrics) on stdout, unprefixed.

Both write through `tqdm.write`, so a message never tears a progress bar, and look up sys.stdout /
sys.stderr when they write (a test's capture, or a redirected stream, takes effect).
"""

from __future__ import annotations

import logging
import os
import sys

from tqdm import tqdm


def _rank() -> int:
    # The launchers (accelerate, torchrun) set RANK before the process group exists; torch is not needed.
    return int(os.environ.get("RANK", "0"))


class _RankZero(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or _rank() == 0


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.ERROR:
            rank = getattr(record, "rank", None)  # a worker's error names its rank
            prefix = "percli: error: " if rank is None else f"percli: error (rank {rank}): "
        elif record.levelno >= logging.WARNING:
            prefix = "percli: warning: "
        else:
            prefix = "percli: "
        return prefix + record.getMessage()


class _StreamHandler(logging.Handler):
    """Writes to whatever sys.<stream> is at the time, above any tqdm bar."""

    def __init__(self, stream: str, formatter: logging.Formatter) -> None:
        super().__init__()
        self.stream = stream
        self.setFormatter(formatter)
        self.addFilter(_RankZero())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=getattr(sys, self.stream))
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


def _logger(name: str, stream: str, formatter: logging.Formatter) -> logging.Logger:
    logger = logging.getLogger(name)
    if not any(isinstance(h, _StreamHandler) for h in logger.handlers):
        logger.addHandler(_StreamHandler(stream, formatter))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


log = _logger("percli", "stderr", _Formatter())
_results = _logger("percli.results", "stdout", logging.Formatter("%(message)s"))


def result(text: str) -> None:
    """A command's output for the user (stdout, rank 0 only)."""
    _results.info(text)
