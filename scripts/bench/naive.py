"""PerCE written the straightforward way, as the public re-implementation does: full [B, T, V] fp32 logits,
`log_softmax`, gather, for both the profile-free (no grad) and the full view.

It trains the same model (same weights, seed) on percli's own collated batch with AdamW under percli's
settings and the same gradient clipping, so its loss and update are PerCE's; only the memory and time
of computing the log-probs differ.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor

from percli.logprobs import IGNORE_INDEX
from percli.models import load_model_and_tokenizer
from scripts.bench import subject
from scripts.bench.stats import interleaved, timed


def naive_logprobs(model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> Tensor:
    """[N] log P(label) at the response positions, through the full fp32 logits of every position."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.float()
    target = labels[:, 1:]
    mask = target != IGNORE_INDEX
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, target.clamp(min=0)[..., None]).squeeze(-1)
    return logp[mask]


class NaivePerCE:
    """One model + AdamW; `step(batch)` is one PerCE optimizer step on a PairCollator batch."""

    def __init__(self, cfg: DictConfig) -> None:
        self.model, _ = load_model_and_tokenizer(cfg.model, seed=int(cfg.seed), dtype=torch.float32)
        self.model.train()
        t = cfg.train
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=float(t.lr), betas=(0.9, 0.999), eps=1e-8,
                                           weight_decay=float(t.weight_decay))
        self.max_norm = float(t.max_grad_norm) if t.max_grad_norm else float("inf")
        self.min_weight, self.max_weight = float(cfg.loss.min_weight), float(cfg.loss.max_weight)

    def step(self, batch: dict) -> float:
        with torch.no_grad():
            logp_free = naive_logprobs(self.model, batch["free_input_ids"], batch["free_attention_mask"],
                                       batch["free_labels"])
        logp_full = naive_logprobs(self.model, batch["full_input_ids"], batch["full_attention_mask"],
                                   batch["full_labels"])
        weights = (logp_full.detach() - logp_free).clamp(self.min_weight, self.max_weight)
        loss = -(weights * logp_full).sum() / logp_full.numel()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return float(loss.detach())


def perce_vs_naive(data_dir: Path, work: Path, *, model: str, max_response_tokens: int = 4096, **rule) -> dict:
    """percli PerCE / naive PerCE step time (CPU-time ratio with CI, interleaved) and both first-step losses."""
    cfg = subject.bench_cfg(data_dir, model=model, loss="perce", max_response_tokens=max_response_tokens)
    ours = subject.make_trainer(cfg, work / f"percli-perce-{model}")
    naive = NaivePerCE(cfg)
    batch = ours.collate(ours.pairs[:1])
    first_ours, first_naive = subject.step(ours)["loss"], naive.step(batch)  # warm-up, same initial weights
    subject.check_same_work(first_ours, first_naive, f"naive PerCE ({model})")
    res = interleaved(lambda: timed(lambda: subject.step(ours)), lambda: timed(lambda: naive.step(batch)),
                      f"percli PerCE / naive PerCE ({model})", **rule)
    return {**res, "percli_first_loss": first_ours, "naive_first_loss": first_naive,
            "shape": subject.shape(ours.pairs), "model": model, "vocab": len(ours.tokenizer)}
