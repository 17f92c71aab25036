"""`percli <command> [hydra overrides...]`: one Hydra entrypoint per command, behind one error boundary.

Before Hydra starts a job, every override combination is composed and validated (`preflight`), so a
typo costs milliseconds and exits 2 with a short message instead of a Hydra traceback or a half-started
sweep. Jobs then run through `hydra.main`, so `--cfg job`, `-m`, `hydra.run.dir=...` and `+key=value`
all behave as Hydra documents them.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from percli.errors import ConfigError, PercliError
from percli.io import atomic_write_json, atomic_write_text
from percli.log import log, result
from percli.losses import LOSSES
from percli.preflight import compose_config, config_search, expand_sweep, preflight
from percli.rundir import check_fresh_run_dir, sweep_failures
from percli.schema import describe
from percli.signals import TrainingStopped

# command -> (one-line help, "module:function" taking (cfg, run_dir)); a command's module is imported only
# when it runs, so `percli data` never loads the training stack.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": (f"fine-tune a model with {' / '.join(loss.label for loss in LOSSES.values())} on a LongLaMP task",
              "percli.train:run"),
    "eval": ("generate on a split and score ROUGE-1/2/L and METEOR (HF evaluate parity)", "percli.evaluation:run"),
    "contrast": ("score response tokens with PerContrast (PIR) -> contrast.jsonl + heatmap", "percli.contrast:run"),
    "data": ("show data statistics and write the rendered prompts (prompts.jsonl)", "percli.data.stats:run"),
    "table": ("aggregate run dirs into the paper's table (md/csv/tex) and plots", "percli.table:run"),
    "compare": ("paired per-example deltas of two runs with bootstrap CIs -> compare.json", "percli.compare:run"),
}
# Flags after which Hydra prints something and exits without running a job: nothing to validate.
_INFO_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--version", "--shell-completion", "-sc"}
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--experimental-rerun", "--info", "-i"}
_CONFIG_DIR_FLAGS = ("-cd", "--config-dir")
_CONFIG_NAME_FLAGS = ("-cn", "--config-name")


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: percli <command> [hydra overrides...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (text, _) in COMMANDS.items()]
    lines += [
        "",
        "examples:",
        "  percli train model=tiny loss=perce debug=smoke",
        "  percli train -m loss=ce,perce train.lr=1e-5,2e-5",
        "  percli eval model.path=outputs/train/runs/<run>/checkpoints/final task=topic",
        "",
        "`percli <command> --help` lists the config groups and every key's doc; `--cfg job` prints the config.",
        "PERCLI_DEBUG=1 shows tracebacks.",
    ]
    return "\n".join(lines)


def _fail(message: str, code: int) -> None:
    log.error(message)
    raise SystemExit(code)


def _overrides_only(args: list[str]) -> list[str]:
    """Drop Hydra's own flags (and their values) so the rest can be composed for validation."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in _FLAGS_WITH_VALUE:
            skip = True
        elif not a.startswith("-"):
            out.append(a)
    return out


def _flag_value(args: list[str], flags: tuple[str, ...]) -> str | None:
    """The value of the last of `flags` in args (`-cn NAME` or `--config-name=NAME`), or None."""
    value = None
    for i, arg in enumerate(args):
        flag, eq, inline = arg.partition("=")
        if flag in flags:
            value = inline if eq else (args[i + 1] if i + 1 < len(args) else None)
    return value


def _take_config_dir(args: list[str]) -> tuple[Path | None, list[str]]:
    """`-cd/--config-dir DIR` taken out of the arguments: percli searches that tree before its own
    (preflight.config_search) instead of handing the flag to Hydra."""
    config_dir, rest, i = None, [], 0
    while i < len(args):
        flag, _, value = args[i].partition("=")
        if flag in _CONFIG_DIR_FLAGS:
            if not value:
                if i + 1 == len(args):
                    raise ConfigError(f"{flag} needs a directory: {flag} DIR")
                value, i = args[i + 1], i + 1
            config_dir = Path(value).expanduser().resolve()
            if not config_dir.is_dir():
                raise ConfigError(f"{flag} {value}: no such directory; pass a directory laid out like percli's "
                                  "conf/ (e.g. DIR/model/mine.yaml for model=mine)")
        else:
            rest.append(args[i])
        i += 1
    return config_dir, rest


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        _fail(f"unknown command '{command}'; choose one of: {', '.join(COMMANDS)}", 2)
    debug = os.environ.get("PERCLI_DEBUG") == "1"
    try:
        config_dir, rest = _take_config_dir(rest)
        overrides, sweep_dir = _overrides_only(rest), None
        multirun = "-m" in rest or "--multirun" in rest
        primary = _flag_value(rest, _CONFIG_NAME_FLAGS) or command  # a user's own primary config (-cn)
        if not any(a in _INFO_FLAGS for a in rest):
            sweep_dir = preflight(primary, overrides, multirun=multirun, config_dir=config_dir,
                                  check_environment=not any(a in ("--cfg", "-c") for a in rest))
        if any(a in ("-h", "--help") for a in rest):
            _print_help(command, rest, config_dir)
            return
        if sweep_dir is not None and not any(o.startswith("hydra.sweep.dir=") for o in overrides):
            rest = [*rest, f"hydra.sweep.dir='{sweep_dir}'"]  # the dir preflight checked and the report reads
        _run_hydra(command, rest, config_dir)
    except PercliError as e:
        if debug:
            raise
        _fail(str(e), e.exit_code)
    if sweep_dir is not None and not any(a in ("--cfg", "-c") for a in rest):
        # From each job's status.json: the same under any launcher, including jobs that ran on other machines.
        failed = sweep_failures(sweep_dir, len(expand_sweep(overrides)))
        if failed:
            _fail(f"{len(failed)} job(s) failed: " + "; ".join(failed), 1)


def _print_help(command: str, rest: list[str], config_dir: Path | None) -> None:
    """`percli <command> --help`: Hydra's list of config groups, then every key's value and doc."""
    try:
        _run_hydra(command, rest, config_dir)
    except SystemExit as e:  # Hydra exits once its help is printed
        if e.code not in (0, None):
            raise
    primary = _flag_value(rest, _CONFIG_NAME_FLAGS) or command
    keys = describe(compose_config(primary, _overrides_only(rest), config_dir=config_dir))
    result("\n".join(["", "== Config keys ==", "key=value as composed: what it does [what it accepts]. Override "
                      "with key=value; `--cfg job` prints the whole config.", "", *keys]))


def _run_hydra(command: str, rest: list[str], config_dir: Path | None) -> None:
    primary, behind = config_search(config_dir)

    @hydra.main(version_base="1.3", config_path=str(primary), config_name=command)
    def _job(cfg: DictConfig) -> None:
        _run_job(command, cfg)

    saved = sys.argv
    sys.argv = [f"percli-{command}", *rest, *(["--config-dir", str(behind)] if behind else [])]
    try:
        _job()
    finally:
        sys.argv = saved


def resolve_command(command: str) -> Callable[[DictConfig, Path], None]:
    module, func = COMMANDS[command][1].split(":")
    return getattr(importlib.import_module(module), func)


def _run_job(command: str, cfg: DictConfig) -> None:
    """Run one Hydra job: save the resolved config, run the command, record its status in the run dir."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    debug = os.environ.get("PERCLI_DEBUG") == "1"
    try:
        check_fresh_run_dir(run_dir, cfg)
    except ConfigError as e:  # another run's dir: leave its status.json and files untouched
        _fail(str(e), e.exit_code)
    try:
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        resolve_command(command)(cfg, run_dir)
    except BaseException as e:  # noqa: BLE001 - the error boundary: every failure is recorded, then mapped
        if isinstance(e, SystemExit) and e.code in (0, None):
            raise
        if isinstance(e, KeyboardInterrupt):
            message, code = "interrupted", 130
        elif isinstance(e, SystemExit):
            message, code = f"exited with status {e.code}", int(e.code) if isinstance(e.code, int) else 1
        elif isinstance(e, PercliError):
            message, code = str(e), e.exit_code
        else:
            message, code = f"{type(e).__name__}: {e} (PERCLI_DEBUG=1 shows the traceback)", 1
        # "stopped": a stop signal ended the run after a resumable checkpoint (a requeue resumes it).
        state = "stopped" if isinstance(e, TrainingStopped) else "failed"
        atomic_write_json(run_dir / "status.json", {"status": state, "exit_code": code, "error": message})
        atomic_write_text(run_dir / "error.txt", traceback.format_exc())
        if debug and not isinstance(e, SystemExit):
            raise
        if multirun:  # the others go on; the sweep's report reads this job's status.json
            log.info(f"job {hc.job.num} failed ({run_dir}): {message}")
            return
        _fail(message, code)
    atomic_write_json(run_dir / "status.json", {"status": "ok"})
