"""Experiment presets: every preset composes and validates, states its hardware, and carries the paper's recipe."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from helpers import composed, only_run_dir
from omegaconf import OmegaConf

from percli.errors import ConfigError
from percli.paths import CONF_DIR
from percli.preflight import compose_config, expand_sweep
from percli.schema import validate

PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
MODELS = {"qwen3-4b": 32, "llama3-8b": 64, "qwen3-14b": 96}   # model -> global batch
TASKS = ("review", "abstract", "topic")
PAPER = [f"paper_{m}_{t}" for m in MODELS for t in TASKS]


def test_one_preset_per_paper_setting_plus_demo_and_study() -> None:
    assert PRESETS == sorted([*PAPER, "demo", "study"])


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_validates_and_states_hardware(name: str) -> None:
    cfg = composed("train", f"experiment={name}")
    validate(cfg)
    text = (CONF_DIR / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    assert "# Expected hardware:" in text


@pytest.mark.parametrize("name", PAPER)
def test_paper_recipe(name: str) -> None:
    _, model, task = name.split("_")
    cfg = composed("train", f"experiment={name}")
    assert (cfg.model.name, cfg.task.name, cfg.task.setting) == (model, task, "user")
    assert (cfg.data.source, cfg.data.max_examples, cfg.data.split) == ("hub", 2000, "train")
    assert (cfg.retriever.name, cfg.retriever.k) == ("contriever", 4)
    assert (cfg.train.epochs, cfg.train.lr) == (3, 1e-5)
    assert (cfg.launcher.name, cfg.launcher.mixed_precision) == ("deepspeed", "bf16")
    assert cfg.launcher.num_processes * cfg.train.batch_size * cfg.train.grad_accum == MODELS[model]
    assert cfg.launcher.zero_stage == (3 if model == "qwen3-14b" else 2)
    assert cfg.loss.name == "perce"   # the train default; the loss is chosen with loss=


def test_loss_setting_and_lr_grid_overrides() -> None:
    cfg = compose_config("train", ["experiment=paper_llama3-8b_topic", "loss=entce", "task.setting=temporal"])
    validate(cfg)
    assert (cfg.loss.name, cfg.task.name, cfg.task.setting, cfg.model.name) == ("entce", "topic", "temporal",
                                                                                 "llama3-8b")
    jobs = expand_sweep(["experiment=paper_qwen3-4b_review", "loss=ce,perce,lossce,entce",
                         "train.lr=2e-6,5e-6,1e-5,2e-5,5e-5"])
    assert len(jobs) == 20
    assert jobs[0] == ["experiment=paper_qwen3-4b_review", "loss=ce", "train.lr=2e-06"]


def test_demo_preset_is_offline_and_equal_budget() -> None:
    ce = compose_config("train", ["experiment=demo", "loss=ce"])
    perce = compose_config("train", ["experiment=demo", "loss=perce"])
    assert (ce.model.name, ce.data.source, ce.retriever.name) == ("smollm2-135m", "synthetic", "bm25")
    assert ce.launcher.name == "local" and ce.eval.after_train is True
    # Equal budgets: the two runs differ in the loss group only.
    a, b = OmegaConf.to_container(ce), OmegaConf.to_container(perce)
    assert a.pop("loss")["name"] == "ce" and b.pop("loss")["name"] == "perce"
    assert a == b
    # The same preset drives eval, contrast and data (experiment is a group of each), so the demo's data is
    # defined once.
    for command in ("eval", "contrast", "data"):
        cfg = compose_config(command, ["experiment=demo"])
        assert (cfg.model.name, cfg.data.num_users, cfg.data.max_prompt_tokens) == (
            "smollm2-135m", ce.data.num_users, ce.data.max_prompt_tokens)


# Presets that run here: a model that needs no hub, one local process.
CPU_PRESETS = [name for name in PRESETS if (cfg := composed("train", f"experiment={name}")).model.source != "hub"
               and cfg.launcher.name == "local"]


def test_the_demo_is_a_cpu_preset() -> None:
    assert "demo" in CPU_PRESETS


# The demo in the fast suite; the others train the same SmolLM2 once their sizes are cut (~1 min each).
@pytest.mark.parametrize("name", [n if n == "demo" else pytest.param(n, marks=pytest.mark.slow) for n in CPU_PRESETS])
def test_cpu_preset_trains_and_evaluates_through_the_cli(cli, tmp_path: Path, name: str) -> None:
    """The preset trains two steps and scores the final checkpoint, with its model, data, retriever and loss;
    only sizes are cut."""
    short = ["train.max_steps=2", "train.batch_size=1", "data.num_users=2", "data.examples_per_user=1",
             "data.max_prompt_tokens=128", "data.max_response_tokens=8", "eval.max_examples=1",
             "eval.max_new_tokens=2"]
    r = cli("train", f"experiment={name}", *short, env={"PERCLI_OUTPUT_DIR": str(tmp_path)})
    assert r.returncode == 0, f"{name}: {r.stderr[-2000:]}"
    run = only_run_dir(tmp_path, "train")
    assert json.loads((run / "status.json").read_text()) == {"status": "ok"}
    saved = OmegaConf.load(run / "config.yaml")
    preset = composed("train", f"experiment={name}")
    assert (saved.model.name, saved.retriever.name, saved.loss.name) == (
        preset.model.name, preset.retriever.name, preset.loss.name)
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2] and all(row["loss"] > 0 for row in log)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_examples"] == 1 and metrics["model"] == preset.model.name


def test_demo_and_study_test_on_users_never_seen_in_training() -> None:
    for name, sizes in (("demo", (8, 16, 1)), ("study", (64, 144, 1))):
        cfg = compose_config("train", [f"experiment={name}"])
        assert cfg.task.setting == "user"
        assert (cfg.data.num_users, cfg.data.test_users, cfg.data.eval_examples_per_user) == sizes
    study = compose_config("train", ["experiment=study"])
    assert (study.data.val_users, study.eval.split, study.eval.do_sample, study.eval.max_new_tokens) == (
        48, "val", False, 144)


def test_cli_prints_composed_preset(cli, tmp_path: Path) -> None:
    # A hub model must be reachable for preflight; a local checkpoint dir stands in for it.
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    result = cli("train", "experiment=paper_qwen3-14b_abstract", f"model.path={ckpt}", "loss=ce", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    cfg = OmegaConf.create(result.stdout)
    assert (cfg.model.name, cfg.model.path, cfg.task.name, cfg.loss.name) == ("qwen3-14b", str(ckpt), "abstract", "ce")
    assert (cfg.launcher.num_processes, cfg.train.batch_size, cfg.train.grad_accum) == (8, 1, 12)
    assert not (tmp_path / "outputs").exists()   # --cfg job runs nothing


def test_unknown_preset_lists_choices() -> None:
    with pytest.raises(ConfigError, match="experiment=paper_gpt5_review is not a known experiment; choose one of: demo"):
        compose_config("train", ["experiment=paper_gpt5_review"])


def _has_submitit() -> bool:
    try:
        return importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None
    except ModuleNotFoundError:   # no hydra_plugins namespace package at all
        return False


HAS_SUBMITIT = _has_submitit()


@pytest.mark.skipif(not HAS_SUBMITIT, reason="hydra-submitit-launcher is not installed (pip install -e '.[slurm]')")
def test_slurm_launcher_preset_composes() -> None:
    cfg = compose_config("train", ["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                   "experiment=paper_qwen3-4b_review"], hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.nodes, launcher.tasks_per_node) == ("gpu", 1, 1)
    assert launcher.gpus_per_node == cfg.launcher.num_processes


@pytest.mark.skipif(HAS_SUBMITIT, reason="checks the message shown when the slurm extra is missing")
def test_slurm_launcher_without_plugin_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"submitit_slurm launcher\); install it with pip install -e '\.\[slurm\]'"):
        compose_config("train", ["hydra/launcher=slurm"], hydra_config=True)
