"""PerContrast: response-token log-probs without full [B, T, V] fp32 logits, PIR, and `percli contrast`.

Definitions (DEVELOPERS guide, issue 5). For response token t of an example with profile p and query x:

    PIR_t = log P(y_t | p, x, y<t) - log P(y_t | x, y<t)

Both terms come from the same model on the same response token ids: the first from the full stream
(`full_*` keys of a `PairCollator` batch), the second from the profile-free stream (`free_*`), without
gradient.

Memory. A 151k vocabulary makes `[B, T, V]` fp32 logits the largest tensor of a step (B=4, T=4096:
10 GB). `response_logprobs` runs the backbone (`causal_lm.get_decoder()`) to the final hidden states,
gathers them at the N response positions only, and applies the LM head + log-softmax in chunks of
`chunk_size` positions, so at most `chunk_size x V` fp32 logits are alive at once. Under autograd each
chunk is checkpointed: the backward pass recomputes that chunk's logits instead of keeping N x V of them.
Peak extra memory: O(chunk_size x V) however long the batch is.

For the training team (percli/train.py): wrap the causal LM in `TokenScorer` and hand the WRAPPER to
accelerate / DDP / DeepSpeed, so that they see one forward that uses every parameter:

    scorer = TokenScorer(causal_lm, chunk_size=cfg.loss.chunk_size)   # before accelerator.prepare
    scorer, optimizer, loader = accelerator.prepare(scorer, optimizer, loader)
    scores = scorer(batch["full_input_ids"], batch["full_attention_mask"], batch["full_labels"],
                    with_entropy=schedule.with_entropy)              # TokenScores, logp carries grad
    weights, stats = schedule.weights(step, scorer, batch, scores)  # see percli.schedule
    loss = weighted_nll(scores.logp, weights, num_tokens_global)    # see percli.losses
    ...
    accelerator.unwrap_model(scorer).causal_lm.save_pretrained(...)  # the HF model, without the wrapper

Enable gradient checkpointing / LoRA on `causal_lm` before wrapping it; both keep working because the
wrapper calls the (PEFT-wrapped) decoder and LM head modules themselves. Position ids are derived from the
attention mask, so left and right padding give the same scores as an unpadded forward.
"""

from __future__ import annotations

import dataclasses
import html
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from percli.errors import DataError

IGNORE_INDEX = -100
DEFAULT_CHUNK_SIZE = 256


class TokenScores(NamedTuple):
    """Scores of the N response tokens of a batch, in row-major order (row, then position).

    A NamedTuple so that DDP / accelerate treat it as a container of tensors (pytree-flattenable).
    """

    logp: Tensor  # [N] fp32 log P(y_t | prefix); carries grad when computed with grad enabled
    entropy: Tensor | None  # [N] fp32 detached predictive entropy in nats (with_entropy=True), else None
    row: Tensor  # [N] long, batch row of each token
    target: Tensor  # [N] long, the scored token ids


def response_mask(labels: Tensor) -> Tensor:
    """[B, T-1] bool: position t predicts a response token (HF labels are aligned with input_ids)."""
    return labels[:, 1:] != IGNORE_INDEX


def count_response_tokens(labels: Tensor) -> int:
    return int(response_mask(labels).sum())


def _unwrap(model: nn.Module) -> nn.Module:
    """The causal LM inside a TokenScorer and/or a DDP / DeepSpeed wrapper (`.module`)."""
    while True:
        if isinstance(model, TokenScorer):
            return model.causal_lm
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _score_chunk(head: nn.Module, hidden: Tensor, target: Tensor, softcap: float | None,
                 with_entropy: bool) -> tuple[Tensor, Tensor | None]:
    logits = head(hidden).float()
    if softcap:  # Gemma-style final logit soft-capping, as the model's own forward applies it
        logits = torch.tanh(logits / softcap) * softcap
    # logsumexp + gather instead of log_softmax: one [c, V] buffer fewer.
    lse = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, target[:, None]).squeeze(-1) - lse
    entropy = None
    if with_entropy:
        with torch.no_grad():  # EntCE only uses it detached
            entropy = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return logp, entropy


def response_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    labels: Tensor,
    *,
    with_entropy: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> TokenScores:
    """log P(y_t | y<t) at every position whose shifted label is not -100, never holding [B, T, V] fp32.

    `model` is a causal LM (HF `PreTrainedModel`, PEFT-wrapped or not). Works with and without grad.
    """
    causal_lm = _unwrap(model)
    mask = response_mask(labels)
    if bool((attention_mask[:, 1:] == 0)[mask].any()):
        raise DataError("a response label sits on a padded position (attention_mask=0); the collator "
                        "must mask labels of padding with -100")
    rows, cols = mask.nonzero(as_tuple=True)  # row-major, so rows come out sorted
    target = labels[:, 1:][mask]
    # Positions count real tokens only: left padding then scores exactly like an unpadded sequence.
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    out = causal_lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                  position_ids=position_ids, use_cache=False)
    hidden = out[0][rows, cols]  # [N, H]: the only hidden states the LM head needs
    head = causal_lm.get_output_embeddings()
    softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
    # Checkpoint each chunk when a backward will follow: autograd then keeps the chunk's inputs, not its logits.
    use_ckpt = torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in head.parameters()))
    logps, ents = [], []
    for s in range(0, hidden.shape[0], chunk_size):
        args = (head, hidden[s:s + chunk_size], target[s:s + chunk_size], softcap, with_entropy)
        lp, ent = checkpoint(_score_chunk, *args, use_reentrant=False) if use_ckpt else _score_chunk(*args)
        logps.append(lp)
        ents.append(ent)
    empty = hidden.new_zeros(0, dtype=torch.float32)
    logp = torch.cat(logps) if logps else empty
    entropy = (torch.cat(ents) if ents else empty) if with_entropy else None
    return TokenScores(logp=logp, entropy=entropy, row=rows, target=target)


class TokenScorer(nn.Module):
    """nn.Module around a causal LM whose forward returns `TokenScores` of the response tokens.

    Prepare THIS module with accelerate / DDP / DeepSpeed (not the bare LM) so the memory-lean forward
    is the module's forward. `scorer.causal_lm` is the HF model (save / generate with it).
    """

    def __init__(self, causal_lm: nn.Module, chunk_size: int = DEFAULT_CHUNK_SIZE):
        super().__init__()
        self.causal_lm = causal_lm
        self.chunk_size = chunk_size

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor,
                with_entropy: bool = False) -> TokenScores:
        return response_logprobs(self.causal_lm, input_ids, attention_mask, labels,
                                 with_entropy=with_entropy, chunk_size=self.chunk_size)


def _is_scorer(model: nn.Module) -> bool:
    while model is not None:
        if isinstance(model, TokenScorer):
            return True
        model = getattr(model, "module", None)
    return False


def score_stream(model: nn.Module, batch: dict[str, Any], stream: str, *, with_entropy: bool = False,
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> TokenScores:
    """TokenScores of one stream ("full" or "free") of a PairCollator batch, through the scorer's forward
    when `model` is a (wrapped) TokenScorer so that DDP / DeepSpeed hooks run."""
    ids, att, lab = (batch[f"{stream}_input_ids"], batch[f"{stream}_attention_mask"], batch[f"{stream}_labels"])
    if _is_scorer(model):
        return model(ids, att, lab, with_entropy=with_entropy)
    return response_logprobs(model, ids, att, lab, with_entropy=with_entropy, chunk_size=chunk_size)


def check_aligned(full: TokenScores, free: TokenScores, ids: Sequence[str] | None = None) -> None:
    """Both streams must score the same response tokens, row by row (the collator's invariant)."""
    if full.target.shape == free.target.shape and bool((full.row == free.row).all()) \
            and bool((full.target == free.target).all()):
        return
    n_rows = int(torch.cat([full.row, free.row]).max()) + 1 if full.row.numel() + free.row.numel() else 0
    for r in range(n_rows):
        a, b = full.target[full.row == r], free.target[free.row == r]
        if a.shape != b.shape or not bool((a == b).all()):
            name = ids[r] if ids is not None and r < len(ids) else f"row {r}"
            raise DataError(f"example {name}: the full stream has {a.numel()} response tokens and the "
                            f"profile-free stream {b.numel()} (or different ids); both streams must carry "
                            "identical response ids (check data.max_prompt_tokens / max_response_tokens)")
    raise DataError("full and profile-free streams disagree on response tokens")


def contrast_batch(model: nn.Module, batch: dict[str, Any], *, with_entropy: bool = False,
                   chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict[str, Tensor | None]:
    """PerContrast for a PairCollator batch, both passes without grad.

    Returns logp_full, logp_free, pir (= logp_full - logp_free), row, target ([N] each, row-major) and
    entropy (full stream, or None).
    """
    with torch.no_grad():
        full = score_stream(model, batch, "full", with_entropy=with_entropy, chunk_size=chunk_size)
        free = score_stream(model, batch, "free", chunk_size=chunk_size)
    check_aligned(full, free, batch.get("ids"))
    return {"logp_full": full.logp, "logp_free": free.logp, "pir": full.logp - free.logp,
            "row": full.row, "target": full.target, "entropy": full.entropy}


# ------------------------------------------------------------------------------------- percli contrast
def shuffle_profiles(examples: list, seed: int) -> list:
    """The control: every example gets the retrieved profile of an example of ANOTHER user.

    Users are permuted by a seeded random cyclic permutation (Sattolo), a derangement: no user keeps their
    own profile. Example j of user u takes the profile of example j (mod count) of user pi(u).
    """
    by_user: dict[str, list] = {}
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


def planted_token_mask(offsets: Sequence[tuple[int, int]], spans: Sequence[dict]) -> list[bool]:
    """A token is planted when its char span overlaps a planted word's span (zero-width tokens never are)."""
    return [e > s and any(s < sp["end"] and e > sp["start"] for sp in spans) for s, e in offsets]


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(score of a positive > score of a negative), ties counting 1/2 (Mann-Whitney U / (n_pos n_neg))."""
    if not positives or not negatives:
        return float("nan")
    scores = torch.tensor([*positives, *negatives], dtype=torch.float64)
    order = scores.argsort(stable=True)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    i, n = 0, len(scores)
    while i < n:  # average 1-based ranks over ties
        j = i
        while j + 1 < n and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos, n_neg = len(positives), len(negatives)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _quantiles(x: Tensor) -> dict[str, float]:
    qs = {"min": 0.0, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95, "max": 1.0}
    values = torch.quantile(x.double(), torch.tensor(list(qs.values()), dtype=torch.float64))
    return {k: round(float(v), 4) for k, v in zip(qs, values)}


def _score_pairs(scorer: TokenScorer, pairs: list, collator: Any, batch_size: int, device: torch.device,
                 with_entropy: bool) -> list[dict[str, Tensor]]:
    """contrast_batch over all pairs (batched longest-first for little padding), results in pair order."""
    from tqdm import tqdm

    order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i].full_ids))
    results: list[dict[str, Tensor]] = [{} for _ in pairs]
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    for idx in tqdm(batches, desc="contrast", unit="batch"):
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
    from percli.data.collate import PairCollator, encode_examples
    from percli.data.longlamp import load_examples
    from percli.io import atomic_write_json, atomic_write_jsonl, atomic_write_text
    from percli.losses import raw_scores
    from percli.models import load_model_and_tokenizer

    c, loss = cfg.contrast, cfg.loss
    examples = load_examples(cfg, cfg.data.split)
    if c.max_examples:
        examples = examples[: c.max_examples]
    if c.shuffle_profiles:
        examples = shuffle_profiles(examples, cfg.seed)
    model, tokenizer = load_model_and_tokenizer(cfg.model, seed=cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    pairs, _ = encode_examples(examples, tokenizer, cfg.data)
    if not pairs:
        raise DataError(f"no example of split {cfg.data.split} fits data.max_prompt_tokens="
                        f"{cfg.data.max_prompt_tokens}; raise it")
    scorer = TokenScorer(model, chunk_size=loss.chunk_size)
    scores = _score_pairs(scorer, pairs, PairCollator(tokenizer), c.batch_size, device, loss.name == "entce")

    rows, truth_pos, truth_neg = [], [], []
    all_pir, all_raw = [], []
    for pair, s in zip(pairs, scores):
        ex = examples[pair.index]
        raw = raw_scores(loss.name, logp_full=s["logp_full"], logp_free=s["logp_free"], entropy=s.get("entropy"),
                         row=torch.zeros(len(s["pir"]), dtype=torch.long))
        weights = raw.clamp(loss.min_weight, loss.max_weight) if raw is not None else torch.ones_like(s["pir"])
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
    atomic_write_jsonl(run_dir / "contrast.jsonl", rows)
    atomic_write_json(run_dir / "contrast_summary.json", summary)
    atomic_write_text(run_dir / "contrast.html", render_html(rows[: c.html_max_examples], summary))
    print(format_summary(summary, run_dir))


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
    lines.append(f"  wrote {run_dir / 'contrast.jsonl'}, contrast.html, contrast_summary.json")
    return "\n".join(lines)


def _colour(pir: float, scale: float) -> str:
    """Diverging: red for PIR > 0 (the profile helps), blue for PIR < 0, saturated at |PIR| = scale."""
    a = min(abs(pir) / scale, 1.0)
    rgb = "220,38,38" if pir > 0 else "37,99,235"
    return f"rgba({rgb},{a:.3f})"


def render_html(rows: list[dict], summary: dict[str, Any]) -> str:
    """One self-contained page: each example's response, every token coloured by PIR, values on hover."""
    esc = html.escape
    scale = float(summary["max_weight"])
    parts = []
    for row in rows:
        out, pos, spans = row["output"], 0, []
        planted = set(row.get("planted", []))
        for i, t in enumerate(row["tokens"]):
            start, end = max(t["start"], pos), t["end"]
            if start > pos:  # text between tokens (never expected, but the page must show all of output)
                spans.append(esc(out[pos:start]))
            label = esc(out[start:end]) if end > start else ("&#9166;" if t["start"] >= len(out) else "")
            if not label:
                continue  # the rest of a character split over several byte-level tokens
            tip = (f"PIR {t['pir']:+.3f} | w {t['weight']:.3f} | logp full {t['logp_full']:.3f} | "
                   f"logp free {t['logp_free']:.3f}")
            cls = ' class="planted"' if i in planted else ""
            spans.append(f'<span{cls} style="background:{_colour(t["pir"], scale)}" title="{esc(tip)}">{label}</span>')
            pos = max(pos, end)
        if pos < len(out):
            spans.append(esc(out[pos:]))
        parts.append(f'<section><h3>{esc(row["id"])}</h3><p class="resp">{"".join(spans)}</p></section>')
    title = (f"PerContrast PIR: {summary['model']} / {summary['task']} / {summary['source']}:{summary['split']}"
             + (" (shuffled profiles)" if summary["shuffle_profiles"] else ""))
    stats = (f"{summary['examples']} examples, {summary['tokens']} tokens, mean PIR {summary['pir_mean']:.4f}")
    if "planted" in summary:
        p = summary["planted"]
        stats += (f"; planted-token AUC {p['auc']:.4f}, mean planted PIR {p['mean_pir_planted']:.4f} "
                  "(planted tokens underlined)")
    legend = (f'<span style="background:{_colour(-scale, scale)}">PIR -{scale:g}</span> '
              f'<span style="background:{_colour(-scale / 2, scale)}">-{scale / 2:g}</span> 0 '
              f'<span style="background:{_colour(scale / 2, scale)}">+{scale / 2:g}</span> '
              f'<span style="background:{_colour(scale, scale)}">+{scale:g}</span>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }}
.resp {{ white-space: pre-wrap; line-height: 1.7; font-family: ui-monospace, monospace; font-size: 0.9rem; }}
.resp span:hover {{ outline: 1px solid #111; }}
.planted {{ text-decoration: underline 2px; }}
section {{ border-top: 1px solid #ddd; }}
h3 {{ font-size: 0.9rem; color: #555; }}
</style></head><body>
<h1 style="font-size:1.2rem">{esc(title)}</h1>
<p>{esc(stats)}</p>
<p>PIR = log P(y_t | profile, query, y&lt;t) - log P(y_t | query, y&lt;t); hover a token for its values.
Colour: {legend} (saturates at the loss's max_weight)</p>
{"".join(parts)}
</body></html>
"""
