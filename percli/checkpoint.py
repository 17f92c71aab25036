"""Training checkpoints: atomic, pruned, resumable to the exact same loss curve.

Layout of a run dir:

    checkpoints/step-N/     resumable state after N optimizer steps (complete, or absent)
        (accelerate's save_state: model weights, optimizer, RNG states of every process;
         under DeepSpeed the engine's own sharded checkpoint)
        trainer_state.json  step, world size, bad-step counter, W&B run id, config fingerprint
        schedule.safetensors the PerCE schedule's state (e.g. periodic cached weights): tensors plus a
                            JSON header, so resuming unpickles nothing from the run dir
        train_log.jsonl     the log rows up to step N, so a resumed run's log is the whole curve
    checkpoints/final/      plain HF checkpoint + tokenizer (AutoModelForCausalLM / vLLM)

Every checkpoint is written into `checkpoints/.tmp-step-N` and renamed when complete, so a `kill -9` at
any moment leaves only complete `step-N` dirs: `latest_checkpoint` never sees a half-written one.
The data order is a pure function of (seed, step) and the LR a pure function of step, so the step
number is the whole data and LR-schedule state.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, safe_open, save_file

from percli.errors import ConfigError
from percli.io import atomic_replace_dir, atomic_write_json, atomic_write_jsonl, read_jsonl

CHECKPOINTS = "checkpoints"
FINAL = "final"
STATE_FILE = "trainer_state.json"
SCHEDULE_FILE = "schedule.safetensors"
_STEP_DIR = re.compile(r"^step-(\d+)$")

# Config keys whose change would change the loss curve: resuming across such a change is refused.
# Memory-only or bookkeeping keys (gradient checkpointing, save_every, logger, eval, paths) may change.
RESULT_KEYS = ("seed", "model", "task", "data", "retriever", "loss", "schedule", "train.epochs",
               "train.max_steps", "train.lr", "train.weight_decay", "train.warmup_ratio", "train.lr_scheduler",
               "train.batch_size", "train.grad_accum", "train.max_grad_norm")
_NOT_RESULT = ("model.gradient_checkpointing",)


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete step checkpoints of a run, oldest first."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else None


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint to resume from: `null` none, `auto` the newest in run_dir (none on a fresh run),
    or a path to a step-N checkpoint or to a run dir (its newest checkpoint)."""
    if resume is None:
        return None
    if resume == "auto":
        return latest_checkpoint(run_dir)
    path = Path(resume).expanduser()
    if (path / STATE_FILE).is_file():
        return path
    latest = latest_checkpoint(path) if path.is_dir() else None
    if latest is None:
        raise ConfigError(f"train.resume={resume} is neither a checkpoint (checkpoints/step-N with {STATE_FILE}) "
                          "nor a run dir holding one; use auto or the path of a complete checkpoint")
    return latest


def fingerprint(cfg: DictConfig, world_size: int, precision: str) -> dict[str, Any]:
    """Flat {dotted key: value} of everything that determines the loss curve."""
    flat: dict[str, Any] = {"world_size": world_size, "precision": precision}
    for key in RESULT_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, DictConfig):
            value = OmegaConf.to_container(value, resolve=True)
        _flatten(key, value, flat)
    for key in _NOT_RESULT:
        flat.pop(key, None)
    return flat


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    else:
        out[prefix] = value


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

    `schedule` is any object with state_dict() / load_state_dict() whose state is a tree of dicts with
    tensor, str, number, bool or None leaves."""
    root = checkpoints_dir(run_dir)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_state_tree(schedule.state_dict(), tmp / SCHEDULE_FILE)
        atomic_write_jsonl(tmp / "train_log.jsonl", log_rows)
        atomic_write_json(tmp / STATE_FILE, {**trainer_state, "step": step})  # written last: marks complete
        atomic_replace_dir(tmp, final)
        prune(run_dir, keep_last)
    accelerator.wait_for_everyone()
    return final


def prune(run_dir: Path, keep_last: int) -> None:
    """Delete all but the newest keep_last step checkpoints, and leftovers of interrupted saves."""
    ckpts = list_checkpoints(run_dir)
    for _, path in ckpts[:-keep_last]:
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
    rows = read_jsonl(ckpt / "train_log.jsonl") if (ckpt / "train_log.jsonl").is_file() else []
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
