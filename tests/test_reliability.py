"""The bad-input matrix through the real CLI: one clear line, the right exit code, no traceback.

Configuration errors (exit 2) are in test_cli.py; non-finite steps, SIGKILL / SIGTERM resume are in
test_train_cli.py and test_train_slow.py. This file covers data and environment errors (exit 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REVIEW_ITEM = {"overall": 5, "description": "A kettle", "summary": "Great", "reviewText": "It boils fast."}


def _record(**fields) -> bytes:
    base = {"input": "Write a review.", "output": "Good kettle.", "profile": [REVIEW_ITEM]}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode() + b"\n"


CASES = [
    # (case id, test.jsonl bytes or None for a missing dir, expected fragment of the one line)
    ("missing path", None, "does not exist"),
    ("empty file", b"", "test.jsonl is empty"),
    ("not UTF-8", _record() + b"\xff\xfe broken\n", "test.jsonl:2 is not valid UTF-8"),
    ("not JSON", _record() + b"{not json}\n", "test.jsonl:2 is not valid JSON"),
    ("no output", _record(output=...), "line 1: the record has no 'output' field"),
    ("no input", _record(input=...), "line 1: the record has no 'input' field"),
    ("no profile", _record(profile=...), "line 1: the record has no 'profile' field"),
    ("item lacks a template field", _record(profile=[{"overall": 5, "description": "d", "reviewText": "r"}]),
     "profile item 0 lacks 'summary', which the review template needs"),
    ("no example has a profile", _record(profile=[]) + _record(profile=[]), "none of the 2 examples has a profile"),
]


@pytest.mark.parametrize(("content", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_data_is_one_line_exit_1(cli, tmp_path: Path, content: bytes | None, expected: str):
    data = tmp_path / "data"
    if content is not None:
        data.mkdir()
        (data / "test.jsonl").write_bytes(content)
    r = cli("data", "data=local", "retriever=bm25", f"data.path={data}", "data.split=test")
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("percli: error: ") and expected in lines[-1], r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_split_is_one_line_exit_1(cli, tmp_path: Path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_bytes(_record())
    r = cli("data", "data=local", "retriever=bm25", f"data.path={tmp_path / 'data'}", "data.split=dev")
    assert r.returncode == 1
    assert "split='dev' has no dev.jsonl/.json/.parquet" in r.stderr.strip().splitlines()[-1]


def test_empty_profiles_among_others_are_kept_and_counted(cli, tmp_path: Path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test.jsonl").write_bytes(_record() + _record(profile=[]) + _record())
    r = cli("data", "data=local", "retriever=bm25", f"data.path={tmp_path / 'data'}", "data.split=test")
    assert r.returncode == 0, r.stderr
    assert "3 examples, 1 with an empty profile (kept, full prompt = input)" in r.stderr


def test_over_long_examples_truncate_the_profile_then_drop_and_report(cli, tmp_path: Path):
    long_item = dict(REVIEW_ITEM, reviewText="word " * 400)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test.jsonl").write_bytes(
        _record(profile=[long_item, long_item])            # profile cut to fit
        + _record(input="too long " * 200)                 # the input alone exceeds the budget: dropped
        + _record(output="long answer " * 100))            # response cut at max_response_tokens
    r = cli("data", "data=local", "retriever=bm25", f"data.path={tmp_path / 'data'}", "data.split=test",
            "data.max_prompt_tokens=200", "data.max_response_tokens=32")
    assert r.returncode == 0, r.stderr
    summary = next(line for line in (r.stderr + r.stdout).splitlines() if line.startswith("encoded "))
    assert summary.startswith("encoded 2/3 examples; dropped 1 (input alone over max_prompt_tokens)")
    assert "1 responses cut at max_response_tokens" in summary
    assert "1 items dropped, 1 items cut" in summary


def test_offline_dataset_hub_fails_without_env_hints(cli):
    # How fast is timed in-process, on the loader itself (test_data_loading.py).
    r = cli("data", "data=hub", "task=topic")
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert "topic_writing_user" in last and "data.source=local data.path=DIR" in last
    assert "Traceback" not in r.stderr
