"""The synthetic generator: determinism, schema, planted words and their truth spans."""

from __future__ import annotations

import re

import pytest

from percli.data.prompts import TEMPLATE_FIELDS, decode_main_text
from percli.data.synthetic import USER_FIELD, generate, personal_names
from percli.errors import DataError

KW = {"num_users": 5, "examples_per_user": 4, "profile_size": 6, "seed": 3}


@pytest.mark.parametrize("task", ["review", "abstract", "topic"])
def test_truth_spans_index_the_planted_words_exactly(task: str) -> None:
    recs = generate(task, "train", **KW)
    assert len(recs) == 5 * 4
    for r in recs:
        out = r.record["output"]
        assert len(r.spans) >= 2
        for s in r.spans:
            assert out[s["start"]:s["end"]] == s["word"]
            assert s["word"] in r.planted_words
            # a whole word: not glued to letters on either side
            assert not out[s["start"] - 1].isalpha() and not out[s["end"]].isalpha()
        # every occurrence of a planted word in the target is listed
        found = sorted((m.start(), m.group()) for w in r.planted_words for m in re.finditer(rf"\b{w}\b", out))
        assert found == sorted((s["start"], s["word"]) for s in r.spans)


@pytest.mark.parametrize("task", ["review", "abstract", "topic"])
def test_records_follow_the_longlamp_schema_and_profiles_carry_the_words(task: str) -> None:
    recs = generate(task, "test", **KW)
    assert len(recs) == 5 * 2  # 5 held-out users (test_users defaults to num_users), 4 // 2 items each
    for r in recs:
        rec = r.record
        assert set(rec) == {"id", USER_FIELD[task], "input", "output", "profile"}
        assert len(rec["profile"]) == 6
        for item in rec["profile"]:
            assert set(TEMPLATE_FIELDS[task]) <= set(item)
        main = TEMPLATE_FIELDS[task][0]
        for w in r.planted_words:
            # each name is in at least a third of the items, and survives the Contriever decode lower-cased
            assert sum(w in it[main] for it in rec["profile"]) >= 2
            assert all(w.lower() in decode_main_text(task, it[main]) for it in rec["profile"] if w in it[main])
            assert re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", w)


def test_generation_is_deterministic_and_seeded() -> None:
    a = generate("review", "train", **KW)
    b = generate("review", "train", **KW)
    assert [r.record for r in a] == [r.record for r in b]
    c = generate("review", "train", **{**KW, "seed": 4})
    assert [r.record["output"] for r in a] != [r.record["output"] for r in c]
    words = [tuple(r.planted_words) for r in a[::4]]
    assert len({w for ws in words for w in ws}) == 5 * 3  # no name shared between users


def _users(records: list) -> set[str]:
    return {r.truth()["user_id"] for r in records}


@pytest.mark.parametrize("task", ["review", "abstract", "topic"])
def test_user_setting_holds_out_users_never_seen_in_training(task: str) -> None:
    kw = {**KW, "val_users": 2, "test_users": 3, "eval_examples_per_user": 1}
    split = {s: generate(task, s, setting="user", **kw) for s in ("train", "val", "test")}
    assert [len(split[s]) for s in ("train", "val", "test")] == [5 * 4, 2, 3]
    train, val, test = (_users(split[s]) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (5, 2, 3)
    assert train.isdisjoint(val) and train.isdisjoint(test) and val.isdisjoint(test)
    # the held-out users' names are theirs alone: no training user was planted with them
    train_names = {w for r in split["train"] for w in r.planted_words}
    assert train_names.isdisjoint(w for s in ("val", "test") for r in split[s] for w in r.planted_words)
    assert [r.id for r in split["test"]] == [f"{task}-test-u{u:03d}-0" for u in (7, 8, 9)]
    for r in split["val"] + split["test"]:
        out = r.record["output"]
        assert len(r.spans) >= 2
        assert all(out[s["start"]:s["end"]] == s["word"] and s["word"] in r.planted_words for s in r.spans)


@pytest.mark.parametrize("task", ["review", "abstract", "topic"])
def test_temporal_setting_holds_out_the_same_users_later_items(task: str) -> None:
    kw = {**KW, "eval_examples_per_user": 2}
    split = {s: generate(task, s, setting="temporal", **kw) for s in ("train", "val", "test")}
    assert [len(split[s]) for s in ("train", "val", "test")] == [5 * 4, 5 * 2, 5 * 2]
    assert _users(split["train"]) == _users(split["val"]) == _users(split["test"])
    # item numbers in time order: train 0-3, val 4-5, test 6-7, for every user
    numbers = {s: {int(r.id.rsplit("-", 1)[1]) for r in split[s]} for s in split}
    assert numbers == {"train": {0, 1, 2, 3}, "val": {4, 5}, "test": {6, 7}}
    outputs = {s: {r.record["output"] for r in split[s]} for s in split}
    assert outputs["test"].isdisjoint(outputs["train"]) and outputs["test"].isdisjoint(outputs["val"])
    by_user = {r.truth()["user_id"]: r for r in split["train"]}
    for r in split["test"]:
        same = by_user[r.truth()["user_id"]]
        assert r.planted_words == same.planted_words and r.record["profile"] == same.record["profile"]
        out = r.record["output"]
        assert all(out[s["start"]:s["end"]] == s["word"] for s in r.spans) and len(r.spans) >= 2


def test_train_split_is_the_same_in_both_settings_and_for_any_eval_size() -> None:
    train = [r.record for r in generate("topic", "train", **KW)]
    assert [r.record for r in generate("topic", "train", setting="temporal", **KW)] == train
    assert [r.record for r in generate("topic", "train", val_users=40, test_users=9, **KW)] == train


def test_unknown_setting_is_one_clear_error() -> None:
    with pytest.raises(DataError, match="task.setting='later' is not a synthetic setting; choose one of: user, "
                                        "temporal"):
        generate("review", "test", setting="later", **KW)


def test_personal_names_share_no_piece_between_default_users_and_never_repeat() -> None:
    users = personal_names("review", 0, 24)  # the default data.num_users
    given = [n.split()[0] for names in users for n in names]
    surnames = [n.split()[1] for names in users for n in names]
    assert len(set(given)) == len(set(surnames)) == 72  # no given name nor surname shared by two users
    many = [n for names in personal_names("topic", 1, 2409) for n in names]
    assert len(set(many)) == len(many) == 3 * 2409  # full names stay unique up to lcm(99, 73) // 3 users
    with pytest.raises(DataError, match="2410 synthetic users: .* at most 2409 users"):
        personal_names("topic", 1, 2410)


def test_targets_never_repeat_a_profile_sentence() -> None:
    # Only the planted words should carry over from the profile: generic sentences come from disjoint pools.
    for task in ("review", "abstract", "topic"):
        for r in generate(task, "train", **KW):
            main = TEMPLATE_FIELDS[task][0]
            profile_sentences = {s for it in r.record["profile"] for s in it[main].split(". ")}
            assert not profile_sentences & set(r.record["output"].split(". "))
