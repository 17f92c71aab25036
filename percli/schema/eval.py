"""`eval` group (conf/eval/default.yaml): generation and scoring (`percli eval`, and after training)."""

from __future__ import annotations

from percli.schema.field import NUMBER, Field, between, positive

GROUP = "eval"
FIELDS: dict[str, Field] = {
    "after_train": Field(bool, "percli train: evaluate checkpoints/final when training ends"),
    "split": Field(str, "the split generated on and scored", expect="a split name such as val or test"),
    "max_examples": Field(int, "score a random N of the split, seeded by data.seed (null: all)", positive,
                          "a positive integer or null", nullable=True),
    "batch_size": Field(int, "prompts per generate() call", positive, "a positive integer"),
    "max_new_tokens": Field(int, "generation length cap", positive, "a positive integer"),
    "do_sample": Field(bool, "sample (temperature, top_p) instead of greedy decoding"),
    "temperature": Field(NUMBER, "do_sample: softmax temperature", positive, "a positive number"),
    "top_p": Field(NUMBER, "do_sample: nucleus mass", between(0, 1, lo_open=True), "a number in (0, 1]"),
    "backend": Field(str, "hf (transformers generate) or vllm (optional extra)", choices=("hf", "vllm")),
    "predictions": Field(str, "score this predictions jsonl instead of generating (no model)", nullable=True),
    "aggregate": Field(str, "ROUGE: mean of per-example scores, or evaluate's bootstrap mid",
                       choices=("mean", "bootstrap")),
}
