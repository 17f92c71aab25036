"""Token weights and weighted CE: hand-computed values, clipping, CE parity, micro-batch / rank invariance."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from perce_util import collate, make_pairs, small_lm

from percli.distributed import global_token_count, merge_stats
from percli.logprobs import count_response_tokens, response_logprobs
from percli.losses import (
    planted_summary,
    raw_weights,
    token_weights,
    weight_stats,
    weighted_nll,
)
from percli.schedule import Schedule

# Two examples: 3 + 2 response tokens.
ROW = torch.tensor([0, 0, 0, 1, 1])
LOGP_FULL = torch.tensor([-1.0, -2.0, -0.5, -3.0, -0.25])
LOGP_FREE = torch.tensor([-2.0, -1.0, -6.0, -3.5, -0.25])  # PIR = [1, -1, 5.5, 0.5, 0]
W = dict(min_weight=0.8, max_weight=5.0)


def test_perce_weighted_loss_hand_computed():
    w = token_weights("perce", logp_full=LOGP_FULL, logp_free=LOGP_FREE, row=ROW, **W)
    torch.testing.assert_close(w, torch.tensor([1.0, 0.8, 5.0, 0.8, 0.8]), atol=0, rtol=0)
    # 1*1 + 0.8*2 + 5*0.5 + 0.8*3 + 0.8*0.25 = 7.7 over N = 5 tokens
    assert weighted_nll(LOGP_FULL, w, 5).item() == pytest.approx(1.54, abs=1e-6)
    # N is the global token count, not the sum of weights: another micro-batch of 5 halves it
    assert weighted_nll(LOGP_FULL, w, 10).item() == pytest.approx(0.77, abs=1e-6)


def test_longce_ratio_weight_hand_computed_with_no_floor():
    conf = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "loss" / "longce.yaml")
    assert (conf.name, conf.min_weight, conf.max_weight) == ("longce", 0.0, 5.0)
    w = token_weights("longce", logp_full=LOGP_FULL, logp_free=LOGP_FREE, row=ROW,
                      min_weight=conf.min_weight, max_weight=conf.max_weight)
    # exp(PIR) = [e, 1/e, e^5.5 = 244.7 -> capped at 5, e^0.5, 1]: below 1 stays below 1 (no 0.8 floor)
    torch.testing.assert_close(w, torch.tensor([2.7182818, 0.3678794, 5.0, 1.6487213, 1.0]))
    # (2.7182818*1 + 0.3678794*2 + 5*0.5 + 1.6487213*3 + 1*0.25) / 5 = 11.1502045 / 5
    assert weighted_nll(LOGP_FULL, w, 5).item() == pytest.approx(2.2300409, abs=1e-6)
    assert Schedule("longce", 0.0, 5.0).needs_free_pass(0) and not Schedule("lossce", 0.8, 5.0).needs_free_pass(0)
    with pytest.raises(ValueError, match="loss=longce needs logp_free"):
        raw_weights("longce", logp_full=LOGP_FULL, row=ROW)


def test_dft_weight_is_the_detached_token_probability():
    conf = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "loss" / "dft.yaml")
    assert (conf.name, conf.min_weight, conf.max_weight) == ("dft", 0.0, 1.0)
    logp = LOGP_FULL.clone().requires_grad_(True)
    w = token_weights("dft", logp_full=logp, row=ROW, min_weight=conf.min_weight, max_weight=conf.max_weight)
    # exp([-1, -2, -0.5, -3, -0.25]), by hand
    torch.testing.assert_close(w, torch.tensor([0.3678794, 0.1353353, 0.6065307, 0.0497871, 0.7788008]))
    assert not w.requires_grad
    # (0.3678794*1 + 0.1353353*2 + 0.6065307*0.5 + 0.0497871*3 + 0.7788008*0.25) / 5 = 1.2858769 / 5
    assert weighted_nll(logp, w, 5).item() == pytest.approx(0.2571754, abs=1e-6)
    assert not Schedule("dft", 0.0, 1.0).needs_free_pass(0)


def _trained(scale: float, optimizer: str, clip: float | None) -> torch.Tensor:
    """The weights of a linear regression after 5 steps on `scale` x its loss."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    x, y = torch.randn(16, 4), torch.randn(16, 1) * 10
    opt = (torch.optim.AdamW(model.parameters(), lr=0.05) if optimizer == "adamw"
           else torch.optim.SGD(model.parameters(), lr=0.01))
    for _ in range(5):
        opt.zero_grad()
        (scale * ((model(x) - y) ** 2).mean()).backward()
        if clip is not None:
            assert float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip)) > clip / scale
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_a_constant_loss_scale_does_nothing_under_adamw_or_clipping():
    """The losses.py sentence: AdamW cancels a constant factor on the loss (up to eps), and so does clipping the
    gradient norm when it exceeds the limit; plain SGD without clipping does not (the test can tell)."""
    torch.testing.assert_close(_trained(0.8, "adamw", None), _trained(1.0, "adamw", None), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_trained(0.8, "adamw", 1.0), _trained(1.0, "adamw", 1.0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_trained(0.8, "sgd", 1.0), _trained(1.0, "sgd", 1.0), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(_trained(0.8, "sgd", None), _trained(1.0, "sgd", None), rtol=1e-3)


def test_planted_and_other_tokens_weight_mass_and_pir_hand_computed():
    """Two micro-batches (5 and 3 tokens) merged into one step: the shares and means are exact over the step."""
    w1, pir1 = torch.tensor([1.0, 0.8, 5.0, 0.8, 0.8]), torch.tensor([1.0, -1.0, 5.5, 0.5, 0.0])
    planted1 = torch.tensor([False, False, True, True, False])
    w2, pir2 = torch.tensor([2.0, 1.0, 1.0]), torch.tensor([2.0, 0.0, 1.0])
    planted2 = torch.tensor([True, False, False])
    stats = [weight_stats(w, raw=p, pir=p, planted=m, **W) for w, p, m in ((w1, pir1, planted1), (w2, pir2, planted2))]
    got = planted_summary(merge_stats(stats, across_ranks=False))
    # planted: w 5.0, 0.8, 2.0 (sum 7.8), PIR 5.5, 0.5, 2.0; other: w 1.0, 0.8, 0.8, 1.0, 1.0 (sum 4.6), PIR 1, -1, 0, 0, 1
    assert got == pytest.approx({"planted_token_share": 3 / 8, "planted_weight_mass": 7.8 / 12.4,
                                 "planted_weight_mean": 7.8 / 3, "planted_pir_mean": 8.0 / 3,
                                 "other_weight_mean": 4.6 / 5, "other_pir_mean": 1.0 / 5})
    # CE: no PIR; and without truth spans there are no planted columns at all
    ce = planted_summary(merge_stats([weight_stats(torch.ones(4), planted=torch.tensor([1, 0, 0, 0]).bool(), **W)],
                                     across_ranks=False))
    assert ce == {"planted_token_share": 0.25, "planted_weight_mass": 0.25, "planted_weight_mean": 1.0,
                  "planted_pir_mean": None, "other_weight_mean": 1.0, "other_pir_mean": None}
    assert planted_summary(merge_stats([weight_stats(w1, **W)], across_ranks=False)) == {}


def test_lossce_and_entce_hand_computed():
    # NLL = [1, 2, 0.5 | 3, 0.25]; example means 3.5/3 and 3.25/2
    w = token_weights("lossce", logp_full=LOGP_FULL, row=ROW, **W)
    torch.testing.assert_close(w, torch.tensor([6 / 7, 12 / 7, 0.8, 24 / 13, 0.8]))
    ent = torch.tensor([2.0, 4.0, 0.1, 1.0, 1.0])  # means 6.1/3 and 1
    w = token_weights("entce", logp_full=LOGP_FULL, entropy=ent, row=ROW, **W)
    torch.testing.assert_close(w, torch.tensor([6 / 6.1, 12 / 6.1, 0.8, 1.0, 1.0]))
    # an example whose scores are all zero gets uniform weight 1
    w = token_weights("entce", logp_full=LOGP_FULL, entropy=torch.tensor([0.0, 0, 0, 2, 6]), row=ROW, **W)
    torch.testing.assert_close(w, torch.tensor([1.0, 1.0, 1.0, 0.8, 1.5]))
    with pytest.raises(ValueError, match="with_entropy=True"):
        token_weights("entce", logp_full=LOGP_FULL, row=ROW, **W)


def test_clip_bounds_and_stats():
    g = torch.Generator().manual_seed(0)
    full = -torch.rand(1000, generator=g) * 10
    free = -torch.rand(1000, generator=g) * 10
    row = torch.arange(1000) // 100
    for lo, hi in [(0.8, 5.0), (0.0, 1.0), (2.0, 2.0)]:
        w = token_weights("perce", logp_full=full, logp_free=free, row=row, min_weight=lo, max_weight=hi)
        assert w.min() >= lo and w.max() <= hi
        pir = full - free
        inside = (pir >= lo) & (pir <= hi)
        assert torch.equal(w[inside], pir[inside])
        stats = weight_stats(w, raw=pir, pir=pir, min_weight=lo, max_weight=hi)
        assert stats["clip_low"] == pytest.approx(float((pir < lo).float().mean()))
        assert stats["clip_high"] == pytest.approx(float((pir > hi).float().mean()))
        assert stats["pir_mean"] == pytest.approx(float(pir.mean()), abs=1e-6)
        assert stats["weight_mean"] == pytest.approx(float(w.mean()), abs=1e-6)
        assert stats["tokens"] == 1000
    hand = weight_stats(torch.tensor([1.0, 0.8, 5.0, 0.8, 0.8]), raw=LOGP_FULL - LOGP_FREE, pir=LOGP_FULL - LOGP_FREE,
                        **W)
    assert hand == {"pir_mean": pytest.approx(1.2), "weight_mean": pytest.approx(1.68), "clip_low": 0.6,
                    "clip_high": 0.2, "tokens": 5}
    assert weight_stats(torch.ones(4), **W) == {"pir_mean": None, "weight_mean": 1.0, "clip_low": 0.0,
                                                "clip_high": 0.0, "tokens": 4}


def test_weights_are_detached():
    full = LOGP_FULL.clone().requires_grad_()
    for name in ("ce", "perce", "lossce"):
        assert not token_weights(name, logp_full=full, logp_free=LOGP_FREE, row=ROW, **W).requires_grad


def test_ce_equals_standard_token_mean_cross_entropy():
    model = small_lm(seed=1)
    batch = collate(make_pairs(4, seed=3), "right")
    ids, att, lab = batch["full_input_ids"], batch["full_attention_mask"], batch["full_labels"]
    scores = response_logprobs(model, ids, att, lab, chunk_size=3)
    w = token_weights("ce", logp_full=scores.logp, row=scores.row, **W)
    ours = weighted_nll(scores.logp, w, count_response_tokens(lab))
    hf = model(input_ids=ids, attention_mask=att, labels=lab).loss  # HF's own shifted token-mean CE
    logits = model(input_ids=ids, attention_mask=att).logits
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), lab[:, 1:].reshape(-1),
                          ignore_index=-100)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours, hf, atol=1e-6, rtol=1e-6)


def _perce_grads(model, micro_batches_per_rank: list[list[list[dict]]]) -> dict[str, torch.Tensor]:
    """Gradient of one optimizer step: ranks x micro-batches, each rank scaling by world size, then the
    DDP-style mean over ranks."""
    world = len(micro_batches_per_rank)
    schedule = Schedule("perce", 0.8, 5.0)
    n_global = sum(count_response_tokens(collate(mb)["full_labels"]) for rank in micro_batches_per_rank for mb in rank)
    per_rank = []
    for rank in micro_batches_per_rank:
        model.zero_grad()
        for i, mb in enumerate(rank):
            batch = collate(mb, "left" if i % 2 else "right")  # padding differs per split, too
            s = response_logprobs(model, batch["full_input_ids"], batch["full_attention_mask"], batch["full_labels"],
                                  chunk_size=2)
            w, _ = schedule.weights(0, model, batch, s)
            (weighted_nll(s.logp, w, n_global) * world).backward()
        per_rank.append({n: p.grad.clone() for n, p in model.named_parameters()})
    return {n: sum(g[n] for g in per_rank) / world for n in per_rank[0]}


def test_perce_gradient_invariant_to_micro_batches_and_ranks():
    model = small_lm(seed=2)
    ex = make_pairs(4, seed=4)
    ref = _perce_grads(model, [[ex]])
    splits = {
        "2 micro-batches": [[ex[:2], ex[2:]]],
        "4 micro-batches": [[[e] for e in ex]],
        "2 ranks": [[ex[:2]], [ex[2:]]],
        "2 ranks x 2 micro-batches": [[[ex[0]], [ex[3]]], [[ex[1]], [ex[2]]]],
    }
    assert sum(g.abs().sum() for g in ref.values()) > 0
    for name, split in splits.items():
        got = _perce_grads(model, split)
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], atol=1e-6, rtol=1e-5, msg=f"{name}: {k}")


def test_merge_stats_token_weighted():
    a = {"pir_mean": 1.0, "weight_mean": 1.0, "clip_low": 0.5, "clip_high": 0.0, "tokens": 2}
    b = {"pir_mean": 4.0, "weight_mean": 2.5, "clip_low": 0.0, "clip_high": 0.5, "tokens": 6}
    assert merge_stats([a, b]) == {"pir_mean": 3.25, "weight_mean": 2.125, "clip_low": 0.125, "clip_high": 0.375,
                                   "tokens": 8}
    assert merge_stats([{**a, "pir_mean": None}])["pir_mean"] is None


def test_global_token_count_all_reduces_over_real_gloo_ranks():
    import torch.multiprocessing as mp
    from perce_dist import token_count_worker

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.start_processes(token_count_worker, args=(2, port, queue), nprocs=2, start_method="spawn", join=True)
    results = sorted(queue.get() for _ in range(2))
    # tokens 3 + 7 on every rank; pir_mean = (0*1 + 1*2) / 3
    assert results == [(0, 10, pytest.approx(2 / 3), 3), (1, 10, pytest.approx(2 / 3), 3)]


def test_global_token_count_single_process():
    assert global_token_count(7) == 7
    assert raw_weights("ce", logp_full=LOGP_FULL, row=ROW) is None
