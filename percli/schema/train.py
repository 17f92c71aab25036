"""`train` group (conf/train/default.yaml): optimisation, checkpoints and resumption."""

from __future__ import annotations

from percli.schema.field import NUMBER, Field, between, non_negative, positive

GROUP = "train"
FIELDS: dict[str, Field] = {
    "epochs": Field(NUMBER, "passes over the train split (fractions allowed)", positive, "a positive number"),
    "max_steps": Field(int, "optimizer steps; overrides epochs when set", positive,
                       "a positive integer or null", nullable=True),
    "lr": Field(NUMBER, "peak learning rate (AdamW)", positive, "a positive number such as 1e-5"),
    "weight_decay": Field(NUMBER, "AdamW weight decay (never on biases and norm weights)", non_negative,
                          "a non-negative number"),
    "warmup_ratio": Field(NUMBER, "linear warm-up over ceil(warmup_ratio x steps), then lr_scheduler",
                          between(0, 1, hi_open=True), "a number in [0, 1)"),
    "lr_scheduler": Field(str, "learning-rate decay after warm-up", choices=("cosine", "linear", "constant")),
    "batch_size": Field(int, "per-process micro-batch; global batch = batch_size x grad_accum x processes",
                        positive, "a positive integer"),
    "grad_accum": Field(int, "micro-batches per optimizer step", positive, "a positive integer"),
    "max_grad_norm": Field(NUMBER, "gradient clipping norm (null: no clipping; the norm is still logged)",
                           positive, "a positive number", nullable=True),
    "save_every": Field(int, "resumable checkpoint every N optimizer steps (checkpoints/step-N)", positive,
                        "a positive integer"),
    "save_every_minutes": Field(NUMBER, "also a resumable checkpoint every N minutes of training (null: by steps only)",
                                positive, "a positive number of minutes or null", nullable=True),
    "keep_last": Field(int, "step checkpoints kept (checkpoints/final is always written)", positive,
                       "a positive integer"),
    "max_bad_steps": Field(int, "consecutive non-finite steps (skipped) before the run checkpoints and stops",
                           positive, "a positive integer"),
    "resume": Field(str, "null, auto (newest checkpoint in hydra.run.dir) or a checkpoint path",
                    expect="null, auto or a checkpoint path", nullable=True),
    "log_every": Field(int, "W&B / progress-bar period in steps (train_log.jsonl has every step)", positive,
                       "a positive integer"),
}
