"""`percli data` end to end (subprocess): statistics on stdout, prompts.jsonl and truth.jsonl in the run dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import only_run_dir, run_cli

from percli.data.prompts import render

SMALL = ["data.num_users=3", "data.examples_per_user=2", "data.profile_size=5"]


# One task in the fast suite: the other two run the same command with another template, whose exact text
# tests/test_data_prompts.py checks in-process.
@pytest.mark.parametrize("task", ["review", pytest.param("abstract", marks=pytest.mark.slow),
                                  pytest.param("topic", marks=pytest.mark.slow)])
def test_percli_data_synthetic_writes_prompts_and_truth(tmp_path: Path, task: str) -> None:
    out = tmp_path / "outputs"
    r = run_cli("data", f"task={task}", "data.source=synthetic", "retriever=bm25", *SMALL, f"paths.cache_dir={tmp_path / 'cache'}",
                output_dir=out)
    assert r.returncode == 0, r.stderr
    for label in ("examples: 6 loaded, 6 encoded, 0 dropped; users: 3", "full prompt tokens", "free prompt words",
                  "response tokens", "r = free/full tokens", "\nencoded 6/6 examples"):
        assert label in r.stdout, r.stdout
    run = only_run_dir(out, "data")
    rows = [json.loads(line) for line in (run / "prompts.jsonl").read_text().splitlines()]
    truth = [json.loads(line) for line in (run / "truth.jsonl").read_text().splitlines()]
    assert len(rows) == len(truth) == 6
    assert [row["id"] for row in rows] == [t["id"] for t in truth]
    for row, t in zip(rows, truth):
        assert set(row) == {"id", "user_id", "full_prompt", "free_prompt", "response"}
        assert row["full_prompt"].endswith(row["free_prompt"]) and len(row["full_prompt"]) > len(row["free_prompt"])
        for s in t["spans"]:
            assert row["response"][s["start"]:s["end"]] == s["word"]
        # the planted names reach the full prompt through the retrieved items (lower-cased by the official
        # Contriever round trip), never the free one
        assert any(w.lower() in row["full_prompt"] for w in t["planted_words"])
        assert not any(w.lower() in row["free_prompt"].lower() for w in t["planted_words"])
    stats = json.loads((run / "data_stats.json").read_text())
    assert stats["table"]["profile items (all)"]["max"] == 5 and stats["table"]["profile items (prompt)"]["p50"] == 4
    assert json.loads((run / "status.json").read_text())["status"] == "ok"


def test_percli_data_local_renders_the_official_prompt(tmp_path: Path) -> None:
    item = {"summary": "Café (2019)", "content": "I've run 26.2 miles!"}
    rec = {"author": "u1", "input": "Generate the content for a reddit post X", "output": "Done.", "profile": [item]}
    (tmp_path / "test.jsonl").write_text(json.dumps(rec) + "\n", encoding="utf-8")
    out = tmp_path / "outputs"
    r = run_cli("data", "task=topic", "data=local", "retriever=bm25", f"data.path={tmp_path}", "data.split=test",
                f"paths.cache_dir={tmp_path / 'cache'}", output_dir=out)
    assert r.returncode == 0, r.stderr
    row = json.loads((only_run_dir(out, "data") / "prompts.jsonl").read_text())
    expected = ('"Café (2019)" is a summary for "i \' ve run 26. 2 miles!" . Following the given patterns, '
                "Generate the content for a reddit post X")
    assert row["full_prompt"] == expected == render("topic", rec["input"], [item])
    assert not (only_run_dir(out, "data") / "truth.jsonl").exists()


def test_percli_data_bad_input_exits_1_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "test.jsonl").write_text('{"input": "a", "output": "b"}\n', encoding="utf-8")
    r = run_cli("data", "data=local", "retriever=bm25", f"data.path={tmp_path}", "data.split=test", output_dir=tmp_path / "o")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("percli: error: ")
    assert "test.jsonl line 1: the record has no 'profile' field" in r.stderr


def test_percli_data_hub_offline_exits_1(tmp_path: Path) -> None:
    # How fast is timed in-process, on the loader itself (< 5 s, test_data_loading.py).
    r = run_cli("data", "data=hub", "task=abstract", output_dir=tmp_path / "o")
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "abstract_generation_user" in last and "data.source=local data.path=DIR" in last
