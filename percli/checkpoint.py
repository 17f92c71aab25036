"""Training checkpoints: atomic, pruned, resumable to the exact same loss curve.

Layout of a run dir:

    checkpoints/step-N/     resumable state after N optimizer steps (complete, or absent)
        (accelerate's save_state: model weights, optimizer, RNG states of every process;
         under DeepSpeed the engine's own sharded checkpoint)
        trainer_state.json  step, world size, bad-step counter, W&B run id, config fingerprint
        schedule.safetensors the PerCE schedule's state (e.g. periodic cached weights): tensors plus a
                            JSON header, so resuming unpickles nothing from the run dir
        train_log.jsonl     the log rows up to step N, so a resumed run's log is the whole curve
        manifest.json       written last: every file above with its size and content hash (percli.manifest)
    checkpoints/final/      plain HF checkpoint + tokenizer (AutoModelForCausalLM / vLLM)

Every checkpoint is written into `checkpoints/.tmp-step-N` and renamed when complete, so a `kill -9` at
any moment leaves only complete `step-N` dirs: `latest_checkpoint` never sees a half-written one.
A checkpoint damaged afterwards (a copy cut short, a bad sector) fails its manifest: `train.resume=auto`
skips it for the newest one that verifies, pruning neither counts nor deletes it, and checkpoints from
before manifests are accepted with a note. A save that fails (disk full, file-size limit, permission)
is one line naming the checkpoint, the file, the cause and the free space; earlier checkpoints stay.
The data order is a pure function of (seed, step) and the LR a pure function of step, so the step
number is the whole data and LR-schedule state.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
import resource
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType
from omegaconf import DictConfig
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from percli.distributed import gather_objects, is_main_process
from percli.errors import ConfigError, DataError, PercliError
from percli.io import atomic_replace_dir, atomic_write_json, atomic_write_jsonl, read_jsonl
from percli.log import log
from percli.manifest import MANIFEST, build_manifest, find_damage, has_manifest, stat_signature
from percli.names import result_config

CHECKPOINTS = "checkpoints"
FINAL = "final"
STATE_FILE = "trainer_state.json"
SCHEDULE_FILE = "schedule.safetensors"
LOG_FILE = "train_log.jsonl"
_STEP_DIR = re.compile(r"^step-(\d+)$")
# What a failed checkpoint write raises: OSError from Python's own writes, RuntimeError from torch's
# serializer (no errno: "unexpected pos ..."), SafetensorError from safetensors ("os error N").
_WRITE_ERRORS = (OSError, RuntimeError, SafetensorError)


class CheckpointWriteFailed(PercliError):
    """A checkpoint could not be written (disk full, file-size limit, permission): exit code 1."""




def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def _is_checkpoint(path: Path) -> bool:
    # A manifest without trainer_state.json is a damaged checkpoint (reported), not a stray directory.
    return (path / STATE_FILE).is_file() or has_manifest(path)


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete step checkpoints of a run (verified or not), oldest first."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and _is_checkpoint(p):
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else None


# Checks already made by this process: {checkpoint: (stat signature, damage)}. A checkpoint is hashed again
# only when a file's size or mtime changed since, so pruning at every save costs a stat per file.
_checked: dict[Path, tuple[tuple, str | None]] = {}
_noted: set[Path] = set()  # checkpoints whose skip line or pre-manifest note was printed already


def damage(ckpt: Path) -> str | None:
    """What is wrong with a checkpoint, '<file>: missing | size ... | hash ...', or None when it verifies
    against its manifest or predates manifests. Hashed once per process while its files keep their sizes
    and mtimes (a new process, e.g. a resumed run, always hashes)."""
    ckpt = Path(ckpt).absolute()
    if not has_manifest(ckpt):
        return None
    signature = stat_signature(ckpt)
    known = _checked.get(ckpt)
    if known is None or known[0] != signature:
        known = _checked[ckpt] = (signature, find_damage(ckpt))
    return known[1]


def _note_once(ckpt: Path, message: str, warn: bool) -> None:
    if ckpt.absolute() not in _noted:
        _noted.add(ckpt.absolute())
        (log.warning if warn else log.info)(message)


def newest_verified(run_dir: Path, report: bool = False) -> Path | None:
    """The newest checkpoint of run_dir that verifies; with `report`, one line for each newer one skipped."""
    for _, path in reversed(list_checkpoints(run_dir)):
        problem = damage(path)
        if problem is None:
            return path
        if report:
            _note_once(path, f"skipping damaged checkpoint {path}: {problem}; it is kept on disk, not deleted",
                       warn=True)
    return None


def _choose_resume(resume: str, run_dir: Path) -> Path | None:
    path = run_dir if resume == "auto" else Path(resume).expanduser()
    if resume != "auto" and _is_checkpoint(path):
        problem = damage(path)
        if problem is not None:
            good = newest_verified(path.parent.parent)
            instead = f"the newest one that verifies is {good}" if good else "no other checkpoint of its run verifies"
            raise DataError(f"train.resume={resume}: checkpoint {path} is damaged: {problem}; {instead}")
        ckpt = path
    else:
        if not list_checkpoints(path):
            if resume == "auto":
                return None
            raise ConfigError(f"train.resume={resume} is neither a checkpoint (checkpoints/step-N with {STATE_FILE}) "
                              "nor a run dir holding one; use auto or the path of a complete checkpoint")
        ckpt = newest_verified(path, report=True)
        if ckpt is None:
            raise DataError(f"no checkpoint in {checkpoints_dir(path)} verifies (each one is named above, and kept "
                            "on disk); resume from an intact copy, or start a new run dir")
    if not has_manifest(ckpt):
        _note_once(ckpt, f"checkpoint {ckpt} has no {MANIFEST} (written before checkpoints were verified): "
                         "resuming from it unverified", warn=False)
    return ckpt


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint to resume from: `null` none, `auto` the newest in run_dir that verifies (none on a
    fresh run), or a path to a step-N checkpoint (which must verify) or to a run dir (its newest that does).

    Every rank must call it: the main process verifies (it reads every file once), the others take its
    answer, so all ranks resume from the same checkpoint or fail with the same line."""
    if resume is None:
        return None
    outcome: Path | PercliError | None = None
    if is_main_process():
        try:
            outcome = _choose_resume(resume, Path(run_dir))
        except PercliError as e:
            outcome = e
    outcome = gather_objects(outcome)[0]
    if isinstance(outcome, PercliError):
        raise outcome
    return outcome


def fingerprint(cfg: DictConfig, world_size: int, precision: str) -> dict[str, Any]:
    """Flat {dotted key: value} of everything that determines the loss curve (names.RESULT_KEYS): resuming
    across a change of any of them is refused; memory-only or bookkeeping keys may change."""
    return {"world_size": world_size, "precision": precision, **result_config(cfg)}


def check_compatible(saved: dict[str, Any], current: dict[str, Any], ckpt: Path) -> None:
    """Refuse to resume when a result-affecting value differs from the checkpoint's run."""
    changed = [k for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    if not changed:
        return
    k = changed[0]
    more = f" (and {len(changed) - 1} more: {', '.join(changed[1:4])})" if len(changed) > 1 else ""
    raise ConfigError(
        f"cannot resume from {ckpt}: {k} changed from {saved.get(k)!r} to {current.get(k)!r}{more}; "
        "resume with the checkpoint's values, or start a new run without train.resume"
    )


def save_checkpoint(accelerator, run_dir: Path, step: int, trainer_state: dict[str, Any], schedule,
                    log_rows: list[dict], keep_last: int) -> Path:
    """Write checkpoints/step-N atomically (every process must call this) and prune to keep_last.

    Every process writes its share (under DeepSpeed each rank its shards); after a barrier the main process
    adds its files and the manifest of them all, then renames the directory into place. A failed write
    raises `CheckpointWriteFailed` and leaves the earlier checkpoints as they were.

    `schedule` is any object with state_dict() / load_state_dict() whose state is a tree of dicts with
    tensor, str, number, bool or None leaves."""
    root = checkpoints_dir(run_dir)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        _write(final, tmp, [(tmp, lambda: tmp.mkdir(parents=True))])
    accelerator.wait_for_everyone()
    # Which file accelerate / DeepSpeed failed on is not said: write_failure names the one written last.
    _write(final, tmp, [(tmp, lambda: accelerator.save_state(str(tmp)))])
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write(final, tmp, [
            (tmp / SCHEDULE_FILE, lambda: save_state_tree(schedule.state_dict(), tmp / SCHEDULE_FILE)),
            (tmp / LOG_FILE, lambda: atomic_write_jsonl(tmp / LOG_FILE, log_rows)),
            (tmp / STATE_FILE, lambda: atomic_write_json(tmp / STATE_FILE, {**trainer_state, "step": step})),
            (tmp / MANIFEST, lambda: atomic_write_json(tmp / MANIFEST, build_manifest(tmp))),  # lists all above
            (final, lambda: _publish(tmp, final)),
        ])
        _checked[final.absolute()] = (stat_signature(final), None)  # just hashed: pruning need not read it again
        prune(run_dir, keep_last)
    accelerator.wait_for_everyone()
    return final


def _publish(tmp: Path, final: Path) -> None:
    """Rename tmp to final. A damaged checkpoint already there (a resumed run reaching its step again) is
    moved aside to step-N.damaged, not replaced: damaged checkpoints are never deleted."""
    if final.exists() and damage(final) is not None:
        aside = next(p for i in itertools.count(1)
                     if not (p := final.with_name(f"{final.name}.damaged" + (f"-{i}" if i > 1 else ""))).exists())
        os.replace(final, aside)
        log.warning(f"damaged checkpoint {final} moved to {aside} (kept) to make room for the new one")
    atomic_replace_dir(tmp, final)


def _write(final: Path, tmp: Path, steps: list[tuple[Path, Callable[[], object]]]) -> None:
    """Run each (file, write) in order; a failed write becomes `CheckpointWriteFailed` naming that file."""
    for file, write in steps:
        try:
            write()
        except _WRITE_ERRORS as e:
            raise CheckpointWriteFailed(write_failure(final, tmp, file, e)) from e


def write_failure(final: Path, tmp: Path, writing: Path, error: BaseException) -> str:
    """One line for a failed checkpoint write: the checkpoint, the file, the cause, the free space. The
    half-written directory is removed (it frees the space a retry needs); earlier checkpoints are not touched."""
    if writing == tmp:  # accelerate / DeepSpeed were writing: the file named by the error, else the newest
        named = Path(error.filename) if isinstance(error, OSError) and error.filename else None
        written = [p for p in tmp.rglob("*") if p.is_file()] if tmp.is_dir() else []
        writing = named if named and named.is_relative_to(tmp) else max(
            written, key=lambda p: p.stat().st_mtime_ns, default=tmp)
    file = writing.relative_to(tmp).as_posix() if writing.is_relative_to(tmp) and writing != tmp else writing.name
    free = shutil.disk_usage(next(p for p in tmp.parents if p.exists())).free
    cause = _cause(error, writing if writing.is_file() else None, free)
    if is_main_process():
        shutil.rmtree(tmp, ignore_errors=True)
    newest = latest_checkpoint(tmp.parent.parent)
    earlier = f"the earlier checkpoints are untouched (newest: {newest.name})" if newest else "no earlier checkpoint"
    return (f"could not write checkpoint {final} (file {file}): {cause}; {_size(free)} free on the file system of "
            f"{tmp.parent}; {earlier}; free space or raise the limit, then resume with train.resume=auto")


def _cause(error: BaseException, file: Path | None, free: int) -> str:
    """`ENOSPC (No space left on device)` and the like. torch's serializer reports no errno ("unexpected
    pos ..."), so then the cause is read from the state it left: a file cut at the file-size limit, a
    full file system."""
    code = error.errno if isinstance(error, OSError) else None
    found = re.search(r"os error (\d+)", str(error))
    code = code or (int(found.group(1)) if found else None)
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if code is None and limit != resource.RLIM_INFINITY and file is not None and file.stat().st_size >= limit:
        code = errno.EFBIG
    if code is None and free < 2**20:
        code = errno.ENOSPC
    if code is None:
        return f"{type(error).__name__}: {error}"
    text = f"{errno.errorcode.get(code, f'errno {code}')} ({os.strerror(code)})"
    if code == errno.EFBIG and limit != resource.RLIM_INFINITY:
        text += f": the file-size limit of this process (ulimit -f) is {_size(limit)}"
    return text


def _size(n: int) -> str:
    exponent = min(3, (max(n, 1).bit_length() - 1) // 10)
    return f"{n} B" if exponent == 0 else f"{n / 1024**exponent:.1f} {('KiB', 'MiB', 'GiB')[exponent - 1]}"


def prune(run_dir: Path, keep_last: int) -> None:
    """Delete all but the newest keep_last verified step checkpoints, and leftovers of interrupted saves.
    A damaged checkpoint is neither counted nor deleted (it is what a user needs to see what went wrong)."""
    ckpts = list_checkpoints(run_dir)
    verified = [path for _, path in ckpts if damage(path) is None]
    for path in verified[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)
    root = checkpoints_dir(run_dir)
    newest = ckpts[-1][0] if ckpts else -1
    for p in root.glob(".tmp-step-*"):
        m = re.match(r"^\.tmp-step-(\d+)$", p.name)
        if m and int(m.group(1)) <= newest:
            shutil.rmtree(p, ignore_errors=True)


def load_checkpoint(accelerator, ckpt: Path, schedule) -> tuple[dict[str, Any], list[dict]]:
    """Restore model, optimizer, RNG and schedule states in place; return (trainer_state, log_rows)."""
    state = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
    accelerator.load_state(str(ckpt))
    schedule.load_state_dict(load_state_tree(ckpt / SCHEDULE_FILE))
    rows = read_jsonl(ckpt / LOG_FILE) if (ckpt / LOG_FILE).is_file() else []
    return state, rows


# A state tree is stored as safetensors: tensors under their "/"-joined key path, every other leaf (and
# every empty dict) in a JSON header entry. Loading it unpickles nothing from the run dir.
_TREE_KEY = "percli_state_tree"


def save_state_tree(tree: dict[str, Any], path: Path) -> None:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                if "/" in str(k):
                    raise ValueError(f"state key {k!r} contains '/'")
                walk(f"{prefix}/{k}" if prefix else str(k), v)
        elif isinstance(node, torch.Tensor):
            tensors[prefix] = node.detach().cpu().contiguous()
        else:
            plain[prefix] = node

    walk("", tree)
    save_file(tensors, str(path), metadata={_TREE_KEY: json.dumps(plain)})


def load_state_tree(path: Path) -> dict[str, Any]:
    """The tree `save_state_tree` wrote (dict keys come back as strings)."""
    with safe_open(str(path), framework="pt") as f:
        plain = json.loads(f.metadata()[_TREE_KEY])
    tree: dict[str, Any] = {}
    for key, value in [*plain.items(), *load_file(str(path)).items()]:
        *parents, leaf = key.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def read_trainer_state(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))


def export_final(accelerator, scorer, tokenizer, cfg: DictConfig, run_dir: Path, precision: str) -> Path:
    """checkpoints/final: a plain HF checkpoint + tokenizer (every process must call this).

    LoRA: merged into the base weights (model.lora.merge=true) or saved as a PEFT adapter. Under ZeRO-3
    the sharded weights are gathered to the main process first. bf16 runs save bf16 weights."""
    final = checkpoints_dir(run_dir) / FINAL
    zero3 = (accelerator.distributed_type == DistributedType.DEEPSPEED
             and accelerator.state.deepspeed_plugin.zero_stage == 3)
    state_dict = None
    if zero3:
        full = accelerator.get_state_dict(scorer)  # a collective: gathered on the main process
        if accelerator.is_main_process:
            state_dict = {k.removeprefix("causal_lm."): v for k, v in full.items()}
    if accelerator.is_main_process:
        lm = accelerator.unwrap_model(scorer).causal_lm
        tmp = final.with_name(f".tmp-{FINAL}")
        shutil.rmtree(tmp, ignore_errors=True)
        if cfg.model.lora.enabled and not cfg.model.lora.merge:
            lm.save_pretrained(tmp)  # adapter_config.json + adapter weights; the base comes from cfg.model
        else:
            if cfg.model.lora.enabled:
                lm = lm.merge_and_unload()
            if state_dict is None and precision == "bf16":
                lm = lm.to(torch.bfloat16)
            lm.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        atomic_replace_dir(tmp, final)
    accelerator.wait_for_everyone()
    return final
