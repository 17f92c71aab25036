"""`percli train`: fine-tune with CE / PerCE / LossCE / EntCE, then (eval.after_train) evaluate the result.

The command launches training (percli.launch: in this process, DDP workers or DeepSpeed), whose loop is
percli.trainer's `Trainer`, and scores checkpoints/final with percli.evaluation, generating on the same
processes the training used.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from percli import checkpoint as ckpt_lib
from percli import evaluation
from percli.launch import launch
from percli.tracking import Tracker
from percli.trainer import train


def run(cfg: DictConfig, run_dir: Path) -> None:
    """`percli train`: train with cfg.launcher, then (eval.after_train) evaluate checkpoints/final on the
    same processes (data-parallel generation when there are several)."""
    run_dir = Path(run_dir)
    launch(cfg, run_dir, train)
    if cfg.eval.after_train:
        metrics = evaluate_final(cfg, run_dir)
        tracker = Tracker(cfg, run_dir, job="train")
        tracker.summary(metrics, prefix="eval/")
        tracker.finish()


def evaluate_final(cfg: DictConfig, run_dir: Path) -> dict:
    """Generate with checkpoints/final on cfg.eval.split (on the launcher's processes) and score it into
    run_dir (metrics.json)."""
    final = ckpt_lib.checkpoints_dir(run_dir) / ckpt_lib.FINAL
    if cfg.eval.backend == "vllm":  # vLLM loads the checkpoint itself: the eval command on model.path=final
        eval_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        eval_cfg.model.path = str(final)
        evaluation.run(eval_cfg, run_dir)
        return json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))
    return evaluation.evaluate_generations(cfg, run_dir, checkpoint=final)
