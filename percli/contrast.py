"""`percli contrast`: PerContrast's PIR for every response token -> contrast.jsonl, a heatmap, a summary.

The scoring itself is `percli.logprobs`, the weights `percli.losses`, the AUC `percli.statistics` and the page
`percli.report.heatmap`; this command picks the examples (optionally with the shuffled-profile control),
scores them in length-sorted batches, summarises how well PIR finds the planted personal tokens of
synthetic data, and shows where the loss's weight goes (`weight_shares`).
"""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from percli.batching import longest_first
from percli.data.collate import PairCollator, encode_examples
from percli.data.example import Example
from percli.data.longlamp import load_examples
from percli.data.synthetic import planted_token_mask
from percli.device import default_device
from percli.errors import DataError
from percli.io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from percli.log import log, result
from percli.logprobs import TokenScorer, contrast_batch
from percli.losses import LOSSES, clip_weights, raw_weights
from percli.models import load_model_and_tokenizer
from percli.names import BEFORE_A_NAME, FIRST_NAME_TOKEN, LATER_NAME_TOKENS, NAME_GROUPS
from percli.report.heatmap import render_html
from percli.statistics import auc


def shuffle_profiles(examples: list[Example], seed: int) -> list[Example]:
    """The control: every example gets the retrieved profile of an example of ANOTHER user.

    Users are permuted by a seeded random cyclic permutation (Sattolo), a derangement: no user keeps their
    own profile. Example j of user u takes the profile of example j (mod count) of user pi(u).
    """
    by_user: dict[str, list[Example]] = {}
    for ex in examples:
        by_user.setdefault(ex.user_id, []).append(ex)
    users = sorted(by_user)
    if len(users) < 2:
        raise DataError(f"contrast.shuffle_profiles=true needs examples of at least 2 users, got {len(users)}; "
                        "raise data.max_examples / contrast.max_examples or turn the control off")
    rng = random.Random(seed)
    perm = list(range(len(users)))
    for i in range(len(perm) - 1, 0, -1):  # Sattolo: one cycle through all users, so perm[i] != i
        j = rng.randrange(i)
        perm[i], perm[j] = perm[j], perm[i]
    donor = {users[i]: users[perm[i]] for i in range(len(users))}
    out = []
    for ex in examples:
        other = by_user[donor[ex.user_id]]
        j = by_user[ex.user_id].index(ex)
        out.append(dataclasses.replace(ex, profile=list(other[j % len(other)].profile),
                                       meta={**ex.meta, "profile_from_user": donor[ex.user_id]}))
    return out


def _quantiles(x: Tensor) -> dict[str, float]:
    qs = {"min": 0.0, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95, "max": 1.0}
    values = torch.quantile(x.double(), torch.tensor(list(qs.values()), dtype=torch.float64))
    return {k: round(float(v), 4) for k, v in zip(qs, values)}


# Bands of PIR for the tokens outside the planted names: the profile makes the token less likely, changes it
# little, makes it likelier, or likelier than LongCE's cap (exp(PIR) = 5 at PIR = ln 5).
PIR_BANDS = ((-math.inf, -0.5), (-0.5, 0.5), (0.5, math.log(5.0)), (math.log(5.0), math.inf))


def weight_shares(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where the loss's weight goes, per group of response tokens: the group's share of the tokens, their mean
    PIR, mean log-probability with and without the profile, mean weight, and their share of the total weight
    (what a relative weighting changes under Adam).

    With truth spans (rows with "planted"), the first token of each planted name, its later tokens and the token
    just before a name are groups of their own; the remaining tokens (all of them without truth) go by PIR_BANDS.
    """
    groups: dict[str, list[tuple[float, float, float, float]]] = {}
    if any("planted" in row for row in rows):
        groups = {label: [] for label in NAME_GROUPS}
    bands = {f"PIR in {'(-inf' if a == -math.inf else f'[{a:.2f}'}, {'inf' if b == math.inf else f'{b:.2f}'})": (a, b)
             for a, b in PIR_BANDS}
    groups |= {label: [] for label in bands}
    for row in rows:
        planted = set(row.get("planted", ()))
        for i, t in enumerate(row["tokens"]):
            if i in planted:
                label = LATER_NAME_TOKENS if i - 1 in planted else FIRST_NAME_TOKEN
            elif i + 1 in planted:
                label = BEFORE_A_NAME
            else:
                label = next(k for k, (a, b) in bands.items() if a <= t["pir"] < b)
            groups[label].append((t["pir"], t["logp_full"], t["logp_free"], t["weight"]))
    tokens = sum(len(v) for v in groups.values())
    weight = sum(x[3] for v in groups.values() for x in v)

    def mean(v: list[tuple[float, ...]], k: int) -> float | None:
        return round(sum(x[k] for x in v) / len(v), 4) if v else None

    return [{"group": label, "tokens": len(v), "token_share": round(len(v) / tokens, 4) if tokens else None,
             "pir_mean": mean(v, 0), "logp_full_mean": mean(v, 1), "logp_free_mean": mean(v, 2),
             "weight_mean": mean(v, 3), "weight_share": round(sum(x[3] for x in v) / weight, 4) if weight else None}
            for label, v in groups.items()]


def _score_pairs(scorer: TokenScorer, pairs: list, collator: Any, batch_size: int, device: torch.device,
                 with_entropy: bool) -> list[dict[str, Tensor]]:
    """contrast_batch over all pairs (batched longest-first for little padding), results in pair order."""
    results: list[dict[str, Tensor]] = [{} for _ in pairs]
    for idx in tqdm(longest_first([len(p.full_ids) for p in pairs], batch_size), desc="contrast", unit="batch"):
        batch = collator([pairs[i] for i in idx])
        batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        out = contrast_batch(scorer, batch, with_entropy=with_entropy)
        for r, i in enumerate(idx):
            sel = out["row"] == r
            results[i] = {k: v[sel].float().cpu() for k, v in out.items()
                          if k in ("logp_full", "logp_free", "pir", "entropy") and v is not None}
    return results


def run(cfg: Any, run_dir: Path) -> None:
    """`percli contrast`: PIR of every response token -> contrast.jsonl, contrast.html,
    contrast_summary.json and a summary on stdout."""
    c, loss = cfg.contrast, cfg.loss
    examples = load_examples(cfg, cfg.data.split)
    if c.max_examples:
        examples = examples[: c.max_examples]
    if c.shuffle_profiles:
        examples = shuffle_profiles(examples, cfg.seed)
    model, tokenizer = load_model_and_tokenizer(cfg.model, seed=cfg.seed)
    device = default_device()
    model.to(device).eval()
    pairs, report = encode_examples(examples, tokenizer, cfg.data)
    log.info(report.summary())
    if not pairs:
        raise DataError(f"no example of split {cfg.data.split} fits data.max_prompt_tokens="
                        f"{cfg.data.max_prompt_tokens}; raise it")
    scorer = TokenScorer(model, chunk_size=loss.chunk_size)
    scores = _score_pairs(scorer, pairs, PairCollator(tokenizer), c.batch_size, device,
                          LOSSES[loss.name].needs_entropy)

    rows, truth_pos, truth_neg = [], [], []
    all_pir, all_raw = [], []
    for pair, s in zip(pairs, scores):
        ex = examples[pair.index]
        raw = raw_weights(loss.name, logp_full=s["logp_full"], logp_free=s["logp_free"], entropy=s.get("entropy"),
                         row=torch.zeros(len(s["pir"]), dtype=torch.long))
        weights = clip_weights(raw, s["pir"], loss.min_weight, loss.max_weight)
        all_pir.append(s["pir"])
        all_raw.append(raw if raw is not None else torch.ones_like(s["pir"]))
        offsets = pair.response_offsets[: len(s["pir"])]
        tokens = [{"text": ex.output[a:b], "start": a, "end": b, "logp_full": round(float(lf), 5),
                   "logp_free": round(float(lr), 5), "pir": round(float(p), 5), "weight": round(float(w), 5)}
                  for (a, b), lf, lr, p, w in zip(offsets, s["logp_full"], s["logp_free"], s["pir"], weights)]
        row: dict[str, Any] = {"id": ex.id, "output": ex.output, "tokens": tokens}
        if "planted_spans" in ex.meta:
            planted = planted_token_mask(offsets, ex.meta["planted_spans"])
            for t, is_planted, (a, b) in zip(tokens, planted, offsets):
                if b > a:  # eos and other zero-width tokens are left out of the AUC
                    (truth_pos if is_planted else truth_neg).append(t["pir"])
            row["planted"] = [i for i, p in enumerate(planted) if p]
        rows.append(row)

    pir, raw_all = torch.cat(all_pir), torch.cat(all_raw)
    summary: dict[str, Any] = {
        "model": cfg.model.name, "task": cfg.task.name, "source": cfg.data.source, "split": cfg.data.split,
        "loss": loss.name, "min_weight": loss.min_weight, "max_weight": loss.max_weight,
        "shuffle_profiles": bool(c.shuffle_profiles), "examples": len(rows), "tokens": int(pir.numel()),
        "pir_mean": round(float(pir.mean()), 4), "pir_quantiles": _quantiles(pir),
        "clip_low": round(float((raw_all < loss.min_weight).double().mean()), 4),
        "clip_high": round(float((raw_all > loss.max_weight).double().mean()), 4),
    }
    if truth_pos:
        summary["planted"] = {
            "auc": round(auc(truth_pos, truth_neg), 4), "planted_tokens": len(truth_pos),
            "other_tokens": len(truth_neg), "mean_pir_planted": round(sum(truth_pos) / len(truth_pos), 4),
            "mean_pir_other": round(sum(truth_neg) / len(truth_neg), 4) if truth_neg else None,
        }
    summary["weight_shares"] = weight_shares(rows)
    atomic_write_jsonl(run_dir / "contrast.jsonl", rows)
    atomic_write_json(run_dir / "contrast_summary.json", summary)
    atomic_write_text(run_dir / "contrast.html", render_html(rows[: c.html_max_examples], summary))
    result(format_summary(summary, run_dir))


def format_summary(s: dict[str, Any], run_dir: Path) -> str:
    q = s["pir_quantiles"]
    lines = [
        f"percli contrast: {s['examples']} examples, {s['tokens']} response tokens "
        f"(model={s['model']} task={s['task']} {s['source']}:{s['split']}"
        f"{', shuffled profiles (control)' if s['shuffle_profiles'] else ''})",
        f"  PIR mean {s['pir_mean']:.4f}  min {q['min']:.3f}  p05 {q['p05']:.3f}  p25 {q['p25']:.3f}  "
        f"median {q['p50']:.3f}  p75 {q['p75']:.3f}  p95 {q['p95']:.3f}  max {q['max']:.3f}",
        f"  loss={s['loss']} weights clipped to [{s['min_weight']}, {s['max_weight']}]: "
        f"{100 * s['clip_low']:.1f}% at the low bound, {100 * s['clip_high']:.1f}% at the high bound",
    ]
    if "planted" in s:
        p = s["planted"]
        lines.append(f"  planted tokens: AUC {p['auc']:.4f} ({p['planted_tokens']} planted vs {p['other_tokens']} "
                     f"other tokens), mean PIR planted {p['mean_pir_planted']:.4f} vs other {p['mean_pir_other']:.4f}")
    lines.append(f"  where loss={s['loss']}'s weight goes (share of tokens, mean PIR, mean weight, share of the weight):")
    for g in s["weight_shares"]:
        if g["tokens"]:
            lines.append(f"    {g['group']:<24} {100 * g['token_share']:5.1f}%  PIR {g['pir_mean']:+7.3f}  "
                         f"weight {g['weight_mean']:6.3f}  {100 * g['weight_share']:5.1f}%")
    lines.append(f"  wrote {run_dir / 'contrast.jsonl'}, contrast.html, contrast_summary.json")
    return "\n".join(lines)
