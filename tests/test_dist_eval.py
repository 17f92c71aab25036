"""Data-parallel generation (`make test-dist`): `percli eval launcher=ddp launcher.num_processes=2` writes the
predictions and metrics of one process, byte for byte."""

from __future__ import annotations

import json

import pytest
from helpers import run_cli

pytestmark = [pytest.mark.dist, pytest.mark.xdist_group("dist")]

EVAL = ["model=tiny", "debug=smoke", "data.test_users=10", "eval.max_examples=null"]


@pytest.mark.parametrize("decoding", [[], ["eval.do_sample=true", "eval.temperature=1.5"]], ids=["greedy", "sampled"])
def test_two_generation_processes_write_what_one_writes(tmp_path, decoding):
    runs = {}
    for name, launcher in (("local", []), ("ddp", ["launcher=ddp", "launcher.num_processes=2"])):
        run = tmp_path / name
        r = run_cli("eval", *EVAL, *decoding, *launcher, f"hydra.run.dir={run}", output_dir=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        runs[name] = run
    one, two = ((runs[n] / "predictions.jsonl").read_bytes() for n in ("local", "ddp"))
    assert two == one
    rows = [json.loads(line) for line in one.decode().splitlines()]
    assert len(rows) == 10
    if decoding:  # the tiny random model's greedy texts are empty; sampled ones are not
        assert all(r["prediction"] for r in rows)
    metrics = {n: json.loads((runs[n] / "metrics.json").read_text()) for n in runs}
    gen = {n: metrics[n].pop("generation") for n in runs}
    assert metrics["ddp"] == metrics["local"]
    assert (gen["local"]["processes"], gen["ddp"]["processes"]) == (1, 2)
    assert gen["ddp"]["new_tokens"] == gen["local"]["new_tokens"] > 0
    assert sorted(p.name for p in (runs["ddp"] / ".generation").glob("rank-*.jsonl")) == ["rank-0.jsonl",
                                                                                          "rank-1.jsonl"]


def test_training_on_two_ranks_evaluates_on_both(tmp_path):
    run = tmp_path / "run"
    r = run_cli("train", "model=tiny", "debug=smoke", "data.max_prompt_tokens=192", "data.max_response_tokens=24",
                "train.max_steps=2", "launcher=ddp", "launcher.num_processes=2", "train.batch_size=1",
                "eval.after_train=true", f"hydra.run.dir={run}", output_dir=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["generation"]["processes"] == 2 and metrics["num_examples"] > 0
    config = (run / ".generation" / "config.yaml").read_text()
    assert f"generation_checkpoint: {run}/checkpoints/final" in config  # the trained model, not the base
