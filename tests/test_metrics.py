"""ROUGE/METEOR parity with HF evaluate, on 122 real-text pairs, through the real `percli eval` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import DATA, only_run_dir, run_cli

from percli.errors import DataError
from percli.metrics import ROUGE_TYPES, bootstrap_mid, compute, rouge_matrices

# Under pytest-xdist one worker runs the whole module, so its module-scoped fixture (the `percli eval` parity run)
# is built once, not once per worker.
pytestmark = pytest.mark.xdist_group("metrics")

PARITY = DATA / "metric_parity"  # its README.md says where the pairs and values come from
TOL = 1e-6

# evaluate 0.4.6 itself, run on this machine with evaluate's own metrics/rouge/rouge.py (loaded from a local
# copy of the evaluate repo): `np.random.seed(s); evaluate.load(<dir>/rouge).compute(predictions=P,
# references=R)` on pairs.jsonl in file order.
EVALUATE_BOOTSTRAP = {
    0: {"rouge1": 0.254937035994107, "rouge2": 0.035069297920347554,
        "rougeL": 0.13891927664057135, "rougeLsum": 0.14705132295947976},
    7: {"rouge1": 0.253571482273159, "rouge2": 0.03502049221661913,
        "rougeL": 0.13943229104842286, "rougeLsum": 0.14707455013926496},
}
METEOR_DOC_PRED = "It is a guide to action which ensures that the military always obeys the commands of the party"
METEOR_DOC_REF = "It is a guide to action that ensures that the military will forever heed Party commands"


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    """The parity kit's 122 prediction/reference pairs, in file order."""
    lines = (PARITY / "pairs.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line]


@pytest.fixture(scope="module")
def reference() -> dict:
    """Corpus-level values computed by evaluate's own metric scripts."""
    return json.loads((PARITY / "reference_metrics.json").read_text())


@pytest.fixture(scope="module")
def reference_per_example() -> dict:
    return json.loads((PARITY / "reference_per_example.json").read_text())


@pytest.fixture(scope="module")
def parity_run(tmp_path_factory) -> Path:
    """One `percli eval eval.predictions=pairs.jsonl` run (mean mode), shared by the parity tests."""
    out = tmp_path_factory.mktemp("parity") / "outputs"
    proc = run_cli("eval", f"eval.predictions={PARITY / 'pairs.jsonl'}", output_dir=out)
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(out, "eval")
    assert json.loads((run_dir / "status.json").read_text()) == {"status": "ok"}
    assert "meteor 0.1927" in proc.stdout
    return run_dir


def test_cli_mean_matches_evaluate_reference(parity_run: Path, reference: dict):
    got = json.loads((parity_run / "metrics.json").read_text())
    assert got["num_examples"] == reference["n_pairs"] == 122
    assert got["aggregate"] == "mean"
    for key in ROUGE_TYPES:
        assert got[key] == pytest.approx(reference["rouge_per_example_mean"][key], abs=TOL), key
    assert got["meteor"] == pytest.approx(reference["meteor"], abs=TOL)


def test_cli_per_example_matches_evaluate_reference(parity_run: Path, pairs: list[dict],
                                                    reference_per_example: dict):
    rows = [json.loads(line) for line in (parity_run / "scores.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [p["name"] for p in pairs]
    assert set(reference_per_example) == {r["id"] for r in rows}
    for row in rows:
        ref = reference_per_example[row["id"]]
        for key in ("rouge1", "rougeL", "meteor"):
            assert row[key] == pytest.approx(ref[key], abs=TOL), (row["id"], key)
    # The edge cases: pair 4 has an empty prediction, pair 8 one cut mid-word.
    assert pairs[3]["prediction"] == "" and rows[3] == {"id": pairs[3]["name"], "rouge1": 0.0, "rouge2": 0.0,
                                                       "rougeL": 0.0, "rougeLsum": 0.0, "meteor": 0.0}
    assert rows[7]["rouge1"] == pytest.approx(reference_per_example[pairs[7]["name"]]["rouge1"], abs=1e-12)
    assert 0 < rows[7]["meteor"] < 1
    preds = [json.loads(line) for line in (parity_run / "predictions.jsonl").read_text().splitlines()]
    assert preds[7] == {"id": pairs[7]["name"], "prediction": pairs[7]["prediction"], "reference": pairs[7]["reference"]}


def test_bootstrap_equals_evaluate_run_after_np_random_seed(pairs: list[dict], reference: dict):
    preds, refs = [p["prediction"] for p in pairs], [p["reference"] for p in pairs]
    got = compute(preds, refs, aggregate="bootstrap", seed=0)
    assert got["aggregate"] == "bootstrap"
    for key in ROUGE_TYPES:
        assert got[key] == pytest.approx(EVALUATE_BOOTSTRAP[0][key], abs=1e-12), key
    assert got["meteor"] == pytest.approx(reference["meteor"], abs=TOL)  # METEOR has no aggregator
    # Another seed, through the same resampling compute() uses (the types draw in evaluate's order).
    mats, rng = rouge_matrices(preds, refs), np.random.RandomState(7)
    for key in ROUGE_TYPES:
        assert bootstrap_mid(mats[key], rng)[2] == pytest.approx(EVALUATE_BOOTSTRAP[7][key], abs=1e-12), key


def test_bootstrap_equals_evaluate_modules_own_seeding(pairs: list[dict]) -> None:
    """Live, offline: an evaluate.Metric whose _compute aggregates like evaluate's rouge.py (rouge_score
    BootstrapAggregator on the global RNG). evaluate's EvaluationModule captures a seed from np.random's state
    when it is created and re-seeds inside compute(); created right after np.random.seed(s), that equals ours."""
    import datasets
    import evaluate
    from rouge_score import rouge_scorer, scoring

    class BootstrapRouge(evaluate.Metric):
        def _info(self) -> evaluate.MetricInfo:
            return evaluate.MetricInfo(description="", citation="", inputs_description="", features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}))

        def _compute(self, predictions: list[str], references: list[str]) -> dict:
            scorer, agg = rouge_scorer.RougeScorer(list(ROUGE_TYPES)), scoring.BootstrapAggregator()
            for ref, pred in zip(references, predictions):
                agg.add_scores(scorer.score(ref, pred))
            return {k: v.mid.fmeasure for k, v in agg.aggregate().items()}

    preds, refs = [p["prediction"] for p in pairs], [p["reference"] for p in pairs]
    saved = np.random.get_state()
    try:
        for seed in (0, 7):
            np.random.seed(seed)
            expected = BootstrapRouge(keep_in_memory=True).compute(predictions=preds, references=refs)
            got = compute(preds, refs, aggregate="bootstrap", seed=seed)
            assert {k: got[k] for k in ROUGE_TYPES} == expected
            assert expected == pytest.approx(EVALUATE_BOOTSTRAP[seed], abs=1e-12)  # and evaluate's real script
    finally:
        np.random.set_state(saved)


def test_bootstrap_matches_reference_file_seed0(pairs: list[dict], reference: dict):
    """The parity kit's bootstrap value, produced by evaluate's rouge loaded with seed=0."""
    preds, refs = [p["prediction"] for p in pairs], [p["reference"] for p in pairs]
    got = compute(preds, refs, aggregate="bootstrap", seed=0)
    for key in ROUGE_TYPES:
        assert got[key] == pytest.approx(reference["rouge_aggregated_seed0"][key], abs=TOL), key


def test_bootstrap_mid_equals_rouge_score_aggregator_with_global_seed(pairs: list[dict]):
    """Our private-RNG resampling equals rouge_score's BootstrapAggregator drawing from np.random."""
    from rouge_score import rouge_scorer, scoring

    subset = pairs[:40]
    mats = rouge_matrices([p["prediction"] for p in subset], [p["reference"] for p in subset])
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False)
    saved = np.random.get_state()
    try:
        for seed in (0, 3):
            np.random.seed(seed)
            agg = scoring.BootstrapAggregator()
            for p in subset:
                agg.add_scores(scorer.score(p["reference"], p["prediction"]))
            expected = agg.aggregate()
            rng = np.random.RandomState(seed)
            for key in ROUGE_TYPES:
                assert bootstrap_mid(mats[key], rng)[2] == expected[key].mid.fmeasure
    finally:
        np.random.set_state(saved)


def test_callers_numpy_rng_untouched_and_irrelevant(pairs: list[dict]):
    preds, refs = [p["prediction"] for p in pairs[:6]], [p["reference"] for p in pairs[:6]]
    np.random.seed(123)
    np.random.random(5)  # a state mid-stream, not just after seeding
    before = np.random.get_state()
    first = compute(preds, refs, aggregate="bootstrap", seed=0)
    after = np.random.get_state()
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and before[2:] == after[2:]
    np.random.seed(999)
    second = compute(preds, refs, aggregate="bootstrap", seed=0)
    assert first == second
    assert compute(preds, refs, aggregate="bootstrap", seed=1)["rouge1"] != first["rouge1"]


def test_meteor_documented_example():
    got = compute([METEOR_DOC_PRED], [METEOR_DOC_REF])
    assert got["meteor"] == pytest.approx(0.6944444444444445, abs=1e-12)
    assert round(got["meteor"], 4) == 0.6944
    assert got["per_example"] == [{"rouge1": got["rouge1"], "rouge2": got["rouge2"], "rougeL": got["rougeL"],
                                   "rougeLsum": got["rougeLsum"], "meteor": got["meteor"]}]


def test_rouge_hand_computed():
    # "the cat sat" vs "the cat sat down": P=1, R=3/4 -> F=6/7 for rouge1 and rougeL; bigrams 2/2 and 2/3 -> 0.8.
    # rougeLsum splits on newlines only: same text, same score.
    got = compute(["The cat sat"], ["the cat sat down"])
    assert got["rouge1"] == pytest.approx(6 / 7) and got["rougeL"] == pytest.approx(6 / 7)
    assert got["rouge2"] == pytest.approx(0.8) and got["rougeLsum"] == pytest.approx(6 / 7)
    # Two lines in a different order: rougeL sees one sequence, rougeLsum the union LCS of the lines.
    two = compute(["b c\na b"], ["a b\nb c"])
    assert two["rougeL"] == pytest.approx(0.5) and two["rougeLsum"] == pytest.approx(1.0)


def test_bad_inputs_fail_with_one_line():
    with pytest.raises(DataError, match="2 predictions but 1 references"):
        compute(["a", "b"], ["a"])
    with pytest.raises(DataError, match="nothing to score"):
        compute([], [])
    with pytest.raises(DataError, match="example 0: prediction and reference must be strings"):
        compute([None], ["a"])
    with pytest.raises(ValueError, match="aggregate='median'"):
        compute(["a"], ["a"], aggregate="median")
