"""`python -m percli.worker <job> <config> <run_dir>`: one process started by percli.launch.

It runs `job` on the saved, resolved `config` without re-running Hydra:
- train: this rank's share of training (percli.trainer.train);
- generate: this rank's share of the generation batches (percli.generation.generate_shard).

An expected failure is written to run_dir/.worker-errors/rank-N.json so that the parent reports that one
line with its exit code, not a generic failure.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from percli.errors import PercliError
from percli.generation import generate_shard
from percli.launch import record_worker_error
from percli.log import log
from percli.trainer import train

JOBS: dict[str, Callable[[DictConfig, Path], None]] = {"train": train, "generate": generate_shard}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] not in JOBS:
        print(f"usage: python -m percli.worker {{{'|'.join(JOBS)}}} <config.yaml> <run_dir>  (started by "
              "`percli train|eval launcher=ddp|deepspeed`)", file=sys.stderr)
        raise SystemExit(2)
    job, config, run_dir = args[0], Path(args[1]), Path(args[2])
    rank = int(os.environ.get("RANK", "0"))
    # DeepSpeed calls torch.distributed functions that torch deprecated: one warning per call, every step.
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)

    try:
        JOBS[job](OmegaConf.load(config), run_dir)
    except PercliError as e:
        record_worker_error(run_dir, rank, str(e), e.exit_code)
        log.error(str(e), extra={"rank": rank})
        raise SystemExit(e.exit_code) from None
    except Exception as e:  # noqa: BLE001 - report the crash as one line to the parent, traceback here
        traceback.print_exc()
        record_worker_error(run_dir, rank, f"{type(e).__name__} on rank {rank}: {e} (traceback in the output "
                                           "above; PERCLI_DEBUG=1 keeps it)", 1)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
