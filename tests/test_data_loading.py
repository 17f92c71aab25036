"""Sources (local, synthetic, hub offline), normalisation, bad input and subsampling."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from percli.data.longlamp import load_examples, load_raw_examples
from percli.data.synthetic import write_dataset
from percli.errors import DataError, EnvironmentProblem
from percli.preflight import compose_config

REVIEW_ITEM = {"overall": 5.0, "description": "Kettle", "summary": "Good", "reviewText": "Boils fast."}


def _cfg(tmp_path: Path, *overrides: str):
    return compose_config("data", [f"paths.cache_dir={tmp_path / 'cache'}", *overrides])


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _local(tmp_path: Path, task: str = "review", split: str = "test") -> list:
    cfg = _cfg(tmp_path, f"task={task}", "data=local", f"data.path={tmp_path / 'd'}", f"data.split={split}")
    return load_raw_examples(cfg, split)[0]


def test_local_jsonl_json_and_parquet_read_the_same_records(tmp_path: Path) -> None:
    rows = [{"reviewerId": "A1", "input": "in 1", "output": "out 1", "profile": [REVIEW_ITEM]},
            {"reviewerId": "A2", "input": "in 2", "output": "out 2", "profile": []}]
    d = tmp_path / "d"
    d.mkdir()
    _write_jsonl(d / "test.jsonl", rows)
    (d / "val.json").write_text(json.dumps(rows), encoding="utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([rows[0]]), d / "train.parquet")
    for split, n in (("test", 2), ("val", 2), ("train", 1)):
        exs = _local(tmp_path, split=split)
        assert len(exs) == n
        assert (exs[0].id, exs[0].user_id, exs[0].input, exs[0].output) == (f"{split}-000001", "A1", "in 1", "out 1")
        assert exs[0].profile == [REVIEW_ITEM] and exs[0].meta["profile_size"] == 1
    assert _local(tmp_path)[1].profile == []  # an empty profile among others is kept


def test_topic_items_named_input_output_are_renamed(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    _write_jsonl(tmp_path / "d" / "test.jsonl",
                 [{"author": "u", "input": "q", "output": "o", "profile": [{"input": "Title", "output": "Body"}]}])
    assert _local(tmp_path, task="topic")[0].profile == [{"summary": "Title", "content": "Body"}]


@pytest.mark.parametrize("content, message", [
    (None, r"data.path=.*does not exist"),
    (b"", r"test.jsonl is empty"),
    (b'{"input": "a"}\n\xff\xfe broken\n', r"test.jsonl:2 is not valid UTF-8"),
    (b'{"input": "a", "output": "b", "profile": []}\n{not json}\n', r"test.jsonl:2 is not valid JSON"),
    (b'[1, 2]\n', r"test.jsonl line 1 is a list, expected a record object"),
    (b'{"input": "a", "profile": []}\n', r"line 1: the record has no 'output' field"),
    (b'{"output": "a", "profile": []}\n', r"line 1: the record has no 'input' field"),
    (b'{"input": "a", "output": "b"}\n', r"line 1: the record has no 'profile' field"),
    (b'{"input": "a", "output": "b", "profile": [{"overall": 5, "description": "d", "reviewText": "r"}]}\n',
     r"line 1: profile item 0 lacks 'summary', which the review template needs"),
    (b'{"input": "a", "output": "b", "profile": []}\n{"input": "c", "output": "d", "profile": null}\n',
     r"none of the 2 examples has a profile item"),
])
def test_bad_local_data_fails_with_one_line(tmp_path: Path, content: bytes | None, message: str) -> None:
    d = tmp_path / "d"
    if content is not None:
        d.mkdir()
        (d / "test.jsonl").write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        _local(tmp_path)
    assert "\n" not in str(info.value)


def test_unknown_split_names_the_files_present(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    _write_jsonl(tmp_path / "d" / "train.jsonl", [{"input": "a", "output": "b", "profile": [REVIEW_ITEM]}])
    with pytest.raises(DataError, match=r"split='dev' has no dev.jsonl/.json/.parquet .*found: train.jsonl"):
        _local(tmp_path, split="dev")
    with pytest.raises(DataError, match=r"split='dev' is not a synthetic split"):
        load_raw_examples(_cfg(tmp_path, "data=synthetic"), "dev")


def test_bad_json_file_gives_line_number(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "test.json").write_text('[\n {"input": "a",\n  oops}\n]', encoding="utf-8")
    with pytest.raises(DataError, match=r"test.json:3 is not valid JSON"):
        _local(tmp_path)


def test_synthetic_written_as_local_dir_loads_identically(tmp_path: Path) -> None:
    write_dataset("abstract", tmp_path / "d", num_users=3, examples_per_user=2, profile_size=4, seed=5)
    local = _local(tmp_path, task="abstract", split="val")
    synth = load_raw_examples(_cfg(tmp_path, "data=synthetic", "task=abstract", "data.num_users=3", "data.examples_per_user=2",
                                   "data.profile_size=4", "data.seed=5"), "val")[0]
    assert [(e.id, e.user_id, e.input, e.output, e.profile) for e in local] == \
           [(e.id, e.user_id, e.input, e.output, e.profile) for e in synth]
    assert len(synth) == 3  # val holds max(1, examples_per_user // 2) per user
    truth = [json.loads(line) for line in (tmp_path / "d" / "val.truth.jsonl").read_text().splitlines()]
    assert [t["spans"] for t in truth] == [e.meta["planted_spans"] for e in synth]


def test_subsample_is_seeded_and_order_preserving(tmp_path: Path) -> None:
    base = ["data=synthetic", "data.num_users=6", "data.examples_per_user=2", "data.max_examples=5", "retriever=recency"]
    a = [e.id for e in load_examples(_cfg(tmp_path, *base, "data.seed=1"), "train")]
    b = [e.id for e in load_examples(_cfg(tmp_path, *base, "data.seed=1"), "train")]
    c = [e.id for e in load_examples(_cfg(tmp_path, *base, "data.seed=2"), "train")]
    assert a == b and len(a) == 5 and a == sorted(a)
    assert a != c
    # data.max_examples caps the training split (data.split) only: evaluation splits are read whole.
    cfg = _cfg(tmp_path, *base, "data.seed=1")
    assert len(load_examples(cfg, "test")) == 6 == len(load_examples(cfg, "val"))


def test_eval_max_examples_is_a_seeded_subsample_shared_by_run_seeds(tmp_path: Path) -> None:
    from percli.generation import limit_examples

    whole = load_examples(_cfg(tmp_path, "data=synthetic", "data.num_users=8", "retriever=recency"), "test")
    overrides = ["data=synthetic", "data.num_users=8", "retriever=recency", "+eval.max_examples=3"]
    picked = [e.id for e in limit_examples(whole, _cfg(tmp_path, *overrides, "seed=1"))]
    assert picked == [e.id for e in limit_examples(whole, _cfg(tmp_path, *overrides, "seed=2"))]  # run seed: same set
    assert len(picked) == 3 and picked == sorted(picked) and picked != [e.id for e in whole[:3]]
    other = [e.id for e in limit_examples(whole, _cfg(tmp_path, *overrides, "data.seed=5"))]
    assert other != picked and len(other) == 3
    assert len(limit_examples(whole, _cfg(tmp_path, "data=synthetic", "data.num_users=8"))) == len(whole) == 16


def test_load_examples_holds_retrieved_items_in_order(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "data=synthetic", "data.num_users=2", "data.examples_per_user=1", "retriever=recency", "retriever.k=3")
    raw = load_raw_examples(cfg, "train")[0]
    exs = load_examples(cfg, "train")
    assert exs[0].meta["retrieved"] == [7, 6, 5]
    assert exs[0].profile == [raw[0].profile[7], raw[0].profile[6], raw[0].profile[5]]


def test_hub_offline_fails_fast_with_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    import datasets.config
    import huggingface_hub.constants

    from percli.hub import hub_reachable

    # No network, whatever this machine has: every connect fails. hub_reachable then switches the HF
    # libraries to offline mode; monkeypatch restores them after the test.
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", huggingface_hub.constants.HF_HUB_OFFLINE)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", datasets.config.HF_HUB_OFFLINE)
    hub_reachable.cache_clear()
    cfg = _cfg(tmp_path, "data=hub", "task=topic", "task.setting=temporal")
    try:
        start = time.monotonic()
        with pytest.raises(EnvironmentProblem) as info:
            load_raw_examples(cfg, "train")
        assert time.monotonic() - start < 5
        msg = str(info.value)
        assert "topic_writing_temporal" in msg and "data.source=local data.path=DIR" in msg and "\n" not in msg
        with pytest.raises(DataError, match="split='dev' is not a LongLaMP split"):
            load_raw_examples(cfg, "dev")
    finally:
        hub_reachable.cache_clear()
