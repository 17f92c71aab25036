"""Checkpoint manifests on hand-built checkpoint dirs (no model): what a manifest lists, how each kind of
damage is named, which checkpoint resume picks, what pruning keeps, and the one line of a failed write."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import xxhash
from omegaconf import OmegaConf
from safetensors import SafetensorError

from percli import checkpoint as ckpt_lib
from percli.errors import ConfigError, DataError
from percli.io import atomic_write_json
from percli.manifest import MANIFEST, build_manifest, find_damage
from percli.preflight import compose_config

WEIGHTS = b"0123456789" * 100  # 1000 bytes


def _ckpt(run: Path, step: int, manifest: bool = True, fingerprint: dict | None = None) -> Path:
    """A checkpoint as save_checkpoint lays it out: top-level files, a DeepSpeed-style shard subdirectory,
    trainer_state.json, then the manifest of them all."""
    path = run / "checkpoints" / f"step-{step}"
    (path / "pytorch_model").mkdir(parents=True)
    (path / "model.safetensors").write_bytes(WEIGHTS)
    (path / "pytorch_model" / "zero_pp_rank_1_mp_rank_00_optim_states.pt").write_bytes(b"shard of rank 1")
    (path / ckpt_lib.STATE_FILE).write_text(json.dumps({"step": step, "fingerprint": fingerprint or {}}))
    if manifest:
        atomic_write_json(path / MANIFEST, build_manifest(path))
    return path


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_manifest_lists_every_file_with_size_and_hash(tmp_path):
    path = _ckpt(tmp_path, 2)
    manifest = json.loads((path / MANIFEST).read_text())
    state = (path / ckpt_lib.STATE_FILE).read_bytes()
    assert manifest == {"hash": "xxh3_128", "files": {
        "model.safetensors": {"size": 1000, "xxh3_128": xxhash.xxh3_128(WEIGHTS).hexdigest()},
        "pytorch_model/zero_pp_rank_1_mp_rank_00_optim_states.pt": {
            "size": 15, "xxh3_128": xxhash.xxh3_128(b"shard of rank 1").hexdigest()},
        "trainer_state.json": {"size": len(state), "xxh3_128": xxhash.xxh3_128(state).hexdigest()},
    }}
    assert find_damage(path) is None


@pytest.mark.parametrize(("damage", "expected"), [
    ("truncate", "model.safetensors: size 600 bytes, the manifest says 1000"),
    ("flip", "model.safetensors: hash differs from the manifest's (same size, changed content)"),
    ("delete shard", "pytorch_model/zero_pp_rank_1_mp_rank_00_optim_states.pt: missing"),
    ("manifest cut", "manifest.json: unreadable (JSONDecodeError: "),
])
def test_each_damage_is_named_with_its_file(tmp_path, damage, expected):
    path = _ckpt(tmp_path, 2)
    if damage == "truncate":
        os.truncate(path / "model.safetensors", 600)
    elif damage == "flip":
        _flip_byte(path / "model.safetensors", 500)
    elif damage == "delete shard":
        (path / "pytorch_model" / "zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    else:
        os.truncate(path / MANIFEST, 40)
    assert find_damage(path).startswith(expected)
    assert ckpt_lib.damage(path).startswith(expected)


def test_auto_resume_skips_damaged_newest_with_one_line_each(tmp_path, capsys):
    for step in (2, 4, 6, 8):
        _ckpt(tmp_path, step)
    ckpts = tmp_path / "checkpoints"
    os.truncate(ckpts / "step-8" / "model.safetensors", 10)
    _flip_byte(ckpts / "step-6" / ckpt_lib.STATE_FILE, 3)

    assert ckpt_lib.resolve_resume("auto", tmp_path) == ckpts / "step-4"
    assert capsys.readouterr().err.splitlines() == [
        f"percli: warning: skipping damaged checkpoint {ckpts}/step-8: model.safetensors: size 10 bytes, the "
        "manifest says 1000; it is kept on disk, not deleted",
        f"percli: warning: skipping damaged checkpoint {ckpts}/step-6: trainer_state.json: hash differs from the "
        "manifest's (same size, changed content); it is kept on disk, not deleted",
    ]
    # The launcher checks, then the trainer resumes: the second call in a process prints nothing again.
    assert ckpt_lib.resolve_resume("auto", tmp_path) == ckpts / "step-4"
    assert capsys.readouterr().err == ""
    # A run dir given as the path behaves like auto.
    assert ckpt_lib.resolve_resume(str(tmp_path), tmp_path / "elsewhere") == ckpts / "step-4"
    # Damaged checkpoints are listed (a manifest makes a dir a checkpoint even without trainer_state.json).
    (ckpts / "step-6" / ckpt_lib.STATE_FILE).unlink()
    assert [s for s, _ in ckpt_lib.list_checkpoints(tmp_path)] == [2, 4, 6, 8]


def test_resume_of_a_damaged_path_fails_naming_the_file_and_the_newest_good_one(tmp_path):
    for step in (2, 4, 6):
        _ckpt(tmp_path, step)
    ckpts = tmp_path / "checkpoints"
    (ckpts / "step-4" / "model.safetensors").unlink()
    os.truncate(ckpts / "step-6" / "model.safetensors", 0)
    with pytest.raises(DataError) as e:
        ckpt_lib.resolve_resume(str(ckpts / "step-4"), tmp_path)
    assert str(e.value) == (f"train.resume={ckpts}/step-4: checkpoint {ckpts}/step-4 is damaged: model.safetensors: "
                            f"missing; the newest one that verifies is {ckpts}/step-2")
    (ckpts / "step-2" / "pytorch_model" / "zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    with pytest.raises(DataError, match="is damaged: model.safetensors: missing; no other checkpoint of its run "
                                        "verifies$"):
        ckpt_lib.resolve_resume(str(ckpts / "step-4"), tmp_path)
    with pytest.raises(DataError) as e:
        ckpt_lib.resolve_resume("auto", tmp_path)
    assert str(e.value) == (f"no checkpoint in {ckpts} verifies (each one is named above, and kept on disk); "
                            "resume from an intact copy, or start a new run dir")
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-2", "step-4", "step-6"]


def test_pre_manifest_checkpoint_is_accepted_with_a_note(tmp_path, capsys):
    _ckpt(tmp_path, 2)
    old = _ckpt(tmp_path, 4, manifest=False)
    assert ckpt_lib.resolve_resume("auto", tmp_path) == old
    assert ckpt_lib.resolve_resume(str(old), tmp_path) == old
    assert capsys.readouterr().err.splitlines() == [
        f"percli: checkpoint {old} has no manifest.json (written before checkpoints were verified): resuming from "
        "it unverified"]
    with pytest.raises(ConfigError, match=r"step-12 is neither a checkpoint"):
        ckpt_lib.resolve_resume(str(tmp_path / "checkpoints" / "step-12"), tmp_path)
    assert ckpt_lib.resolve_resume("auto", tmp_path / "fresh") is None


def test_pruning_counts_only_verified_checkpoints_and_keeps_damaged_ones(tmp_path):
    for step in (2, 4, 6, 8, 10):
        _ckpt(tmp_path, step)
    ckpts = tmp_path / "checkpoints"
    os.truncate(ckpts / "step-8" / "model.safetensors", 999)
    (ckpts / "step-2" / "model.safetensors").unlink()
    ckpt_lib.prune(tmp_path, keep_last=2)
    # Verified: 4, 6, 10 -> the newest two (6, 10) stay, 4 goes; damaged 2 and 8 are not counted and stay.
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-10", "step-2", "step-6", "step-8"]


def test_damaged_checkpoint_at_the_step_being_saved_is_moved_aside(tmp_path, capsys):
    damaged = _ckpt(tmp_path, 6)
    os.truncate(damaged / "model.safetensors", 1)
    new = tmp_path / "checkpoints" / ".tmp-step-6"
    new.mkdir()
    (new / "model.safetensors").write_bytes(WEIGHTS)
    ckpt_lib._publish(new, damaged)
    aside = tmp_path / "checkpoints" / "step-6.damaged"
    assert (aside / "model.safetensors").stat().st_size == 1 and (damaged / "model.safetensors").read_bytes() == WEIGHTS
    assert capsys.readouterr().err == (f"percli: warning: damaged checkpoint {damaged} moved to {aside} (kept) to make "
                                       "room for the new one\n")
    assert [p for _, p in ckpt_lib.list_checkpoints(tmp_path)] == []  # neither is a (complete) step-N checkpoint


def test_changed_file_is_checked_again(tmp_path):
    path = _ckpt(tmp_path, 2)
    assert ckpt_lib.damage(path) is None
    os.truncate(path / "model.safetensors", 5)  # a size change invalidates the remembered check
    assert ckpt_lib.damage(path) == "model.safetensors: size 5 bytes, the manifest says 1000"


@pytest.mark.parametrize(("error", "expected"), [
    (OSError(errno.ENOSPC, "No space left on device"), "ENOSPC (No space left on device)"),
    (PermissionError(errno.EACCES, "Permission denied"), "EACCES (Permission denied)"),
    (SafetensorError("Error while serializing: I/O error: File too large (os error 27)"), "EFBIG (File too large)"),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"),
     "RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"),
])
def test_write_failure_names_checkpoint_file_cause_and_free_space(tmp_path, error, expected):
    _ckpt(tmp_path, 2)
    tmp = tmp_path / "checkpoints" / ".tmp-step-4"
    tmp.mkdir(parents=True)
    (tmp / "optimizer.bin").write_bytes(b"x" * 10)
    line = ckpt_lib.write_failure(tmp_path / "checkpoints" / "step-4", tmp, tmp, error)
    head, free = line.split("; ", 1)
    assert head == f"could not write checkpoint {tmp_path}/checkpoints/step-4 (file optimizer.bin): {expected}"
    assert free.endswith(f" free on the file system of {tmp_path}/checkpoints; the earlier checkpoints are "
                         "untouched (newest: step-2); free space or raise the limit, then resume with train.resume=auto")
    assert not tmp.exists()  # the half-written checkpoint is removed: a retry needs its space


def test_resume_of_a_damaged_path_through_the_cli_is_one_line_exit_1(cli, tmp_path):
    run = tmp_path / "run"
    fast = ["debug=smoke", "eval.after_train=false"]
    fingerprint = ckpt_lib.fingerprint(compose_config("train", fast), 1, "no")
    good, bad = _ckpt(run, 2, fingerprint=fingerprint), _ckpt(run, 4, fingerprint=fingerprint)
    os.truncate(bad / "model.safetensors", 100)
    r = cli("train", *fast, f"hydra.run.dir={run}", f"train.resume={bad}")
    assert r.returncode == 1, r.stderr
    line = (f"train.resume={bad}: checkpoint {bad} is damaged: model.safetensors: size 100 bytes, the manifest "
            f"says 1000; the newest one that verifies is {good}")
    assert r.stderr == f"percli: error: {line}\n"  # before any model loads: the whole output
    assert OmegaConf.load(run / "status.json") == {"status": "failed", "exit_code": 1, "error": line}
