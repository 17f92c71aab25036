"""scripts/reproduce_table.py: the commands it runs, and transfer evaluations that reuse the train settings."""

from __future__ import annotations

import importlib.util
import json
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


def test_checkpoint_eval_reuses_the_train_runs_data_and_eval_settings(script, tmp_path: Path) -> None:
    run = fake_train_run(tmp_path / "run", ["model=smollm2-135m", "loss=ce", "data.max_prompt_tokens=700",
                                            "data.num_users=5", "retriever.k=2", "eval.max_new_tokens=33"],
                         {"model": "smollm2-135m", "data": "synthetic", "retriever": "bm25", "task": "review"})
    overrides = script.checkpoint_eval_overrides(run, "topic", "temporal")
    assert overrides == [
        "model=smollm2-135m", f"model.path={run / 'checkpoints' / 'final'}", "task=topic", "task.setting=temporal",
        "data=synthetic", "retriever=bm25", "eval.split=test",
        "data.num_users=5", "data.max_prompt_tokens=700", "retriever.k=2", "eval.max_new_tokens=33",
    ]
    train = OmegaConf.load(run / "config.yaml")
    evaluated = compose_config("eval", overrides)
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
    assert [s.run_dir for s in script.selected_checkpoints(out / "train")] == [a]
    assert not script.evaluate_selected(out, transfer_tasks=["review", "topic"], cross_scenario=False, overrides=[])
    first = [c[-1] for c in calls]
    assert first == [f"hydra.run.dir={out / 'eval' / 'train-0_on_review-user_test'}",
                     f"hydra.run.dir={out / 'eval' / 'train-0_on_topic-user_test'}"]
    assert calls[0][:3] == ("eval", "model=tiny", f"model.path={a / 'checkpoints' / 'final'}")
    # The in-task one finished, the transfer one failed: a rerun repeats only the failed one.
    for name, status in (("train-0_on_review-user_test", "ok"), ("train-0_on_topic-user_test", "failed")):
        (out / "eval" / name).mkdir(parents=True)
        (out / "eval" / name / "status.json").write_text(json.dumps({"status": status}))
    calls.clear()
    script.evaluate_selected(out, transfer_tasks=["review", "topic"], cross_scenario=False, overrides=[])
    assert [c[-1] for c in calls] == [f"hydra.run.dir={out / 'eval' / 'train-0_on_topic-user_test'}"]
    assert not (out / "eval" / "train-0_on_topic-user_test").exists()   # moved aside, out of the table's scan
    assert len(list((out / "eval" / ".failed").iterdir())) == 1
    # Another val score changes the selection: the newly selected checkpoint is scored under its own name.
    (b / "metrics.json").write_text(json.dumps({"meteor": 0.40, "split": "val"}))
    calls.clear()
    script.evaluate_selected(out, transfer_tasks=[], cross_scenario=False, overrides=[])
    assert [c[-1] for c in calls] == [f"hydra.run.dir={out / 'eval' / 'train-1_on_review-user_test'}"]


def test_dry_runs_print_the_pipelines(script, tmp_path: Path, capsys) -> None:
    assert script.main(["demo", "--dry-run", "--out", str(tmp_path / "d"), "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [
        f"+ percli train -m experiment=demo loss=ce,perce eval.split=val hydra.sweep.dir={tmp_path / 'd' / 'train'}",
        f"+ percli contrast +experiment=demo model.path=<perce run>/checkpoints/final data.split=test "
        f"hydra.run.dir={tmp_path / 'd' / 'contrast'}",
        f"+ percli table table.runs={tmp_path / 'd'} table.out_dir={tmp_path / 'r'}",
    ]
    assert script.main(["paper", "--dry-run", "--out", str(tmp_path / "p"), "--models", "qwen3-4b",
                        "--", "hydra/launcher=slurm"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("+ percli train -m experiment=paper_qwen3-4b_review,paper_qwen3-4b_abstract,paper_qwen3-4b_topic "
                      "loss=ce,perce,lossce,entce train.lr=2e-6,5e-6,1e-5,2e-5,5e-5 task.setting=user "
                      f"eval.split=val hydra.sweep.dir={tmp_path / 'p' / 'train'} hydra/launcher=slurm")
    assert out[2] == f"+ percli table table.runs={tmp_path / 'p'} table.out_dir=results/paper"
