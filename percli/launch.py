"""Parent side of `percli train`: train in this process, or spawn `accelerate launch` workers.

The CLI has already composed, validated and saved the resolved config as run_dir/config.yaml. Workers
(`python -m percli.worker <run_dir>`) read that file; they never re-run Hydra, so launcher arguments such
as `--local_rank` cannot reach it, and every process trains on exactly the saved config.

- launcher=local: one process, here (GPU if visible, else CPU).
- launcher=ddp: `accelerate launch --multi_gpu`: NCCL on GPUs, gloo on CPU (workers use
  `Accelerator(cpu=True)`; `--cpu` would silently run ONE process, DESIGN.md §2).
- launcher=deepspeed: `accelerate launch --use_deepspeed` with run_dir/deepspeed_config.json, the ZeRO
  template completed from train.* (written here, so what ran is on disk).

`launcher.num_processes` counts processes per machine; multi-node runs start the same command on every
machine with its own `launcher.machine_rank` and the same `main_process_ip/port`. Every worker asserts
the world size it expects (percli.training_setup.make_accelerator). A worker's error reaches the user as
the one line it raised, with the workers' exit code.

Preemption: a stop signal (SIGTERM / SIGUSR1 / SIGUSR2, percli.signals) to this parent writes run_dir/.stop;
the workers poll it at every step boundary, save a checkpoint and exit (workers also handle the signals
themselves).

DeepSpeed: gradients of the micro-batches accumulate in fp32 (`data_types.grad_accum_dtype`), as they do
under DDP, whatever the model dtype; without it a bf16 run accumulates in bf16. Releases before 0.19.8
apply a bf16 ZeRO-3 step whose gradient is not finite (ZeRO-1/2 before 0.17.1 too, for bf16 and fp32)
instead of skipping it; `check_deepspeed_version` refuses them.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from packaging.version import Version

from percli import checkpoint as ckpt_lib
from percli.device import precision
from percli.distributed import world_size
from percli.errors import ConfigError, EnvironmentProblem, PercliError
from percli.io import atomic_write_json, atomic_write_text
from percli.paths import CONF_DIR, REPO_ROOT
from percli.signals import STOP_FILE, STOP_SIGNALS

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
        if world_size(cfg) > 1 and not torch.cuda.is_available():
            raise EnvironmentProblem(
                f"launcher=deepspeed with {world_size(cfg)} processes needs GPUs (accelerate + DeepSpeed runs one "
                "process on CPU); use launcher.num_processes=1, or launcher=ddp for multi-process CPU training")
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


def check_resume(cfg: DictConfig, run_dir: Path) -> None:
    """Refuse, before any model loads, to resume a checkpoint whose run had other result-affecting values."""
    ckpt = ckpt_lib.resolve_resume(cfg.train.resume, run_dir)
    if ckpt is not None:
        saved = ckpt_lib.read_trainer_state(ckpt)["fingerprint"]
        ckpt_lib.check_compatible(saved, ckpt_lib.fingerprint(cfg, world_size(cfg), precision(cfg)), ckpt)


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


def accelerate_command(cfg: DictConfig, run_dir: Path) -> list[str]:
    """`accelerate launch ... -m percli.worker <run_dir>` for launcher=ddp|deepspeed."""
    launcher = cfg.launcher
    port = launcher.main_process_port or (29500 if launcher.num_machines > 1 else _free_port())
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--num_processes", str(world_size(cfg)),
           "--num_machines", str(launcher.num_machines),
           "--machine_rank", str(launcher.machine_rank),
           "--main_process_port", str(port),
           "--mixed_precision", precision(cfg),
           "--dynamo_backend", "no"]
    if launcher.num_machines > 1:
        cmd += ["--main_process_ip", str(launcher.main_process_ip)]
    if launcher.name == "ddp":
        cmd += ["--multi_gpu"]
    elif launcher.name == "deepspeed":
        cmd += ["--use_deepspeed", "--deepspeed_config_file", str(run_dir / "deepspeed_config.json"),
                "--zero3_init_flag", "true" if launcher.zero_stage == 3 else "false"]
        if launcher.num_machines > 1:
            cmd += ["--deepspeed_multinode_launcher", "standard"]
    return cmd + ["-m", "percli.worker", str(run_dir)]


def launch(cfg: DictConfig, run_dir: Path, train: Callable[[DictConfig, Path], None]) -> None:
    """Train with cfg.launcher; returns when training ended, raises the workers' error otherwise.

    `train(cfg, run_dir)` is what each process runs (`percli.worker` runs the same in launched workers);
    launcher=local runs it here."""
    run_dir = Path(run_dir)
    check_launcher(cfg)
    check_resume(cfg, run_dir)
    (run_dir / STOP_FILE).unlink(missing_ok=True)
    if cfg.launcher.name == "local":
        train(cfg, run_dir)
        return
    if cfg.launcher.name == "deepspeed":
        atomic_write_json(run_dir / "deepspeed_config.json", deepspeed_config(cfg))
    cmd = accelerate_command(cfg, run_dir)
    atomic_write_text(run_dir / "launch_command.txt", " ".join(cmd) + "\n")
    errors = run_dir / ERRORS_DIR
    if errors.exists():
        for p in errors.iterdir():
            p.unlink()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    rc = _run_forwarding_stop_signals(cmd, env, run_dir)
    if rc != 0:
        raise _worker_error(run_dir, rc)


def _run_forwarding_stop_signals(cmd: list[str], env: dict[str, str], run_dir: Path) -> int:
    """Run the launcher; a stop signal meanwhile asks the workers (via run_dir/.stop) to checkpoint."""
    def request_stop(signum, _frame) -> None:
        atomic_write_text(run_dir / STOP_FILE, f"{signum}\n")

    previous = {}
    try:
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, request_stop)
    except ValueError:  # not the main thread: no forwarding, the workers still handle their own signals
        pass
    try:
        return subprocess.run(cmd, env=env, cwd=REPO_ROOT).returncode
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _worker_error(run_dir: Path, rc: int) -> PercliError:
    """The first worker's own one-line error, or a pointer to the log when a worker died without one."""
    reports = sorted((run_dir / ERRORS_DIR).glob("rank-*.json"), key=lambda p: int(p.stem.split("-")[1])) \
        if (run_dir / ERRORS_DIR).is_dir() else []
    for path in reports:
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            return WorkerFailed(report["message"], int(report.get("exit_code", rc)) or rc)
        except (OSError, ValueError, KeyError):
            continue
    return WorkerFailed(f"training workers exited with status {rc} without an error report (killed, or out "
                        f"of memory?); see the output above and {run_dir}", rc if 0 < rc < 256 else 1)


def record_worker_error(run_dir: Path, rank: int, message: str, exit_code: int) -> None:
    atomic_write_json(Path(run_dir) / ERRORS_DIR / f"rank-{rank}.json", {"message": message, "exit_code": exit_code})
