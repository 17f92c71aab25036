"""When the E-step (token weighting) runs: `schedule=online|periodic|warmup`.

- online (the paper, default): weights from the current model at every step. For perce that is one extra
  no-grad forward over the profile-free stream; logp_full is the training forward's own (detached),
  unless dropout is on (below).
- periodic: every `schedule.every` optimizer steps, weights are recomputed for the whole train set with
  no grad and cached per example (`batch["index"]`); steps in between read the cache.
- warmup: plain CE weights (w=1) for the first `schedule.warmup_steps` optimizer steps, then online.

Interface for the training loop (percli/trainer.py), which needs nothing else from this module:

    schedule = build_schedule(cfg)                 # reads cfg.loss and cfg.schedule
    for step in range(start_step, max_steps):      # step = optimizer steps completed so far
        schedule.maybe_refresh(step, scorer, lambda: train_loader_without_shuffle)   # periodic only
        for batch in micro_batches:
            free = schedule.free_pass(step, scorer, batch)   # FreePass of no-grad scores, or None
            scores = scorer(batch["full_input_ids"], batch["full_attention_mask"], batch["full_labels"],
                            with_entropy=schedule.with_entropy)
            weights, stats = schedule.weights(step, scorer, batch, scores, free)   # weights: [N] detached
            loss = weighted_nll(scores.logp, weights, N) * world_size        # percli.losses
        log(merge_stats(all_micro_batch_stats))    # percli.distributed: pir_mean, weight_mean, clip_low, clip_high, tokens
                                                   # (+ planted_summary's columns on data with truth spans)
    checkpoint["schedule"] = schedule.state_dict()  # tensors, str, numbers, None; load_state_dict(...) on resume

`scorer` is the (prepared) `percli.logprobs.TokenScorer`; a bare causal LM works too. `maybe_refresh` is a
no-op except for periodic; it runs under no grad.

Dropout: PIR is a difference of two log-probs of the same token, so both must come from the same
network. When the model is stochastic in train mode (LoRA's `lora.dropout`, or a model with dropout),
the E-step scores BOTH views under no grad with dropout off (`dropout_off`): `free_pass` then also
scores the full stream (one more no-grad forward), and PIR uses that, not the training forward's
dropout-masked log-probs. The training forward keeps its dropout. Without dropout the training forward's
detached log-probs are already the dropout-free ones and nothing extra runs.

`maybe_refresh`'s `dataloader_factory()` must return an iterable of PairCollator batches already on the
model's device; sharded per rank or not, the caches are merged across ranks afterwards, and under
ZeRO-3 every rank must run it (it does: it is called at the same step everywhere). Stats hold
`pir_mean=None` where no PIR was computed (ce, lossce, entce, and warmup steps).

`SCHEDULES` is the registry: `schedule=NAME` (conf/schedule/NAME.yaml) selects `SCHEDULES[NAME]`, built by
its `from_config(cfg)`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from tqdm import tqdm

from percli.distributed import gather_objects, is_main_process
from percli.errors import ConfigError
from percli.logprobs import TokenScores, check_aligned, stream_logprobs
from percli.losses import clip_weights, get_loss, raw_weights, weight_stats


class FreePass(NamedTuple):
    """The E-step's no-grad scores: the profile-free view, and the full view when the training forward's
    own scores carry dropout noise (both then scored with dropout off)."""

    free: TokenScores
    full: TokenScores | None = None


def _stochastic(model: nn.Module) -> bool:
    """Whether a forward in the model's current mode draws dropout masks (nn.Dropout or HF attention dropout)."""
    return any(m.training and ((isinstance(m, nn.Dropout) and m.p > 0)
                               or (isinstance(getattr(m, "attention_dropout", None), float) and m.attention_dropout > 0))
               for m in model.modules())


@contextlib.contextmanager
def dropout_off(model: nn.Module) -> Iterator[bool]:
    """Eval mode inside (each module's own mode restored after); yields whether dropout was on before."""
    modules = list(model.modules())
    modes = [m.training for m in modules]
    stochastic = _stochastic(model)
    if stochastic:
        model.eval()
    try:
        yield stochastic
    finally:
        for m, mode in zip(modules, modes):
            m.training = mode


def _contrast_views(model: nn.Module, batch: dict[str, Any]) -> FreePass:
    with torch.no_grad(), dropout_off(model) as stochastic:
        free = stream_logprobs(model, batch, "free")
        return FreePass(free, stream_logprobs(model, batch, "full") if stochastic else None)


class Schedule:
    """Online PerContrast: weights from the current model at every step."""

    name = "online"

    def __init__(self, loss: str, min_weight: float, max_weight: float):
        self.loss = loss
        self.min_weight = float(min_weight)
        self.max_weight = float(max_weight)
        self.needs_pir = get_loss(loss).needs_free

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Schedule:
        return cls(cfg.loss.name, cfg.loss.min_weight, cfg.loss.max_weight)

    @property
    def with_entropy(self) -> bool:
        """Pass to the training forward: e.g. EntCE needs the full stream's predictive entropy."""
        return get_loss(self.loss).needs_entropy

    def maybe_refresh(self, step: int, model: nn.Module, dataloader_factory: Callable[[], Iterable[dict]]) -> bool:
        """Recompute cached weights if due (periodic only); True when it ran."""
        return False

    def needs_free_pass(self, step: int) -> bool:
        """Whether `weights` at this step needs the profile-free stream's log-probs."""
        return self.needs_pir

    def free_pass(self, step: int, model: nn.Module, batch: dict[str, Any]) -> FreePass | None:
        """The no-grad pass(es) this step needs, or None. The loop runs them BEFORE the training forward, so
        their activations are freed before the training graph is built (peak memory = CE's)."""
        return _contrast_views(model, batch) if self.needs_free_pass(step) else None

    def weights(self, step: int, model: nn.Module, batch: dict[str, Any],
                scores_full: TokenScores, free: FreePass | None = None) -> tuple[Tensor, dict]:
        """Detached [N] weights aligned with `scores_full` and this micro-batch's stats. `free` is
        `free_pass(...)`'s result; without it the pass runs here."""
        return self._online(model, batch, scores_full, free)

    def state_dict(self) -> dict:
        return {"name": self.name}

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"checkpoint has schedule={state.get('name')}, this run schedule={self.name}")

    def _online(self, model: nn.Module, batch: dict[str, Any], scores_full: TokenScores,
                free: FreePass | None = None) -> tuple[Tensor, dict]:
        logp_free = pir = None
        logp_full = scores_full.logp
        if self.needs_pir:
            if free is None:
                free = _contrast_views(model, batch)
            full = free.full if free.full is not None else scores_full  # the dropout-free full view
            check_aligned(full, free.free)
            logp_full, logp_free = full.logp, free.free.logp
            pir = logp_full.detach() - logp_free
        raw = raw_weights(self.loss, logp_full=logp_full, logp_free=logp_free,
                         entropy=scores_full.entropy, row=scores_full.row)
        w = clip_weights(raw, scores_full.logp, self.min_weight, self.max_weight)
        return w, weight_stats(w, raw=raw, pir=pir, min_weight=self.min_weight, max_weight=self.max_weight,
                               planted=batch.get("planted"))

    def _uniform(self, batch: dict[str, Any], scores_full: TokenScores) -> tuple[Tensor, dict]:
        w = clip_weights(None, scores_full.logp, self.min_weight, self.max_weight)
        return w, weight_stats(w, min_weight=self.min_weight, max_weight=self.max_weight, planted=batch.get("planted"))


class WarmupSchedule(Schedule):
    """CE (w=1) while step < warmup_steps, then online."""

    name = "warmup"

    def __init__(self, loss: str, min_weight: float, max_weight: float, warmup_steps: int):
        super().__init__(loss, min_weight, max_weight)
        self.warmup_steps = int(warmup_steps)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Schedule:
        return cls(cfg.loss.name, cfg.loss.min_weight, cfg.loss.max_weight, warmup_steps=cfg.schedule.warmup_steps)

    def needs_free_pass(self, step: int) -> bool:
        return step >= self.warmup_steps and super().needs_free_pass(step)

    def weights(self, step: int, model: nn.Module, batch: dict[str, Any],
                scores_full: TokenScores, free: FreePass | None = None) -> tuple[Tensor, dict]:
        if step < self.warmup_steps:
            return self._uniform(batch, scores_full)
        return self._online(model, batch, scores_full, free)


class PeriodicSchedule(Schedule):
    """Weights for the whole train set every `every` steps, cached per example index."""

    name = "periodic"

    def __init__(self, loss: str, min_weight: float, max_weight: float, every: int):
        super().__init__(loss, min_weight, max_weight)
        self.every = int(every)
        self.last_refresh: int | None = None
        # example index -> {"raw": [n] fp32 CPU tensor or None, "pir": [n] or None}
        self.cache: dict[int, dict[str, Tensor | None]] = {}

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Schedule:
        return cls(cfg.loss.name, cfg.loss.min_weight, cfg.loss.max_weight, every=cfg.schedule.every)

    def due(self, step: int) -> bool:
        return self.loss != "ce" and (self.last_refresh is None or step - self.last_refresh >= self.every)

    def maybe_refresh(self, step: int, model: nn.Module, dataloader_factory: Callable[[], Iterable[dict]]) -> bool:
        if not self.due(step):
            return False
        cache: dict[int, dict[str, Tensor | None]] = {}
        with torch.no_grad(), dropout_off(model):
            for batch in tqdm(dataloader_factory(), desc=f"E-step refresh @ step {step}", disable=not is_main_process(),
                              leave=False):
                full = stream_logprobs(model, batch, "full", with_entropy=self.with_entropy)
                free = stream_logprobs(model, batch, "free") if self.needs_pir else None
                if free is not None:
                    check_aligned(full, free)
                pir = full.logp - free.logp if free is not None else None
                raw = raw_weights(self.loss, logp_full=full.logp, logp_free=None if free is None else free.logp,
                                 entropy=full.entropy, row=full.row)
                for r, idx in enumerate(_as_list(batch["index"])):
                    sel = full.row == r
                    cache[idx] = {"raw": raw[sel].float().cpu(), "pir": None if pir is None else pir[sel].float().cpu()}
        self.cache = _merge_across_ranks(cache)
        self.last_refresh = step
        return True

    def needs_free_pass(self, step: int) -> bool:
        return False  # the cache holds the weights; refreshes run their own passes

    def weights(self, step: int, model: nn.Module, batch: dict[str, Any],
                scores_full: TokenScores, free: FreePass | None = None) -> tuple[Tensor, dict]:
        if self.loss == "ce":
            return self._uniform(batch, scores_full)
        if self.last_refresh is None:
            raise RuntimeError("periodic schedule: call maybe_refresh(step, model, loader_factory) before weights()")
        raws, pirs = [], []
        for r, idx in enumerate(_as_list(batch["index"])):
            entry = self.cache.get(idx)
            n = int((scores_full.row == r).sum())
            if entry is None or entry["raw"].numel() != n:
                raise RuntimeError(f"periodic schedule: no cached weights for example index {idx} with {n} "
                                   "response tokens; the refresh loader must cover the whole train set")
            raws.append(entry["raw"])
            pirs.append(entry["pir"])
        device = scores_full.logp.device
        raw = torch.cat(raws).to(device) if raws else scores_full.logp.new_zeros(0)
        pir = torch.cat(pirs).to(device) if pirs and pirs[0] is not None else None
        w = clip_weights(raw, scores_full.logp, self.min_weight, self.max_weight)
        return w, weight_stats(w, raw=raw, pir=pir, min_weight=self.min_weight, max_weight=self.max_weight,
                               planted=batch.get("planted"))

    def state_dict(self) -> dict:
        return {"name": self.name, "last_refresh": self.last_refresh, "cache": self.cache}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.last_refresh = state["last_refresh"]
        self.cache = {int(k): v for k, v in state["cache"].items()}


def _as_list(index: Tensor | Iterable[int]) -> list[int]:
    return index.tolist() if isinstance(index, Tensor) else [int(i) for i in index]


def _merge_across_ranks(cache: dict[int, dict]) -> dict[int, dict]:
    merged: dict[int, dict] = {}
    for part in gather_objects(cache):
        merged.update(part or {})
    return merged


SCHEDULES: dict[str, type[Schedule]] = {cls.name: cls for cls in (Schedule, PeriodicSchedule, WarmupSchedule)}


def build_schedule(cfg: DictConfig) -> Schedule:
    """The schedule for cfg.schedule.name with the weights of cfg.loss."""
    name = cfg.schedule.name
    if name not in SCHEDULES:
        raise ConfigError(f"schedule.name={name!r} is not a known schedule; choose one of: {', '.join(SCHEDULES)}")
    return SCHEDULES[name].from_config(cfg)
