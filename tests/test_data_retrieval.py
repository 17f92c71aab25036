"""Retrievers: official corpus/query strings, bm25, random, recency, the dense (MiniLM) path and the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import composed
from omegaconf import OmegaConf

from percli.data import dense, retrieval
from percli.data.collate import fit_profile
from percli.data.dense import DenseRetriever
from percli.data.example import Example
from percli.data.longlamp import load_examples
from percli.data.retrieval import (
    bm25_rank,
    corpus_strings,
    query_string,
    random_rank,
    recency_rank,
    retrieve,
)


def test_corpus_and_query_strings_per_task() -> None:
    assert corpus_strings("review", [{"overall": 5.0, "summary": "S", "description": "D", "reviewText": "R"}]) == \
        ["5.0 S D R"]
    assert corpus_strings("abstract", [{"title": "T", "abstract": "A", "year": 1}]) == ["T A"]
    assert corpus_strings("topic", [{"summary": "S", "content": "C"}]) == ["S C"]
    assert query_string("abstract", 'Generate an abstract for "X" using the following items: 1. a items: b ') == \
        "1. a items: b"
    assert query_string("abstract", "no list here") == "no list here"
    assert query_string("review", " whole input ") == " whole input "


def test_bm25_matches_rank_bm25_get_top_n() -> None:
    from rank_bm25 import BM25Okapi

    corpus = ["the kettle boils water fast", "a red bicycle with gears", "kettle kettle handle broke",
              "water bottle keeps water cold", "bicycle light"]
    query = "kettle water"
    expected = BM25Okapi([c.split() for c in corpus]).get_top_n(query.split(), corpus, n=3)
    assert [corpus[i] for i in bm25_rank(corpus, query, 3)] == expected
    assert bm25_rank(corpus, query, 3)[0] in (0, 2, 3)
    assert bm25_rank(["", ""], "x", 4) == [0, 1]  # all-empty documents: no division by zero


def test_random_is_seeded_with_replacement_and_recency_is_newest_first() -> None:
    a = random_rank(5, 8, seed=0, example_id="e1")
    assert a == random_rank(5, 8, seed=0, example_id="e1") and len(a) == 8  # choices: with replacement
    assert a != random_rank(5, 8, seed=1, example_id="e1")
    assert random_rank(0, 4, seed=0, example_id="e1") == []
    assert recency_rank(6, 4) == [5, 4, 3, 2]
    assert recency_rank(2, 4) == [1, 0]


def test_minilm_ranks_the_same_topic_item_first() -> None:
    from percli.assets import minilm_dir

    dense = DenseRetriever(str(minilm_dir()), batch_size=2, max_length=256, normalize=True)
    corpus = [
        "My sourdough starter finally rose and the bread had a great crust.",
        "The stock market fell sharply after the interest rate announcement.",
        "Our team won the basketball game in overtime last night.",
        "I replaced the brake pads on my car and bled the hydraulic lines.",
    ]
    ranked = dense.rank_many(["How long should I proof bread dough before baking?",
                              "Which car parts wear out first?"], [corpus, corpus], k=4)
    assert ranked[0][0] == 0 and ranked[1][0] == 3
    assert sorted(ranked[0]) == [0, 1, 2, 3]
    # Batching and padding do not change the embeddings.
    one = dense.embed(corpus[:1])
    assert (dense.embed(corpus)[0] - one[0]).abs().max() < 1e-5


def _examples() -> list[Example]:
    items = [{"summary": f"s{i}", "content": f"post number {i} about cats" if i % 2 else f"post {i} on dogs"}
             for i in range(5)]
    return [Example("e1", "u", "topic", "tell me about cats", "out", items),
            Example("e2", "u", "topic", "dogs", "out", items[:2]),
            Example("e3", "v", "topic", "empty", "out", [])]


def test_retrieve_caches_by_data_and_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = OmegaConf.create({"name": "bm25", "k": 2})
    first = retrieve(_examples(), "topic", cfg, cache_dir=tmp_path)
    assert first[2] == [] and len(first[0]) == 2 and first[0][0] % 2 == 1  # a cats item first
    assert len(list((tmp_path / "retrieval").iterdir())) == 1

    def boom(*args, **kwargs):
        raise AssertionError("should have come from the cache")

    monkeypatch.setitem(retrieval.RETRIEVERS, "bm25", boom)
    assert retrieve(_examples(), "topic", cfg, cache_dir=tmp_path) == first
    monkeypatch.undo()
    retrieve(_examples(), "topic", OmegaConf.create({"name": "bm25", "k": 3}), cache_dir=tmp_path)
    changed = _examples()
    changed[0].profile[0] = {"summary": "s0", "content": "edited"}
    retrieve(changed, "topic", cfg, cache_dir=tmp_path)
    assert len(list((tmp_path / "retrieval").iterdir())) == 3


def test_contriever_offline_names_the_offline_alternatives(monkeypatch: pytest.MonkeyPatch) -> None:
    from percli.errors import EnvironmentProblem

    monkeypatch.setattr("percli.hub.hub_reachable", lambda timeout=3: False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = OmegaConf.create({"name": "contriever", "model_id": "facebook/contriever-not-cached"})
    with pytest.raises(EnvironmentProblem, match="use retriever=minilm .* or retriever=bm25"):
        dense.dense_model_dir(cfg)


def test_k0_renders_the_profile_free_prompt(tmp_path: Path) -> None:
    """retriever.k=0 (LongLaMP's non-personalised baseline): no item is retrieved, whatever the retriever (recency
    would otherwise slice profile[-0:], the whole profile), and the full prompt is the input alone."""
    item = {"summary": "Cafe", "content": "I ran 26 miles!"}
    rec = {"author": "u1", "input": "Generate the content for a reddit post X", "output": "Done.",
           "profile": [item, item]}
    (tmp_path / "test.jsonl").write_text(json.dumps(rec) + "\n", encoding="utf-8")
    prompts = {}
    for k in (0, 1):
        cfg = composed("data", "task=topic", "data=local", "retriever=recency", f"retriever.k={k}",
                       f"data.path={tmp_path}", "data.split=test", f"paths.cache_dir={tmp_path / 'cache'}")
        (ex,) = load_examples(cfg, "test")
        prompts[k] = fit_profile("topic", ex.input, ex.profile, 2048, str.split)[0]
    assert prompts[0] == "Generate the content for a reddit post X"
    assert prompts[1] == '"Cafe" is a summary for "i ran 26 miles!" . Following the given patterns, ' \
        "Generate the content for a reddit post X"
    assert retrieve([Example(id="e", user_id="u", task="topic", input="q", output="o", profile=[item] * 3)], "topic",
                    OmegaConf.create({"name": "recency", "k": 0})) == [[]]
