"""CE through TRL's `SFTTrainer` (completion-only loss): the trainer a researcher would otherwise pick.

The peer gets what percli's CE gets: the same model weights, the same tokenised example (percli's full
stream; its response positions are TRL's completion mask), AdamW with the same lr / betas / eps / weight
decay, a constant schedule, gradient clipping at the same norm, batch 1, fp32, and percli's gradient
checkpointing setting (off), where SFTConfig's default is on. TRL's own train loop runs;
a callback times each of its optimizer steps (from `on_step_begin` to `on_step_end`: forward, backward,
clip, AdamW, zero_grad) and runs one percli CE step beside it, before or after, alternating the order.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import trl
from datasets import Dataset
from omegaconf import DictConfig
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from percli.data.collate import EncodedPair, PairCollator
from percli.logprobs import IGNORE_INDEX
from percli.models import load_model_and_tokenizer
from scripts.bench import subject
from scripts.bench.stats import Sequential, Stopwatch, timed


class RecordingSFTTrainer(SFTTrainer):
    """SFTTrainer that keeps each step's training loss at full precision (its logs round it)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.losses: list[float] = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        loss = out[0] if return_outputs else out
        self.losses.append(float(loss.detach()))
        return out


def sft_dataset(pairs: list[EncodedPair], collate: PairCollator) -> Dataset:
    """percli's full-stream tokens, with the response positions as TRL's completion mask."""
    rows = []
    for pair in pairs:
        batch = collate([pair])
        labels = batch["full_labels"][0]
        rows.append({"input_ids": pair.full_ids, "completion_mask": (labels != IGNORE_INDEX).long().tolist()})
    return Dataset.from_list(rows)


def sft_trainer(cfg: DictConfig, dataset: Dataset, out_dir: Path, steps: int, callbacks=()) -> RecordingSFTTrainer:
    """TRL's SFTTrainer with percli's model, optimiser settings and batch shape."""
    model, tokenizer = load_model_and_tokenizer(cfg.model, seed=int(cfg.seed), dtype=torch.float32)
    t = cfg.train
    args = SFTConfig(
        output_dir=str(out_dir), per_device_train_batch_size=int(t.batch_size), gradient_accumulation_steps=1,
        max_steps=steps, learning_rate=float(t.lr), lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=float(t.weight_decay), adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        max_grad_norm=float(t.max_grad_norm), optim="adamw_torch", completion_only_loss=True, max_length=None,
        packing=False, padding_free=False, save_strategy="no", logging_steps=10**9, report_to="none",
        disable_tqdm=True, dataloader_num_workers=0, seed=int(cfg.seed), bf16=False, fp16=False,
        use_cpu=not torch.cuda.is_available(), dataset_num_proc=None,
        # SFTConfig turns gradient checkpointing on by default; percli's setting instead, so that both sides
        # keep (or recompute) the same activations.
        activation_checkpointing=bool(cfg.model.gradient_checkpointing),
    )
    return RecordingSFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                               callbacks=list(callbacks))


class _Interleave(TrainerCallback):
    """Times TRL's steps and runs one percli step beside each, order alternating; the first step is warm-up."""

    def __init__(self, seq: Sequential, percli_step) -> None:
        self.seq, self.percli_step = seq, percli_step
        self.watch: Stopwatch | None = None
        self.pending = None
        self.warm = False

    def on_step_begin(self, args, state, control, **kwargs):
        self.pending = timed(self.percli_step) if (self.warm and self.seq.a_first()) else None
        self.watch = Stopwatch()

    def on_step_end(self, args, state, control, **kwargs):
        peer = self.watch.stop()
        if not self.warm:
            self.warm = True
            return
        ours = self.pending if self.pending is not None else timed(self.percli_step)
        control.should_training_stop = self.seq.add(ours, peer)


def ce_vs_trl(data_dir: Path, work: Path, *, model: str = "smollm2-135m", **rule) -> dict:
    """percli CE / TRL SFTTrainer step time (CPU-time ratio with CI) and both first-step losses."""
    cfg = subject.bench_cfg(data_dir, model=model, loss="ce")
    ours = subject.make_trainer(cfg, work / "percli-ce")
    first = subject.step(ours)["loss"]  # warm-up, on the same initial weights as the peer's first step
    seq = Sequential("percli CE / TRL SFTTrainer", **rule)
    with tempfile.TemporaryDirectory(dir=work) as out:
        peer = sft_trainer(cfg, sft_dataset(ours.pairs, ours.collate), Path(out), steps=10**6,
                           callbacks=[_Interleave(seq, lambda: subject.step(ours))])
        peer.train()
    subject.check_same_work(first, peer.losses[0], "TRL SFTTrainer")
    return {**seq.result(), "percli_first_loss": first, "peer_first_loss": peer.losses[0],
            "peer": f"trl {trl.__version__} SFTTrainer (completion_only_loss=True)",
            "shape": subject.shape(ours.pairs)}
