"""Stop signals on a 2-process DDP run (`make test-dist`): sent to the whole process group as SLURM does, or
to the `percli` parent alone, every process exits, one complete checkpoint is written, the parent exits
with 128 + signal and status.json `stopped`, and `train.resume=auto` ends on the uninterrupted curve."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import OFFLINE, REPO, run_cli

from percli.io import read_jsonl

pytestmark = [pytest.mark.dist, pytest.mark.xdist_group("dist")]

RUN = ["model=tiny", "loss=perce", "debug=smoke", "data.max_prompt_tokens=192", "data.max_response_tokens=24",
       "eval.after_train=false", "train.max_steps=8", "train.save_every=2", "launcher=ddp",
       "launcher.num_processes=2", "train.batch_size=1"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("full")
    r = run_cli("train", *RUN, f"hydra.run.dir={out / 'run'}", output_dir=out, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return read_jsonl(out / "run" / "train_log.jsonl")


def _start(run: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PERCLI_OUTPUT_DIR": str(out), "WANDB_MODE": "disabled", **OFFLINE}
    env.pop("PERCLI_DEBUG", None)
    # A session of its own: its process group holds the parent and its workers, as a SLURM step does.
    return subprocess.Popen([sys.executable, "-m", "percli", "train", *RUN, f"hydra.run.dir={run}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                            start_new_session=True)


def _group_members(pgid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "-g", str(pgid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.parametrize(("sig", "to_group"), [
    (signal.SIGUSR2, True),    # SLURM's --signal=USR2@600 without B: every process of the step
    (signal.SIGTERM, True),    # preemption / scancel: every process of the step
    (signal.SIGUSR2, False),   # to percli alone (e.g. `#SBATCH --signal=B:USR2@600` with `exec percli ...`)
], ids=["usr2-group", "term-group", "usr2-parent"])
def test_stop_signal_saves_once_and_resumes_to_the_same_curve(uninterrupted, tmp_path, sig, to_group):
    run = tmp_path / "run"
    proc = _start(run, tmp_path)
    deadline = time.monotonic() + 600
    while not (run / "checkpoints" / "step-2").is_dir():  # complete checkpoints appear by rename
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    workers = [p for p in _group_members(proc.pid) if p != proc.pid]
    assert len(workers) == 2, workers
    os.killpg(proc.pid, sig) if to_group else proc.send_signal(sig)
    _, err = proc.communicate(timeout=600)

    assert proc.returncode == 128 + sig, err[-3000:]
    assert not _group_members(proc.pid)  # every process of the group exited
    saved = sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*"))
    assert 2 < saved[-1] < 8, saved
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"percli: error: training stopped by {signal.Signals(sig).name} at step {saved[-1]}/8; "
                           f"checkpoint saved to {run}/checkpoints/step-{saved[-1]}; resume with: "), last
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "stopped" and status["exit_code"] == 128 + sig

    r = run_cli("train", *RUN, f"hydra.run.dir={run}", "train.resume=auto", output_dir=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {run}/checkpoints/step-{saved[-1]} at step {saved[-1]}/8" in r.stderr
    rows = read_jsonl(run / "train_log.jsonl")
    assert [x["step"] for x in rows] == [x["step"] for x in uninterrupted]
    for got, want in zip(rows, uninterrupted):
        assert got["loss"] == pytest.approx(want["loss"], abs=1e-6), got["step"]
