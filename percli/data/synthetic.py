"""Seeded LongLaMP-schema records with planted personal names, for all three tasks, offline.

Each user owns a few people, each with a full name ("Ethan Brooks"): the friend who recommended a product,
the collaborator whose method a paper builds on. They appear in most of the user's profile items (main text)
and in every target, inside otherwise generic, fluent English in the task's style. A pretrained LM can then
only predict those target tokens well when it sees the profile, which makes them a known ground truth for
PIR: the truth records give each planted name's exact character span in `output`.

Why full names in name slots ("a friend named {name}", "introduced by {name}"): a name is expected there
with or without a profile, so another user's profile says nothing about which name comes. The first design,
invented words ("zorbleck") after "my", failed the shuffled-profile control: any profile full of nonce words
taught the model that nonce words come next, so another user's profile still raised the planted tokens'
PIR (SmolLM2-135M review AUC 0.725 under the control). Rare real nouns (0.70), ordinary nouns (0.66) and
first names after "my sister" (0.68) failed the same way (48-example probes). Full names where a name is due
bring the control to 0.50 (review, 96 examples) while the own-profile AUC stays at 0.90. Given names and
surnames are dealt from two pools, so no two of the first 24 users share a given name or a surname, and
no full name is given twice. The official prompt lower-cases profile text (Contriever's tokenizer round
trip), so the model has to copy "ethan brooks" into "Ethan Brooks".

Generic sentences come from a combinatorial grammar with many templates (percli/data/synthetic_text.py), so
a target never repeats a profile sentence verbatim: the profile helps on the planted names, not on the filler.
Measured AUCs are in the README ("PerContrast on real weights").

The two LongLaMP settings (`task.setting`):
- user (default): val and test belong to users never seen in training. Users 0..U-1 train
  (`examples_per_user` items each), the next `val_users` users are val, the next `test_users` test
  (`eval_examples_per_user` items each). A test user's full names never occur in training (given names
  and surnames recur in other pairings beyond 24 users), so memorising training users' names cannot
  produce them: only reading the profile can.
- temporal: every split has the same U users; a user's items are numbered in time order, train items first,
  then val, then test (the ids carry the item number), so val and test are each user's later items.
The train split is the same in both settings, and the same as before the settings existed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from percli.data.synthetic_text import DOCS, GIVEN, SURNAMES, Text, profile_item, target, user_id
from percli.errors import DataError
from percli.io import atomic_write_jsonl

SPLITS = ("train", "val", "test")
SETTINGS = ("user", "temporal")
USER_FIELD = {"review": "reviewerId", "abstract": "name", "topic": "author"}
WORDS_PER_USER = 3


@dataclass
class SyntheticRecord:
    """A hub-schema record plus its truth: the user's planted words and their spans in `output`."""

    id: str
    record: dict[str, Any]
    planted_words: list[str]
    spans: list[dict[str, Any]]

    def truth(self) -> dict[str, Any]:
        return {"id": self.id, "user_id": _user_of(self.record), "planted_words": self.planted_words,
                "spans": self.spans}


def planted_token_mask(offsets: Sequence[tuple[int, int]], spans: Sequence[dict]) -> list[bool]:
    """Per token (its char span in the text): whether it overlaps a planted word's truth span (zero-width tokens,
    the eos, never do)."""
    return [e > s and any(s < sp["end"] and e > sp["start"] for sp in spans) for s, e in offsets]


def _user_of(record: dict[str, Any]) -> str:
    return next(str(record[f]) for f in USER_FIELD.values() if f in record)


def personal_names(task: str, seed: int, num_users: int) -> list[list[str]]:
    """WORDS_PER_USER full names per user, no full name given to two users.

    Both pools are shuffled per (task, seed) and dealt in turn, so a user's names share no given name or
    surname, and the first 24 users share none with each other either (72 of each pool dealt). User u's
    names do not depend on num_users, so adding held-out users leaves the training users' names alone."""
    capacity = math.lcm(len(GIVEN), len(SURNAMES)) // WORDS_PER_USER
    if num_users > capacity:
        raise DataError(f"{num_users} synthetic users: the name pools give at most {capacity} users distinct "
                        "personal names; lower data.num_users, data.val_users or data.test_users")
    rng = random.Random(f"percli-synthetic|{task}|{seed}|names")
    given, surnames = rng.sample(GIVEN, len(GIVEN)), rng.sample(SURNAMES, len(SURNAMES))
    names = [f"{given[i % len(given)]} {surnames[i % len(surnames)]}" for i in range(num_users * WORDS_PER_USER)]
    return [names[u * WORDS_PER_USER:(u + 1) * WORDS_PER_USER] for u in range(num_users)]


@dataclass(frozen=True)
class Layout:
    """Which users and item numbers make up each split, for one setting."""

    setting: str
    num_users: int
    examples_per_user: int
    val_users: int
    test_users: int
    eval_examples_per_user: int

    @property
    def total_users(self) -> int:
        return self.num_users + (self.val_users + self.test_users if self.setting == "user" else 0)

    def users(self, split: str) -> range:
        if split == "train" or self.setting == "temporal":
            return range(self.num_users)
        if split == "val":
            return range(self.num_users, self.num_users + self.val_users)
        first = self.num_users + self.val_users
        return range(first, first + self.test_users)

    def items(self, split: str) -> range:
        """Item numbers (a user's items in time order) of `split`: temporal val/test follow the train items."""
        if split == "train":
            return range(self.examples_per_user)
        if self.setting == "user":
            return range(self.eval_examples_per_user)
        first = self.examples_per_user + (0 if split == "val" else self.eval_examples_per_user)
        return range(first, first + self.eval_examples_per_user)


def make_layout(setting: str, *, num_users: int, examples_per_user: int, val_users: int | None = None,
                test_users: int | None = None, eval_examples_per_user: int | None = None) -> Layout:
    """A Layout; val_users and test_users default to num_users (they matter in the user setting only),
    eval_examples_per_user to max(1, examples_per_user // 2)."""
    if setting not in SETTINGS:
        raise DataError(f"task.setting={setting!r} is not a synthetic setting; choose one of: {', '.join(SETTINGS)}")
    return Layout(setting, num_users, examples_per_user, num_users if val_users is None else val_users,
                  num_users if test_users is None else test_users,
                  max(1, examples_per_user // 2) if eval_examples_per_user is None else eval_examples_per_user)


def generate(task: str, split: str, *, num_users: int, examples_per_user: int, profile_size: int, seed: int,
             setting: str = "user", val_users: int | None = None, test_users: int | None = None,
             eval_examples_per_user: int | None = None) -> list[SyntheticRecord]:
    """Records of one split in one setting (module docstring). Deterministic in (task, seed); every user and
    every item has its own RNG stream, so a user's profile and items do not depend on the split sizes."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    if task not in DOCS:
        raise ValueError(f"task {task!r} is not one of {tuple(DOCS)}")
    layout = make_layout(setting, num_users=num_users, examples_per_user=examples_per_user, val_users=val_users,
                         test_users=test_users, eval_examples_per_user=eval_examples_per_user)
    names = personal_names(task, seed, layout.total_users)
    records: list[SyntheticRecord] = []
    for u in layout.users(split):
        words = names[u]
        user_rng = random.Random(f"percli-synthetic|{task}|{seed}|user{u}")
        user = user_id(task, user_rng, u)
        # Item j names two of the three words, so any two items together name all three.
        profile = [profile_item(task, user_rng, [words[j % 3], words[(j + 1) % 3]], user, j)
                   for j in range(profile_size)]
        for e, item in enumerate(layout.items(split)):
            rng = random.Random(f"percli-synthetic|{task}|{seed}|user{u}|{split}|{e}")
            used = rng.sample(words, rng.choice((2, 3)))
            inp, text = target(task, rng, used, user)
            records.append(_record(task, f"{task}-{split}-u{u:03d}-{item}", user, inp, text, profile, words))
    return records


def _record(task: str, ex_id: str, user: str, inp: str, text: Text, profile: list[dict[str, Any]],
            words: list[str]) -> SyntheticRecord:
    record = {"id": ex_id, USER_FIELD[task]: user, "input": inp, "output": text.text(),
              "profile": [dict(p) for p in profile]}
    return SyntheticRecord(ex_id, record, list(words), text.spans)


def write_dataset(task: str, out_dir: str | Path, *, num_users: int, examples_per_user: int,
                  profile_size: int, seed: int, setting: str = "user", val_users: int | None = None,
                  test_users: int | None = None, eval_examples_per_user: int | None = None) -> Path:
    """All splits as `{split}.jsonl` (a `data.source=local` directory) plus `{split}.truth.jsonl`."""
    out_dir = Path(out_dir)
    for split in SPLITS:
        recs = generate(task, split, num_users=num_users, examples_per_user=examples_per_user,
                        profile_size=profile_size, seed=seed, setting=setting, val_users=val_users,
                        test_users=test_users, eval_examples_per_user=eval_examples_per_user)
        atomic_write_jsonl(out_dir / f"{split}.jsonl", [r.record for r in recs])
        atomic_write_jsonl(out_dir / f"{split}.truth.jsonl", [r.truth() for r in recs])
    return out_dir
