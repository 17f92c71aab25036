"""Compose and validate every job of a command before Hydra runs any of them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hydra import compose, version
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_config_search_path
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import (
    ConfigCompositionException,
    HydraException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from percli.data.longlamp import check_hub_data
from percli.errors import ConfigError, EnvironmentProblem
from percli.eval_inputs import check_vllm_installed, read_predictions
from percli.hub import dense_retriever_dir, hub_model_dir
from percli.paths import CONF_DIR
from percli.rundir import check_fresh_run_dir
from percli.schema import check_names, check_values


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """All override combinations of a basic-launcher sweep (`a=1,2 b=x,y` -> 4 lists)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [list(job) for batch in batches for job in batch]


def config_search(config_dir: Path | None) -> tuple[Path, Path | None]:
    """Hydra's primary config dir, and the tree searched right behind it. With a user's `-cd DIR` that is
    DIR, then percli's own tree, so the user can add an option to a group or replace one of ours (Hydra's own
    `-cd` would be searched after the primary dir, ours). The run passes the second as Hydra's `--config-dir`."""
    return (CONF_DIR, None) if config_dir is None else (config_dir, CONF_DIR)


def compose_config(command: str, overrides: list[str], hydra_config: bool = False,
                   config_dir: Path | None = None) -> DictConfig:
    """Compose `command`'s config with overrides (and a user's config dir searched first), mapping Hydra's
    errors to one-line ConfigErrors."""
    primary, behind = config_search(config_dir)
    GlobalHydra.instance().clear()
    try:
        # initialize_config_dir, plus the tree `--config-dir` adds for the run, in the same place.
        version.setbase("1.3")
        search_path = create_config_search_path(str(primary))
        if behind is not None:
            search_path.append("command-line", f"file://{behind}", anchor="main")
        Hydra.create_main_hydra2(task_name="app", config_search_path=search_path)
        return compose(config_name=command, overrides=overrides, return_hydra_config=hydra_config)
    except MissingConfigException as e:
        raise ConfigError(_missing_option_message(e, overrides)) from None
    except (ConfigCompositionException, OverrideParseException, HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_composition_message(e, overrides)) from None
    finally:
        GlobalHydra.instance().clear()


def _missing_option_message(e: MissingConfigException, overrides: list[str]) -> str:
    options = list(getattr(e, "options", None) or [])
    name = getattr(e, "missing_cfg_file", None) or ""
    group, _, option = str(name).rpartition("/")
    if group and options:
        return f"{group}={option} is not a known {group}; choose one of: {', '.join(options)}"
    first = str(e).strip().splitlines()[0]
    if "submitit" in first:  # the SLURM launcher preset needs its optional Hydra plugin
        return ("hydra/launcher=slurm needs hydra-submitit-launcher (Hydra's submitit_slurm launcher); "
                "install it with pip install -e '.[slurm]'")
    return f"{first}; check the overrides {' '.join(overrides)}"


def _composition_message(e: Exception, overrides: list[str]) -> str:
    text = " ".join(str(e).split())
    for ov in overrides:
        key = ov.lstrip("+~").split("=", 1)[0]
        if f"'{key}'" in text and ("not in struct" in text or "Could not override" in text
                                   or "Key '" in text):
            return (f"unknown config key '{key}' (from '{ov}'); check the spelling with "
                    f"`--cfg job`, or add a new key with '+{key}=...'")
    return text[:400]


def preflight(command: str, overrides: list[str], multirun: bool = False, check_environment: bool = True,
              config_dir: Path | None = None) -> Path | None:
    """Validate every job's config; with `check_environment`, also that its model can be loaded, its registry
    names exist and its launcher can start (skipped for `--cfg`, which only prints the config). Returns a
    sweep's directory, resolved once so every job and the final report use the same one."""
    try:
        jobs = expand_sweep(overrides) if multirun else [overrides]
    except (OverrideParseException, HydraException) as e:
        raise ConfigError(_composition_message(e, overrides)) from None
    composed = []
    for job in jobs:
        cfg = compose_config(command, job, hydra_config=True, config_dir=config_dir)
        _in_job(check_values, cfg, job, len(jobs))
        if not multirun and any(o.startswith("hydra.run.dir=") for o in job):
            check_fresh_run_dir(Path(OmegaConf.select(cfg, "hydra.run.dir")), cfg)
        composed.append((job, cfg))
    sweep_dir = Path(OmegaConf.select(composed[0][1], "hydra.sweep.dir")) if multirun else None
    if sweep_dir is not None:
        check_fresh_run_dir(sweep_dir, composed[0][1])
    if not check_environment:
        return sweep_dir
    # Every job's config first, so a typo in the last job is not hidden behind the first job's missing data.
    for _, cfg in composed:
        _check_environment(cfg)
    # Registry names and launchers last: both import torch, which a bad value above need not wait for.
    for job, cfg in composed:
        _in_job(check_names, cfg, job, len(jobs))
        if cfg.get("launcher") is not None:  # percli.launch loads torch: only commands that launch need it
            from percli.launch import check_launcher

            _in_job(check_launcher, cfg, job, len(jobs))
    return sweep_dir


def _in_job(check: Callable[[DictConfig], None], cfg: DictConfig, job: list[str], num_jobs: int) -> None:
    """Run a config check; in a sweep, its error names the job."""
    try:
        check(cfg)
    except ConfigError as e:
        raise ConfigError(f"{e}" + (f" (in sweep job {' '.join(job)})" if num_jobs > 1 else "")) from None


def _check_environment(cfg: DictConfig) -> None:
    """What a job reads besides its config fails here, before torch is even imported: a predictions file to
    score, vLLM for eval.backend=vllm, hub data or a hub model neither cached nor downloadable, a missing model.path."""
    evaluation = cfg.get("eval")
    if evaluation is not None and evaluation.get("predictions"):
        # Read once here to validate every row in a second, again by the command to score them; no model.
        read_predictions(Path(str(evaluation.predictions)).expanduser())
        return
    if evaluation is not None and evaluation.get("backend") == "vllm" and evaluation.get("after_train", True):
        check_vllm_installed()
    data = cfg.get("data")
    if data is not None and data.get("source") == "hub":
        check_hub_data(cfg)
    retriever = cfg.get("retriever")
    if retriever is not None and retriever.get("name") == "contriever" and retriever.get("k") \
            and not Path(str(retriever.model_id)).expanduser().is_dir():
        dense_retriever_dir(str(retriever.model_id), retriever.name, download=False)
    model = cfg.get("model")
    if model is None:
        return
    if model.get("path"):
        if not (Path(model.path).expanduser() / "config.json").exists():
            raise EnvironmentProblem(
                f"model.path={model.path} is not an HF checkpoint directory (no config.json); "
                "point it at e.g. <run>/checkpoints/final"
            )
    elif model.get("source") == "hub":
        hub_model_dir(model.hub_id, model.name, download=False)
