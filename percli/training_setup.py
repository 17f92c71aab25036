"""What one training process builds before its first step, and tears down after its last: the Accelerator,
the model (with LoRA / gradient checkpointing), the AdamW optimizer."""

from __future__ import annotations

import os

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedType, InitProcessGroupKwargs
from omegaconf import DictConfig

from percli.device import precision, resolve_dtype
from percli.distributed import world_size
from percli.errors import EnvironmentProblem
from percli.models import load_model_and_tokenizer


def make_accelerator(cfg: DictConfig) -> Accelerator:
    """The Accelerator for this process; refuses to run with a world size other than the launcher's."""
    deepspeed = cfg.launcher.name == "deepspeed"
    if deepspeed and os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true":
        raise EnvironmentProblem("launcher=deepspeed workers must be started with accelerate's DeepSpeed environment;"
                                 " run `percli train launcher=deepspeed`, which does that")
    on_cpu = not torch.cuda.is_available()
    # cpu=True makes accelerate use gloo on CPU-only machines. DeepSpeed brings its own CPU accelerator, but
    # accelerate finds no default backend for it and would report a world of 1: gloo must be named.
    handlers = [InitProcessGroupKwargs(backend="gloo")] if deepspeed and on_cpu else []
    accelerator = Accelerator(cpu=on_cpu and not deepspeed, mixed_precision=precision(cfg),
                              step_scheduler_with_optimizer=False, kwargs_handlers=handlers)
    expected = world_size(cfg)
    if accelerator.num_processes != expected:
        raise EnvironmentProblem(
            f"launcher={cfg.launcher.name} expects {expected} processes (launcher.num_processes="
            f"{cfg.launcher.num_processes} x num_machines={cfg.launcher.num_machines}) but this process sees a "
            f"world of {accelerator.num_processes}; start training with `percli train`, not by hand")
    if deepspeed and accelerator.distributed_type != DistributedType.DEEPSPEED:
        raise EnvironmentProblem(f"launcher=deepspeed but accelerate set up {accelerator.distributed_type}")
    return accelerator


def release_accelerator(accelerator: Accelerator) -> None:
    """End this process's training so that it exits cleanly and may train again (a multirun sweep)."""
    engine = getattr(accelerator, "deepspeed_engine_wrapped", None)
    if engine is not None:  # ZeRO-3 hangs at exit without it
        engine.engine.destroy()
    accelerator.end_training()
    if accelerator.num_processes > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def build_model(cfg: DictConfig, prec: str, deepspeed: bool):
    """(causal LM, tokenizer) as training wants them: the dtype the engine expects, LoRA and checkpointing on."""
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
        from peft import LoraConfig, get_peft_model  # optional: only LoRA runs need peft

        targets = lora.target_modules
        targets = targets if isinstance(targets, str) else list(targets)
        model = get_peft_model(model, LoraConfig(r=int(lora.r), lora_alpha=float(lora.alpha),
                                                 lora_dropout=float(lora.dropout), target_modules=targets,
                                                 task_type="CAUSAL_LM"))
    return model, tokenizer


def decays(module_class: str, param_name: str) -> bool:
    """Weight decay applies to weight matrices, not to biases or normalisation weights.

    Decided by name, not by `p.ndim`: ZeRO-3 flattens every parameter to 1-D, which would move all of them
    into the no-decay group."""
    return param_name != "bias" and "norm" not in module_class.lower()


def build_optimizer(model: torch.nn.Module, train_cfg: DictConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm weights."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad and id(p) not in seen:  # a tied weight belongs to two modules, one group
                seen.add(id(p))
                (decay if decays(type(module).__name__, name) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": float(train_cfg.weight_decay)},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=float(train_cfg.lr), betas=(0.9, 0.999),
                             eps=1e-8)
