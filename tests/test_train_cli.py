"""`percli train` through the real CLI in subprocesses: smoke run with hand-recomputed loss, W&B offline
files, final checkpoint loading, eval after train, fail-fast resume refusal, bad-step stop, and the
worker's world-size assertion."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import REPO
from omegaconf import OmegaConf

from percli import checkpoint as ckpt_lib
from percli.io import read_jsonl
from percli.preflight import compose_config

# Short prompts and responses keep every run to a few seconds of compute on 2 CPU cores.
FAST = ["debug=smoke", "data.max_prompt_tokens=192", "data.max_response_tokens=24"]
ROW_KEYS = {"step", "epoch", "loss", "ce_loss", "lr", "grad_norm", "tokens", "pir_mean", "weight_mean", "clip_low",
            "clip_high", "step_time", "world_size", "max_memory_mb"}
# Synthetic data's truth spans add the weight on planted-name tokens against the others (losses.planted_summary).
PLANTED_KEYS = {"planted_token_share", "planted_weight_mass", "planted_weight_mean", "planted_pir_mean",
                "other_weight_mean", "other_pir_mean"}


def _expected_first_step(overrides: list[str]) -> tuple[float, float, int, float]:
    """Step 1's PerCE and CE losses from full [T, V] logits of the seed-0 model, one example at a time, and the
    share of its PerCE weight on planted-name tokens."""
    from percli.data.collate import batch_indices, encode_examples
    from percli.data.longlamp import load_examples
    from percli.models import load_model_and_tokenizer

    cfg = compose_config("train", overrides)
    model, tok = load_model_and_tokenizer(cfg.model, seed=cfg.seed, dtype=torch.float32)
    pairs, _ = encode_examples(load_examples(cfg, "train"), tok, cfg.data)
    rows = batch_indices([len(p.full_ids) for p in pairs], 2, group_by_length=False, seed=cfg.seed, epoch=0)[0]

    def logp(ids: list[int], start: int) -> torch.Tensor:
        with torch.no_grad():
            lp = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
        return lp[torch.arange(start - 1, len(ids) - 1), torch.tensor(ids[start:])]

    weighted = ce = planted = total = 0.0
    n = 0
    for p in (pairs[i] for i in rows):
        full, free = logp(p.full_ids, p.response_start_full), logp(p.free_ids, p.response_start_free)
        w = (full - free).clamp(cfg.loss.min_weight, cfg.loss.max_weight)
        weighted -= float((w * full).sum())
        ce -= float(full.sum())
        n += len(p.response_ids)
        planted += float(w[torch.tensor(p.planted)].sum())
        total += float(w.sum())
    return weighted / n, ce / n, n, planted / total


def test_smoke_perce_end_to_end(cli, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path / "run"
    # 64 response tokens: the first batch reaches planted names (24 would stop before them).
    r = cli("train", "model=tiny", "loss=perce", *FAST, "data.max_response_tokens=64", "logger=wandb", "logger.mode=offline",
            "logger.tags=[smoke,test]", f"hydra.run.dir={run}", env={"WANDB_MODE": "offline"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((run / "status.json").read_text())["status"] == "ok"

    rows = read_jsonl(run / "train_log.jsonl")
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert set(rows[0]) == ROW_KEYS | PLANTED_KEYS
    assert [row["epoch"] for row in rows] == [0.25, 0.5, 0.75]  # 8 examples, global batch 2
    assert [row["lr"] for row in rows] == pytest.approx([1e-3, 7.5e-4, 2.5e-4])  # cosine over 3, no warmup
    assert all(row["world_size"] == 1 and 0.8 - 1e-6 <= row["weight_mean"] <= 5.0 for row in rows)
    assert all(row["max_memory_mb"] is None for row in rows)  # CUDA peak memory; none on CPU
    loss, ce, n, mass = _expected_first_step(["model=tiny", "loss=perce", *FAST, "data.max_response_tokens=64"])
    assert rows[0]["tokens"] == n and 0 < mass < 1
    assert rows[0]["planted_weight_mass"] == pytest.approx(mass, rel=1e-5)
    assert rows[0]["loss"] == pytest.approx(loss, rel=1e-5)
    assert rows[0]["ce_loss"] == pytest.approx(ce, rel=1e-5)
    assert rows[2]["ce_loss"] < rows[0]["ce_loss"]  # lr 1e-3 on the same small set: it learns

    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["final", "step-2"]
    state = json.loads((run / "checkpoints" / "step-2" / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["fingerprint"]["loss.name"] == "perce"
    assert [row["step"] for row in read_jsonl(run / "checkpoints" / "step-2" / "train_log.jsonl")] == [1, 2]

    final = run / "checkpoints" / "final"
    model = AutoModelForCausalLM.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    assert type(model).__name__ == "Qwen3ForCausalLM" and model.dtype == torch.float32
    assert tok.eos_token == "<|im_end|>" and len(tok) == 151669
    from percli.models import load_model

    init = load_model(compose_config("train", FAST).model, seed=0, dtype=torch.float32)
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, init.model.layers[0].mlp.up_proj.weight)

    metrics = json.loads((run / "metrics.json").read_text())  # eval.after_train on the final checkpoint
    assert metrics["num_examples"] == 2 and metrics["generation"]["max_new_tokens"] == 8
    assert len(read_jsonl(run / "predictions.jsonl")) == 2

    # W&B offline: the training run and the post-train eval reopening share one run id. The .wandb files
    # are uncompressed protobuf records, so the logged keys and config values appear as bytes.
    run_id = json.loads((run / "wandb_run.json").read_text())["id"]
    records = [p.read_bytes() for p in sorted(run.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))]
    assert len(records) == 2 and all(r.startswith(b":W&B") for r in records)
    train_log, eval_summary = records
    assert train_log.count(b"train/loss") >= 3 and b"train/pir_mean" in train_log and b'"perce"' in train_log
    assert b"train/loss_curve" in train_log and b"smoke" in train_log  # loss.png and the tags
    assert b"eval/meteor" in eval_summary and b"eval/rouge1" in eval_summary


def _write_fake_checkpoint(run, overrides: list[str]) -> None:
    cfg = compose_config("train", overrides)
    path = run / "checkpoints" / "step-2"
    path.mkdir(parents=True)
    (path / ckpt_lib.STATE_FILE).write_text(json.dumps({"step": 2, "fingerprint": ckpt_lib.fingerprint(cfg, 1, "no")}))


def test_resume_with_changed_lr_refuses_before_loading_anything(cli, tmp_path):
    run = tmp_path / "run"
    _write_fake_checkpoint(run, FAST)
    r = cli("train", *FAST, "train.lr=5e-4", f"hydra.run.dir={run}", "train.resume=auto", "eval.after_train=false")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        f"percli: error: cannot resume from {run}/checkpoints/step-2: train.lr changed from 0.001 to 0.0005; "
        "resume with the checkpoint's values, or start a new run without train.resume")
    assert "Traceback" not in r.stderr and not (run / "train_log.jsonl").exists()


def test_non_finite_steps_are_skipped_then_the_run_stops(cli, tmp_path):
    run = tmp_path / "run"
    # lr 1e30: step 1 is finite and blows the weights up, so steps 2 and 3 give a non-finite loss.
    r = cli("train", *FAST, "train.lr=1e30", "train.max_steps=6", "train.max_bad_steps=2", "train.save_every=100",
            f"hydra.run.dir={run}", "eval.after_train=false")
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == (
        "percli: error: 2 consecutive steps had a non-finite loss or gradient (train.max_bad_steps=2, last at "
        f"step 3); checkpoint saved to {run}/checkpoints/step-3; lower train.lr, check the data "
        "(bad_steps.jsonl), or raise train.max_bad_steps")
    assert "step 2 skipped: non-finite loss or gradient" in r.stderr
    assert [row["step"] for row in read_jsonl(run / "train_log.jsonl")] == [1]
    assert [row["step"] for row in read_jsonl(run / "bad_steps.jsonl")] == [2, 3]
    state = json.loads((run / "checkpoints" / "step-3" / "trainer_state.json").read_text())
    assert state["bad_in_a_row"] == 2 and [b["step"] for b in state["bad_steps"]] == [2, 3]


def test_worker_refuses_a_world_size_other_than_the_launchers(tmp_path):
    """A worker started without the launcher (world of 1) for launcher=ddp num_processes=2 must not train."""
    cfg = compose_config("train", [*FAST, "launcher=ddp", "launcher.num_processes=2"])
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    r = subprocess.run([sys.executable, "-m", "percli.worker", "train", str(tmp_path / "config.yaml"), str(tmp_path)],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert r.returncode == 1
    message = ("launcher=ddp expects 2 processes (launcher.num_processes=2 x num_machines=1) but this process "
               "sees a world of 1; start training with `percli train`, not by hand")
    assert r.stderr.strip().splitlines()[-1] == f"percli: error (rank 0): {message}"
    assert json.loads((tmp_path / ".worker-errors" / "rank-0.json").read_text()) == {"message": message,
                                                                                     "exit_code": 1}
