"""`percli train`: fine-tune with CE / PerCE / LossCE / EntCE in one small accelerate loop.

The same loop runs in the CLI process (launcher=local), in N DDP workers and under DeepSpeed ZeRO-2/3
(percli.launch). One optimizer step:

1. the step's micro-batches for this rank come from `StepSampler` (a pure function of seed and step);
2. N = response tokens of the step over every micro-batch and rank (count, then all_reduce);
3. per micro-batch: training forward of the full stream through the prepared `TokenScorer`, weights from
   the PerCE schedule (one no-grad profile-free forward for perce), and
   backward(sum(w * nll) / N * world_size): DDP / DeepSpeed average gradients over ranks, so the
   world_size factor makes the step's gradient that of one big batch normalised by the global N;
4. clip, step; a non-finite loss or gradient norm skips the step everywhere (a rank with a non-finite
   loss poisons its gradient with NaN, which the all-reduce spreads), after `train.max_bad_steps` in a
   row the run checkpoints and stops;
5. log a train_log.jsonl row; checkpoint every `train.save_every` steps, or when SIGTERM/SIGUSR1 asked.

bf16 on GPU (accelerate autocast with fp32 master weights, or DeepSpeed bf16), fp32 on CPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from percli import checkpoint as ckpt_lib
from percli import evaluation
from percli.data.collate import PairCollator, batch_indices, encode_examples
from percli.data.longlamp import load_examples
from percli.device import default_device, precision, precision_dtype, resolve_dtype
from percli.distributed import global_token_count, merge_stats, world_size
from percli.errors import DataError, EnvironmentProblem, PercliError
from percli.io import atomic_write_jsonl
from percli.launch import launch
from percli.log import log
from percli.losses import weighted_nll
from percli.models import load_model, load_model_and_tokenizer
from percli.schedule import build_schedule
from percli.scoring import TokenScorer, count_response_tokens
from percli.signals import STOP_FILE, STOP_SIGNALS
from percli.tracking import Tracker, plot_loss

LOG_FILE = "train_log.jsonl"
BAD_STEPS_FILE = "bad_steps.jsonl"


class TrainingStopped(PercliError):
    """Stopped on request (SIGTERM / SIGUSR1) after saving a resumable checkpoint."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class TrainingDiverged(PercliError):
    """Too many consecutive non-finite steps."""


# ----------------------------------------------------------------------------------------------- CLI
def run(cfg: DictConfig, run_dir: Path) -> None:
    """`percli train`: train with cfg.launcher, then (eval.after_train) evaluate checkpoints/final here."""
    run_dir = Path(run_dir)
    launch(cfg, run_dir, train)
    if cfg.eval.after_train:
        metrics = evaluate_final(cfg, run_dir)
        tracker = Tracker(cfg, run_dir, job="train")
        tracker.summary(metrics, prefix="eval/")
        tracker.finish()


def evaluate_final(cfg: DictConfig, run_dir: Path) -> dict:
    """Generate with checkpoints/final on cfg.eval.split and score it into run_dir (metrics.json)."""
    final = ckpt_lib.checkpoints_dir(run_dir) / ckpt_lib.FINAL
    if cfg.eval.backend == "vllm":  # vLLM loads the checkpoint itself: the eval command on model.path=final
        eval_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        eval_cfg.model.path = str(final)
        evaluation.run(eval_cfg, run_dir)
        return json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))
    model, tokenizer = load_final(cfg, run_dir)
    examples = load_examples(cfg, cfg.eval.split)
    return evaluation.evaluate_model(model, tokenizer, examples, cfg, run_dir)


def load_final(cfg: DictConfig, run_dir: Path):
    """checkpoints/final as (model, tokenizer) on the GPU if there is one; LoRA adapters on their base."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = ckpt_lib.checkpoints_dir(run_dir) / ckpt_lib.FINAL
    dtype = precision_dtype(cfg)
    tokenizer = AutoTokenizer.from_pretrained(final)
    if (final / "adapter_config.json").is_file():
        from peft import PeftModel  # optional: only LoRA runs need peft

        model = PeftModel.from_pretrained(load_model(cfg.model, seed=cfg.seed, dtype=dtype, tokenizer=tokenizer),
                                          final)
    else:
        model = AutoModelForCausalLM.from_pretrained(final, dtype=dtype)
    return model.to(default_device()).eval(), tokenizer


# ------------------------------------------------------------------------------------------ helpers
def make_accelerator(cfg: DictConfig):
    """The Accelerator for this process; refuses to run with a world size other than the launcher's."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    deepspeed = cfg.launcher.name == "deepspeed"
    if deepspeed and os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true":
        raise EnvironmentProblem("launcher=deepspeed workers must be started by `accelerate launch --use_deepspeed`;"
                                 " run `percli train launcher=deepspeed`, which does that")
    # cpu=True makes accelerate use gloo on CPU-only machines; DeepSpeed picks its own CPU accelerator.
    accelerator = Accelerator(cpu=not torch.cuda.is_available() and not deepspeed,
                              mixed_precision=precision(cfg), step_scheduler_with_optimizer=False)
    expected = world_size(cfg)
    if accelerator.num_processes != expected:
        raise EnvironmentProblem(
            f"launcher={cfg.launcher.name} expects {expected} processes (launcher.num_processes="
            f"{cfg.launcher.num_processes} x num_machines={cfg.launcher.num_machines}) but this process sees a "
            f"world of {accelerator.num_processes}; start training with `percli train`, not by hand")
    if deepspeed and accelerator.distributed_type != DistributedType.DEEPSPEED:
        raise EnvironmentProblem(f"launcher=deepspeed but accelerate set up {accelerator.distributed_type}")
    return accelerator


def lr_at(step: int, total: int, train_cfg: DictConfig) -> float:
    """LR of optimizer step `step` (0-based): linear warmup to train.lr, then cosine / linear / constant.

    A pure function of the step, so the schedule needs no state of its own in a checkpoint."""
    warmup = math.ceil(float(train_cfg.warmup_ratio) * total)
    if step < warmup:
        return train_cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if train_cfg.lr_scheduler == "cosine":
        return train_cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if train_cfg.lr_scheduler == "linear":
        return train_cfg.lr * (1.0 - progress)
    return float(train_cfg.lr)


class StepSampler:
    """Which dataset rows each rank trains on at each optimizer step: a pure function of (seed, step).

    Every epoch is cut into global batches of batch_size x grad_accum x world_size rows (the order from
    `percli.data.collate.batch_indices`: shuffled with seed and epoch, optionally grouped by length);
    an incomplete last global batch is dropped, so every rank does the same work. Micro-batch m of rank
    r is slice (m * world + r) of its global batch, so 1 process x 4 rows, 2 processes x 2 rows and
    1 process x 2 rows x 2 accumulation steps train on the same rows at every step.
    """

    def __init__(self, lengths: list[int], batch_size: int, grad_accum: int, world: int, seed: int,
                 group_by_length: bool = False):
        self.lengths, self.seed, self.group = lengths, seed, group_by_length
        self.batch_size, self.grad_accum, self.world = batch_size, grad_accum, world
        self.global_batch = batch_size * grad_accum * world
        self.steps_per_epoch = len(lengths) // self.global_batch
        self._epoch: tuple[int, list[list[int]]] | None = None

    def _batches(self, epoch: int) -> list[list[int]]:
        if self._epoch is None or self._epoch[0] != epoch:
            batches = batch_indices(self.lengths, self.global_batch, group_by_length=self.group, seed=self.seed,
                                    epoch=epoch, shuffle=True)
            self._epoch = (epoch, [b for b in batches if len(b) == self.global_batch])
        return self._epoch[1]

    def micro_batches(self, step: int, rank: int) -> list[list[int]]:
        epoch, k = divmod(step, self.steps_per_epoch)
        rows = self._batches(epoch)[k]
        b = self.batch_size
        return [rows[(m * self.world + rank) * b:(m * self.world + rank + 1) * b] for m in range(self.grad_accum)]


class StopRequest:
    """SIGTERM / SIGUSR1 to this process, or run_dir/.stop written by the launching parent: checkpoint and
    exit at the next step boundary (the ranks agree through the step's all-reduce)."""

    def __init__(self, run_dir: Path, watch_file: bool):
        self.file = run_dir / STOP_FILE
        self.watch_file = watch_file
        self.signum = 0
        self._previous: dict[int, Any] = {}
        try:
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread (e.g. a test harness): the stop file still works
            pass

    def _handle(self, signum: int, _frame) -> None:
        self.signum = signum

    def poll(self) -> int:
        if not self.signum and self.watch_file and self.file.is_file():
            try:
                self.signum = int(self.file.read_text().strip() or signal.SIGTERM)
            except ValueError:
                self.signum = int(signal.SIGTERM)
        return self.signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _build_model(cfg: DictConfig, prec: str, deepspeed: bool):
    if cfg.model.dtype != "auto":
        dtype = resolve_dtype(cfg.model.dtype)
    else:  # DeepSpeed bf16 keeps fp32 masters itself; accelerate autocast wants fp32 weights
        dtype = torch.bfloat16 if (deepspeed and prec == "bf16") else torch.float32
    model, tokenizer = load_model_and_tokenizer(cfg.model, seed=cfg.seed, dtype=dtype)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    lora = cfg.model.lora
    if lora.enabled:
        from peft import LoraConfig, get_peft_model

        targets = lora.target_modules
        targets = targets if isinstance(targets, str) else list(targets)
        model = get_peft_model(model, LoraConfig(r=int(lora.r), lora_alpha=float(lora.alpha),
                                                 lora_dropout=float(lora.dropout), target_modules=targets,
                                                 task_type="CAUSAL_LM"))
    return model, tokenizer


def _optimizer(model: torch.nn.Module, train_cfg: DictConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm weights (1-d parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": float(train_cfg.weight_decay)},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=float(train_cfg.lr), betas=(0.9, 0.999),
                             eps=1e-8)


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


# --------------------------------------------------------------------------------------------- loop
def train(cfg: DictConfig, run_dir: Path) -> None:
    """Train one process's share (all processes call this); checkpoints and final model into run_dir."""
    from accelerate.state import AcceleratorState, GradientState

    run_dir = Path(run_dir)
    accelerator = make_accelerator(cfg)
    stop = StopRequest(run_dir, watch_file=accelerator.is_main_process)
    try:
        Trainer(cfg, run_dir, accelerator, stop).fit()
    finally:
        stop.restore()
        engine = getattr(accelerator, "deepspeed_engine_wrapped", None)
        if engine is not None:  # ZeRO-3 hangs at exit without it
            engine.engine.destroy()
        accelerator.end_training()
        if accelerator.num_processes > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        # One CLI process may train several times (a multirun sweep with launcher=local).
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


class Trainer:
    """One process's training run: `fit()` runs it to the end; `train_step()` is one optimizer step
    (scripts/bench.py times it)."""

    def __init__(self, cfg: DictConfig, run_dir: Path, accelerator, stop: StopRequest):
        from accelerate.utils import DistributedType, set_seed

        self.cfg, self.run_dir, self.acc, self.stop = cfg, run_dir, accelerator, stop
        self.main = accelerator.is_main_process
        self.world = accelerator.num_processes
        self.rank = accelerator.process_index
        self.prec = precision(cfg)
        self.deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
        set_seed(cfg.seed)

        lm, self.tokenizer = _build_model(cfg, self.prec, self.deepspeed)
        examples = load_examples(cfg, cfg.data.split)
        self.pairs, report = encode_examples(examples, self.tokenizer, cfg.data)
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

        self.schedule = build_schedule(cfg)
        self.optimizer = _optimizer(lm, t)  # the param_groups whose lr is set each step, also under DeepSpeed
        scorer = TokenScorer(lm, chunk_size=int(OmegaConf.select(cfg, "loss.chunk_size", default=256)))
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

    # ------------------------------------------------------------------ resume / save
    def _resume(self) -> None:
        path = ckpt_lib.resolve_resume(self.cfg.train.resume, self.run_dir)
        if path is None:
            if self.cfg.train.resume == "auto":
                log.info(f"train.resume=auto: no checkpoint in {self.run_dir}, starting from step 0")
            return
        ckpt_lib.check_compatible(ckpt_lib.read_trainer_state(path)["fingerprint"], self.fingerprint, path)
        state, schedule_state, rows = ckpt_lib.load_checkpoint(self.acc, path)
        self.schedule.load_state_dict(schedule_state)
        self.step = self.saved_step = int(state["step"])
        self.bad_in_a_row = int(state.get("bad_in_a_row", 0))
        self.rows = [r for r in rows if r["step"] <= self.step]
        self.bad_rows = [r for r in state.get("bad_steps", []) if r["step"] <= self.step]
        log.info(f"resumed from {path} at step {self.step}/{self.total}")

    def _save(self) -> Path:
        state = {"fingerprint": self.fingerprint, "bad_in_a_row": self.bad_in_a_row, "bad_steps": self.bad_rows,
                 "total_steps": self.total, "steps_per_epoch": self.sampler.steps_per_epoch}
        path = ckpt_lib.save_checkpoint(self.acc, self.run_dir, self.step, state, self.schedule.state_dict(),
                                        self.rows, int(self.cfg.train.keep_last))
        self.saved_step = self.step
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
        """One optimizer step over this rank's micro-batches; returns the train_log row (plus `_ok`)."""
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
        flags = torch.cat([sums, torch.tensor([float(self.stop.poll())], dtype=torch.float64)]).to(device)
        flags = self.acc.reduce(flags, reduction="sum") if self.world > 1 else flags
        loss_sum, ce_sum, bad_batches, stop = flags.tolist()
        self.stop_any = stop > 0
        self.step += 1
        return {
            "step": self.step, "epoch": round(self.step / self.sampler.steps_per_epoch, 4),
            "loss": loss_sum, "ce_loss": ce_sum, "lr": lr, "grad_norm": grad_norm, "tokens": n_global,
            "pir_mean": merged["pir_mean"], "weight_mean": merged["weight_mean"], "clip_low": merged["clip_low"],
            "clip_high": merged["clip_high"], "world_size": self.world,
            "_ok": applied and bad_batches == 0 and _finite(loss_sum),
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
        if self.deepspeed:
            norm = self.scorer.get_global_grad_norm()
            norm = float(norm) if norm is not None else None
            return norm, bool(self.scorer.was_step_applied()) and (norm is None or math.isfinite(norm))
        max_norm = self.cfg.train.max_grad_norm
        norm = float(self.acc.clip_grad_norm_(self.trainable, float(max_norm) if max_norm else float("inf")))
        ok = math.isfinite(norm)
        if ok:
            self.prepared_optimizer.step()
        self.prepared_optimizer.zero_grad(set_to_none=True)
        return norm, ok

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
        self.stop_any = False
        try:
            while self.step < self.total:
                t0 = time.perf_counter()
                self.scorer.train()
                self.schedule.maybe_refresh(self.step, self.scorer, self._refresh_loader)
                row = self.train_step()
                ok = row.pop("_ok")
                row["step_time"] = round(time.perf_counter() - t0, 4)
                bar.update(1)
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
                if self.step % int(cfg.train.save_every) == 0:
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
        log.warning(f"step {row['step']} skipped: non-finite loss or gradient "
                    f"(loss={bad['loss']}, grad_norm={bad['grad_norm']}); {self.bad_in_a_row} in a row")
        limit = int(self.cfg.train.max_bad_steps)
        if self.bad_in_a_row >= limit:
            path = self._save()
            raise TrainingDiverged(
                f"{self.bad_in_a_row} consecutive steps had a non-finite loss or gradient (train.max_bad_steps="
                f"{limit}, last at step {row['step']}); checkpoint saved to {path}; lower train.lr, check the data "
                "(bad_steps.jsonl), or raise train.max_bad_steps")

    def _stop(self, signum: int) -> None:
        path = self._save() if self.saved_step != self.step else ckpt_lib.checkpoints_dir(self.run_dir) / \
            f"step-{self.step}"
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        raise TrainingStopped(
            f"training stopped by {name} at step {self.step}/{self.total}; checkpoint saved to {path}; resume "
            f"with: percli train <same overrides> hydra.run.dir={self.run_dir} train.resume=auto", signum)

