"""Config validation: every value a run depends on is type- and range-checked before any model loads.

The rules are declarative: (key, type, check, hint). Keys absent from a command's config are skipped,
so one table serves every command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from percli.errors import ConfigError
from percli.paths import conf_options


@dataclass(frozen=True)
class Rule:
    key: str
    kind: type | tuple[type, ...]
    check: Callable[[Any], bool] | None = None
    hint: str = ""
    nullable: bool = False


def _positive(v: Any) -> bool:
    return v > 0


def _non_negative(v: Any) -> bool:
    return v >= 0


def _one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda v: v in choices


def _option_of(group: str) -> tuple[Callable[[Any], bool], str]:
    """(check, hint) for a key naming an option of conf/<group>/: the names each registry is tested against."""
    options = conf_options(group)
    return _one_of(*options), ", ".join(options[:-1]) + f" or {options[-1]}"


NUMBER = (int, float)
RULES: tuple[Rule, ...] = (
    Rule("seed", int, _non_negative, "a non-negative integer"),
    Rule("task.name", str, *_option_of("task")),
    Rule("task.setting", str, _one_of("user", "temporal"), "user or temporal"),
    Rule("data.source", str, *_option_of("data")),
    Rule("data.split", str, None, "a split name such as train, val or test"),
    Rule("data.max_examples", int, _positive, "a positive integer or null", nullable=True),
    Rule("data.seed", int, _non_negative, "a non-negative integer"),
    Rule("data.num_users", int, _positive, "a positive integer"),
    Rule("data.examples_per_user", int, _positive, "a positive integer"),
    Rule("data.profile_size", int, _positive, "a positive integer"),
    Rule("data.max_prompt_tokens", int, _positive, "a positive integer"),
    Rule("data.max_response_tokens", int, _positive, "a positive integer"),
    Rule("data.group_by_length", bool),
    Rule("retriever.name", str, *_option_of("retriever")),
    Rule("retriever.k", int, _positive, "a positive integer (the paper uses 4)"),
    Rule("retriever.batch_size", int, _positive, "a positive integer"),
    Rule("retriever.max_length", int, lambda v: 2 <= v <= 8192, "an integer in [2, 8192] (512 for Contriever)"),
    Rule("retriever.normalize", bool),
    Rule("retriever.seed", int, _non_negative, "a non-negative integer"),
    Rule("loss.name", str, *_option_of("loss")),
    Rule("loss.min_weight", NUMBER, _non_negative, "a non-negative number"),
    Rule("loss.max_weight", NUMBER, _positive, "a positive number"),
    Rule("loss.chunk_size", int, _positive, "a positive integer (LM-head positions per chunk, e.g. 256)"),
    Rule("contrast.max_examples", int, _positive, "a positive integer or null", nullable=True),
    Rule("contrast.batch_size", int, _positive, "a positive integer"),
    Rule("contrast.html_max_examples", int, _non_negative, "a non-negative integer"),
    Rule("contrast.shuffle_profiles", bool),
    Rule("schedule.name", str, *_option_of("schedule")),
    Rule("schedule.every", int, _positive, "a positive integer"),
    Rule("schedule.warmup_steps", int, _non_negative, "a non-negative integer"),
    Rule("launcher.name", str, _one_of("local", "ddp", "deepspeed")),
    Rule("launcher.num_processes", int, _positive, "a positive integer"),
    Rule("launcher.num_machines", int, _positive, "a positive integer"),
    Rule("launcher.machine_rank", int, _non_negative, "a non-negative integer"),
    Rule("launcher.zero_stage", int, _one_of(0, 1, 2, 3), "0, 1, 2 or 3"),
    Rule("launcher.main_process_ip", str, None, "an address such as 10.0.0.1, or null", nullable=True),
    Rule("launcher.main_process_port", int, lambda v: 1 <= v <= 65535, "a port in [1, 65535] or null",
         nullable=True),
    Rule("launcher.mixed_precision", str, _one_of("auto", "bf16", "no"), "auto, bf16 or no"),
    Rule("launcher.offload", bool),
    Rule("launcher.deepspeed_config", str, None, "a DeepSpeed JSON path or null", nullable=True),
    Rule("logger.project", str, None, "a W&B project name"),
    Rule("logger.entity", str, None, "a W&B entity or null", nullable=True),
    Rule("logger.group", str, None, "a W&B group or null", nullable=True),
    Rule("logger.name", str, _one_of("none", "wandb")),
    Rule("logger.mode", str, _one_of("online", "offline", "disabled"), "online, offline or disabled"),
    Rule("train.epochs", NUMBER, _positive, "a positive number"),
    Rule("train.max_steps", int, _positive, "a positive integer or null", nullable=True),
    Rule("train.lr", NUMBER, _positive, "a positive number such as 1e-5"),
    Rule("train.weight_decay", NUMBER, _non_negative, "a non-negative number"),
    Rule("train.warmup_ratio", NUMBER, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    Rule("train.lr_scheduler", str, _one_of("cosine", "linear", "constant")),
    Rule("train.batch_size", int, _positive, "a positive integer"),
    Rule("train.grad_accum", int, _positive, "a positive integer"),
    Rule("train.max_grad_norm", NUMBER, _positive, "a positive number", nullable=True),
    Rule("train.save_every", int, _positive, "a positive integer"),
    Rule("train.keep_last", int, _positive, "a positive integer"),
    Rule("train.max_bad_steps", int, _positive, "a positive integer"),
    Rule("train.resume", str, None, "null, auto or a checkpoint path", nullable=True),
    Rule("train.log_every", int, _positive, "a positive integer"),
    Rule("eval.after_train", bool),
    Rule("eval.max_examples", int, _positive, "a positive integer or null", nullable=True),
    Rule("eval.batch_size", int, _positive, "a positive integer"),
    Rule("eval.max_new_tokens", int, _positive, "a positive integer"),
    Rule("eval.do_sample", bool),
    Rule("eval.temperature", NUMBER, _positive, "a positive number"),
    Rule("eval.top_p", NUMBER, lambda v: 0 < v <= 1, "a number in (0, 1]"),
    Rule("eval.backend", str, _one_of("hf", "vllm"), "hf or vllm"),
    Rule("eval.aggregate", str, _one_of("mean", "bootstrap"), "mean or bootstrap"),
    Rule("model.lora.enabled", bool),
    Rule("model.lora.r", int, _positive, "a positive integer"),
    Rule("model.lora.alpha", NUMBER, _positive, "a positive number"),
    Rule("model.lora.dropout", NUMBER, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    Rule("model.lora.merge", bool),
    Rule("model.gradient_checkpointing", bool),
    Rule("model.dtype", str, _one_of("auto", "float32", "bfloat16", "float16"), "auto, float32, bfloat16 or float16"),
    Rule("table.runs", str, None, "a sweep dir, a run dir or a glob"),
    Rule("table.out_dir", str, None, "a directory for table.md/.csv/.tex"),
    Rule("table.baseline_loss", str, *_option_of("loss")),
    Rule("table.select_metric", str, _one_of("rouge1", "rouge2", "rougeL", "rougeLsum", "meteor", "planted_recall"),
         "rouge1, rouge2, rougeL, rougeLsum, meteor or planted_recall"),
    Rule("table.select_split", str, None, "a split name such as val"),
    Rule("table.report_split", str, None, "a split name such as test"),
    Rule("table.confidence", NUMBER, lambda v: 0 < v < 1, "a number in (0, 1) such as 0.95"),
    Rule("table.resamples", int, lambda v: v >= 100, "an integer >= 100 (e.g. 2000)"),
    Rule("table.plots", bool),
    Rule("compare.baseline", str, None, "a run dir holding scores.jsonl"),
    Rule("compare.other", str, None, "a run dir holding scores.jsonl"),
    Rule("compare.resamples", int, lambda v: v >= 100, "an integer >= 100 (e.g. 2000)"),
    Rule("compare.confidence", NUMBER, lambda v: 0 < v < 1, "a number in (0, 1) such as 0.95"),
    Rule("compare.method", str, _one_of("percentile", "basic", "BCa"), "percentile, basic or BCa"),
)

_MISSING = object()


def _type_name(kind: type | tuple[type, ...]) -> str:
    if kind == NUMBER:
        return "number"
    return kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError on the first bad value, naming the key, the value and what is expected."""
    for rule in RULES:
        parent, _, leaf = rule.key.rpartition(".")
        node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
        if isinstance(node, DictConfig) and OmegaConf.is_missing(node, leaf):
            raise ConfigError(f"{rule.key} is required (the config has ???); set {rule.key}=... "
                              f"({rule.hint or _type_name(rule.kind)})")
        value = OmegaConf.select(cfg, rule.key, default=_MISSING, throw_on_missing=False)
        if value is _MISSING:
            continue
        if value is None:
            if rule.nullable:
                continue
            raise ConfigError(f"{rule.key}=null is not allowed; expected {rule.hint or _type_name(rule.kind)}")
        # bool is an int subclass: reject True where a number is expected, and 1 where a bool is.
        ok_type = isinstance(value, rule.kind) and not (isinstance(value, bool) and bool not in _as_tuple(rule.kind))
        if not ok_type:
            raise ConfigError(
                f"{rule.key}={value!r} has the wrong type ({type(value).__name__}); "
                f"expected {rule.hint or _type_name(rule.kind)}"
            )
        if rule.check is not None and not rule.check(value):
            raise ConfigError(f"{rule.key}={value!r} is out of range; expected {rule.hint or 'a valid value'}")
    lo = OmegaConf.select(cfg, "loss.min_weight", default=None)
    hi = OmegaConf.select(cfg, "loss.max_weight", default=None)
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(
            f"loss.min_weight={lo} is greater than loss.max_weight={hi}; set min_weight <= max_weight"
        )


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)
