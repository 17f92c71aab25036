"""`python -m percli.worker <run_dir>`: one training process started by `accelerate launch`.

It trains on run_dir/config.yaml (saved, resolved, by the CLI) without re-running Hydra. An expected
failure is written to run_dir/.worker-errors/rank-N.json so that the parent reports that one line with
its exit code, not the launcher's generic failure.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from pathlib import Path

from omegaconf import OmegaConf

from percli.errors import PercliError
from percli.launch import record_worker_error
from percli.log import log
from percli.trainer import train


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m percli.worker <run_dir>  (started by `percli train launcher=ddp|deepspeed`)",
              file=sys.stderr)
        raise SystemExit(2)
    run_dir = Path(args[0])
    rank = int(os.environ.get("RANK", "0"))
    # DeepSpeed calls torch.distributed functions that torch deprecated: one warning per call, every step.
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)

    try:
        train(OmegaConf.load(run_dir / "config.yaml"), run_dir)
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
