"""The CLI front door: help, Hydra features through the wrapper, and the error boundary (exit codes,
message shape), each run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import yaml
from helpers import OFFLINE, REPO, composed, only_run_dir, run_cli

from percli.cli import COMMANDS
from percli.errors import EnvironmentProblem
from percli.paths import CONF_DIR
from percli.preflight import compose_config, preflight
from percli.rundir import sweep_failures
from percli.schema import SCHEMA, leaf_keys


def test_top_level_help_lists_every_command(cli):
    r = cli("--help")
    assert r.returncode == 0
    for name in COMMANDS:
        assert f"  {name} " in r.stdout


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_help_shows_config_groups_and_every_keys_doc(cli, command):
    r = cli(command, "--help")
    assert r.returncode == 0, r.stderr
    assert "== Configuration groups ==" in r.stdout
    assert "paths: default" in r.stdout
    keys = r.stdout.split("== Config keys ==", 1)[1]
    for key in leaf_keys(composed(command)):
        assert f"  {key}=" in keys and SCHEMA[key].doc in keys, key
    if command == "train":
        assert "  train.lr=1e-05" in keys and "peak learning rate (AdamW) [a positive number such as 1e-5]" in keys


def test_cfg_job_prints_composed_config_with_overrides(cli):
    r = cli("train", "model=smollm2-135m", "loss=ce", "train.lr=2e-5", "+extra.note=hi", "--cfg", "job")
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load(r.stdout)
    assert cfg["model"]["name"] == "smollm2-135m"
    assert cfg["loss"]["name"] == "ce"
    assert cfg["train"]["lr"] == 2e-5
    assert cfg["extra"] == {"note": "hi"}


def test_unknown_command(cli):
    r = cli("trian")
    assert r.returncode == 2
    assert r.stderr.strip() == "percli: error: unknown command 'trian'; choose one of: train, eval, contrast, data, table, compare"


def test_unknown_model_lists_valid_models(cli):
    r = cli("train", "model=nope")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "percli: error: model=nope is not a known model; "
        "choose one of: llama3-8b, qwen3-14b, qwen3-4b, smollm2-135m, tiny"
    )
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lrr=1", "unknown config key 'train.lrr'"),
        ("train.lr=abc", "train.lr='abc' has the wrong type (str)"),
        ("train.lr=-1e-5", "train.lr=-1e-05 is out of range"),
        ("retriever.k=-1", "retriever.k=-1 is out of range"),
        ("train.batch_size=0", "train.batch_size=0 is out of range"),
        ("loss.min_weight=6", "loss.min_weight=6 is greater than loss.max_weight=5.0"),
        ("retriever=nope", "retriever=nope is not a known retriever; choose one of: bm25, contriever"),
        ("eval.after_train=maybe", "eval.after_train='maybe' has the wrong type (str)"),
    ],
)
def test_config_errors_exit_2_with_one_short_line(cli, override, expected):
    r = cli("train", override)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 3
    assert lines[0].startswith("percli: error: ")
    assert expected in lines[0]


def test_sweep_is_validated_before_any_job_runs(cli, tmp_path):
    r = cli("train", "-m", "loss=ce,perce", "train.lr=1e-5,-1")
    assert r.returncode == 2
    assert "train.lr=-1 is out of range" in r.stderr
    assert not (tmp_path / "outputs").exists()


def test_offline_hub_model_fails_without_traceback(cli):
    r = cli("train", "model=qwen3-4b", "data=synthetic", "retriever=bm25")
    assert r.returncode == 1
    assert r.stderr.strip().startswith("percli: error: model=qwen3-4b (Qwen/Qwen3-4B) is not in the local HF cache")
    assert "model.path=DIR" in r.stderr
    assert "Traceback" not in r.stderr


def test_unreachable_hub_model_fails_in_preflight_within_seconds(unreachable_hub):
    """Timed in-process on preflight itself: the hub probe runs and gives up (a plain hub call hangs 23-46 s
    first)."""
    start = time.monotonic()
    with pytest.raises(EnvironmentProblem, match=r"model=qwen3-4b \(Qwen/Qwen3-4B\) is not in the local HF cache"):
        preflight("train", ["model=qwen3-4b", "data=synthetic", "retriever=bm25"])
    assert time.monotonic() - start < 5


def test_missing_model_path_is_one_line(cli, tmp_path):
    r = cli("eval", f"model.path={tmp_path / 'nowhere'}", "data=synthetic", "retriever=bm25", "eval.max_examples=1")
    assert r.returncode == 1
    assert "is not an HF checkpoint directory" in r.stderr
    assert "Traceback" not in r.stderr


def test_explicit_run_dir_that_holds_a_run_is_refused(cli, tmp_path):
    run_dir = tmp_path / "taken"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text("{}")
    r = cli("table", f"hydra.run.dir={run_dir}")
    assert r.returncode == 2
    assert f"run dir {run_dir} already holds a run" in r.stderr
    assert (run_dir / "metrics.json").read_text() == "{}"


def test_rerun_into_a_finished_sweep_leaves_its_runs_untouched(cli, tmp_path):
    sweep = tmp_path / "sweep"
    outs = f"table.out_dir={tmp_path / 'a'},{tmp_path / 'b'}"
    first = cli("table", "-m", f"hydra.sweep.dir={sweep}", f"table.runs={tmp_path / 'first'}", outs)
    assert first.returncode == 1  # both jobs fail (no runs to tabulate) and record it in their run dirs
    before = {p: p.read_text() for p in sweep.glob("*/status.json")}
    assert len(before) == 2 and all("first" in text for text in before.values())
    # A second sweep into the same dir must not run there, nor overwrite the first sweep's records.
    again = cli("table", "-m", f"hydra.sweep.dir={sweep}", f"table.runs={tmp_path / 'second'}", outs)
    assert again.returncode == 2  # refused by preflight, before any job
    assert again.stderr.startswith(f"percli: error: run dir {sweep} already holds a run (0, 1, ")
    assert {p: p.read_text() for p in sweep.glob("*/status.json")} == before


def test_cfg_job_prints_hub_presets_offline(cli):
    r = cli("train", "model=qwen3-4b", "--cfg", "job")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["model"]["hub_id"] == "Qwen/Qwen3-4B"


USER_MODEL = "defaults:\n  - tiny\n  - _self_\nname: mine\narch:\n  num_hidden_layers: 1\n"


def test_user_config_dir_adds_a_model(cli, tmp_path: Path):
    (tmp_path / "my_conf" / "model").mkdir(parents=True)
    (tmp_path / "my_conf" / "model" / "mine.yaml").write_text(USER_MODEL)
    r = cli("train", "-cd", "my_conf", "model=mine", "debug=smoke", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run_dir = only_run_dir(tmp_path / "outputs", "train")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (cfg["model"]["name"], cfg["model"]["source"], cfg["model"]["arch"]["num_hidden_layers"]) == ("mine", "tiny", 1)
    assert json.loads((run_dir / "status.json").read_text()) == {"status": "ok"}
    # Validation sees the user's options too: a typo lists them beside ours.
    r = cli("train", "--config-dir=my_conf", "model=nope", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == ("percli: error: model=nope is not a known model; "
                                "choose one of: llama3-8b, mine, qwen3-14b, qwen3-4b, smollm2-135m, tiny")


def test_user_config_dir_is_searched_before_ours(tmp_path: Path):
    (tmp_path / "model").mkdir()
    ours = (CONF_DIR / "model" / "tiny.yaml").read_text()
    (tmp_path / "model" / "tiny.yaml").write_text(ours.replace("name: tiny", "name: my-tiny"))
    assert compose_config("train", ["debug=smoke"], config_dir=tmp_path).model.name == "my-tiny"
    assert compose_config("train", ["debug=smoke"]).model.name == "tiny"


def test_missing_user_config_dir_is_one_line(cli, tmp_path: Path):
    r = cli("train", "-cd", str(tmp_path / "nowhere"), "debug=smoke")
    assert r.returncode == 2
    assert r.stderr.strip() == (f"percli: error: -cd {tmp_path / 'nowhere'}: no such directory; pass a directory "
                                "laid out like percli's conf/ (e.g. DIR/model/mine.yaml for model=mine)")


@pytest.mark.slow
def test_a_wheel_ships_the_configs_and_trains_from_another_directory(tmp_path: Path):
    """`pip install .` (not editable): the config tree travels inside the package. The fresh venv reuses this
    environment's packages through a .pth file, so nothing is downloaded."""
    wheels, venv, elsewhere = tmp_path / "wheels", tmp_path / "venv", tmp_path / "elsewhere"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(REPO)], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "host_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | OFFLINE | {"WANDB_MODE": "disabled"}
    # --force-reinstall: the host environment's own percli (an editable install) has the same version.
    subprocess.run([venv / "bin" / "pip", "install", "-q", "--no-deps", "--force-reinstall",
                    *wheels.glob("percli-*.whl")], check=True, capture_output=True, env=env)
    elsewhere.mkdir()
    where = subprocess.run([venv / "bin" / "python", "-c", "import percli.paths as p; print(p.CONF_DIR)"],
                           capture_output=True, text=True, cwd=elsewhere, env=env, check=True).stdout.strip()
    assert where == str(site / "percli" / "conf")
    r = subprocess.run([venv / "bin" / "percli", "train", "debug=smoke"], capture_output=True, text=True,
                       cwd=elsewhere, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(next(elsewhere.glob("outputs/train/runs/*/status.json")).read_text()) == {"status": "ok"}


def test_local_launcher_with_two_processes_fails_in_preflight(cli, tmp_path: Path):
    r = cli("train", "launcher=local", "launcher.num_processes=2", "debug=smoke")
    assert r.returncode == 2
    assert r.stderr.strip() == ("percli: error: launcher=local runs one process (got launcher.num_processes=2, "
                                "num_machines=1); use launcher=ddp or launcher=deepspeed")
    assert not (tmp_path / "outputs").exists()  # no run dir


# A Hydra launcher that runs every job in a forked child process, as a cluster launcher runs them on other
# machines: nothing a job does reaches the CLI's process except through the job's files.
FORKED_LAUNCHER = """
import os

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.utils import JobReturn, JobStatus


class ForkedLauncher(BasicLauncher):
    def launch(self, job_overrides, initial_job_idx):
        returns = []
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            pid = os.fork()
            if pid == 0:
                with open("forked.log", "a") as log:
                    log.write(f"{idx} {os.getpid()} {os.getppid()}\\n")
                super().launch([overrides], idx)
                os._exit(0)
            os.waitpid(pid, 0)
            returns.append(JobReturn(status=JobStatus.COMPLETED, _return_value=None))
        return returns
"""


def test_sweep_failures_come_from_each_jobs_status_json(cli, tmp_path: Path):
    plugins = tmp_path / "plugins" / "hydra_plugins"
    plugins.mkdir(parents=True)
    (plugins / "forked_launcher.py").write_text(FORKED_LAUNCHER)
    (tmp_path / "my_conf" / "hydra" / "launcher").mkdir(parents=True)
    (tmp_path / "my_conf" / "hydra" / "launcher" / "forked.yaml").write_text(
        "_target_: hydra_plugins.forked_launcher.ForkedLauncher\n")
    sweep = tmp_path / "sweep"
    path = os.pathsep.join(filter(None, [str(tmp_path / "plugins"), os.environ.get("PYTHONPATH")]))
    # Job 1 (data.source=local without data.path) composes and validates, then fails when it loads data.
    r = cli("data", "-m", "-cd", "my_conf", "hydra/launcher=forked", "debug=smoke", "data.source=synthetic,local",
            f"hydra.sweep.dir={sweep}", cwd=tmp_path, env={"PYTHONPATH": path})
    assert r.returncode == 1, r.stderr
    forks = [line.split() for line in (tmp_path / "forked.log").read_text().splitlines()]
    assert [job for job, _, _ in forks] == ["0", "1"] and all(pid != parent for _, pid, parent in forks)
    assert json.loads((sweep / "0" / "status.json").read_text()) == {"status": "ok"}
    failed = json.loads((sweep / "1" / "status.json").read_text())
    assert failed["status"] == "failed" and failed["error"].startswith("data.source=local needs data.path=DIR")
    assert r.stderr.strip().splitlines()[-1] == f"percli: error: 1 job(s) failed: job 1: {failed['error']}"


def test_sweep_failures_name_jobs_without_status_and_jobs_never_started(tmp_path: Path):
    for job, status in (("0", {"status": "ok"}), ("1", {"status": "failed", "error": "boom\n  at step 3"}),
                        ("2", None)):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        if status is not None:
            (tmp_path / job / "status.json").write_text(json.dumps(status))
    assert sweep_failures(tmp_path, 4) == [
        "job 1: boom at step 3", "job 2: no status.json: still running, or killed before it finished",
        f"1 of 4 jobs never started (no job dir under {tmp_path})"]


def test_a_users_primary_config_is_what_preflight_validates(cli, tmp_path: Path):
    (tmp_path / "my_conf").mkdir()
    (tmp_path / "my_conf" / "mytrain.yaml").write_text("defaults:\n  - train\n  - _self_\ntrain:\n  lr: -3.0e-5\n")
    r = cli("train", "-cd", "my_conf", "-cn", "mytrain", "debug=smoke", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == "percli: error: train.lr=-3e-05 is out of range; expected a positive number such as 1e-5"
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("command", list(COMMANDS))
def test_experiment_is_a_group_of_every_command(tmp_path: Path, command: str):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\nseed: 7\n")
    assert compose_config(command, ["experiment=mine"], config_dir=tmp_path).seed == 7


def test_every_cli_a_test_starts_has_the_hubs_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Forced, whatever the caller passes: no test may download a model or a dataset."""
    seen = {}
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: seen.update(kw["env"]))
    run_cli("data", output_dir=tmp_path, env={"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"})
    assert (seen["HF_HUB_OFFLINE"], seen["HF_DATASETS_OFFLINE"]) == ("1", "1")
    assert (os.environ["HF_HUB_OFFLINE"], os.environ["HF_DATASETS_OFFLINE"]) == ("1", "1")  # conftest, for the rest
