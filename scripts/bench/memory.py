"""Peak memory of one piece of work, each in a fresh process so that no earlier allocation hides it.

On CPU: the peak RSS above the RSS after setup (Linux VmHWM, reset through /proc/self/clear_refs after
setup). On GPU: torch.cuda.max_memory_allocated above the allocation after setup. Setup (model loaded,
data encoded) is the same for both sides of a ratio; the measured work then allocates the optimizer
state (equal on both sides) and the step's activations and logits, where the sides differ.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from scripts.bench.stats import PairedRatio

REPO = Path(__file__).resolve().parents[2]


def _vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def make_resident(model: torch.nn.Module) -> None:
    """Read every parameter once. transformers may map safetensors weights lazily: pages not yet read are
    not in RSS after setup, so without this the first step's reads would count as the step's memory, by a
    different amount on each side (as on a GPU, the weights belong to the setup, not to the step)."""
    with torch.no_grad():
        for p in model.parameters():
            p.sum()


def peak_above_baseline_mb(work: Callable[[], object]) -> dict:
    """Run `work` and return {"baseline_mb", "peak_above_baseline_mb", "method"} for this device."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        work()
        torch.cuda.synchronize()
        return {"method": "torch.cuda.max_memory_allocated above the post-setup allocation",
                "baseline_mb": base / 2**20, "peak_above_baseline_mb": (torch.cuda.max_memory_allocated() - base) / 2**20}
    base = _vm_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    work()
    return {"method": "peak RSS (VmHWM, reset after setup) above the post-setup RSS", "baseline_mb": base / 1024,
            "peak_above_baseline_mb": (_vm_kib("VmHWM") - base) / 1024}


def run_child(kind: str, spec: dict, threads: int) -> dict:
    """`python -m scripts.bench.child kind spec`: one measurement in a fresh process; its JSON result."""
    out = subprocess.run([sys.executable, "-m", "scripts.bench.child", kind, json.dumps(spec), str(threads)],
                         capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"bench child {kind} {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def alternated(a: tuple[str, dict], b: tuple[str, dict], threads: int, repeats: int) -> dict:
    """Peak memory of A and B, each a (kind, spec) child, `repeats` times in fresh processes, alternating;
    the A/B ratio with its CI and every child's result under runs["a"] / runs["b"]."""
    pr = PairedRatio()
    runs: dict[str, list[dict]] = {"a": [], "b": []}
    for i in range(repeats):
        order = ("a", "b") if i % 2 == 0 else ("b", "a")
        for side in order:
            kind, spec = a if side == "a" else b
            runs[side].append(run_child(kind, spec, threads))
        pr.add(runs["a"][-1]["peak_above_baseline_mb"], runs["b"][-1]["peak_above_baseline_mb"])
        print(f"bench: memory {a[0]} / {b[0]}: {pr.a[-1]:.0f} / {pr.b[-1]:.0f} MB", file=sys.stderr)
    return {**pr.summary(), "runs": runs}
