"""scripts/gpu_check.py (`make gpu-check`) on a machine without a GPU: the one-line exit, --require-gpu, the
parity and continuation arithmetic, the table, the per-rank memory sampler, a required vLLM that is missing,
and (slow) every check run on the CPU through the real CLI."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO

sys.path.insert(0, str(REPO / "scripts"))
import gpu_check  # noqa: E402

NO_VLLM = pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="the branch without vLLM")
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU branch")


def run_script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/gpu_check.py", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, timeout=1500)


@NO_GPU
def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path):
    r = run_script("--out", str(tmp_path))
    assert (r.returncode, r.stdout) == (0, gpu_check.NO_GPU + "\n"), r.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


@NO_GPU
def test_require_gpu_fails_in_one_line_without_cuda(tmp_path):
    r = run_script("--require-gpu", "--out", str(tmp_path))
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (f"percli: error: gpu-check: torch {torch.__version__} sees no CUDA device and --require-gpu "
                        "was given (a CPU-only torch build, or no GPU visible: check nvidia-smi and "
                        "CUDA_VISIBLE_DEVICES)\n")
    assert list(tmp_path.iterdir()) == []


@NO_GPU
@pytest.mark.parametrize(("args", "code"), [("", 0), ("GPU_CHECK_ARGS=--require-gpu", 2)])
def test_make_gpu_check(args, code):
    """make's own exit status is 2 when a recipe fails. `-o` keeps make from re-running setup here."""
    r = subprocess.run(["make", "-s", "-o", ".venv/.percli-setup", "gpu-check", *filter(None, [args])],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == code, r.stderr[-2000:]
    if code == 0:
        assert r.stdout == gpu_check.NO_GPU + "\n"
    else:
        assert "--require-gpu was given" in r.stderr


def test_first_step_losses_agree_within_the_tolerance_or_say_which_does_not():
    bf16 = 2**-7   # 0.0078125
    ok, line = gpu_check.loss_parity({"local": 10.0, "ddp": 10.07, "zero2": 9.95, "zero3": 10.0}, bf16)
    assert ok and line == ("local 10.0000, ddp 10.0700 (7.0e-03), zero2 9.9500 (5.0e-03), zero3 10.0000 (0.0e+00); "
                           "relative tolerance 7.8e-03")
    ok, line = gpu_check.loss_parity({"local": 10.0, "ddp": 10.08, "zero2": 10.0, "zero3": None}, bf16)
    assert not ok and line == ("local 10.0000, ddp 10.0800 (8.0e-03), zero2 10.0000 (0.0e+00), zero3: no loss; "
                               "relative tolerance 7.8e-03")
    assert gpu_check.loss_parity({"local": None, "ddp": 1.0}, bf16) == (False, "local: no loss")


def test_a_resumed_run_must_repeat_the_steps_after_its_checkpoint():
    full = [{"step": 1, "loss": 4.0}, {"step": 2, "loss": 3.0}, {"step": 3, "loss": 2.0}, {"step": 4, "loss": 1.0}]
    resumed = [*full[:2], {"step": 3, "loss": 2.0}, {"step": 4, "loss": 1.0001}]
    assert gpu_check.continuation(full, resumed, 2, 1e-4) == (
        True, "steps 3-4: max relative difference 1.0e-04 (tolerance 1.0e-04)")
    resumed[3]["loss"] = 1.001
    assert gpu_check.continuation(full, resumed, 2, 1e-4) == (
        False, "steps 3-4: max relative difference 1.0e-03 (tolerance 1.0e-04)")
    assert gpu_check.continuation(full, full[:3], 2, 1e-4) == (
        False, "steps after 2: uninterrupted [3, 4], resumed [3]")


def test_the_global_batch_is_the_same_on_every_launcher():
    assert gpu_check.launcher_overrides("local", 2) == ["launcher=local", "train.batch_size=4"]
    assert gpu_check.launcher_overrides("zero3", 2) == ["launcher=deepspeed", "launcher.zero_stage=3",
                                                        "launcher.num_processes=2", "train.batch_size=2"]
    assert gpu_check.launcher_overrides("ddp", 1) == ["launcher=ddp", "launcher.num_processes=1", "train.batch_size=4"]


def test_table():
    rows = [gpu_check.Row("zero3", "ZeRO-3 x2, 4 steps", "pass", "4 steps, world size 2", 61.25, [10240.4, 9876.0]),
            gpu_check.Row("parity", "first-step loss", "FAIL", "ddp: percli: error: boom", 30.0, []),
            gpu_check.Row("vllm", "percli eval eval.backend=vllm", "skipped", gpu_check.VLLM_MISSING)]
    res = {"device": "NVIDIA H100 80GB HBM3", "precision": "bf16", "ranks": 2, "torch": "2.13.0", "wall_s": 91.3,
           "rows": [gpu_check.asdict(r) for r in rows]}
    assert gpu_check.markdown(res).splitlines() == [
        "# percli gpu-check: NVIDIA H100 80GB HBM3, bf16, 2 rank(s), torch 2.13.0, 91 s",
        "",
        "| check | what ran | time s | peak MiB per rank | result |",
        "|---|---|---|---|---|",
        "| zero3 | ZeRO-3 x2, 4 steps | 61.2 | 10240 / 9876 | pass: 4 steps, world size 2 |",
        "| parity | first-step loss | 30.0 | - | FAIL: ddp: percli: error: boom |",
        f"| vllm | percli eval eval.backend=vllm | 0.0 | - | skipped: {gpu_check.VLLM_MISSING} |",
    ]


def test_peak_memory_per_rank_is_the_max_of_nvidia_smi_samples_of_its_gpu(tmp_path, monkeypatch):
    """A stand-in nvidia-smi prints the next line of its samples file at each call (one MiB value per GPU asked
    for) and records its arguments."""
    samples = tmp_path / "samples"
    samples.write_text("100 7000\n900 5000\n300 6000\n")
    fake = tmp_path / "nvidia-smi"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "args"}\nhead -n1 {samples} | tr " " "\\n"; '
                    f'sed -i 1d {samples}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")
    mem = gpu_check.MemoryPeaks(gpu_check.rank_gpus(2), interval=0.01)
    for _ in range(3):
        mem._poll_once()
    assert mem.peaks == [900.0, 7000.0]
    assert (tmp_path / "args").read_text() == "--query-gpu=memory.used --format=csv,noheader,nounits --id=3,5\n"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpu_check.rank_gpus(2) == ["0", "1"]


@NO_VLLM
def test_a_required_vllm_that_is_missing_fails_the_check(tmp_path):
    r = run_script("--allow-cpu", "--checks", "vllm", "--out", str(tmp_path), env={"GPU_CHECK_VLLM": "1"})
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stdout.splitlines()[-1] == (f"| vllm | percli eval eval.backend=vllm on the exported model | 0.0 | - | "
                                         f"FAIL: {gpu_check.VLLM_MISSING} and GPU_CHECK_VLLM=1 requires it |")
    assert json.loads((tmp_path / "gpu_check.json").read_text())["rows"][0]["status"] == "FAIL"
    r = run_script("--allow-cpu", "--checks", "vllm", "--out", str(tmp_path), env={"GPU_CHECK_VLLM": "0"})
    assert r.returncode == 0 and r.stdout.splitlines()[-1].endswith(f"| skipped: {gpu_check.VLLM_MISSING} |")


def test_an_unknown_check_is_one_line_exit_2(tmp_path):
    r = run_script("--allow-cpu", "--checks", "zero3,speed", "--out", str(tmp_path))
    assert (r.returncode, r.stderr) == (2, "percli: error: gpu-check: --checks speed is not a check; choose from "
                                           f"{','.join(gpu_check.CHECKS)}\n")


@pytest.mark.slow
def test_every_check_on_the_cpu(tmp_path: Path):
    """2 gloo ranks, fp32: the same CLI runs as on a GPU node (about 5 minutes on 2 cores)."""
    r = run_script("--allow-cpu", "--budget", "1500", "--out", str(tmp_path))
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert (res["ranks"], res["precision"]) == (2, "fp32")
    statuses = {row["check"]: row["status"] for row in res["rows"]}
    assert statuses == {"zero3": "pass", "parity": "pass", "resume": "pass", "export": "pass",
                        "dp-generation": "pass", "vllm": "pass" if importlib.util.find_spec("vllm") else "skipped"}
    details = {row["check"]: row["detail"] for row in res["rows"]}
    assert details["zero3"] == "4 steps, world size 2, saved final, step-2, step-4"
    assert details["export"] == "8 examples scored"
    assert r.stdout == (tmp_path / "gpu_check.md").read_text()  # the table, printed as written
