"""Parent side of `percli train` / `percli eval`: run a job in this process, or in supervised workers.

The CLI has already composed, validated and saved the resolved config as run_dir/config.yaml. Workers
(`python -m percli.worker <job> <config> <run_dir>`) read a saved config; they never re-run Hydra, so every
process runs exactly the saved config.

- launcher=local: one process, here (GPU if visible, else CPU).
- launcher=ddp: one worker per process; accelerate's DDP over NCCL on GPUs, gloo on CPU.
- launcher=deepspeed: the same workers with accelerate's DeepSpeed plugin and run_dir/deepspeed_config.json,
  the ZeRO template completed from train.* (written here, so what ran is on disk). Without a GPU,
  DeepSpeed runs on its CPU accelerator over gloo.

The workers are started and supervised here (percli.supervisor), not by `accelerate launch`: stop signals
then reach every worker and nothing is killed before the checkpoint is written (within
`launcher.stop_grace_s`). `launcher.num_processes` counts processes per machine (`auto`: one per visible
GPU, 1 without); multi-node runs start the same command on every machine with its own
`launcher.machine_rank` and the same `main_process_ip/port`. Every worker asserts the world size it
expects (percli.training_setup.make_accelerator). A worker's error reaches the user as the one line it
raised, with the workers' exit code; workers stopped by a signal make the parent raise `TrainingStopped`
(exit 128 + signal, status.json `stopped`), which a requeue tells from a failure.

DeepSpeed: gradients of the micro-batches accumulate in fp32 (`data_types.grad_accum_dtype`), as they do
under DDP, whatever the model dtype; without it a bf16 run accumulates in bf16. Releases before 0.19.8
apply a bf16 ZeRO-3 step whose gradient is not finite (ZeRO-1/2 before 0.17.1 too, for bf16 and fp32)
instead of skipping it; `check_deepspeed_version` refuses them.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shlex
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from packaging.version import Version

from percli import checkpoint as ckpt_lib
from percli.device import precision, visible_gpus
from percli.distributed import processes_per_machine, world_size
from percli.errors import ConfigError, EnvironmentProblem, PercliError
from percli.io import atomic_write_json, atomic_write_text
from percli.log import log
from percli.paths import CONF_DIR, REPO_ROOT
from percli.signals import STOP_SIGNALS, TrainingStopped, signal_name
from percli.supervisor import Outcome, run_workers, worker_env

ERRORS_DIR = ".worker-errors"
# The first release whose ZeRO-1/2 and ZeRO-3 both skip a bf16 step with a non-finite gradient
# (ZeRO-1/2: 0.17.1, deepspeedai/DeepSpeed#6976; ZeRO-3: 0.19.8, which checks the gradient norm).
DEEPSPEED_MIN = "0.19.8"


class WorkerFailed(PercliError):
    """A worker's failure, re-raised in the parent with the workers' exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def check_launcher(cfg: DictConfig) -> None:
    """Cross-key launcher checks that the per-key rules of percli.schema cannot express."""
    launcher = cfg.launcher
    if launcher.name == "local" and (launcher.num_processes != 1 or launcher.num_machines != 1):
        raise ConfigError(f"launcher=local runs one process (got launcher.num_processes={launcher.num_processes}, "
                          f"num_machines={launcher.num_machines}); use launcher=ddp or launcher=deepspeed")
    if launcher.machine_rank >= launcher.num_machines:
        raise ConfigError(f"launcher.machine_rank={launcher.machine_rank} must be below "
                          f"launcher.num_machines={launcher.num_machines}")
    if launcher.num_machines > 1 and not launcher.main_process_ip:
        raise ConfigError(f"launcher.num_machines={launcher.num_machines} needs launcher.main_process_ip "
                          "(the address of machine_rank 0), the same on every machine")
    if launcher.name == "deepspeed":
        if launcher.zero_stage == 3 and cfg.model.lora.enabled:
            raise ConfigError("model.lora.enabled=true with launcher.zero_stage=3 is not supported (the merged "
                              "export needs unsharded weights); use launcher.zero_stage=2")
        if launcher.deepspeed_config and not Path(launcher.deepspeed_config).is_file():
            raise ConfigError(f"launcher.deepspeed_config={launcher.deepspeed_config} does not exist; "
                              "give the path of a DeepSpeed JSON file, or null for the zero2/zero3 template")
        check_deepspeed_version()


def check_deepspeed_version(installed: str | None = None) -> None:
    """Refuse a DeepSpeed that may apply a non-finite update (and then save it) instead of skipping it."""
    installed = installed or importlib.metadata.version("deepspeed")
    if Version(installed) < Version(DEEPSPEED_MIN):
        raise EnvironmentProblem(
            f"launcher=deepspeed needs deepspeed>={DEEPSPEED_MIN} (installed: {installed}, whose ZeRO optimizer can "
            f"apply a step with a non-finite bf16 gradient instead of skipping it); run: pip install "
            f"'deepspeed>={DEEPSPEED_MIN}'")


def check_resume(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The checkpoint train.resume names, verified; refused before any model loads when its run had other
    result-affecting values."""
    ckpt = ckpt_lib.resolve_resume(cfg.train.resume, run_dir)
    if ckpt is not None:
        saved = ckpt_lib.read_trainer_state(ckpt)["fingerprint"]
        ckpt_lib.check_compatible(saved, ckpt_lib.fingerprint(cfg, world_size(cfg), precision(cfg)), ckpt)
    return ckpt


def deepspeed_config(cfg: DictConfig) -> dict[str, Any]:
    """The DeepSpeed JSON the workers use: a ZeRO template completed from train.* and the precision."""
    launcher, train = cfg.launcher, cfg.train
    template = launcher.deepspeed_config or CONF_DIR / "launcher" / "deepspeed" / (
        "zero3.json" if launcher.zero_stage == 3 else "zero2.json")
    ds = json.loads(Path(template).read_text(encoding="utf-8"))
    if not launcher.deepspeed_config:  # a user's own file keeps its zero_optimization as written
        zero = ds["zero_optimization"]
        zero["stage"] = int(launcher.zero_stage)
        if launcher.offload:
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
            if launcher.zero_stage == 3:
                zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    ds["train_micro_batch_size_per_gpu"] = int(train.batch_size)
    ds["gradient_accumulation_steps"] = int(train.grad_accum)
    ds["train_batch_size"] = int(train.batch_size) * int(train.grad_accum) * world_size(cfg)
    # 0 = no clipping; DeepSpeed still computes the norm and skips a step whose gradient is not finite.
    ds["gradient_clipping"] = float(train.max_grad_norm) if train.max_grad_norm else 0.0
    ds["bf16"] = {"enabled": precision(cfg) == "bf16"}
    ds.pop("fp16", None)
    # Accumulate micro-batch gradients in fp32 like DDP does, also when the user's own file says nothing:
    # DeepSpeed's default is the model dtype, bf16 in a bf16 run.
    ds.setdefault("data_types", {}).setdefault("grad_accum_dtype", "fp32")
    return ds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_envs(cfg: DictConfig, run_dir: Path) -> list[dict[str, str]]:
    """One environment per local worker: the rank layout and what `accelerate launch` would export."""
    launcher = cfg.launcher
    port = launcher.main_process_port or (29500 if launcher.num_machines > 1 else _free_port())
    # REPO_ROOT holds the percli package this process runs (a checkout or site-packages): workers import it too.
    base = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
            "ACCELERATE_MIXED_PRECISION": precision(cfg), "ACCELERATE_DYNAMO_BACKEND": "NO"}
    if launcher.name == "deepspeed":
        base.update(ACCELERATE_USE_DEEPSPEED="true", ACCELERATE_CONFIG_DS_FIELDS="",
                    ACCELERATE_DEEPSPEED_CONFIG_FILE=str(run_dir / "deepspeed_config.json"),
                    ACCELERATE_DEEPSPEED_ZERO3_INIT="true" if launcher.zero_stage == 3 else "false")
        if not torch.cuda.is_available():  # DeepSpeed's CPU accelerator, gloo underneath (no oneCCL needed)
            base.setdefault("DS_ACCELERATOR", "cpu")
    local = processes_per_machine(cfg)
    return [worker_env(base, rank=int(launcher.machine_rank) * local + i, local_rank=i, world=world_size(cfg),
                       local_world=local, machine_rank=int(launcher.machine_rank),
                       master_addr=str(launcher.main_process_ip or "127.0.0.1"), master_port=port)
            for i in range(local)]


def warn_idle_gpus(cfg: DictConfig) -> None:
    """One line when this machine has GPUs that the launcher leaves unused."""
    gpus = visible_gpus()
    used = processes_per_machine(cfg)
    if gpus > used:
        log.warning(f"launcher={cfg.launcher.name} uses {used} of the {gpus} visible GPUs; {gpus - used} stay idle "
                    "(launcher=ddp|deepspeed with launcher.num_processes=auto uses them all)")


def launch(cfg: DictConfig, run_dir: Path, train: Callable[[DictConfig, Path], None]) -> None:
    """Train with cfg.launcher; returns when training ended, raises the workers' error otherwise.

    `train(cfg, run_dir)` is what each process runs (`percli.worker train` runs the same in workers);
    launcher=local runs it here."""
    run_dir = Path(run_dir)
    check_launcher(cfg)
    ckpt = check_resume(cfg, run_dir)
    warn_idle_gpus(cfg)
    if cfg.launcher.name == "local":
        train(cfg, run_dir)
        return
    if cfg.launcher.name == "deepspeed":
        atomic_write_json(run_dir / "deepspeed_config.json", deepspeed_config(cfg))
    config = run_dir / "config.yaml"
    if ckpt is not None:
        # The workers resume the checkpoint chosen here (damaged newer ones already reported once), not their
        # own reading of `auto`.
        config = run_dir / "worker_config.yaml"
        atomic_write_text(config, OmegaConf.to_yaml(OmegaConf.merge(cfg, {"train": {"resume": str(ckpt)}}), resolve=True))
    run_in_workers(cfg, run_dir, "train", config)


def run_in_workers(cfg: DictConfig, run_dir: Path, job: str, config: Path) -> None:
    """Run `percli.worker <job> <config> <run_dir>` on every local rank; raise what the workers reported."""
    cmd = [sys.executable, "-m", "percli.worker", job, str(config), str(run_dir)]
    envs = worker_envs(cfg, run_dir)
    layout = {k: envs[0][k] for k in sorted(envs[0]) if k.startswith(("ACCELERATE_", "DS_", "MASTER_"))}
    atomic_write_text(run_dir / f"launch_{job}.txt", " ".join(f"{k}={shlex.quote(v)}" for k, v in layout.items())
                      + f" WORLD_SIZE={envs[0]['WORLD_SIZE']} (x{len(envs)} local ranks) " + shlex.join(cmd) + "\n")
    errors = run_dir / ERRORS_DIR
    if errors.exists():
        for p in errors.iterdir():
            p.unlink()
    # The parent's working directory: relative paths in the config mean the same to every process.
    outcome = run_workers(cmd, envs, Path.cwd(), float(cfg.launcher.stop_grace_s))
    if outcome.stop_signal:
        log.info(f"workers exited {outcome.seconds_to_stop} s after {signal_name(outcome.stop_signal)} "
                 f"(launcher.stop_grace_s={cfg.launcher.stop_grace_s})")
    error = workers_error(run_dir, outcome)
    if error is not None:
        raise error


def workers_error(run_dir: Path, outcome: Outcome) -> PercliError | None:
    """None when every worker succeeded; else the error the parent raises (stopped or failed)."""
    codes = outcome.exit_codes
    if all(c == 0 for c in codes):
        return None
    reports = _worker_reports(run_dir)
    stopped = [c - 128 for c in codes if c - 128 in STOP_SIGNALS]
    if stopped and all(c == 0 or c > 128 for c in codes) and not outcome.killed_after_grace:
        signum = stopped[0]
        message = next((r["message"] for r in reports if r.get("exit_code") == 128 + signum),
                       f"training stopped by {signal_name(signum)}")
        return TrainingStopped(message, signum)
    first = next((c for c in codes if c != 0), 1)
    rc = first if 0 < first < 256 else 1
    notes = "; ".join(outcome.notes)
    for report in reports:
        if report.get("exit_code", 1) <= 128:  # a stopped rank's report is not the failure
            message = report["message"] + (f" ({notes})" if notes else "")
            return WorkerFailed(message, int(report.get("exit_code", rc)) or rc)
    return WorkerFailed(f"workers exited with status {codes} without an error report (killed, or out of "
                        f"memory?){'; ' + notes if notes else ''}; see the output above and {run_dir}", rc)


def _worker_reports(run_dir: Path) -> list[dict]:
    """The workers' one-line error reports, in rank order."""
    folder = run_dir / ERRORS_DIR
    reports = []
    for path in sorted(folder.glob("rank-*.json"), key=lambda p: int(p.stem.split("-")[1])) if folder.is_dir() else []:
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            reports.append({"message": str(report["message"]), "exit_code": int(report.get("exit_code", 1))})
        except (OSError, ValueError, KeyError):
            continue
    return reports


def record_worker_error(run_dir: Path, rank: int, message: str, exit_code: int) -> None:
    atomic_write_json(Path(run_dir) / ERRORS_DIR / f"rank-{rank}.json", {"message": message, "exit_code": exit_code})
