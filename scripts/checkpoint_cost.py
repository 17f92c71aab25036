"""`python -m scripts.checkpoint_cost [REPEATS]`: what the manifest's hashing adds to a checkpoint save.

Saves the SmolLM2-135M training state (weights, AdamW state after one step, RNG) REPEATS times with the
manifest's hashing and REPEATS times with a manifest that lists no file, alternating the order, into a
temporary run dir. Prints every save time, the hashing time inside each hashed save, and the medians.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from percli import checkpoint as ckpt_lib
from percli.preflight import compose_config
from percli.signals import StopRequest
from percli.trainer import Trainer
from percli.training_setup import make_accelerator

OVERRIDES = ["model=smollm2-135m", "data=synthetic", "retriever=bm25", "data.num_users=2", "data.examples_per_user=2",
             "data.max_prompt_tokens=192", "data.max_response_tokens=24", "train.batch_size=1", "train.max_steps=1"]


def main(repeats: int) -> None:
    cfg = compose_config("train", OVERRIDES)
    accelerator = make_accelerator(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        trainer = Trainer(cfg, run, accelerator, StopRequest())
        trainer.train_step()  # the AdamW state exists: the optimizer file has its real size
        hashing: list[float] = []
        build_manifest = ckpt_lib.build_manifest

        def timed(directory: Path) -> dict:
            start = time.perf_counter()
            manifest = build_manifest(directory)
            hashing.append(time.perf_counter() - start)
            return manifest

        def unhashed(directory: Path) -> dict:
            return {"hash": "xxh3_128", "files": {}}

        saves: dict[str, list[float]] = {"hashed": [], "unhashed": []}
        step = 0
        for i in range(repeats):
            for mode in ("hashed", "unhashed") if i % 2 == 0 else ("unhashed", "hashed"):
                ckpt_lib.build_manifest = timed if mode == "hashed" else unhashed
                step += 1
                start = time.perf_counter()
                ckpt_lib.save_checkpoint(accelerator, run, step, {"fingerprint": trainer.fingerprint},
                                         trainer.schedule, trainer.rows, keep_last=1)
                saves[mode].append(time.perf_counter() - start)
        ckpt_lib.build_manifest = build_manifest
        newest = ckpt_lib.latest_checkpoint(run)
        size = sum(p.stat().st_size for p in newest.rglob("*") if p.is_file())
    hashed, unhashed_median, hash_median = (statistics.median(saves["hashed"]), statistics.median(saves["unhashed"]),
                                            statistics.median(hashing))
    print(f"checkpoint: {size / 2**20:.0f} MiB")
    print("save, hashed      :", [round(t, 2) for t in saves["hashed"]], f"median {hashed:.3f} s")
    print("  hashing in it   :", [round(t, 3) for t in hashing], f"median {hash_median:.3f} s")
    print("save, not hashed  :", [round(t, 2) for t in saves["unhashed"]], f"median {unhashed_median:.3f} s")
    print(f"median hashing / median hashed save: {hash_median / hashed:.3f}; "
          f"median hashed / median unhashed save: {hashed / unhashed_median:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 9)
