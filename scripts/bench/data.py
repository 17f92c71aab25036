"""LongLaMP product-review records of chosen lengths, built from the synthetic generator's text.

Every record has k=4 profile items of `profile_item_words` words and a response of `response_words`
words, so a run can hold the query and response fixed and vary only the profile (the profile-free
share r), or grow the response. The percli pipeline (BM25 retrieval, the LongLaMP prompt, the chat
template) turns them into token pairs exactly as `percli train` does.
"""

from __future__ import annotations

from pathlib import Path

from percli.data.synthetic import generate
from percli.io import atomic_write_jsonl
from scripts.bench.subject import bench_cfg, encode, shape

PROFILE_ITEMS = 4


def _words(texts: list[str], n: int) -> str:
    pool = " ".join(texts).split()
    while len(pool) < n:
        pool += pool
    return " ".join(pool[:n])


def write_review_data(out_dir: Path, *, profile_item_words: int, response_words: int, n_examples: int = 1) -> Path:
    """`n_examples` review records as train.jsonl and test.jsonl in `out_dir`; returns `out_dir`."""
    recs = [r.record for r in generate("review", "train", num_users=max(n_examples, 2), examples_per_user=4,
                                       profile_size=16, seed=0)]
    by_user: dict[str, list[dict]] = {}
    for r in recs:
        by_user.setdefault(r["reviewerId"], []).append(r)
    rows = []
    for user, user_recs in list(by_user.items())[:n_examples]:
        first, items = user_recs[0], user_recs[0]["profile"]
        profile = []
        for j in range(PROFILE_ITEMS):
            item = dict(items[j])
            item["reviewText"] = _words([it["reviewText"] for it in items[j * 4:(j + 1) * 4]], profile_item_words)
            profile.append(item)
        rows.append({"id": first["id"], "reviewerId": user, "input": first["input"],
                     "output": _words([r["output"] for r in user_recs], response_words), "profile": profile})
    atomic_write_jsonl(out_dir / "train.jsonl", rows)
    atomic_write_jsonl(out_dir / "test.jsonl", rows)
    return out_dir


def profile_words_for(r: float, out_dir: Path, *, response_words: int, model: str = "smollm2-135m") -> int:
    """Words per profile item that make profile-free length / full length about `r` for this response length.

    Token counts are linear in the profile's words; two encodings through percli's pipeline fix the line.
    """
    lo, hi = 20, 400
    full = {}
    for words in (lo, hi):
        data = write_review_data(out_dir / f"calibrate-{words}", profile_item_words=words, response_words=response_words)
        s = shape(encode(bench_cfg(data, model=model))[0])
        full[words], free = s["full"], s["free"]
    per_word = (full[hi] - full[lo]) / (hi - lo)
    return max(1, round(lo + (free / r - full[lo]) / per_word))
