"""Bootstrap schedules: online, warmup (CE then online), periodic (cached per example, resumable)."""

from __future__ import annotations

import pytest
import torch
from perce_util import collate, make_pairs, small_lm

from percli.checkpoint import load_state_tree, save_state_tree
from percli.logprobs import TokenScorer, contrast_batch, response_logprobs
from percli.preflight import compose_config
from percli.schedule import PeriodicSchedule, Schedule, WarmupSchedule, build_schedule


def _scores(model, batch, with_entropy=False):
    return response_logprobs(model, batch["full_input_ids"], batch["full_attention_mask"], batch["full_labels"],
                             with_entropy=with_entropy)


def _nudge(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def test_online_perce_weights_are_clipped_pir_of_current_model():
    model = small_lm(seed=0)
    batch = collate(make_pairs(3, seed=1), "left")
    ref = contrast_batch(model, batch)
    w, stats = Schedule("perce", 0.8, 5.0).weights(0, model, batch, _scores(model, batch))
    torch.testing.assert_close(w, ref["pir"].clamp(0.8, 5.0))
    assert stats["pir_mean"] == pytest.approx(float(ref["pir"].mean()), abs=1e-6)
    assert stats["tokens"] == w.numel()
    # through a TokenScorer (what the training loop passes) the weights are the same
    w2, _ = Schedule("perce", 0.8, 5.0).weights(0, TokenScorer(model), batch, _scores(model, batch))
    torch.testing.assert_close(w2, w)


def test_entce_needs_entropy_and_schedule_says_so():
    model = small_lm(seed=0)
    batch = collate(make_pairs(2), "right")
    sched = Schedule("entce", 0.8, 5.0)
    assert sched.with_entropy and not Schedule("lossce", 0.8, 5.0).with_entropy
    with pytest.raises(ValueError, match="with_entropy"):
        sched.weights(0, model, batch, _scores(model, batch))
    w, stats = sched.weights(0, model, batch, _scores(model, batch, with_entropy=True))
    assert stats["pir_mean"] is None and w.min() >= 0.8 and w.max() <= 5.0


def test_warmup_is_ce_then_online():
    model = small_lm(seed=0)
    batch = collate(make_pairs(3, seed=2), "right")
    sched = WarmupSchedule("perce", 0.8, 5.0, warmup_steps=2)
    scores = _scores(model, batch)
    for step in (0, 1):
        w, stats = sched.weights(step, model, batch, scores)
        assert torch.equal(w, torch.ones_like(w))
        assert stats["pir_mean"] is None and stats["weight_mean"] == 1.0
    w, stats = sched.weights(2, model, batch, scores)
    torch.testing.assert_close(w, contrast_batch(model, batch)["pir"].clamp(0.8, 5.0))
    assert not torch.equal(w, torch.ones_like(w))


def test_periodic_caches_per_example_and_refreshes_every_k_steps(tmp_path):
    model = small_lm(seed=0)
    pairs = make_pairs(4, seed=3)
    loader = [collate(pairs[:2], "left"), collate(pairs[2:], "right")]
    sched = PeriodicSchedule("perce", 0.8, 5.0, every=3)
    with pytest.raises(RuntimeError, match="maybe_refresh"):
        sched.weights(0, model, loader[0], _scores(model, loader[0]))
    assert sched.maybe_refresh(0, model, lambda: loader)
    at_refresh = contrast_batch(model, collate([pairs[3], pairs[0]], "left"))["pir"]
    _nudge(model, 1)  # the model moves on; cached weights must not
    train_batch = collate([pairs[3], pairs[0]], "left")  # other grouping, order and padding than the refresh
    w, stats = sched.weights(1, model, train_batch, _scores(model, train_batch))
    torch.testing.assert_close(w, at_refresh.clamp(0.8, 5.0))
    assert stats["pir_mean"] == pytest.approx(float(at_refresh.mean()), abs=1e-6)
    assert not sched.maybe_refresh(2, model, lambda: loader)
    assert sched.maybe_refresh(3, model, lambda: loader)
    w, _ = sched.weights(3, model, train_batch, _scores(model, train_batch))
    torch.testing.assert_close(w, contrast_batch(model, train_batch)["pir"].clamp(0.8, 5.0))

    # resume: a fresh schedule restored from the checkpoint file gives the same weights and refresh times
    save_state_tree(sched.state_dict(), tmp_path / "schedule.safetensors")
    state = load_state_tree(tmp_path / "schedule.safetensors")
    assert sorted(state["cache"]) == ["0", "1", "2", "3"] and state["last_refresh"] == 3
    restored = PeriodicSchedule("perce", 0.8, 5.0, every=3)
    restored.load_state_dict(state)
    _nudge(model, 2)
    torch.testing.assert_close(restored.weights(4, model, train_batch, _scores(model, train_batch))[0], w)
    assert not restored.maybe_refresh(5, model, lambda: loader) and restored.maybe_refresh(6, model, lambda: loader)
    with pytest.raises(ValueError, match="schedule=periodic"):
        Schedule("perce", 0.8, 5.0).load_state_dict(state)


def test_periodic_lossce_caches_and_ce_never_refreshes():
    model = small_lm(seed=0)
    batch = collate(make_pairs(2, seed=4), "right")
    sched = PeriodicSchedule("lossce", 0.8, 5.0, every=2)
    sched.maybe_refresh(0, model, lambda: [batch])
    ref, _ = Schedule("lossce", 0.8, 5.0).weights(0, model, batch, _scores(model, batch))
    _nudge(model, 3)
    torch.testing.assert_close(sched.weights(1, model, batch, _scores(model, batch))[0], ref)
    ce = PeriodicSchedule("ce", 0.8, 5.0, every=2)
    assert not ce.maybe_refresh(0, model, lambda: [batch])
    assert torch.equal(ce.weights(0, model, batch, _scores(model, batch))[0], torch.ones(ref.numel()))


def test_build_schedule_from_config():
    sched = build_schedule(compose_config("train", ["schedule=periodic", "schedule.every=7", "loss=lossce"]))
    assert isinstance(sched, PeriodicSchedule) and sched.every == 7 and sched.loss == "lossce"
    sched = build_schedule(compose_config("train", ["schedule=warmup", "schedule.warmup_steps=5",
                                                    "loss.min_weight=0.5"]))
    assert isinstance(sched, WarmupSchedule) and sched.warmup_steps == 5 and sched.min_weight == 0.5
    sched = build_schedule(compose_config("train", []))
    assert type(sched) is Schedule and sched.loss == "perce" and sched.max_weight == 5.0


def _periodic_rank(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model, pairs = small_lm(seed=0), make_pairs(5, seed=6)
        shard = pairs[rank::world]  # each rank scores only its shard, as the training loop's refresh does
        sched = PeriodicSchedule("perce", 0.8, 5.0, every=2)
        sched.maybe_refresh(0, model, lambda: [collate(shard[i:i + 2], "right") for i in range(0, len(shard), 2)])
        queue.put((rank, {k: v["raw"].tolist() for k, v in sched.cache.items()}))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_periodic_refresh_merges_rank_shards_over_real_gloo():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    queue = mp.get_context("spawn").Queue()
    ctx = mp.start_processes(_periodic_rank, args=(2, port, queue), nprocs=2, start_method="spawn", join=False)
    caches = dict(queue.get(timeout=300) for _ in range(2))  # read before joining (queue feeder threads)
    while not ctx.join():
        pass
    single = PeriodicSchedule("perce", 0.8, 5.0, every=2)
    single.maybe_refresh(0, small_lm(seed=0), lambda: [collate(make_pairs(5, seed=6), "left")])
    assert sorted(caches[0]) == sorted(caches[1]) == [0, 1, 2, 3, 4]  # every rank holds every example
    for idx, entry in single.cache.items():
        for rank in (0, 1):
            torch.testing.assert_close(torch.tensor(caches[rank][idx]), entry["raw"], atol=1e-5, rtol=0)


@pytest.mark.slow
def test_perce_step_under_real_ddp_equals_one_big_batch():
    """2 gloo ranks x 2 micro-batches through a DDP-wrapped TokenScorer == one 4-example batch, one process."""
    import socket

    import torch.multiprocessing as mp
    from perce_dist import ddp_perce_worker

    from percli.losses import weighted_nll

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    queue = mp.get_context("spawn").Queue()
    ctx = mp.start_processes(ddp_perce_worker, args=(2, port, queue), nprocs=2, start_method="spawn", join=False)
    grads = dict(queue.get(timeout=300) for _ in range(2))  # read before joining: the results exceed a pipe buffer
    while not ctx.join():
        pass
    model = small_lm(seed=0)
    batch = collate(make_pairs(4, seed=4), "left")
    scores = _scores(model, batch)
    weights, _ = Schedule("perce", 0.8, 5.0).weights(0, model, batch, scores)
    weighted_nll(scores.logp, weights, scores.logp.numel()).backward()
    for name, p in model.named_parameters():
        for rank in (0, 1):
            torch.testing.assert_close(torch.from_numpy(grads[rank][name]), p.grad, atol=1e-6, rtol=1e-5, msg=f"rank {rank}: {name}")


def test_free_pass_runs_before_the_training_forward_and_gives_the_same_weights():
    """The loop runs the profile-free pass first (so its activations are gone before the training graph
    exists); the weights must equal those of the pass run inside `weights`."""
    model = small_lm(seed=0)
    batch = collate(make_pairs(3, seed=1), "right")
    scores = _scores(model, batch)
    online = Schedule("perce", 0.8, 5.0)
    free = online.free_pass(0, model, batch)
    # small_lm has no dropout: the training forward's own scores serve as the full view, no extra pass
    assert free is not None and not free.free.logp.requires_grad and free.full is None
    w_pre, _ = online.weights(0, model, batch, scores, free)
    w_in, _ = online.weights(0, model, batch, scores)
    assert torch.equal(w_pre, w_in)
    assert Schedule("ce", 0.8, 5.0).free_pass(0, model, batch) is None
    warm = WarmupSchedule("perce", 0.8, 5.0, warmup_steps=2)
    assert warm.free_pass(1, model, batch) is None and warm.free_pass(2, model, batch) is not None


def _lora(dropout: float):
    from peft import LoraConfig, get_peft_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)  # the same random A and B for every dropout value
        return get_peft_model(small_lm(seed=0), LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                                           target_modules=["q_proj", "v_proj"],
                                                           init_lora_weights=False))


@pytest.mark.parametrize("loop", ["online", "periodic"])
def test_pir_under_lora_dropout_equals_pir_of_the_same_weights_without_dropout(loop):
    noisy, clean = _lora(0.5), _lora(0.0)
    for a, b in zip(noisy.parameters(), clean.parameters()):
        assert torch.equal(a, b)
    pairs = make_pairs(4, seed=7)
    batch = collate(pairs, "right")
    noisy.train()
    clean.train()
    torch.manual_seed(0)
    # What the scores were before: both views in train mode, with independent dropout masks.
    with torch.no_grad():
        masked_pir = _scores(noisy, batch).logp - contrast_batch(noisy, batch)["logp_free"]
    expected_pir = contrast_batch(clean.eval(), batch)["pir"]
    clean.train()
    assert (masked_pir - expected_pir).abs().max() > 1e-2  # the noise the E-step must not see

    def weights(model):
        if loop == "online":
            sched = Schedule("perce", 0.8, 5.0)
            free = sched.free_pass(0, model, batch)
        else:
            sched, free = PeriodicSchedule("perce", 0.8, 5.0, every=1), None
            sched.maybe_refresh(0, model, lambda: [batch])
        scores = _scores(model, batch)  # the training forward: dropout stays on for the gradient
        return sched.weights(0, model, batch, scores, free)

    w_noisy, stats_noisy = weights(noisy)
    w_clean, stats_clean = weights(clean)
    assert noisy.training and all(m.training for m in noisy.modules())  # the E-step gave train mode back
    torch.testing.assert_close(w_noisy, expected_pir.clamp(0.8, 5.0), rtol=0, atol=1e-6)
    torch.testing.assert_close(w_noisy, w_clean, rtol=0, atol=1e-6)
    assert stats_noisy["pir_mean"] == pytest.approx(float(expected_pir.mean()), abs=1e-6)
    assert stats_noisy["pir_mean"] == pytest.approx(stats_clean["pir_mean"], abs=1e-6)
