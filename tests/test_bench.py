"""The benchmark's statistics and its equal-work guarantees: a peer row must train on the same tokens and
weights as percli (first-step losses equal to 1e-5), and ratios come from alternated pairs."""

from __future__ import annotations

import math

import pytest

from scripts.bench import generation, subject
from scripts.bench.data import profile_words_for, write_review_data
from scripts.bench.naive import perce_vs_naive
from scripts.bench.stats import Timing, interleaved, ratio_ci

QUICK = {"time_cap_s": 0.0, "min_pairs": 2}  # stop after the first two pairs: these tests check work, not speed


def test_ratio_ci_is_a_t_interval_on_log_ratios():
    # logs +0.1 and -0.1: mean 0, sd 0.1*sqrt(2), n 2, t(0.975, 1) = 12.7062 -> half-width 12.7062 * 0.1 = 1.27062
    ratio, lo, hi = ratio_ci([math.exp(0.1), math.exp(-0.1)])
    assert ratio == pytest.approx(1.0)
    assert lo == pytest.approx(math.exp(-1.270620), rel=1e-5)
    assert hi == pytest.approx(math.exp(1.270620), rel=1e-5)


def test_interleaved_swaps_the_order_every_pair_and_stops_on_the_ci():
    calls = []

    def side(name: str, cpu: float):
        def measure() -> Timing:
            calls.append(name)
            return Timing(wall_s=3 * cpu, cpu_s=cpu)
        return measure

    res = interleaved(side("a", 2.0), side("b", 1.0), "test", half_width=0.03, time_cap_s=1e9, min_pairs=4)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert res["stopped"] == "ci" and res["cpu"]["pairs"] == 4
    assert res["cpu"]["ratio"] == pytest.approx(2.0) and res["cpu"]["ci"] == pytest.approx([2.0, 2.0])


def test_check_same_work_refuses_different_first_losses():
    subject.check_same_work(2.5, 2.5 + 5e-6, "x")
    with pytest.raises(RuntimeError, match="first-step loss 2.5 .* differs"):
        subject.check_same_work(2.5, 2.5002, "x")


def test_profile_words_for_hits_the_profile_free_share(tmp_path):
    words = profile_words_for(0.3, tmp_path / "cal", response_words=20, model="tiny")
    data = write_review_data(tmp_path / "d", profile_item_words=words, response_words=20)
    assert subject.shape(subject.encode(subject.bench_cfg(data, model="tiny"))[0])["r"] == pytest.approx(0.3, abs=0.02)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    return write_review_data(tmp_path_factory.mktemp("bench") / "d", profile_item_words=20, response_words=30)


def test_trl_peer_trains_on_the_same_work_as_percli_ce(small_data, tmp_path):
    pytest.importorskip("trl", reason="the `bench` extra (in `dev`)")
    from scripts.bench.peer import ce_vs_trl

    res = ce_vs_trl(small_data, tmp_path, model="tiny", **QUICK)
    # A random-init 151,669-token model: the first loss is near ln(151669) = 11.93.
    assert res["percli_first_loss"] == pytest.approx(math.log(151669), abs=0.2)
    assert abs(res["percli_first_loss"] - res["peer_first_loss"]) <= 1e-5
    assert res["shape"]["response"] > 20 and res["cpu"]["pairs"] == 2


def test_naive_perce_trains_on_the_same_work_as_percli_perce(small_data, tmp_path):
    res = perce_vs_naive(small_data, tmp_path, model="tiny", max_response_tokens=24, **QUICK)
    assert res["shape"]["response"] == 24 and res["vocab"] == 151669
    # PIR of a random model is about 0, so every weight is clipped up to min_weight 0.8: loss = 0.8 x CE.
    assert res["percli_first_loss"] == pytest.approx(0.8 * math.log(151669), abs=0.2)
    assert abs(res["percli_first_loss"] - res["naive_first_loss"]) <= 1e-5


def test_back_to_back_runs_agree_when_each_ratio_lies_in_the_others_ci():
    from scripts.bench.report import agree, repeat_lines

    first, second = {"ratio": 1.05, "ci": [1.02, 1.08]}, {"ratio": 1.07, "ci": [1.04, 1.10]}
    assert agree([first, second])
    assert not agree([first, {"ratio": 1.09, "ci": [1.06, 1.12]}])   # 1.09 is outside [1.02, 1.08]
    res = {"repeats": {"perce_ce_step_ratio": [first, second], "gen_batch_speedup": [first]}}
    assert repeat_lines(res) == [
        "Back-to-back runs of `make bench` (the table shows the last one):", "",
        "- `perce_ce_step_ratio`: 1.050 [1.020, 1.080]; 1.070 [1.040, 1.100]: agree: each ratio lies in the other "
        "run's CI", ""]
    partly = [first, {"ratio": 1.09, "ci": [1.06, 1.12]}]
    assert repeat_lines({"repeats": {"k": partly}})[2].endswith("**partly**: the CIs overlap, but not every ratio "
                                                                "lies in the other run's CI")
    apart = [first, {"ratio": 1.20, "ci": [1.15, 1.25]}]
    assert repeat_lines({"repeats": {"k": apart}})[2].endswith("**disagree**: the CIs do not overlap")


def test_generation_passes_time_both_batch_sizes_in_one_process(tmp_path):
    data = write_review_data(tmp_path / "d", profile_item_words=20, response_words=30, n_examples=2)
    out = generation.passes({"data": str(data), "model": "tiny", "batch_size": 2, "new_tokens": 3,
                             "with_profile": True, "a_first": False})
    assert out["prompts"] == 2 and out["prompt_tokens_mean"] > 0
    assert all(out[side]["cpu_s"] > 0 and out[side]["wall_s"] > 0 for side in ("batch_1", "batched"))
    # one new token per prompt (prefill + one step) takes part of the time of three
    assert all(0 < share < 1 for share in out["prefill_share"].values())


def test_generation_pairs_run_each_in_a_fresh_process(monkeypatch, tmp_path):
    specs = []
    canned = iter([(3.0, 1.0, 0.5), (4.0, 1.0, 0.25)])  # (batch-1 s, batched s, prefill share) per process

    def fake_child(kind: str, spec: dict, threads: int) -> dict:
        specs.append((kind, spec["a_first"], threads))
        one, many, share = next(canned)
        return {"batch_1": {"wall_s": one, "cpu_s": one}, "batched": {"wall_s": many, "cpu_s": many},
                "prompts": 8, "prompt_tokens_mean": 81.0, "prefill_share": {"batch_1": share, "batched": share}}

    monkeypatch.setattr(generation, "run_child", fake_child)
    out = generation.throughput(tmp_path, batch_size=8, new_tokens=32, with_profile=True, threads=1, **QUICK)
    assert specs == [("generate", True, 1), ("generate", False, 1)]  # one child per pair, order swapped
    assert out["processes"] == out["cpu"]["pairs"] == 2
    assert out["gen_batch_speedup"] == pytest.approx(math.sqrt(3.0 * 4.0))  # geometric mean of 3x and 4x
    assert out["batch_1_tokens_per_s_cpu"] == pytest.approx(8 * 32 / 3.5)  # median of 3 s and 4 s
    assert out["batched_tokens_per_s_cpu"] == pytest.approx(8 * 32 / 1.0)
    assert out["prefill_share"] == {"batch_1": pytest.approx(0.375), "batched": pytest.approx(0.375)}
