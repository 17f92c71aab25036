"""percli's own training step, as `percli train` runs it: the Trainer built from a composed config."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from percli.data.collate import EncodedPair, PairCollator, encode_examples
from percli.data.longlamp import load_examples
from percli.models import load_tokenizer
from percli.preflight import compose_config
from percli.signals import StopRequest
from percli.trainer import Trainer
from percli.training_setup import make_accelerator


def bench_cfg(data_dir: Path, *, model: str = "smollm2-135m", loss: str = "ce", steps: int = 1000,
              max_response_tokens: int = 4096) -> DictConfig:
    """A fp32 batch-1 training config on the bench data (BM25, k=4; no logging, no checkpoints)."""
    return compose_config("train", [
        f"model={model}", "task=review", "data=local", f"data.path={data_dir}", "data.max_prompt_tokens=8192",
        f"data.max_response_tokens={max_response_tokens}", "retriever=bm25", "retriever.k=4", f"loss={loss}", "launcher=local",
        "logger=none", "train.batch_size=1", "train.grad_accum=1", f"train.max_steps={steps}",
        "train.save_every=100000", "train.warmup_ratio=0", "eval.after_train=false",
    ])


def encode(cfg: DictConfig) -> tuple[list[EncodedPair], PairCollator]:
    """The token pairs and collator the Trainer would build for `cfg`, without loading the model."""
    tokenizer = load_tokenizer(cfg.model)
    pairs, _ = encode_examples(load_examples(cfg, cfg.data.split), tokenizer, cfg.data)
    return pairs, PairCollator(tokenizer, padding_side="right")


def make_trainer(cfg: DictConfig, run_dir: Path) -> Trainer:
    run_dir.mkdir(parents=True, exist_ok=True)
    stop = StopRequest()
    stop.restore()  # a benchmark has no checkpoint to save: SIGTERM / Ctrl-C just end it
    return Trainer(cfg, run_dir, make_accelerator(cfg), stop)


def step(trainer: Trainer) -> dict:
    """One optimizer step (forward, backward, AdamW), synchronised on GPU; returns its train_log row."""
    trainer.scorer.train()
    row = trainer.train_step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return row


LOSS_TOLERANCE = 1e-5


def check_same_work(ours: float, theirs: float, what: str) -> None:
    """Refuse a comparison whose first-step losses differ: the two sides would not be doing the same work."""
    if not abs(ours - theirs) <= LOSS_TOLERANCE:
        raise RuntimeError(f"{what}: first-step loss {ours!r} (percli) vs {theirs!r} differs by more than "
                           f"{LOSS_TOLERANCE}; the two sides do not train on the same tokens / weights")


def shape(pairs: list[EncodedPair]) -> dict:
    """Mean token counts of the examples and r = profile-free length / full length."""
    full = sum(len(p.full_ids) for p in pairs)
    free = sum(len(p.free_ids) for p in pairs)
    n = len(pairs)
    return {"full": full / n, "free": free / n, "response": sum(len(p.response_ids) for p in pairs) / n,
            "profile": sum(p.response_start_full - p.response_start_free for p in pairs) / n, "r": free / full,
            "examples": n}
