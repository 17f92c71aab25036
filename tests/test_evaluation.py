"""`percli eval`: generation with tiny and SmolLM2, files and metric keys, batched == batch-1 greedy."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, only_run_dir

from percli.data.collate import pad_rows
from percli.errors import DataError
from percli.eval_inputs import VLLM_MISSING, read_predictions
from percli.evaluation import evaluate_generations
from percli.generation import eval_prompt_ids, generate
from percli.metrics import planted_recall
from percli.preflight import compose_config

# Small synthetic eval sets: the test split has max(1, examples_per_user // 2) examples per user.
SMALL = ["data=synthetic", "retriever=bm25", "data.num_users=2", "data.examples_per_user=2", "retriever.k=1"]
METRIC_KEYS = {"rouge1", "rouge2", "rougeL", "rougeLsum", "meteor"}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_left_pad():
    ids, mask = pad_rows([[5, 6, 7], [9]], 0, "left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 9]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad_rows([[5, 6, 7], [9]], 2, "right")
    assert ids.tolist() == [[5, 6, 7], [9, 2, 2]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_planted_recall_counts_whole_words_case_insensitively() -> None:
    words = ["zorbleck", "quaith", "drumvek"]
    ref = "Zorbleck, quaith and drumvek."
    assert planted_recall("My Zorbleck and my quaith's lid.", ref, words) == pytest.approx(2 / 3)
    assert planted_recall("zorblecks drumvekx", ref, words) == 0.0  # not whole words
    assert planted_recall("drumvek, quaith, zorbleck", ref, words) == 1.0
    # the generator's planted names: the whole full name counts, case-insensitively
    names = ["Ethan Brooks", "Nora Vance"]
    ref = "Ethan Brooks and Nora Vance."
    assert planted_recall("A friend named ethan brooks helped.", ref, names) == 0.5
    assert planted_recall("Ethan Brookside and Nora, Vance", ref, names) == 0.0


def test_read_predictions_validates(tmp_path: Path):
    good = tmp_path / "p.jsonl"
    good.write_text('{"name": "a", "prediction": "x", "reference": "y"}\n\n{"prediction": "", "reference": "z"}\n')
    assert read_predictions(good) == [{"id": "a", "prediction": "x", "reference": "y"},
                                      {"id": "3", "prediction": "", "reference": "z"}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prediction": "x", "reference": "y"}\n{"prediction": "x"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2 needs string fields 'prediction' and 'reference'"):
        read_predictions(bad)
    bad.write_text('{"prediction": "x", "reference": "y"}\nnot json\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2 is not valid JSON"):
        read_predictions(bad)


# `percli eval` with a missing predictions file, or the vLLM backend without vLLM: one line, exit 1, from the
# preflight, before torch or any data is loaded (the CLI's own process reports whether torch was imported).
_TORCH_LOADED = ("import sys\nfrom percli.cli import main\ntry:\n    main(sys.argv[1:])\n"
                 "finally:\n    print('torch loaded:', 'torch' in sys.modules)")


@pytest.mark.parametrize("case", ["missing predictions", "vllm"])
def test_eval_input_errors_are_one_line_before_torch_loads(tmp_path: Path, case: str):
    if case == "vllm" and importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here; this checks the message when it is not")
    missing = tmp_path / "nope.jsonl"
    args = [f"eval.predictions={missing}"] if case == "missing predictions" else ["eval.backend=vllm", *SMALL]
    env = {**os.environ, "PERCLI_OUTPUT_DIR": str(tmp_path / "outputs"), "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-c", _TORCH_LOADED, "eval", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)
    assert (proc.returncode, proc.stdout) == (1, "torch loaded: False\n")
    expected = (f"percli: error: eval.predictions={missing} does not exist; point it at a jsonl of "
                '{"prediction": ..., "reference": ...} rows (e.g. an earlier run\'s predictions.jsonl)'
                if case == "missing predictions" else f"percli: error: {VLLM_MISSING}")
    assert proc.stderr.strip() == expected
    assert not (tmp_path / "outputs").exists()  # no run dir for a job that never ran


def test_cli_tiny_generates_and_scores(cli, tmp_path: Path):
    proc = cli("eval", "model=tiny", *SMALL, "eval.max_new_tokens=4", "eval.batch_size=2")
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(tmp_path / "outputs", "eval")
    assert {"config.yaml", "status.json", "metrics.json", "predictions.jsonl", "scores.jsonl"} <= {
        p.name for p in run_dir.iterdir()}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert METRIC_KEYS | {"num_examples", "split", "task", "generation"} <= set(metrics)
    # No reference names a planted word within its first 4 tokens: nothing a 4-token generation could recall.
    assert "planted_recall" not in metrics
    assert (metrics["num_examples"], metrics["split"], metrics["task"], metrics["model"]) == (2, "test", "review", "tiny")
    gen = metrics["generation"]
    assert (gen["backend"], gen["batch_size"], gen["max_new_tokens"], gen["prompts"]) == ("hf", 2, 4, 2)
    assert 2 <= gen["new_tokens"] <= 8 and gen["tokens_per_s"] > 0
    rows = _lines(run_dir / "predictions.jsonl")
    # user setting: users 0-1 train, 2-3 val, 4-5 test
    assert [r["id"] for r in rows] == ["review-test-u004-0", "review-test-u005-0"]
    assert all(set(r) == {"id", "user_id", "prediction", "reference", "planted_words"} and r["planted_words"] == []
               for r in rows)
    scores = _lines(run_dir / "scores.jsonl")
    assert [(s["id"], s["user_id"]) for s in scores] == [(r["id"], r["user_id"]) for r in rows]
    assert [r["user_id"] for r in rows] == ["AL0FR1BUMHQ4F", "AXF49W7EMXKVU"]
    assert "percli: eval on 2 examples (mean): rouge1" in proc.stdout


def test_evaluation_sampling_is_seeded_and_private(tmp_path: Path):
    from percli.data.longlamp import load_examples
    from percli.models import load_model_and_tokenizer

    cfg = compose_config("eval", ["model=tiny", *SMALL, "eval.max_new_tokens=6", "eval.do_sample=true",
                                  "eval.temperature=1.5", "eval.max_examples=1"])
    torch.manual_seed(42)
    state = torch.get_rng_state()
    a = evaluate_generations(cfg, tmp_path / "a")
    assert torch.equal(torch.get_rng_state(), state)  # the caller's torch RNG is untouched
    b = evaluate_generations(cfg, tmp_path / "b")
    assert a["num_examples"] == 1 and METRIC_KEYS <= set(a)
    assert {k: b[k] for k in METRIC_KEYS} == {k: a[k] for k in METRIC_KEYS}
    texts = [_lines(tmp_path / d / "predictions.jsonl")[0]["prediction"] for d in ("a", "b")]
    assert texts[0] == texts[1] != ""
    model, tok = load_model_and_tokenizer(cfg.model, seed=0)
    prompt_ids, _ = eval_prompt_ids(load_examples(cfg, "test")[:1], tok, int(cfg.data.max_prompt_tokens))
    other = generate(model, tok, prompt_ids, batch_size=1, max_new_tokens=6, do_sample=True, temperature=1.5,
                     seed=1, progress=False)
    assert other.texts[0] != texts[0]


def test_a_shard_generates_every_world_th_batch_of_the_plan():
    from percli.data.longlamp import load_examples
    from percli.generation import batch_plan
    from percli.models import load_model_and_tokenizer

    cfg = compose_config("eval", ["model=tiny", "data=synthetic", "retriever=bm25", "data.num_users=5",
                                  "data.examples_per_user=2", "retriever.k=1"])
    model, tok = load_model_and_tokenizer(cfg.model, seed=0)
    prompt_ids, _ = eval_prompt_ids(load_examples(cfg, "test"), tok, int(cfg.data.max_prompt_tokens))
    plan = batch_plan(prompt_ids, 2)
    assert [len(b) for b in plan] == [2, 2, 1] and sorted(sum(plan, [])) == list(range(5))
    assert [len(prompt_ids[i]) for i in sum(plan, [])] == sorted((len(p) for p in prompt_ids), reverse=True)
    whole = generate(model, tok, prompt_ids, batch_size=2, max_new_tokens=4, do_sample=True, progress=False)
    shards = [generate(model, tok, prompt_ids, batch_size=2, max_new_tokens=4, do_sample=True, progress=False,
                       shard=(r, 2)) for r in range(2)]
    assert [i for i, t in enumerate(shards[1].texts) if t is not None] == sorted(plan[1])
    merged = [a if a is not None else b for a, b in zip(shards[0].texts, shards[1].texts)]
    assert merged == whole.texts  # sampling too: each batch's seed is its index in the plan


@pytest.mark.slow
def test_cli_smollm2_generates_and_scores(cli, tmp_path: Path):
    proc = cli("eval", "model=smollm2-135m", *SMALL, "eval.max_new_tokens=8")
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(tmp_path / "outputs", "eval")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert METRIC_KEYS | {"planted_recall"} <= set(metrics) and metrics["model"] == "smollm2-135m"
    rows = _lines(run_dir / "predictions.jsonl")
    assert len(rows) == 2 and all(r["prediction"].strip() for r in rows)  # a real LM says something


@pytest.mark.slow
def test_smollm2_batched_greedy_equals_batch_1():
    from percli.data.longlamp import load_examples
    from percli.models import load_model_and_tokenizer

    cfg = compose_config("eval", ["model=smollm2-135m", "data=synthetic", "retriever=bm25", "data.num_users=4",
                                  "data.examples_per_user=2", "retriever.k=1"])
    model, tok = load_model_and_tokenizer(cfg.model, seed=0)
    examples = load_examples(cfg, "test")
    prompt_ids, _ = eval_prompt_ids(examples, tok, int(cfg.data.max_prompt_tokens))
    assert len(prompt_ids) == 4 and len({len(p) for p in prompt_ids}) > 1  # real padding in the batch
    one = generate(model, tok, prompt_ids, batch_size=1, max_new_tokens=16, progress=False)
    batched = generate(model, tok, prompt_ids, batch_size=4, max_new_tokens=16, progress=False)
    assert batched.texts == one.texts
    assert batched.new_tokens == one.new_tokens
    assert all(t for t in one.texts)


def test_planted_names_count_only_within_the_generation_length(tmp_path: Path):
    from percli.data.longlamp import load_examples
    from percli.models import load_tokenizer

    cfg = compose_config("eval", ["model=tiny", *SMALL, "data.num_users=6", "eval.max_new_tokens=40"])
    evaluate_generations(cfg, tmp_path)
    tok = load_tokenizer(cfg.model)
    rows = {r["id"]: r for r in _lines(tmp_path / "predictions.jsonl")}
    dropped = 0
    for ex in load_examples(cfg, "test"):
        head = tok.decode(tok(ex.output, add_special_tokens=False)["input_ids"][:40])
        kept = [w for w in ex.meta["planted_words"] if w.lower() in head.lower()]
        assert rows[ex.id].get("planted_words", []) == kept
        dropped += len(ex.meta["planted_words"]) - len(kept)
    assert dropped > 0  # some names come after the first 40 tokens of their reference
