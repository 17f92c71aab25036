"""One training process's run: the `Trainer` (setup, step, save, resume) and `train`, its entry point.

The same loop runs in the CLI process (launcher=local), in N DDP workers and under DeepSpeed ZeRO-2/3
(percli.launch). One optimizer step:

1. the step's micro-batches for this rank come from `StepSampler` (a pure function of seed and step);
2. N = response tokens of the step over every micro-batch and rank (count, then all_reduce);
3. per micro-batch: training forward of the full stream through the prepared `TokenScorer`, weights from
   the PerCE schedule (one no-grad profile-free forward for perce), and
   backward(sum(w * nll) / N * world_size): DDP / DeepSpeed average gradients over ranks, so the
   world_size factor makes the step's gradient that of one big batch normalised by the global N;
4. clip, step. A non-finite loss or gradient norm skips the step everywhere (a rank with a non-finite
   loss poisons its gradient with NaN, which the all-reduce spreads); after `train.max_bad_steps` in a
   row the run checkpoints the (untouched) weights and stops. A non-finite step that the optimizer
   applied anyway has corrupted the weights: the run stops at once and saves nothing;
5. log a train_log.jsonl row; checkpoint every `train.save_every` steps, every `train.save_every_minutes`
   minutes (rank 0's clock, agreed through the step's all-reduce), or when a stop was asked (percli.signals).

bf16 on GPU (accelerate autocast with fp32 master weights, or DeepSpeed bf16 with fp32 gradient
accumulation), fp32 on CPU.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType, set_seed
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from percli import checkpoint as ckpt_lib
from percli.data.collate import PairCollator, encode_examples
from percli.data.longlamp import load_examples
from percli.device import precision, release_device_memory
from percli.distributed import global_token_count, max_across_ranks, merge_stats
from percli.errors import DataError, PercliError
from percli.io import atomic_write_jsonl
from percli.log import log
from percli.logprobs import TokenScorer, count_response_tokens
from percli.losses import planted_summary, weighted_nll
from percli.lr import lr_at
from percli.sampler import StepSampler
from percli.schedule import build_schedule
from percli.signals import StopRequest, TrainingStopped, signal_name
from percli.tracking import Tracker, plot_loss
from percli.training_setup import build_model, build_optimizer, make_accelerator, release_accelerator

LOG_FILE = "train_log.jsonl"
BAD_STEPS_FILE = "bad_steps.jsonl"


class TrainingDiverged(PercliError):
    """Too many consecutive non-finite steps (all skipped: the saved weights are the last finite ones)."""


class NonFiniteUpdate(PercliError):
    """The optimizer applied a step whose loss or gradient was not finite: the weights are corrupted."""


def train(cfg: DictConfig, run_dir: Path) -> None:
    """Train one process's share (all processes call this); checkpoints and final model into run_dir."""
    run_dir = Path(run_dir)
    accelerator = make_accelerator(cfg)
    stop = StopRequest()
    try:
        Trainer(cfg, run_dir, accelerator, stop).fit()
    finally:
        stop.restore()
        release_accelerator(accelerator)
        release_device_memory()  # the Trainer (model, optimizer states) is gone: evaluation starts clean


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


class Trainer:
    """One process's training run: `fit()` runs it to the end; `train_step()` is one optimizer step
    (the `scripts.bench` benchmark times it)."""

    def __init__(self, cfg: DictConfig, run_dir: Path, accelerator, stop: StopRequest):
        self.cfg, self.run_dir, self.acc, self.stop = cfg, run_dir, accelerator, stop
        self.main = accelerator.is_main_process
        self.world = accelerator.num_processes
        self.rank = accelerator.process_index
        self.prec = precision(cfg)
        self.deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
        set_seed(cfg.seed)

        lm, self.tokenizer = build_model(cfg, self.prec, self.deepspeed)
        self.pairs, report = encode_examples(load_examples(cfg, cfg.data.split), self.tokenizer, cfg.data)
        log.info(report.summary())
        self.collate = PairCollator(self.tokenizer, padding_side="right")
        t = cfg.train
        self.sampler = StepSampler([len(p.full_ids) for p in self.pairs], int(t.batch_size), int(t.grad_accum),
                                   self.world, int(cfg.seed), bool(cfg.data.group_by_length))
        if self.sampler.steps_per_epoch == 0:
            raise DataError(
                f"the {cfg.data.split} split has {len(self.pairs)} usable examples, fewer than one global batch of "
                f"{self.sampler.global_batch} (train.batch_size={t.batch_size} x train.grad_accum={t.grad_accum} x "
                f"{self.world} processes); lower train.batch_size / train.grad_accum or use more data")
        self.total = int(t.max_steps) if t.max_steps else math.ceil(float(t.epochs) * self.sampler.steps_per_epoch)
        save_minutes = OmegaConf.select(cfg, "train.save_every_minutes", default=None)
        self.save_seconds = 60.0 * float(save_minutes) if save_minutes else None

        self.schedule = build_schedule(cfg)
        self.optimizer = build_optimizer(lm, t)  # the param_groups whose lr is set each step, also under DeepSpeed
        # Every rank calls the LM head equally often (ZeRO-3 asserts it): chunk counts agree over ranks.
        scorer = TokenScorer(lm, chunk_size=int(OmegaConf.select(cfg, "loss.chunk_size", default=256)),
                             sync_chunks=max_across_ranks if self.world > 1 else None)
        scorer.config = lm.config  # accelerate sizes DeepSpeed's "auto" ZeRO-3 buckets from model.config
        self.scorer, self.prepared_optimizer = accelerator.prepare(scorer, self.optimizer)
        self.trainable = [p for p in self.scorer.parameters() if p.requires_grad]
        self.fingerprint = ckpt_lib.fingerprint(cfg, self.world, self.prec)

        self.step = 0
        self.bad_in_a_row = 0
        self.rows: list[dict] = []
        self.bad_rows: list[dict] = []
        self.saved_step = -1
        self.last_flush = 0.0
        self.last_save_time = time.monotonic()
        self.stop_any = self.save_due = False

    # ------------------------------------------------------------------ resume / save
    def _resume(self) -> None:
        path = ckpt_lib.resolve_resume(self.cfg.train.resume, self.run_dir)
        if path is None:
            if self.cfg.train.resume == "auto":
                log.info(f"train.resume=auto: no checkpoint in {self.run_dir}, starting from step 0")
            return
        ckpt_lib.check_compatible(ckpt_lib.read_trainer_state(path)["fingerprint"], self.fingerprint, path)
        state, rows = ckpt_lib.load_checkpoint(self.acc, path, self.schedule)
        self.step = self.saved_step = int(state["step"])
        self.bad_in_a_row = int(state.get("bad_in_a_row", 0))
        self.rows = [r for r in rows if r["step"] <= self.step]
        self.bad_rows = [r for r in state.get("bad_steps", []) if r["step"] <= self.step]
        log.info(f"resumed from {path} at step {self.step}/{self.total}")

    def _save(self) -> Path:
        state = {"fingerprint": self.fingerprint, "bad_in_a_row": self.bad_in_a_row, "bad_steps": self.bad_rows,
                 "total_steps": self.total, "steps_per_epoch": self.sampler.steps_per_epoch}
        path = ckpt_lib.save_checkpoint(self.acc, self.run_dir, self.step, state, self.schedule, self.rows,
                                        int(self.cfg.train.keep_last))
        self.saved_step = self.step
        self.last_save_time = time.monotonic()
        self._flush(force=True)
        return path

    def _flush(self, force: bool = False) -> None:
        """Rewrite train_log.jsonl atomically; at most once a second except at checkpoints and the end."""
        if not self.main or (not force and time.monotonic() - self.last_flush < 1.0):
            return
        atomic_write_jsonl(self.run_dir / LOG_FILE, self.rows)
        if self.bad_rows:
            atomic_write_jsonl(self.run_dir / BAD_STEPS_FILE, self.bad_rows)
        self.last_flush = time.monotonic()

    # --------------------------------------------------------------------- one step
    def train_step(self) -> dict[str, Any]:
        """One optimizer step over this rank's micro-batches; returns the train_log row (plus `_ok`, and
        `_applied`: whether the optimizer changed the weights)."""
        device = self.acc.device
        lr = lr_at(self.step, self.total, self.cfg.train)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batches = [_to_device(self.collate([self.pairs[i] for i in rows]), device)
                   for rows in self.sampler.micro_batches(self.step, self.rank)]
        n_global = global_token_count(sum(count_response_tokens(b["full_labels"]) for b in batches), device=device)
        sums = torch.zeros(3, dtype=torch.float64)  # weighted loss, ce loss, non-finite micro-batches
        stats = []
        for m, batch in enumerate(batches):
            last = m == len(batches) - 1
            sync = contextlib.nullcontext() if (last or self.deepspeed) else self.acc.no_sync(self.scorer)
            with sync:
                free = self.schedule.free_pass(self.step, self.scorer, batch)  # no grad, before the graph exists
                scores = self.scorer(batch["full_input_ids"], batch["full_attention_mask"], batch["full_labels"],
                                     with_entropy=self.schedule.with_entropy)
                weights, st = self.schedule.weights(self.step, self.scorer, batch, scores, free)
                loss = weighted_nll(scores.logp, weights, n_global)
                finite = bool(torch.isfinite(loss))
                # World-size factor: gradients are averaged over ranks, the loss must be summed.
                backward_loss = loss * self.world if finite else loss * float("nan")
                self._backward(backward_loss, last)
            sums += torch.tensor([float(loss.detach()), float(-scores.logp.detach().sum() / n_global), 1 - finite],
                                 dtype=torch.float64)
            stats.append(st)
        grad_norm, applied = self._optimizer_step()
        merged = merge_stats(stats, device=device)
        due = self.main and self.save_seconds is not None and time.monotonic() - self.last_save_time >= \
            self.save_seconds
        flags = torch.cat([sums, torch.tensor([float(self.stop.poll()), float(due)], dtype=torch.float64)]).to(device)
        flags = self.acc.reduce(flags, reduction="sum") if self.world > 1 else flags
        loss_sum, ce_sum, bad_batches, stop, save_due = flags.tolist()
        self.stop_any, self.save_due = stop > 0, save_due > 0
        self.step += 1
        # A norm of None: the engine computed none; a negative one: DeepSpeed's "not finite" sentinel.
        finite = bad_batches == 0 and _finite(loss_sum) and (grad_norm is None or (_finite(grad_norm)
                                                                                  and grad_norm >= 0))
        return {
            "step": self.step, "epoch": round(self.step / self.sampler.steps_per_epoch, 4),
            "loss": loss_sum, "ce_loss": ce_sum, "lr": lr, "grad_norm": grad_norm, "tokens": n_global,
            "pir_mean": merged["pir_mean"], "weight_mean": merged["weight_mean"], "clip_low": merged["clip_low"],
            "clip_high": merged["clip_high"], **planted_summary(merged), "world_size": self.world,
            "max_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.type == "cuda" else None,
            "_ok": applied and finite, "_applied": applied,
        }

    def _backward(self, loss: torch.Tensor, last: bool) -> None:
        if self.deepspeed:
            # The engine owns accumulation: mark the boundary, keep our 1/N scale (not 1/grad_accum), and
            # step (clip + update, or skip when the gradient is not finite) at the last micro-batch.
            self.scorer.set_gradient_accumulation_boundary(last)
            self.scorer.backward(loss, scale_wrt_gas=False)
            if last:
                self.scorer.step()
        else:
            self.acc.backward(loss)

    def _optimizer_step(self) -> tuple[float | None, bool]:
        """(gradient norm, whether the optimizer changed the weights)."""
        if self.deepspeed:
            # DeepSpeed decided already; releases before the overflow check (percli.launch) report a
            # non-finite norm as -1 and apply the step, which `fit` then refuses to keep.
            norm = self.scorer.get_global_grad_norm()
            return (float(norm) if norm is not None else None), bool(self.scorer.was_step_applied())
        max_norm = self.cfg.train.max_grad_norm
        norm = float(self.acc.clip_grad_norm_(self.trainable, float(max_norm) if max_norm else float("inf")))
        applied = math.isfinite(norm)
        if applied:
            self.prepared_optimizer.step()
        self.prepared_optimizer.zero_grad(set_to_none=True)
        return norm, applied

    def _refresh_loader(self):
        """The whole train set, sharded over ranks with equal batch counts (ZeRO-3 / DDP collectives)."""
        n, b = len(self.pairs), int(self.cfg.train.batch_size)
        shard = list(range(self.rank, n, self.world))
        shard += shard[:1] * (math.ceil(n / self.world) - len(shard))
        for s in range(0, len(shard), b):
            yield _to_device(self.collate([self.pairs[i] for i in shard[s:s + b]]), self.acc.device)

    # ------------------------------------------------------------------------ fit
    def fit(self) -> None:
        self._resume()
        cfg, acc = self.cfg, self.acc
        t = cfg.train
        engine = f" (DeepSpeed ZeRO-{cfg.launcher.zero_stage})" if self.deepspeed else ""
        log.info(f"train {len(self.pairs)} examples, {self.sampler.steps_per_epoch} steps/epoch, "
                 f"{self.total} steps; global batch {self.sampler.global_batch} = {t.batch_size} x {t.grad_accum} "
                 f"x {self.world} processes; loss={cfg.loss.name} schedule={cfg.schedule.name}; "
                 f"{'bf16' if self.prec == 'bf16' else 'fp32'} on {acc.device}{engine}")
        tracker = Tracker(cfg, self.run_dir, enabled=self.main)
        bar = tqdm(total=self.total, initial=self.step, desc="train", disable=not self.main, dynamic_ncols=True,
                   file=sys.stderr)
        self.last_save_time = time.monotonic()
        try:
            while self.step < self.total:
                t0 = time.perf_counter()
                self.scorer.train()
                self.schedule.maybe_refresh(self.step, self.scorer, self._refresh_loader)
                row = self.train_step()
                ok, applied = row.pop("_ok"), row.pop("_applied")
                row["step_time"] = round(time.perf_counter() - t0, 4)
                bar.update(1)
                if applied and not ok:
                    self._corrupted(row)
                if ok:
                    self.bad_in_a_row = 0
                    self.rows.append(row)
                    if row["step"] % int(cfg.train.log_every) == 0:
                        tracker.log(row, step=row["step"])
                        bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
                else:
                    self._bad_step(row)
                self._flush()
                if self.stop_any:
                    self._stop(self.stop.signum or int(signal.SIGTERM))
                if self.step % int(cfg.train.save_every) == 0 or self.save_due:
                    self._save()
            bar.close()
            self._flush(force=True)
            if self.main:
                plot_loss(self.rows, self.run_dir / "loss.png")
                tracker.log_image("train/loss_curve", self.run_dir / "loss.png")
            ckpt_lib.export_final(acc, self.scorer, self.tokenizer, cfg, self.run_dir, self.prec)
        finally:
            bar.close()
            tracker.finish()

    def _bad_step(self, row: dict[str, Any]) -> None:
        self.bad_in_a_row += 1
        bad = {"step": row["step"], "loss": str(row["loss"]), "grad_norm": str(row["grad_norm"])}
        self.bad_rows.append(bad)
        log.warning(f"step {row['step']} skipped: non-finite loss or gradient (loss={bad['loss']}, "
                    f"grad_norm={bad['grad_norm']}); {self.bad_in_a_row} in a row")
        limit = int(self.cfg.train.max_bad_steps)
        if self.bad_in_a_row >= limit:
            path = self._save()
            raise TrainingDiverged(
                f"{self.bad_in_a_row} consecutive steps had a non-finite loss or gradient (train.max_bad_steps="
                f"{limit}, last at step {row['step']}); checkpoint saved to {path}; lower train.lr, check the data "
                "(bad_steps.jsonl), or raise train.max_bad_steps")

    def _corrupted(self, row: dict[str, Any]) -> None:
        """Stop without saving: the weights now hold a non-finite update; the newest checkpoint is still good."""
        self._flush(force=True)
        good = ckpt_lib.newest_verified(self.run_dir)
        keep = (f"the last good checkpoint {good} is kept (resume with train.resume=auto)" if good is not None
                else "no checkpoint had been saved yet")
        raise NonFiniteUpdate(
            f"step {row['step']} had a non-finite loss or gradient (loss={row['loss']}, grad_norm={row['grad_norm']})"
            f" and the optimizer applied it anyway, so the weights are corrupted and nothing was saved; {keep}; "
            "use launcher=deepspeed with deepspeed>=0.19.8, which skips such steps")

    def _stop(self, signum: int) -> None:
        path = self._save() if self.saved_step != self.step else ckpt_lib.checkpoints_dir(self.run_dir) / \
            f"step-{self.step}"
        raise TrainingStopped(
            f"training stopped by {signal_name(signum)} at step {self.step}/{self.total}; checkpoint saved to {path}; "
            f"resume with: percli train <same overrides> hydra.run.dir={self.run_dir} train.resume=auto", signum)
