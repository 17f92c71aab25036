"""Every command composes, every group option composes and validates (Hydra compose API)."""

from __future__ import annotations

import pytest

from percli.cli import COMMANDS
from percli.config import validate
from percli.errors import ConfigError
from percli.paths import CONF_DIR
from percli.preflight import compose_config, expand_sweep

GROUPS = ["model", "task", "data", "retriever", "loss", "schedule", "launcher", "logger", "debug"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_composes_and_validates(command):
    required = {"compare": ["compare.baseline=runs/a", "compare.other=runs/b"]}  # ??? in its config
    cfg = compose_config(command, required.get(command, []))
    assert cfg.command == command
    validate(cfg)


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes_and_validates(group, option):
    overrides = [f"{group}={option}"]
    if group == "data" and option == "local":
        overrides.append("data.path=/some/dir")
    cfg = compose_config("train", overrides)
    validate(cfg)
    if group != "debug":
        assert cfg[group].name if group in ("model", "task", "retriever", "loss", "schedule", "launcher",
                                            "logger") else cfg[group].source == option


def test_option_names_users_rely_on():
    assert _options("model") == ["llama3-8b", "qwen3-14b", "qwen3-4b", "smollm2-135m", "tiny"]
    assert _options("task") == ["abstract", "review", "topic"]
    assert set(_options("retriever")) >= {"bm25", "contriever", "random", "recency"}
    assert _options("loss") == ["ce", "entce", "lossce", "perce"]
    assert _options("schedule") == ["online", "periodic", "warmup"]
    assert _options("launcher") == ["ddp", "deepspeed", "local"]
    assert _options("logger") == ["none", "wandb"]
    assert set(_options("data")) == {"hub", "local", "synthetic"}


def test_defaults_are_the_papers():
    cfg = compose_config("train", [])
    assert (cfg.loss.name, cfg.loss.min_weight, cfg.loss.max_weight) == ("perce", 0.8, 5.0)
    assert cfg.retriever.k == 4
    assert cfg.schedule.name == "online"


def test_hub_models_map_to_their_repos():
    ids = {m: compose_config("train", [f"model={m}"]).model.hub_id for m in ("qwen3-4b", "qwen3-14b", "llama3-8b")}
    assert ids == {"qwen3-4b": "Qwen/Qwen3-4B", "qwen3-14b": "Qwen/Qwen3-14B",
                   "llama3-8b": "meta-llama/Meta-Llama-3-8B-Instruct"}


def test_sweep_expansion_is_the_cartesian_product():
    jobs = expand_sweep(["loss=ce,perce", "train.lr=1e-5,2e-5", "seed=1"])
    assert sorted(jobs) == sorted(
        [[f"loss={loss}", f"train.lr={lr}", "seed=1"] for loss in ("ce", "perce") for lr in ("1e-05", "2e-05")]
    )


def test_validation_names_key_and_value():
    cfg = compose_config("train", ["retriever.k=0"])
    with pytest.raises(ConfigError, match=r"retriever.k=0 is out of range; expected a positive integer"):
        validate(cfg)
