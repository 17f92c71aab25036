"""Slow `percli train` runs: 2-process DDP and DeepSpeed ZeRO-2/3 against the 1-process loss curve, exact
resume after SIGTERM / SIGKILL / SIGUSR2 / SIGUSR1 (through the DDP parent), and LoRA exports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO, run_cli

from percli.io import read_jsonl
from percli.preflight import compose_config

pytestmark = pytest.mark.slow
# Under pytest-xdist, the tests that share a module-scoped reference curve run on one worker, which
# trains that curve once.
SAME_CURVE = pytest.mark.xdist_group("train-slow-one-process")
RESUMED = pytest.mark.xdist_group("train-slow-uninterrupted")

FAST = ["debug=smoke", "data.max_prompt_tokens=192", "data.max_response_tokens=24", "eval.after_train=false"]
# Global batch 4 on 8 examples: 2 steps per epoch; 3 steps cross an epoch boundary.
GLOBAL4 = [*FAST, "train.max_steps=3", "train.save_every=100"]


def _train(out: Path, *overrides: str) -> list[dict]:
    run = out / "run"
    r = run_cli("train", *overrides, f"hydra.run.dir={run}", output_dir=out)
    assert r.returncode == 0, r.stderr[-3000:]
    return read_jsonl(run / "train_log.jsonl")


def _same_curve(rows: list[dict], reference: list[dict], rel: float = 0.0, abs_tol: float = 0.0,
                norm_rel: float | None = None) -> None:
    assert [r["step"] for r in rows] == [r["step"] for r in reference]
    for got, want in zip(rows, reference):
        assert got["tokens"] == want["tokens"] and got["lr"] == want["lr"]
        for key in ("loss", "ce_loss", "grad_norm", "pir_mean", "weight_mean"):
            tol = norm_rel if key == "grad_norm" and norm_rel is not None else rel
            assert got[key] == pytest.approx(want[key], rel=tol, abs=abs_tol), (key, got["step"])


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> list[dict]:
    """1 process x micro-batch 4."""
    return _train(tmp_path_factory.mktemp("one"), *GLOBAL4, "train.batch_size=4")


@SAME_CURVE
def test_ddp_two_processes_with_accumulation_match_one_process(one_process, tmp_path):
    # 2 processes x micro-batch 1 x 2 accumulation steps = the same 4 rows per step, normalised by the
    # global token count (counted over both micro-batches and both ranks first).
    rows = _train(tmp_path, *GLOBAL4, "launcher=ddp", "launcher.num_processes=2", "train.batch_size=1",
                  "train.grad_accum=2")
    assert [r["world_size"] for r in rows] == [2, 2, 2]
    assert "WORLD_SIZE=2 (x2 local ranks)" in (tmp_path / "run" / "launch_train.txt").read_text()
    _same_curve(rows, one_process, rel=1e-5, abs_tol=1e-6)


@SAME_CURVE
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_one_process_matches_plain_loop(one_process, tmp_path, stage):
    # Micro-batch 1 x 4 accumulation steps: DeepSpeed must not rescale the loss by 1/grad_accum.
    rows = _train(tmp_path, *GLOBAL4, "launcher=deepspeed", f"launcher.zero_stage={stage}", "train.batch_size=1",
                  "train.grad_accum=4")
    ds = json.loads((tmp_path / "run" / "deepspeed_config.json").read_text())
    assert ds["zero_optimization"]["stage"] == stage and ds["gradient_accumulation_steps"] == 4
    # DeepSpeed computes the gradient norm its own way (over flat fp32 partitions): ~2e-5 relative off
    # torch's clip_grad_norm_; the losses, i.e. the updates, agree to 1e-5.
    _same_curve(rows, one_process, rel=1e-5, abs_tol=1e-6, norm_rel=1e-4)
    from transformers import AutoModelForCausalLM

    final = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "checkpoints" / "final")
    assert final.model.embed_tokens.weight.shape == (151669, 64)  # ZeRO-3: gathered, not a shard


# --------------------------------------------------------------------------------------------- resume
RESUME = [*FAST, "train.max_steps=6", "train.save_every=2"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[dict]:
    return _train(tmp_path_factory.mktemp("full"), *RESUME)


def _start(run: Path, out: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "PERCLI_OUTPUT_DIR": str(out), "WANDB_MODE": "disabled"}
    env.pop("PERCLI_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "percli", "train", *overrides, f"hydra.run.dir={run}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


@RESUMED
@pytest.mark.parametrize(("sig", "launcher"), [
    (signal.SIGTERM, []),
    (signal.SIGKILL, []),
    # SIGUSR2: hydra-submitit-launcher's warning before a SLURM time-out
    (signal.SIGUSR2, []),
    # SIGUSR1 to the parent of 2 DDP workers: forwarded to them (test_dist_signals: to the whole group)
    (signal.SIGUSR1, ["launcher=ddp", "launcher.num_processes=2", "train.batch_size=1"]),
], ids=["sigterm", "sigkill", "sigusr2", "sigusr1-ddp"])
def test_interrupted_run_resumes_to_the_same_curve(uninterrupted, tmp_path, sig, launcher):
    run = tmp_path / "run"
    proc = _start(run, tmp_path, *RESUME, *launcher)
    deadline = time.monotonic() + 300
    while not list(run.glob("checkpoints/step-*")):  # complete checkpoints appear by rename
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    saved = sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*"))
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 128 + sig, err[-3000:]
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"percli: error: training stopped by {signal.Signals(sig).name} at step {saved[-1]}/6; "
                               f"checkpoint saved to {run}/checkpoints/step-{saved[-1]}; resume with: ")
    assert saved and saved[-1] < 6, saved

    r = run_cli("train", *RESUME, *launcher, f"hydra.run.dir={run}", "train.resume=auto", output_dir=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {run}/checkpoints/step-{saved[-1]} at step {saved[-1]}/6" in r.stderr
    rows = read_jsonl(run / "train_log.jsonl")
    if launcher:  # 2 DDP processes vs the 1-process reference: same rows, float summation order differs
        _same_curve(rows, uninterrupted, rel=1e-5, abs_tol=1e-6)
    else:  # same process layout: the whole curve to 1e-6
        _same_curve(rows, uninterrupted, abs_tol=1e-6)

    changed = run_cli("train", *RESUME, *launcher, "train.lr=2e-3", f"hydra.run.dir={run}", "train.resume=auto",
                      output_dir=tmp_path)
    assert changed.returncode == 2
    assert f"cannot resume from {run}/checkpoints/step-6: train.lr changed from 0.001 to 0.002" in changed.stderr


# ----------------------------------------------------------------------------------------------- LoRA
def test_lora_merged_into_a_plain_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM

    rows = _train(tmp_path, *FAST, "model.lora.enabled=true", "model.lora.r=4", "model.gradient_checkpointing=true")
    assert len(rows) == 3
    final = tmp_path / "run" / "checkpoints" / "final"
    assert not (final / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(final)
    from percli.models import load_model

    init = load_model(compose_config("train", FAST).model, seed=0, dtype=torch.float32)
    # LoRA touched the linear layers only: the frozen embedding is the seed-0 init, q_proj carries B @ A.
    assert torch.equal(model.model.embed_tokens.weight, init.model.embed_tokens.weight)
    assert not torch.equal(model.model.layers[0].self_attn.q_proj.weight, init.model.layers[0].self_attn.q_proj.weight)
    assert not any("lora" in k for k in model.state_dict())


def test_lora_adapter_export_and_eval_after_train(tmp_path):
    run = tmp_path / "run"
    r = run_cli("train", *FAST, "model.lora.enabled=true", "model.lora.merge=false", "eval.after_train=true",
                f"hydra.run.dir={run}", output_dir=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    final = run / "checkpoints" / "final"
    assert json.loads((final / "adapter_config.json").read_text())["r"] == 16
    assert (final / "adapter_model.safetensors").is_file() and (final / "tokenizer.json").is_file()
    assert json.loads((run / "metrics.json").read_text())["num_examples"] == 2
