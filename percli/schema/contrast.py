"""`contrast` group (conf/contrast.yaml): `percli contrast` token scoring and its HTML page."""

from __future__ import annotations

from percli.schema.field import Field, non_negative, positive

GROUP = "contrast"
FIELDS: dict[str, Field] = {
    "max_examples": Field(int, "score the first N examples of data.split (null: all)", positive,
                          "a positive integer or null", nullable=True),
    "batch_size": Field(int, "examples per forward pair", positive, "a positive integer"),
    "html_max_examples": Field(int, "contrast.html shows the first N examples (contrast.jsonl has all)",
                               non_negative, "a non-negative integer"),
    "shuffle_profiles": Field(bool, "control: each user gets another user's profile (seeded derangement)"),
}
