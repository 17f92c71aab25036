"""Damaged and failed checkpoints through real `percli train` runs: resume=auto skips a damaged newest
checkpoint and ends on the uninterrupted run's losses, a pre-manifest checkpoint resumes, and a save that
hits the file-size limit is one line while the earlier checkpoints still verify."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import OFFLINE, REPO, run_cli

from percli import checkpoint as ckpt_lib
from percli.io import read_jsonl
from percli.manifest import MANIFEST

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("checkpoint-resume")]

# keep_last=3 keeps step-2, 4 and 6 of the 6-step reference run (a bookkeeping key: resuming may change it).
RUN = ["debug=smoke", "data.max_prompt_tokens=192", "data.max_response_tokens=24", "eval.after_train=false",
       "train.max_steps=6", "train.save_every=2", "train.keep_last=3"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted 6-step run with checkpoints step-2, step-4, step-6."""
    out = tmp_path_factory.mktemp("reference")
    r = run_cli("train", *RUN, f"hydra.run.dir={out / 'run'}", output_dir=out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out / "run"


def _copy(reference: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    return run


def _same_losses(run: Path, reference: Path) -> None:
    rows, want = read_jsonl(run / "train_log.jsonl"), read_jsonl(reference / "train_log.jsonl")
    assert [r["step"] for r in rows] == [r["step"] for r in want] == [1, 2, 3, 4, 5, 6]
    for got, ref in zip(rows, want):
        assert got["loss"] == pytest.approx(ref["loss"], abs=1e-6), got["step"]
        assert got["grad_norm"] == pytest.approx(ref["grad_norm"], abs=1e-6), got["step"]


def test_every_checkpoint_has_a_manifest_of_its_files(reference):
    for step in (2, 4, 6):
        ckpt = reference / "checkpoints" / f"step-{step}"
        listed = json.loads((ckpt / MANIFEST).read_text())["files"]
        on_disk = {p.relative_to(ckpt).as_posix(): p.stat().st_size for p in ckpt.rglob("*") if p.name != MANIFEST}
        assert {name: entry["size"] for name, entry in listed.items()} == on_disk
        assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl", "trainer_state.json",
                "schedule.safetensors", "train_log.jsonl"} <= set(listed)
        assert ckpt_lib.damage(ckpt) is None


@pytest.mark.parametrize("damage", ["truncated", "one byte changed"])
def test_resume_skips_a_damaged_newest_checkpoint_and_ends_on_the_same_losses(reference, tmp_path, damage):
    run = _copy(reference, tmp_path)
    step6 = run / "checkpoints" / "step-6"
    if damage == "truncated":
        size = (step6 / "model.safetensors").stat().st_size
        os.truncate(step6 / "model.safetensors", size // 2)
        what = f"model.safetensors: size {size // 2} bytes, the manifest says {size}"
    else:
        data = bytearray((step6 / "optimizer.bin").read_bytes())
        data[len(data) // 2] ^= 0x01
        (step6 / "optimizer.bin").write_bytes(bytes(data))
        what = "optimizer.bin: hash differs from the manifest's (same size, changed content)"

    r = run_cli("train", *RUN, f"hydra.run.dir={run}", "train.resume=auto", output_dir=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    skip = f"percli: warning: skipping damaged checkpoint {step6}: {what}; it is kept on disk, not deleted"
    assert r.stderr.count(skip) == 1, r.stderr[-3000:]
    assert f"resumed from {run}/checkpoints/step-4 at step 4/6" in r.stderr
    _same_losses(run, reference)
    # Reaching step 6 again, the new checkpoint takes the name; the damaged one is kept beside it.
    assert f"damaged checkpoint {step6} moved to {step6}.damaged (kept)" in r.stderr
    assert ckpt_lib.damage(step6) is None and ckpt_lib.damage(Path(f"{step6}.damaged")) == what


def test_pre_manifest_checkpoint_still_resumes(reference, tmp_path):
    run = _copy(reference, tmp_path)
    step4 = run / "checkpoints" / "step-4"
    (step4 / MANIFEST).unlink()  # as checkpoints were written before manifests existed
    r = run_cli("train", *RUN, f"hydra.run.dir={run}", f"train.resume={step4}", output_dir=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count(f"percli: checkpoint {step4} has no manifest.json (written before checkpoints were "
                          "verified): resuming from it unverified\n") == 1
    assert f"resumed from {step4} at step 4/6" in r.stderr
    _same_losses(run, reference)


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_write_over_the_file_size_limit_is_one_line_and_keeps_earlier_checkpoints(reference, tmp_path):
    run = _copy(reference, tmp_path)
    ckpts = run / "checkpoints"
    optimizer = (ckpts / "step-2" / "optimizer.bin").stat().st_size
    limit = 60000 * 1024  # `ulimit -f 60000`: the weights (~39 MB) fit, the optimizer state (~78 MB) does not
    assert (ckpts / "step-2" / "model.safetensors").stat().st_size < limit < optimizer
    env = {**os.environ, "PERCLI_OUTPUT_DIR": str(tmp_path), "WANDB_MODE": "disabled", **OFFLINE}
    env.pop("PERCLI_DEBUG", None)
    r = subprocess.run([sys.executable, "-m", "percli", "train", *RUN, f"hydra.run.dir={run}",
                        f"train.resume={ckpts / 'step-2'}"], capture_output=True, text=True, env=env, cwd=REPO,
                       timeout=600, preexec_fn=_limit_file_size(limit))
    assert r.returncode == 1, r.stderr[-3000:]
    line = r.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"percli: error: could not write checkpoint {ckpts}/step-4 \(file optimizer\.bin\): EFBIG \(File too "
        r"large\): the file-size limit of this process \(ulimit -f\) is 58\.6 MiB; \d+\.\d (KiB|MiB|GiB) free on "
        rf"the file system of {ckpts}; the earlier checkpoints are untouched \(newest: step-6\); free space or raise the limit, then "
        r"resume with train.resume=auto", line), line
    assert "Traceback" not in r.stderr
    status = json.loads((run / "status.json").read_text())
    assert status == {"status": "failed", "exit_code": 1, "error": line.removeprefix("percli: error: ")}
    assert sorted(p.name for p in ckpts.iterdir()) == ["final", "step-2", "step-4", "step-6"]  # no .tmp-step-4
    for step in (2, 4, 6):
        assert ckpt_lib.damage(ckpts / f"step-{step}") is None


def test_ddp_manifest_covers_every_rank_and_resume_skips_a_damaged_rank_1_file(tmp_path):
    # Rank 1 writes its own RNG state before the barrier; the manifest, written by rank 0 after it, lists it.
    ddp = [*RUN, "train.max_steps=4", "launcher=ddp", "launcher.num_processes=2", "train.batch_size=1"]
    reference = tmp_path / "reference"
    r = run_cli("train", *ddp, f"hydra.run.dir={reference}", output_dir=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = _copy(reference, tmp_path)
    step4 = run / "checkpoints" / "step-4"
    assert "random_states_1.pkl" in json.loads((step4 / MANIFEST).read_text())["files"]
    os.truncate(step4 / "random_states_1.pkl", 100)

    r = run_cli("train", *ddp, f"hydra.run.dir={run}", "train.resume=auto", output_dir=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    size = (reference / "checkpoints" / "step-4" / "random_states_1.pkl").stat().st_size
    assert (f"percli: warning: skipping damaged checkpoint {step4}: random_states_1.pkl: size 100 bytes, the manifest "
            f"says {size}; it is kept on disk, not deleted") in r.stderr
    assert f"resumed from {run}/checkpoints/step-2 at step 2/4" in r.stderr
    rows, want = read_jsonl(run / "train_log.jsonl"), read_jsonl(reference / "train_log.jsonl")
    assert [r["step"] for r in rows] == [r["step"] for r in want] == [1, 2, 3, 4]
    for got, ref in zip(rows, want):  # the same 2-process layout on both sides
        assert got["loss"] == pytest.approx(ref["loss"], abs=1e-6), got["step"]


@pytest.fixture
def small_file_system(tmp_path):
    """A 100 MiB tmpfs: the weights (~39 MB) fit, weights plus optimizer state (~117 MB) do not."""
    mount = tmp_path / "small"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100m", "tmpfs", str(mount)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_file_system_is_named_enospc(small_file_system):
    run = small_file_system / "run"
    r = run_cli("train", *RUN, "train.max_steps=2", f"hydra.run.dir={run}", output_dir=small_file_system / "out")
    assert r.returncode == 1, r.stderr[-3000:]
    line = (f"could not write checkpoint {run}/checkpoints/step-2 (file optimizer.bin): ENOSPC (No space left on "
            f"device); 0 B free on the file system of {run}/checkpoints; no earlier checkpoint; free space or raise "
            "the limit, then resume with train.resume=auto")
    assert r.stderr.strip().splitlines()[-1] == f"percli: error: {line}"
    assert json.loads((run / "status.json").read_text())["error"] == line
    assert list((run / "checkpoints").iterdir()) == []  # the partial .tmp-step-2 is gone: its space is free again
