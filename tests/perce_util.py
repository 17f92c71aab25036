"""Hand-built paired batches and a small random Qwen3 for the PerCE core tests (no data layer needed)."""

from __future__ import annotations

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

VOCAB = 97
PAD = 0


def small_lm(seed: int = 0, vocab: int = VOCAB, hidden: int = 32) -> Qwen3ForCausalLM:
    config = Qwen3Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=True,
                         pad_token_id=PAD, bos_token_id=None, eos_token_id=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Qwen3ForCausalLM(config).eval()


def make_pairs(n: int, seed: int = 0) -> list[dict]:
    """n examples: full prompt (profile + query), free prompt (query), and a response, of varied lengths."""
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for i in range(n):
        query = torch.randint(2, VOCAB, (2 + i % 3,), generator=g)
        profile = torch.randint(2, VOCAB, (3 + (2 * i) % 5,), generator=g)
        response = torch.randint(2, VOCAB, (2 + (3 * i) % 4,), generator=g)
        pairs.append({"full": torch.cat([profile, query]), "free": query, "response": response, "index": i})
    return pairs


def _stream(prompts: list[torch.Tensor], responses: list[torch.Tensor], side: str):
    length = max(len(p) + len(r) for p, r in zip(prompts, responses))
    ids = torch.full((len(prompts), length), PAD, dtype=torch.long)
    att = torch.zeros_like(ids)
    lab = torch.full_like(ids, -100)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        seq = torch.cat([p, r])
        off = 0 if side == "right" else length - len(seq)
        ids[b, off:off + len(seq)] = seq
        att[b, off:off + len(seq)] = 1
        lab[b, off + len(p):off + len(seq)] = r
    return ids, att, lab


def collate(pairs: list[dict], side: str = "right") -> dict:
    """The PairCollator batch layout: full_*/free_* [B, T], ids, index."""
    batch = {}
    for stream in ("full", "free"):
        ids, att, lab = _stream([p[stream] for p in pairs], [p["response"] for p in pairs], side)
        batch.update({f"{stream}_input_ids": ids, f"{stream}_attention_mask": att, f"{stream}_labels": lab})
    batch["ids"] = [f"ex{p['index']}" for p in pairs]
    batch["index"] = torch.tensor([p["index"] for p in pairs])
    return batch


def brute_logprobs(model, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """Reference: one unpadded example, full [T, V] fp32 logits, log_softmax, pick the response ids."""
    with torch.no_grad():
        logits = model(torch.cat([prompt, response])[None]).logits[0].float()
    logp = logits.log_softmax(-1)
    return logp[len(prompt) - 1 + torch.arange(len(response)), response]
