"""Training on several real processes (`make test-dist`): DeepSpeed ZeRO-3 / ZeRO-2 across 2 CPU ranks (gloo)
and DDP, each against the same run in one process.

The synthetic responses have different lengths, so with `loss.chunk_size=8` the two ranks have different
numbers of response positions per micro-batch: without chunk counts agreed over ranks, ZeRO-3's check of
the recorded module order aborts the run at the first step.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import run_cli

from percli.io import read_jsonl

pytestmark = [pytest.mark.dist, pytest.mark.xdist_group("dist")]

# Responses up to 96 tokens: half of them are cut there, the others end earlier (different lengths per rank).
BASE = ["model=tiny", "debug=smoke", "data.max_prompt_tokens=192", "data.max_response_tokens=96",
        "eval.after_train=false", "train.max_steps=6", "train.save_every=100", "loss.chunk_size=8"]
ONE_PROCESS = ["train.batch_size=4"]                    # global batch 4
TWO_RANKS = ["launcher.num_processes=2", "train.batch_size=1", "train.grad_accum=2"]  # 2 x 1 x 2 = 4
ZERO3 = ["launcher=deepspeed", "launcher.zero_stage=3", *TWO_RANKS]


def _train(out: Path, *overrides: str) -> list[dict]:
    run = out / "run"
    r = run_cli("train", *BASE, *overrides, f"hydra.run.dir={run}", output_dir=out, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return read_jsonl(run / "train_log.jsonl")


def _same_curve(rows: list[dict], reference: list[dict]) -> None:
    assert [r["step"] for r in rows] == [r["step"] for r in reference] == [1, 2, 3, 4, 5, 6]
    for got, want in zip(rows, reference):
        assert got["tokens"] == want["tokens"] and got["lr"] == want["lr"]
        for key in ("loss", "ce_loss", "pir_mean", "weight_mean"):
            assert got[key] == pytest.approx(want[key], abs=1e-5), (key, got["step"])


_REFERENCES: dict[tuple[str, ...], list[dict]] = {}


def _reference(tmp_path_factory, *overrides: str) -> list[dict]:
    """The one-process curve of these overrides, trained once per session."""
    if overrides not in _REFERENCES:
        _REFERENCES[overrides] = _train(tmp_path_factory.mktemp("one"), *ONE_PROCESS, *overrides)
    return _REFERENCES[overrides]


@pytest.mark.parametrize("overrides", [
    ["loss=perce"],
    ["loss=ce"],
    ["loss=perce", "schedule=periodic", "schedule.every=2"],
], ids=["perce", "ce", "perce-periodic"])
def test_zero3_on_two_ranks_matches_one_process(tmp_path, tmp_path_factory, overrides):
    rows = _train(tmp_path, *ZERO3, *overrides)
    assert {r["world_size"] for r in rows} == {2}
    lengths = _response_lengths(tmp_path / "run")
    assert len(set(lengths)) > 1, lengths  # the ranks really see different numbers of response tokens
    _same_curve(rows, _reference(tmp_path_factory, *overrides))
    ds = json.loads((tmp_path / "run" / "deepspeed_config.json").read_text())
    assert ds["zero_optimization"]["stage"] == 3 and ds["train_batch_size"] == 4


def test_zero2_on_two_ranks_matches_one_process(tmp_path, tmp_path_factory):
    rows = _train(tmp_path, "launcher=deepspeed", "launcher.zero_stage=2", *TWO_RANKS, "loss=perce")
    _same_curve(rows, _reference(tmp_path_factory, "loss=perce"))


def test_ddp_on_two_ranks_matches_one_process(tmp_path, tmp_path_factory):
    rows = _train(tmp_path, "launcher=ddp", *TWO_RANKS, "loss=perce")
    _same_curve(rows, _reference(tmp_path_factory, "loss=perce"))


def _response_lengths(run: Path) -> list[int]:
    """Response tokens per training example, from the `percli data`-style encode of the run's config."""
    from omegaconf import OmegaConf

    from percli.data.collate import encode_examples
    from percli.data.longlamp import load_examples
    from percli.models import load_tokenizer

    cfg = OmegaConf.load(run / "config.yaml")
    pairs, _ = encode_examples(load_examples(cfg, cfg.data.split), load_tokenizer(cfg.model), cfg.data)
    return [len(p.response_ids) for p in pairs]


def test_zero3_on_two_ranks_resumes_to_the_same_curve(tmp_path):
    # DeepSpeed writes one shard per rank; resuming from step 2 of 4 must continue exactly.
    run = tmp_path / "run"
    overrides = [*ZERO3, "loss=perce", "train.max_steps=4", "train.save_every=2", "train.keep_last=5"]
    full = _train(tmp_path, *overrides)
    shards = sorted(p.name for p in (run / "checkpoints" / "step-2").rglob("*optim_states.pt"))
    assert len(shards) == 2, shards  # one ZeRO-3 optimizer partition per rank
    manifest = json.loads((run / "checkpoints" / "step-2" / "manifest.json").read_text())
    assert {f"pytorch_model/{s}" for s in shards} <= set(manifest["files"])  # rank 1's shard is verified too
    shutil.rmtree(run / "checkpoints" / "final")
    with open(run / "checkpoints" / "step-4" / "trainer_state.json", "a") as f:
        f.write(" ")  # damaged: auto skips it (said once, by the parent) and the workers resume step-2
    r = run_cli("train", *BASE, *overrides, f"hydra.run.dir={run}", "train.resume=auto", output_dir=tmp_path,
                timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count(f"skipping damaged checkpoint {run}/checkpoints/step-4: trainer_state.json") == 1
    assert f"resumed from {run}/checkpoints/step-2 at step 2/4" in r.stderr
    assert (run / "checkpoints" / "step-4.damaged").is_dir()  # kept, moved aside when step 4 was saved again
    resumed = read_jsonl(run / "train_log.jsonl")
    assert [x["step"] for x in resumed] == [1, 2, 3, 4]
    for got, want in zip(resumed, full):
        assert got["loss"] == pytest.approx(want["loss"], abs=1e-6), got["step"]
