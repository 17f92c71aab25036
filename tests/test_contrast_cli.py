"""`percli contrast` end to end (tiny model, subprocess), its helpers, and the real-weights acceptance (slow)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import only_run_dir

from percli.contrast import shuffle_profiles, weight_shares
from percli.data.example import Example
from percli.data.synthetic import planted_token_mask
from percli.errors import DataError
from percli.io import read_jsonl
from percli.report.heatmap import render_html
from percli.statistics import auc

SMALL = ["data=synthetic", "retriever=bm25", "data.num_users=3", "data.examples_per_user=2", "data.profile_size=4", "data.max_prompt_tokens=384",
         "data.max_response_tokens=40"]
TOKEN_KEYS = {"text", "start", "end", "logp_full", "logp_free", "pir", "weight"}
DATA = Path(__file__).parent / "data"


def _check_rows(rows: list[dict], min_w: float = 0.8, max_w: float = 5.0) -> None:
    for row in rows:
        assert {"id", "output", "tokens"} <= set(row)
        out, tokens = row["output"], row["tokens"]
        assert 0 < len(tokens) <= 40
        for t in tokens:
            assert set(t) == TOKEN_KEYS
            assert out[t["start"]:t["end"]] == t["text"]
            assert t["pir"] == pytest.approx(t["logp_full"] - t["logp_free"], abs=2e-5)
            assert t["weight"] == pytest.approx(min(max(t["pir"], min_w), max_w), abs=1e-5)
            assert t["logp_full"] <= 0 and t["logp_free"] <= 0
        # tokens run left to right through `output` from its first character
        assert tokens[0]["start"] == 0
        assert all(a["end"] <= b["end"] for a, b in zip(tokens, tokens[1:]))
        if tokens[-1]["start"] == len(out):  # the response's eos: zero width at the end of output
            assert tokens[-1]["text"] == "" and tokens[-1]["end"] == len(out)


def test_contrast_tiny_end_to_end(cli, tmp_path: Path) -> None:
    r = cli("contrast", "model=tiny", *SMALL)
    assert r.returncode == 0, r.stderr
    run = only_run_dir(tmp_path / "outputs", "contrast")
    assert json.loads((run / "status.json").read_text())["status"] == "ok"
    rows = read_jsonl(run / "contrast.jsonl")
    assert [row["id"] for row in rows] == [f"review-train-u{u:03d}-{e}" for u in range(3) for e in range(2)]
    _check_rows(rows)
    summary = json.loads((run / "contrast_summary.json").read_text())
    n_tokens = sum(len(row["tokens"]) for row in rows)
    assert (summary["examples"], summary["tokens"]) == (6, n_tokens)
    pirs = sorted(t["pir"] for row in rows for t in row["tokens"])
    assert summary["pir_mean"] == pytest.approx(sum(pirs) / len(pirs), abs=1e-4)
    assert summary["pir_quantiles"]["min"] == pytest.approx(pirs[0], abs=1e-4)
    assert summary["pir_quantiles"]["max"] == pytest.approx(pirs[-1], abs=1e-4)
    assert summary["clip_low"] == pytest.approx(sum(p < 0.8 for p in pirs) / len(pirs), abs=1e-4)
    # synthetic data carries planted-word truth: AUC over the tokens that overlap a planted span
    planted = summary["planted"]
    assert planted["planted_tokens"] == sum(len(row["planted"]) for row in rows) > 0
    assert 0.0 <= planted["auc"] <= 1.0
    # stdout summary
    assert f"percli contrast: 6 examples, {n_tokens} response tokens" in r.stdout
    assert re.search(r"PIR mean -?\d+\.\d{4}\s+min .* p05 .* median .* p95 .* max", r.stdout)
    assert "% at the low bound" in r.stdout and "planted tokens: AUC" in r.stdout
    groups = summary["weight_shares"]
    assert [g["group"] for g in groups][:3] == ["first token of a name", "later tokens of a name", "token before a name"]
    assert sum(g["tokens"] for g in groups) == n_tokens
    assert sum(g["weight_share"] for g in groups if g["tokens"]) == pytest.approx(1.0, abs=1e-3)
    assert "where loss=perce's weight goes" in r.stdout
    assert "contrast: 100%" in r.stderr  # the tqdm progress bar
    # the heatmap: self-contained (no external resource), one hover title per visible token
    page = (run / "contrast.html").read_text()
    assert not re.search(r"(src|href)=\"?https?:", page) and "<script" not in page
    assert page.count('title="PIR ') == sum(1 for row in rows for t in row["tokens"] if t["end"] > t["start"]) + \
        sum(1 for row in rows if row["tokens"][-1]["start"] == len(row["output"]))


def test_contrast_local_split(cli, tmp_path: Path) -> None:
    from percli.data.synthetic import write_dataset

    data = write_dataset("review", tmp_path / "data", num_users=2, examples_per_user=2, profile_size=3, seed=5)
    r = cli("contrast", "model=tiny", "data.source=local", f"data.path={data}", "data.split=test", "retriever=bm25",
            "data.max_prompt_tokens=256", "data.max_response_tokens=40", "loss.min_weight=0.0", "loss.max_weight=1.0")
    assert r.returncode == 0, r.stderr
    run = only_run_dir(tmp_path / "outputs", "contrast")
    rows = read_jsonl(run / "contrast.jsonl")
    truth = read_jsonl(data / "test.jsonl")
    assert [row["id"] for row in rows] == [t["id"] for t in truth]
    assert [row["output"] for row in rows] == [t["output"] for t in truth]  # the exact target text
    _check_rows(rows, 0.0, 1.0)
    assert "planted" not in json.loads((run / "contrast_summary.json").read_text())  # local data: no truth


def test_auc_values() -> None:
    assert auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert auc([1.0], [2.0, 3.0]) == 0.0
    assert auc([1.0], [1.0]) == 0.5
    assert auc([1.0, 2.0], [1.0, 0.0]) == 0.875  # (0.5 + 1 + 1 + 1) / 4
    assert auc([2.0, 0.0, 5.0], [1.0, 3.0]) == pytest.approx(3 / 6)


def _tokens(*pir_weight: tuple[float, float]) -> list[dict]:
    """Tokens whose log-probabilities sit p/2 either side of -2, so PIR = log P(full) - log P(free) = p."""
    return [{"pir": p, "logp_full": -2.0 + p / 2, "logp_free": -2.0 - p / 2, "weight": w} for p, w in pir_weight]


def test_weight_shares_by_name_position_and_pir_band() -> None:
    rows = [{"tokens": _tokens((-1.0, 0.8), (2.0, 2.0), (3.0, 3.0), (5.0, 5.0), (0.0, 0.8)), "planted": [2, 3]},
            {"tokens": _tokens((1.0, 1.0), (2.0, 2.0)), "planted": []}]
    total = 0.8 + 2.0 + 3.0 + 5.0 + 0.8 + 1.0 + 2.0   # 14.6
    expected = [("first token of a name", 3.0, 3.0), ("later tokens of a name", 5.0, 5.0),
                ("token before a name", 2.0, 2.0), ("PIR in (-inf, -0.50)", -1.0, 0.8),
                ("PIR in [-0.50, 0.50)", 0.0, 0.8), ("PIR in [0.50, 1.61)", 1.0, 1.0), ("PIR in [1.61, inf)", 2.0, 2.0)]
    assert weight_shares(rows) == [
        {"group": g, "tokens": 1, "token_share": round(1 / 7, 4), "pir_mean": p, "logp_full_mean": -2.0 + p / 2,
         "logp_free_mean": -2.0 - p / 2, "weight_mean": w, "weight_share": round(w / total, 4)}
        for g, p, w in expected]
    # without truth spans every token goes by its PIR band; an empty band has no means and no weight
    bands = weight_shares([{"tokens": _tokens((0.1, 0.8), (0.3, 0.8), (-2.0, 0.8))}])
    assert [(g["group"], g["tokens"], g["pir_mean"], g["logp_free_mean"], g["weight_share"]) for g in bands] == [
        ("PIR in (-inf, -0.50)", 1, -2.0, -1.0, round(1 / 3, 4)), ("PIR in [-0.50, 0.50)", 2, 0.2, -2.1, round(2 / 3, 4)),
        ("PIR in [0.50, 1.61)", 0, None, None, 0.0), ("PIR in [1.61, inf)", 0, None, None, 0.0)]


def test_planted_token_mask() -> None:
    # "my zorbleck works": planted span 3..11
    offsets = [(0, 2), (2, 6), (6, 11), (11, 17), (17, 17)]
    assert planted_token_mask(offsets, [{"word": "zorbleck", "start": 3, "end": 11}]) == [
        False, True, True, False, False]
    assert planted_token_mask(offsets, []) == [False] * 5


def _ex(i: int, user: str) -> Example:
    return Example(id=f"e{i}", user_id=user, task="review", input="q", output="o",
                   profile=[{"reviewText": f"profile of {user} #{i}"}])


def test_shuffle_profiles_is_a_seeded_derangement_over_users() -> None:
    examples = [_ex(i, u) for i, u in enumerate("aabbbcd")]
    shuffled = shuffle_profiles(examples, seed=0)
    assert [e.id for e in shuffled] == [e.id for e in examples]
    for ex, sh in zip(examples, shuffled):
        donor = sh.meta["profile_from_user"]
        assert donor != ex.user_id
        assert sh.profile[0]["reviewText"].startswith(f"profile of {donor} ")
    # a permutation of users: each user's profile goes to exactly one other user
    donors = {sh.user_id: sh.meta["profile_from_user"] for sh in shuffled}
    assert sorted(donors.values()) == sorted(donors)
    assert shuffle_profiles(examples, seed=0) == shuffled
    assert any(shuffle_profiles(examples, seed=s) != shuffled for s in range(1, 5))
    assert examples[0].profile[0]["reviewText"] == "profile of a #0"  # inputs untouched
    with pytest.raises(DataError, match="at least 2 users"):
        shuffle_profiles([_ex(0, "a"), _ex(1, "a")], seed=0)


# Real pretrained SmolLM2-135M-Instruct on synthetic reviews with planted personal names: PerContrast must
# find the planted tokens, and lose them when each user sees another user's profile.
# Measured on these 12 examples (2026-11-25): own profile AUC 0.903, mean planted PIR 3.66 vs 0.20 for other
# tokens; control (shuffled profiles) AUC 0.515, mean planted PIR -0.07 vs 0.23. On the default 96 examples:
# 0.901 / 0.503 (README, "PerContrast on real weights").
REAL = ["model=smollm2-135m", "data.source=synthetic", "retriever=bm25", "task=review", "data.num_users=6", "data.examples_per_user=2",
        "data.max_prompt_tokens=768", "data.max_response_tokens=96"]


def _planted(tmp_path: Path, *extra: str) -> dict:
    from helpers import run_cli

    out = tmp_path / ("control" if extra else "own")
    r = run_cli("contrast", *REAL, *extra, output_dir=out)
    assert r.returncode == 0, r.stderr
    return json.loads((only_run_dir(out, "contrast") / "contrast_summary.json").read_text())["planted"]


@pytest.mark.slow
def test_smollm2_ranks_planted_tokens_first_and_control_collapses(tmp_path: Path) -> None:
    own = _planted(tmp_path)
    control = _planted(tmp_path, "contrast.shuffle_profiles=true")
    print(f"own profile: {own}\nshuffled profiles (control): {control}")
    assert own["auc"] > 0.85, own
    assert own["mean_pir_planted"] > 2.5 and abs(own["mean_pir_other"]) < 0.5, own
    assert control["planted_tokens"] == own["planted_tokens"]  # the same targets, only the profiles moved
    # the collapse: planted tokens rank like any other token, and their PIR is no higher than the others'
    assert 0.35 < control["auc"] < 0.65, (own, control)
    assert control["mean_pir_planted"] < control["mean_pir_other"] + 0.25, (own, control)


def test_heatmap_page_is_byte_identical_to_the_reference() -> None:
    # heatmap.html was written by the page's first (f-string) renderer from heatmap_input.json: quotes,
    # apostrophes, markup and ampersands in text and ids, a gap between tokens, a zero-width token inside the
    # text and an eos at its end, planted tokens, the shuffled-profile title.
    case = json.loads((DATA / "heatmap_input.json").read_text(encoding="utf-8"))
    page = render_html(case["rows"], case["summary"])
    assert page == (DATA / "heatmap.html").read_text(encoding="utf-8")
    assert "ex-&lt;1&gt;&amp;&#x27;2&#x27;" in page and "<b>" not in page  # escaped, not markup
