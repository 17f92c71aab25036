"""scripts/gpu_check.py (`make gpu-check`) on a machine without a GPU: the one-line exit, and its GPU code
path as far as a CPU runs it: real `percli train` runs summarised, PerCE/CE ratios, the table, the
skipped-vLLM branch."""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys

import pytest
import torch
from helpers import REPO

from percli.io import read_jsonl

sys.path.insert(0, str(REPO / "scripts"))
import gpu_check  # noqa: E402

FAST = ["debug=smoke", "data.max_prompt_tokens=192", "data.max_response_tokens=24", "train.max_steps=4",
        "train.save_every=100", "eval.after_train=false"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU branch")
def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path):
    r = subprocess.run([sys.executable, "scripts/gpu_check.py", "--out", str(tmp_path)], capture_output=True,
                       text=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout == "gpu-check: no CUDA GPU is visible on this machine; nothing to check (run it on a GPU node)\n"
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("gpu-check")


@pytest.fixture(scope="module")
def runs(work) -> dict:
    return {"local": {loss: gpu_check.run_train(work / loss, [*FAST, f"loss={loss}"], timeout=600)
                      for loss in ("ce", "perce")}}


def test_a_log_is_summarised_by_hand():
    rows = [{"step_time": 9.0, "max_memory_mb": 900.0, "loss": 3.0},  # warm-up: left out of the median
            {"step_time": 1.0, "max_memory_mb": 1000.0, "loss": 2.5},
            {"step_time": 3.0, "max_memory_mb": 1100.0, "loss": 2.25},
            {"step_time": 2.0, "max_memory_mb": 1050.0, "loss": 2.0}]
    assert gpu_check.summarize_log(rows) == {"status": "ok", "steps": 4, "step_s": 2.0, "max_memory_mb": 1100.0,
                                             "final_loss": 2.0}
    cpu = [{**r, "max_memory_mb": None} for r in rows[:1]]  # one step: timed as it is; no CUDA memory on a CPU
    assert gpu_check.summarize_log(cpu) == {"status": "ok", "steps": 1, "step_s": 9.0, "max_memory_mb": None,
                                            "final_loss": 3.0}


@pytest.mark.slow
def test_real_runs_are_summarised_and_ratioed(runs, work):
    for loss, summary in runs["local"].items():
        rows = read_jsonl(work / loss / "train_log.jsonl")
        assert summary["status"] == "ok" and summary["steps"] == len(rows) == 4
        assert summary["step_s"] == statistics.median([r["step_time"] for r in rows[1:]])  # first step: warm-up
        assert summary["final_loss"] == rows[-1]["loss"]
        assert summary["max_memory_mb"] is None  # CUDA peak memory: none on a CPU
    ce, perce = runs["local"]["ce"], runs["local"]["perce"]
    assert gpu_check.ratios(runs) == {"local": {"step_time": perce["step_s"] / ce["step_s"], "memory": None}}
    # GPU numbers (peak MB) and a failed run, by hand: 2.5 / 2.0 s and 1050 / 1000 MB
    assert gpu_check.ratios({"zero3": {"ce": {"status": "ok", "step_s": 2.0, "max_memory_mb": 1000.0},
                                       "perce": {"status": "ok", "step_s": 2.5, "max_memory_mb": 1050.0}},
                             "zero2": {"ce": {"status": "failed", "error": "x"}, "perce": perce}}) == {
        "zero3": {"step_time": 1.25, "memory": 1.05}, "zero2": {"step_time": None, "memory": None}}


def test_a_failed_run_reports_its_one_line(work):
    res = gpu_check.run_train(work / "bad", [*FAST, "train.lr=-1"], timeout=300)
    assert res["status"] == "failed"
    assert res["error"].startswith("percli: error: train.lr=-1") and "Traceback" not in res["error"]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="the branch for machines without vLLM")
def test_vllm_is_skipped_when_not_installed(tmp_path):
    assert gpu_check.vllm_check("tiny", tmp_path, timeout=10) == {"status": "skipped",
                                                                 "reason": gpu_check.VLLM_MISSING}


def test_table():
    ce = {"status": "ok", "steps": 4, "step_s": 0.5123, "max_memory_mb": None, "final_loss": 2.0}
    perce = {**ce, "step_s": 0.5456}
    runs = {"local": {"ce": ce, "perce": perce}}
    zero3 = {"ce": {"status": "ok", "step_s": 0.1234, "max_memory_mb": 2048.4},
             "perce": {"status": "ok", "step_s": 0.1481, "max_memory_mb": 2150.0}}
    res = {"device": "NVIDIA H100 80GB HBM3", "precision": "bf16", "model": "smollm2-135m", "steps": 4,
           "runs": {**runs, "zero3": zero3, "ddp2": {"ce": {"status": "failed", "error": "percli: error: boom"},
                                                     "perce": perce}},
           "generation": {"batch_1": {"tokens_per_s": 41.25}, "batched": {"batch_size": 8, "tokens_per_s": 300.0},
                          "speedup": 300.0 / 41.25},
           "vllm": {"status": "skipped", "reason": gpu_check.VLLM_MISSING}}
    res["ratios"] = gpu_check.ratios(res["runs"])
    lines = gpu_check.markdown(res).splitlines()
    assert lines[0] == "# percli gpu-check (NVIDIA H100 80GB HBM3, bf16, model=smollm2-135m, 4 steps per run)"
    assert lines[4] == "| local | 0.512 | 0.546 | 1.065 | - | - | - |"
    assert lines[5] == "| zero3 | 0.123 | 0.148 | 1.200 | 2048 | 2150 | 1.050 |"
    assert lines[6] == "| ddp2 | failed: percli: error: boom | | | | | |"
    assert lines[8] == "Generation (greedy): batch 1 41.2 tok/s, batch 8 300.0 tok/s (7.27x)."
    assert lines[9] == f"vLLM: skipped ({gpu_check.VLLM_MISSING})"


@pytest.mark.slow
def test_the_whole_check_on_cpu(tmp_path):
    """Every launcher a CPU runs in one process (local, DeepSpeed ZeRO-2 / ZeRO-3), generation, the JSON."""
    r = subprocess.run([sys.executable, "scripts/gpu_check.py", "--allow-cpu", "--model", "tiny", "--steps", "3",
                        "--launchers", "local,zero2,zero3", "--gen-batch", "2", "--gen-tokens", "4",
                        "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert list(res["runs"]) == ["local", "zero2", "zero3"] and res["precision"] == "fp32"
    for by_loss in res["runs"].values():
        assert by_loss["ce"]["status"] == by_loss["perce"]["status"] == "ok" and by_loss["ce"]["steps"] == 3
    # ZeRO-2/3 in one process compute what the plain loop computes (tests/test_train_slow.py: to 1e-5)
    assert res["runs"]["zero3"]["perce"]["final_loss"] == pytest.approx(res["runs"]["local"]["perce"]["final_loss"],
                                                                        rel=1e-4)
    assert res["generation"]["batched"]["tokens"] == 2 * 4
    assert r.stdout == (tmp_path / "gpu_check.md").read_text() + "\n"  # the table, printed as written
