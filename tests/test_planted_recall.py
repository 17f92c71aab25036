"""Planted recall counts only the names the reference itself contains within the generation length."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from percli.evaluation import metric_rows
from percli.metrics import names_in, names_within, planted_recall
from percli.models import load_tokenizer

NAMES = ["Ethan Brooks", "Nora Vance", "Lucas Thorne"]
# Names two of the user's three people, as a synthetic target does (2 or 3 of 3).
REFERENCE = "A friend named Ethan Brooks told me about it. Nora Vance agreed that the lid is sturdy."


def test_a_generation_equal_to_its_reference_has_recall_one() -> None:
    assert planted_recall(REFERENCE, REFERENCE, NAMES) == 1.0    # the old rule gave 2/3: Lucas Thorne is not in it
    assert planted_recall("Nora Vance agreed.", REFERENCE, NAMES) == 0.5
    assert planted_recall("Lucas Thorne agreed.", REFERENCE, NAMES) == 0.0   # a name the reference lacks
    assert planted_recall(REFERENCE, "No names here.", NAMES) is None         # nothing to recall: not counted
    assert names_in("ethan brooks, NORA VANCE", NAMES) == ["Ethan Brooks", "Nora Vance"]


def test_score_rows_averages_over_references_that_name_someone() -> None:
    rows = [{"id": "a", "prediction": REFERENCE, "reference": REFERENCE, "planted_words": NAMES},
            {"id": "b", "prediction": "Nora Vance.", "reference": REFERENCE, "planted_words": NAMES},
            {"id": "c", "prediction": "x", "reference": "No names here.", "planted_words": NAMES}]
    res, per_example = metric_rows(rows, "mean", 0)
    assert res["planted_recall"] == pytest.approx(0.75) and res["planted_examples"] == 2
    assert [e.get("planted_recall") for e in per_example] == [1.0, 0.5, None]


def test_names_beyond_the_generation_length_do_not_count() -> None:
    tok = load_tokenizer(OmegaConf.create({"name": "tiny", "source": "tiny", "path": None}))
    ids = tok(REFERENCE, add_special_tokens=False)["input_ids"]
    cut = len(tok(REFERENCE.split(" Nora")[0], add_special_tokens=False)["input_ids"])
    assert 0 < cut < len(ids)
    assert names_within(REFERENCE, NAMES, tok, cut) == ["Ethan Brooks"]
    assert names_within(REFERENCE, NAMES, tok, len(ids)) == ["Ethan Brooks", "Nora Vance"]
