"""Every command composes, every group option composes and validates (Hydra compose API)."""

from __future__ import annotations

import pytest
from helpers import GROUPS, command_config, composed, group_option_overrides, group_options

from percli.cli import COMMANDS
from percli.errors import ConfigError
from percli.preflight import compose_config, expand_sweep
from percli.schema import validate


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_composes_and_validates(command):
    cfg = command_config(command)
    assert cfg.command == command
    validate(cfg)


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in group_options(g)])
def test_every_group_option_composes_and_validates(group, option):
    cfg = composed("train", *group_option_overrides(group, option))
    validate(cfg)
    if group != "debug":
        assert cfg[group]["source" if group == "data" else "name"] == option


def test_option_names_users_rely_on():
    assert group_options("model") == ["llama3-8b", "qwen3-14b", "qwen3-4b", "smollm2-135m", "tiny"]
    assert group_options("task") == ["abstract", "review", "topic"]
    assert set(group_options("retriever")) >= {"bm25", "contriever", "random", "recency"}
    assert group_options("loss") == ["ce", "dft", "entce", "longce", "lossce", "perce"]
    assert group_options("schedule") == ["online", "periodic", "warmup"]
    assert group_options("launcher") == ["ddp", "deepspeed", "local"]
    assert group_options("logger") == ["none", "wandb"]
    assert set(group_options("data")) == {"hub", "local", "synthetic"}


def test_defaults_are_the_papers():
    cfg = composed("train")
    assert (cfg.loss.name, cfg.loss.min_weight, cfg.loss.max_weight) == ("perce", 0.8, 5.0)
    assert (cfg.data.source, cfg.retriever.name, cfg.retriever.k) == ("hub", "contriever", 4)
    assert cfg.schedule.name == "online"


def test_hub_models_map_to_their_repos():
    ids = {m: composed("train", f"model={m}").model.hub_id for m in ("qwen3-4b", "qwen3-14b", "llama3-8b")}
    assert ids == {"qwen3-4b": "Qwen/Qwen3-4B", "qwen3-14b": "Qwen/Qwen3-14B",
                   "llama3-8b": "meta-llama/Meta-Llama-3-8B-Instruct"}


def test_sweep_expansion_is_the_cartesian_product():
    jobs = expand_sweep(["loss=ce,perce", "train.lr=1e-5,2e-5", "seed=1"])
    assert sorted(jobs) == sorted(
        [[f"loss={loss}", f"train.lr={lr}", "seed=1"] for loss in ("ce", "perce") for lr in ("1e-05", "2e-05")]
    )


def test_validation_names_key_and_value():
    cfg = compose_config("train", ["retriever.k=-1"])
    with pytest.raises(ConfigError, match=r"retriever.k=-1 is out of range; expected a non-negative integer"):
        validate(cfg)
    cfg = compose_config("train", ["data.test_users=0"])
    with pytest.raises(ConfigError, match=r"data.test_users=0 is out of range; expected a positive integer or null "
                                          r"\(= data.num_users\)"):
        validate(cfg)
