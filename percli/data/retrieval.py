"""Top-k profile retrieval as the official LongLaMP code does it: bm25 | contriever | minilm | random | recency.
`retriever.k=0` gives no profile at all (the prompt is the input alone).

Corpus and query strings per task follow TEMPLATE.md. Results (item indices per example) are cached on
disk under `<cache_dir>/retrieval/`, keyed by a fingerprint of the data and the retriever config, so a
sweep over losses or learning rates retrieves once.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from rank_bm25 import BM25Okapi

from percli.data.example import Example
from percli.errors import ConfigError
from percli.io import atomic_write_json

CACHE_VERSION = 1


def corpus_strings(task: str, profile: Sequence[dict]) -> list[str]:
    if task == "review":
        return [f'{p["overall"]} {p["summary"]} {p["description"]} {p["reviewText"]}' for p in profile]
    if task == "abstract":
        return [f'{p["title"]} {p["abstract"]}' for p in profile]
    return [f'{p["summary"]} {p["content"]}' for p in profile]


def query_string(task: str, input: str) -> str:
    """Abstract: the text after the first 'items:'; review and topic: the whole input.

    The official code has no query for an abstract input without 'items:' (it would crash); the whole
    input is the natural fallback.
    """
    if task == "abstract":
        at = input.find("items:")
        if at != -1:
            return input[at + len("items:"):].strip()
    return input


# ------------------------------------------------------------------------------------------- rankers
def bm25_rank(corpus: Sequence[str], query: str, k: int) -> list[int]:
    """`BM25Okapi(...).get_top_n` on whitespace tokens, returning indices."""
    docs = [c.split() for c in corpus]
    if not any(docs):  # BM25Okapi divides by the mean document length
        return list(range(len(corpus)))[:k]
    scores = BM25Okapi(docs).get_scores(query.split())
    return [int(i) for i in np.argsort(scores)[::-1][:k]]


def random_rank(n: int, k: int, seed: int, example_id: str) -> list[int]:
    """`random.choices(profile, k=k)` (with replacement), seeded per example so subsets draw the same."""
    if n == 0:
        return []
    return random.Random(f"{seed}|{example_id}").choices(range(n), k=k)


def recency_rank(n: int, k: int) -> list[int]:
    """`profile[-k:][::-1]`: the newest k items, newest first."""
    return list(range(n))[-k:][::-1]


# ------------------------------------------------------------------------------------------- entry point
def fingerprint(examples: Sequence[Example], task: str, retriever_cfg: DictConfig) -> str:
    """A hash of everything the result depends on: the queries, the corpora and the retriever config."""
    h = hashlib.sha256()
    config = OmegaConf.to_container(retriever_cfg, resolve=True)
    h.update(json.dumps({"v": CACHE_VERSION, "task": task, "retriever": config}, sort_keys=True).encode())
    for ex in examples:
        h.update(json.dumps([ex.id, query_string(task, ex.input), corpus_strings(task, ex.profile)]).encode())
    return h.hexdigest()[:32]


def _bm25(examples: Sequence[Example], task: str, cfg: DictConfig) -> list[list[int]]:
    return [bm25_rank(corpus_strings(task, ex.profile), query_string(task, ex.input), int(cfg.k)) if ex.profile
            else [] for ex in examples]


def _random(examples: Sequence[Example], task: str, cfg: DictConfig) -> list[list[int]]:
    return [random_rank(len(ex.profile), int(cfg.k), int(cfg.seed), ex.id) for ex in examples]


def _recency(examples: Sequence[Example], task: str, cfg: DictConfig) -> list[list[int]]:
    return [recency_rank(len(ex.profile), int(cfg.k)) for ex in examples]


def _dense(examples: Sequence[Example], task: str, cfg: DictConfig) -> list[list[int]]:
    # torch + transformers take seconds to import; only the dense retrievers need them.
    from percli.data.dense import DenseRetriever, dense_model_dir

    dense = DenseRetriever(dense_model_dir(cfg), batch_size=int(cfg.batch_size), max_length=int(cfg.max_length),
                           normalize=bool(cfg.normalize))
    return dense.rank_many([query_string(task, ex.input) for ex in examples],
                           [corpus_strings(task, ex.profile) for ex in examples], int(cfg.k))


# retriever.name -> top-k item indices of every example, best first.
RETRIEVERS: dict[str, Callable[[Sequence[Example], str, DictConfig], list[list[int]]]] = {
    "bm25": _bm25, "contriever": _dense, "minilm": _dense, "random": _random, "recency": _recency,
}


def retrieve(examples: Sequence[Example], task: str, retriever_cfg: DictConfig,
             cache_dir: Path | None = None) -> list[list[int]]:
    """Indices of each example's retrieved profile items, best first; cached when `cache_dir` is given.

    `retriever.k=0` retrieves nothing: every prompt is the input alone, the profile-free prompt (LongLaMP's
    non-personalised baseline), whatever the retriever."""
    if int(retriever_cfg.k) == 0:
        return [[] for _ in examples]
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "retrieval" / f"{task}-{retriever_cfg.name}-{fingerprint(examples, task, retriever_cfg)}.json"
        if path.exists():
            try:
                cached: Any = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(cached, list) and len(cached) == len(examples):
                    return cached
            except (OSError, json.JSONDecodeError):
                pass  # a damaged cache entry is recomputed and overwritten
    if retriever_cfg.name not in RETRIEVERS:
        raise ConfigError(f"retriever.name={retriever_cfg.name!r} is not a known retriever; choose one of: "
                          f"{', '.join(RETRIEVERS)}")
    result = RETRIEVERS[retriever_cfg.name](examples, task, retriever_cfg)
    if path is not None:
        atomic_write_json(path, result)
    return result
