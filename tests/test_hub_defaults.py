"""The command means what it says: without a `data=` choice a run uses LongLaMP from the hub with the paper's
Contriever top-4, and offline it fails in a second, in one line that names data=synthetic, before any run dir."""

from __future__ import annotations

import time
from pathlib import Path

import huggingface_hub.constants
import pytest
import yaml

from percli.errors import EnvironmentProblem
from percli.hub import dataset_cached
from percli.preflight import preflight

# The README's first GPU example.
GPU_EXAMPLE = ["task=review", "model=qwen3-4b", "launcher=deepspeed", "loss=perce"]
HINT = ("percli: error: LongLaMP/LongLaMP (product_review_user) is not in the local HF cache and the dataset hub is "
        "unreachable; run offline with data=synthetic retriever=bm25 (seeded LongLaMP-schema data), or use a copy "
        "on disk: data.source=local data.path=DIR with {train,val,test}.jsonl files")


@pytest.mark.parametrize("command", ["train", "eval", "contrast", "data"])
def test_default_data_is_longlamp_from_the_hub_with_contriever_top_4(cli, command):
    r = cli(command, *(GPU_EXAMPLE if command == "train" else []), "--cfg", "job")
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load(r.stdout)
    assert (cfg["data"]["source"], cfg["retriever"]["name"], cfg["retriever"]["model_id"], cfg["retriever"]["k"]) == (
        "hub", "contriever", "facebook/contriever", 4)


def test_offline_the_gpu_example_fails_in_one_line_naming_data_synthetic(cli, tmp_path):
    r = cli("train", *GPU_EXAMPLE)
    assert (r.returncode, r.stderr, r.stdout) == (1, HINT + "\n", "")
    assert not (tmp_path / "outputs").exists()  # failed before Hydra made a run dir


def test_the_gpu_example_runs_one_process_per_visible_gpu(cli):
    cfg = yaml.safe_load(cli("train", *GPU_EXAMPLE, "--cfg", "job").stdout)
    assert (cfg["launcher"]["name"], cfg["launcher"]["num_processes"], cfg["model"]["hub_id"]) == (
        "deepspeed", "auto", "Qwen/Qwen3-4B")


def test_offline_synthetic_data_with_contriever_fails_in_one_line_naming_bm25(cli, tmp_path):
    r = cli("train", "data=synthetic")
    assert (r.returncode, r.stderr) == (1, "percli: error: retriever=contriever needs facebook/contriever, which is not "
                                           "in the local HF cache, and the hub is unreachable; use retriever=minilm "
                                           "(offline dense) or retriever=bm25, or set retriever.model_id=DIR to a local "
                                           "copy\n")
    assert not (tmp_path / "outputs").exists()


def test_smoke_and_the_cpu_presets_choose_synthetic_data(cli):
    for overrides in (["debug=smoke"], ["experiment=demo"], ["experiment=study"]):
        cfg = yaml.safe_load(cli("train", *overrides, "--cfg", "job").stdout)
        assert (cfg["data"]["source"], cfg["retriever"]["name"]) == ("synthetic", "bm25"), overrides


def test_without_network_preflight_fails_within_2_s(unreachable_hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    start = time.monotonic()
    with pytest.raises(EnvironmentProblem) as info:
        preflight("train", ["task=topic", "task.setting=temporal"])
    assert time.monotonic() - start < 2
    assert str(info.value).startswith("LongLaMP/LongLaMP (topic_writing_temporal) is not in the local HF cache")
    assert "data=synthetic" in str(info.value)


def test_a_cached_copy_is_found_in_either_cache(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert not dataset_cached("LongLaMP/LongLaMP", "topic_writing_user")
    # datasets' prepared Arrow copy: <cache>/<namespace>___<snake_case name>/<config>/
    (tmp_path / "datasets" / "LongLaMP___long_la_mp" / "topic_writing_user").mkdir(parents=True)
    assert dataset_cached("LongLaMP/LongLaMP", "topic_writing_user")
    assert not dataset_cached("LongLaMP/LongLaMP", "product_review_user")
    # the repo's files in the hub cache serve every config
    (tmp_path / "hub" / "datasets--LongLaMP--LongLaMP").mkdir(parents=True)
    assert dataset_cached("LongLaMP/LongLaMP", "product_review_user")
