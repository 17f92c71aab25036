"""The Trainer in this process, where a test can swap in an optimizer that applies non-finite steps (what
DeepSpeed releases before the bf16 overflow check do): the run must stop at once and save nothing."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from percli import checkpoint as ckpt_lib
from percli.io import read_jsonl
from percli.preflight import compose_config
from percli.trainer import NonFiniteUpdate, Trainer, train

FAST = ["debug=smoke", "data.max_prompt_tokens=192", "data.max_response_tokens=24", "logger=none",
        "eval.after_train=false"]


def _apply_anyway(self: Trainer) -> tuple[float, bool]:
    """AdamW steps whatever the gradient holds, as an engine without the overflow check does."""
    norm = float(self.acc.clip_grad_norm_(self.trainable, float("inf")))
    self.prepared_optimizer.step()
    self.prepared_optimizer.zero_grad(set_to_none=True)
    return norm, True


def test_an_applied_non_finite_step_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    # lr 1e30: step 1 is finite and blows the weights up, so step 2's loss is not finite.
    cfg = compose_config("train", [*FAST, "train.lr=1e30", "train.max_steps=6", "train.save_every=1"])
    monkeypatch.setattr(Trainer, "_optimizer_step", _apply_anyway)
    with pytest.raises(NonFiniteUpdate) as e:
        train(cfg, tmp_path)
    # Step 2's loss is still finite; its gradient overflows.
    head, tail = str(e.value).split(", grad_norm=nan) ")
    assert head.startswith("step 2 had a non-finite loss or gradient (loss=")
    assert tail == (
        "and the optimizer applied it anyway, "
        f"so the weights are corrupted and nothing was saved; the last good checkpoint {tmp_path}/checkpoints/step-1 "
        "is kept (resume with train.resume=auto); use launcher=deepspeed with deepspeed>=0.19.8, which skips such "
        "steps")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-1"]
    assert [r["step"] for r in read_jsonl(tmp_path / "train_log.jsonl")] == [1]
    weights = ckpt_lib.checkpoints_dir(tmp_path) / "step-1" / "model.safetensors"
    assert all(bool(torch.isfinite(t).all()) for t in load_file(str(weights)).values())
