"""scripts/reproduce_table.py: the commands it runs, and transfer evaluations that reuse the train settings."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from percli.preflight import compose_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("reproduce_table", REPO / "scripts" / "reproduce_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_train_run(run_dir: Path, overrides: list[str], choices: dict) -> Path:
    """A train run dir as the CLI leaves it: resolved config.yaml and Hydra's record of the group choices."""
    cfg = compose_config("train", [f"data={choices['data']}", f"retriever={choices['retriever']}", *overrides])
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    return run_dir


def compose_job(script, out: Path, name: str, *overrides: str):
    """An eval_job config the script wrote, composed as `percli eval -m +eval_job=<name> ...` composes it."""
    return compose_config("eval", [f"+{script.EVAL_JOB}={name}", f"hydra.searchpath=[file://{out / 'eval' / '.jobs'}]",
                                   *overrides], hydra_config=bool(overrides))


def test_checkpoint_eval_reuses_the_train_runs_data_and_eval_settings(script, tmp_path: Path) -> None:
    run = fake_train_run(tmp_path / "run", ["model=smollm2-135m", "loss=ce", "data.max_prompt_tokens=700",
                                            "data.num_users=5", "retriever.k=2", "eval.max_new_tokens=33"],
                         {"model": "smollm2-135m", "data": "synthetic", "retriever": "bm25", "task": "review"})
    groups, values = script.checkpoint_eval_config(run, "topic", "temporal")
    assert groups == {"model": "smollm2-135m", "task": "topic", "data": "synthetic", "retriever": "bm25"}
    assert values == {"model.path": str(run / "checkpoints" / "final"), "task.setting": "temporal",
                      "eval.split": "test", "data.num_users": 5, "data.max_prompt_tokens": 700, "retriever.k": 2,
                      "eval.max_new_tokens": 33}
    jobs = tmp_path / "eval" / ".jobs" / script.EVAL_JOB
    jobs.mkdir(parents=True)
    (jobs / "run_on_topic-temporal_test.yaml").write_text(script.eval_job_yaml(groups, values))
    train = OmegaConf.load(run / "config.yaml")
    evaluated = compose_job(script, tmp_path, "run_on_topic-temporal_test")
    assert (evaluated.model.name, evaluated.model.path) == ("smollm2-135m", str(run / "checkpoints" / "final"))
    assert (evaluated.task.name, evaluated.task.setting) == ("topic", "temporal")
    for section in ("data", "retriever"):
        assert evaluated[section] == train[section]
    assert (train.eval.split, evaluated.eval.split) == ("val", "test")   # selected on val, scored on test
    assert OmegaConf.masked_copy(evaluated.eval, ["max_new_tokens", "max_examples", "do_sample"]) == \
        OmegaConf.masked_copy(train.eval, ["max_new_tokens", "max_examples", "do_sample"])


def _sweep_run(run_dir: Path, lr: float, val_meteor: float) -> Path:
    run = fake_train_run(run_dir, ["model=tiny", "loss=perce", f"train.lr={lr}"],
                         {"model": "tiny", "data": "synthetic", "retriever": "bm25", "task": "review"})
    (run / "checkpoints" / "final").mkdir(parents=True)
    (run / "status.json").write_text('{"status": "ok"}')
    (run / "metrics.json").write_text(json.dumps({"meteor": val_meteor, "split": "val"}))
    return run


def test_test_evaluations_follow_the_selection_and_rerun_failures(script, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    a = _sweep_run(out / "train" / "0", 1e-5, 0.30)
    b = _sweep_run(out / "train" / "1", 2e-5, 0.20)
    calls = []
    monkeypatch.setattr(script, "percli", lambda *args, **kw: calls.append(args) or 0)

    def swept() -> tuple[list[str], Path]:
        """The eval_job configs and the sweep dir of the one `percli eval -m` sweep of the last call."""
        (call,) = calls
        assert call[:2] == ("eval", "-m") and call[3] == f"hydra.searchpath=[file://{out / 'eval' / '.jobs'}]"
        assert call[5] == "hydra.sweep.subdir=${hydra.runtime.choices.eval_job}"
        return call[2].removeprefix(f"+{script.EVAL_JOB}=").split(","), Path(call[4].removeprefix("hydra.sweep.dir="))

    def finish(sweep: Path, name: str, status: str) -> None:
        (sweep / name).mkdir(parents=True)
        (sweep / name / "status.json").write_text(json.dumps({"status": status}))

    assert [s.run_dir for s in script.selected_checkpoints(out / "train")] == [a]
    assert not script.evaluate_selected(out, transfer_tasks=["review", "topic"], cross_scenario=False, overrides=[])
    names, first = swept()
    assert names == ["train-0_on_review-user_test", "train-0_on_topic-user_test"] and first.parent == out / "eval"
    topic = compose_job(script, out, "train-0_on_topic-user_test")
    assert (topic.model.name, topic.model.path, topic.task.name) == ("tiny", str(a / "checkpoints" / "final"), "topic")
    # The in-task one finished, the transfer one failed: a rerun repeats only the failed one, in a new sweep dir.
    finish(first, "train-0_on_review-user_test", "ok")
    finish(first, "train-0_on_topic-user_test", "failed")
    calls.clear()
    script.evaluate_selected(out, transfer_tasks=["review", "topic"], cross_scenario=False, overrides=[])
    names, second = swept()
    assert names == ["train-0_on_topic-user_test"] and second != first and second.parent == out / "eval"
    assert not (first / "train-0_on_topic-user_test").exists()   # moved aside, out of the table's scan
    assert len(list((out / "eval" / ".failed").iterdir())) == 1
    # Another val score changes the selection: the newly selected checkpoint is scored under its own name.
    (b / "metrics.json").write_text(json.dumps({"meteor": 0.40, "split": "val"}))
    calls.clear()
    script.evaluate_selected(out, transfer_tasks=[], cross_scenario=False, overrides=[])
    names, third = swept()
    assert names == ["train-1_on_review-user_test"]
    # Nothing left to evaluate: no sweep at all.
    finish(third, "train-1_on_review-user_test", "ok")
    calls.clear()
    assert not script.evaluate_selected(out, transfer_tasks=[], cross_scenario=False, overrides=[]) and calls == []


def test_dry_runs_print_the_pipelines(script, tmp_path: Path, capsys) -> None:
    assert script.main(["demo", "--dry-run", "--out", str(tmp_path / "d"), "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out.splitlines()
    d = tmp_path / "d"
    assert out[:4] == [
        f"+ percli train -m experiment=demo loss=ce,perce eval.split=val hydra.sweep.dir={d / 'train'}",
        f"+ percli eval -m +eval_job=<selected checkpoint>,... hydra.searchpath=[file://{d / 'eval' / '.jobs'}] "
        f"hydra.sweep.dir={d / 'eval' / '<start time>'} hydra.sweep.subdir=${{hydra.runtime.choices.eval_job}}",
        f"+ percli contrast experiment=demo model.path=<perce run>/checkpoints/final data.split=test "
        f"hydra.run.dir={d / 'contrast'}",
        f"+ percli table table.runs={d} table.out_dir={tmp_path / 'r'}",
    ]
    assert script.main(["paper", "--dry-run", "--out", str(tmp_path / "p"), "--models", "qwen3-4b",
                        "--", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "train.epochs=1"]) == 0
    out = capsys.readouterr().out.splitlines()
    p = tmp_path / "p"
    assert out[0] == ("+ percli train -m experiment=paper_qwen3-4b_review,paper_qwen3-4b_abstract,paper_qwen3-4b_topic "
                      "loss=ce,perce,lossce,entce train.lr=2e-6,5e-6,1e-5,2e-5,5e-5 task.setting=user "
                      f"eval.split=val hydra.sweep.dir={p / 'train'} hydra/launcher=slurm hydra.launcher.partition=gpu "
                      "train.epochs=1")
    # The evaluations get the launcher overrides, not the training ones.
    assert out[2] == (f"+ percli eval -m +eval_job=<selected checkpoint x target>,... "
                      f"hydra.searchpath=[file://{p / 'eval' / '.jobs'}] hydra.sweep.dir={p / 'eval' / '<start time>'} "
                      "hydra.sweep.subdir=${hydra.runtime.choices.eval_job} launcher=ddp hydra/launcher=slurm "
                      "hydra.launcher.partition=gpu")
    assert out[3] == f"+ percli table table.runs={p} table.out_dir=results/paper"


def test_the_slurm_launcher_is_on_every_train_and_eval_command() -> None:
    """The command as a user types it."""
    r = subprocess.run([sys.executable, "scripts/reproduce_table.py", "paper", "--dry-run", "--", "hydra/launcher=slurm"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    sweeps = [line for line in r.stdout.splitlines() if line.startswith(("+ percli train", "+ percli eval"))]
    assert [line.split()[2] for line in sweeps] == ["train", "eval"]
    assert all(line.split()[3] == "-m" and line.endswith(" hydra/launcher=slurm") for line in sweeps), sweeps


def test_a_launcher_override_reaches_every_evaluation_job(script, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the slurm extra is not installed")
    out = tmp_path / "out"
    _sweep_run(out / "train" / "0", 1e-5, 0.30)
    calls = []
    monkeypatch.setattr(script, "percli", lambda *args, **kw: calls.append(args) or 0)
    launcher = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"]
    script.evaluate_selected(out, transfer_tasks=["review", "abstract", "topic"], cross_scenario=True,
                             overrides=launcher)
    (sweep,) = calls
    names = sweep[2].removeprefix(f"+{script.EVAL_JOB}=").split(",")
    assert names == [f"train-0_on_{t}_test" for t in ("review-user", "abstract-user", "topic-user", "review-temporal")]
    assert sweep[-2:] == tuple(launcher)
    # What Hydra hands each job of that sweep to the launcher: SLURM, on the partition asked for.
    for name in names:
        cfg = compose_job(script, out, name, *sweep[4:])
        assert cfg.hydra.launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
        assert (cfg.hydra.launcher.partition, cfg.hydra.launcher.gpus_per_node) == ("gpu", 8)
        assert (cfg.model.path, cfg.eval.split) == (str(out / "train" / "0" / "checkpoints" / "final"), "test")


@pytest.mark.slow
def test_the_evaluation_sweep_runs_through_the_hydra_launcher(script, tmp_path: Path, monkeypatch) -> None:
    """Real runs end to end: a 2-lr smoke sweep, then the selected checkpoint scored in-task and on a transfer
    task by one `percli eval -m` sweep under submitit's local launcher (the SLURM launcher's local twin)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the slurm extra is not installed")
    out = tmp_path / "out"
    monkeypatch.setenv("PERCLI_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert script.percli("train", "-m", "debug=smoke", "train.lr=1e-3,2e-3", "train.max_steps=1", "eval.max_examples=2",
                         "eval.max_new_tokens=4", f"hydra.sweep.dir={out / 'train'}") == 0
    assert not script.evaluate_selected(out, transfer_tasks=["review", "topic"], cross_scenario=False,
                                        overrides=["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"])
    (sweep,) = [p for p in (out / "eval").iterdir() if not p.name.startswith(".")]
    assert (sweep / ".submitit").is_dir()
    runs = sorted(p.name for p in sweep.iterdir() if (p / ".hydra").is_dir())
    (selected,) = script.selected_checkpoints(out / "train")
    name = "-".join(selected.run_dir.relative_to(out).parts)
    assert runs == [f"{name}_on_review-user_test", f"{name}_on_topic-user_test"]
    for run in runs:
        assert json.loads((sweep / run / "status.json").read_text()) == {"status": "ok"}
        choices = yaml.safe_load((sweep / run / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["choices"]
        assert choices["hydra/launcher"] == "submitit_local"
        assert OmegaConf.load(sweep / run / "config.yaml").model.path == str(selected.run_dir / "checkpoints" / "final")
