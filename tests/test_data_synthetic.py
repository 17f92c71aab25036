"""The synthetic generator: determinism, schema, planted words and their truth spans."""

from __future__ import annotations

import re

import pytest

from percli.data.prompts import TEMPLATE_FIELDS, contriever_tokenizer, decode_main_text
from percli.data.synthetic import USER_FIELD, generate

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
    assert len(recs) == 5 * 2  # val/test: max(1, examples_per_user // 2) per user
    for r in recs:
        rec = r.record
        assert set(rec) == {"id", USER_FIELD[task], "input", "output", "profile"}
        assert len(rec["profile"]) == 6
        for item in rec["profile"]:
            assert set(TEMPLATE_FIELDS[task]) <= set(item)
        main = TEMPLATE_FIELDS[task][0]
        for w in r.planted_words:
            # each word is in at least a third of the items, and survives the Contriever decode
            assert sum(w in it[main] for it in rec["profile"]) >= 2
            assert all(w in decode_main_text(task, it[main]) for it in rec["profile"] if w in it[main])
        assert re.fullmatch(r"[a-z]{6,12}", r.planted_words[0])
        assert r.planted_words[0] not in contriever_tokenizer().vocab


def test_generation_is_deterministic_and_users_are_shared_across_splits() -> None:
    a = generate("review", "train", **KW)
    b = generate("review", "train", **KW)
    assert [r.record for r in a] == [r.record for r in b]
    c = generate("review", "train", **{**KW, "seed": 4})
    assert [r.record["output"] for r in a] != [r.record["output"] for r in c]
    test = generate("review", "test", **KW)
    assert {r.record["reviewerId"] for r in test} == {r.record["reviewerId"] for r in a}
    assert {r.record["output"] for r in test}.isdisjoint({r.record["output"] for r in a})
    words = [tuple(r.planted_words) for r in a[::4]]
    assert len({w for ws in words for w in ws}) == 5 * 3  # no word shared between users


def test_targets_never_repeat_a_profile_sentence() -> None:
    # Only the planted words should carry over from the profile: generic sentences come from disjoint pools.
    for task in ("review", "abstract", "topic"):
        for r in generate(task, "train", **KW):
            main = TEMPLATE_FIELDS[task][0]
            profile_sentences = {s for it in r.record["profile"] for s in it[main].split(". ")}
            assert not profile_sentences & set(r.record["output"].split(". "))
