"""`data` group (conf/data/*.yaml): where examples come from, how many, and the token budgets."""

from __future__ import annotations

from collections.abc import Iterable

from percli.schema.field import Field, non_negative, positive

GROUP = "data"


def _sources() -> Iterable[str]:
    # Function-local: percli.data.longlamp loads the data stack, which a config error need not wait for.
    from percli.data.longlamp import SOURCES

    return SOURCES

FIELDS: dict[str, Field] = {
    "source": Field(str, "synthetic: offline generator; local: files at data.path; hub: LongLaMP on the HF hub",
                    choices=_sources),
    "path": Field(str, "data=local: a dir of {split}.jsonl/.json/.parquet, or one such file", nullable=True),
    "split": Field(str, "the split train/contrast/data read", expect="a split name such as train, val or test"),
    "max_examples": Field(int, "keep a seeded random N of the training split, data.split (null: all)",
                          positive, "a positive integer or null", nullable=True),
    "seed": Field(int, "seed of the synthetic generator and of max_examples subsampling",
                  non_negative, "a non-negative integer"),
    "num_users": Field(int, "synthetic: number of training users (temporal setting: of all splits)", positive,
                       "a positive integer"),
    "examples_per_user": Field(int, "synthetic: train examples per user", positive, "a positive integer"),
    "val_users": Field(int, "synthetic, user setting: users of the val split, never seen in training (null: "
                       "num_users)", positive, "a positive integer or null (= data.num_users)", nullable=True),
    "test_users": Field(int, "synthetic, user setting: users of the test split, never seen in training (null: "
                        "num_users)", positive, "a positive integer or null (= data.num_users)", nullable=True),
    "eval_examples_per_user": Field(int, "synthetic: val/test examples per user (null: examples_per_user // 2, "
                                    "at least 1)", positive,
                                    "a positive integer or null (= max(1, data.examples_per_user // 2))",
                                    nullable=True),
    "profile_size": Field(int, "synthetic: profile items per user", positive, "a positive integer"),
    "max_prompt_tokens": Field(int, "prompt budget: retrieved items are cut first, then the example is dropped",
                               positive, "a positive integer"),
    "max_response_tokens": Field(int, "target responses are cut at this many tokens", positive,
                                 "a positive integer"),
    "group_by_length": Field(bool, "batch examples of similar length together (less padding)"),
}
