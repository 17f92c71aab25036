"""`make gpu-check`: does percli's GPU path work on this machine? One prepared run, a few minutes on one GPU.

1. Training: SmolLM2-135M (bf16 on a bf16-capable GPU) on the demo's synthetic reviews, CE and PerCE,
   `--steps` optimizer steps each through the real `percli train`, with launcher=local, launcher=deepspeed
   ZeRO-2 and ZeRO-3 (one process), and 2-process DDP over NCCL when two GPUs are visible. Per run: the
   median step time after the first step and torch.cuda.max_memory_allocated (train_log.jsonl's
   `max_memory_mb`); per launcher: the PerCE / CE ratios of both.
2. Generation: greedy tokens/s at batch 1 and batched (percli.evaluation.generation_throughput).
3. vLLM: `percli eval eval.backend=vllm` on the demo's test prompts when vllm is importable; else skipped.

Writes results/gpu_check.json and results/gpu_check.md and prints the table. Without a GPU it says so in
one line and exits 0 (`--allow-cpu` runs the same path on the CPU, in fp32, to test this script).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from percli.io import atomic_write_json, atomic_write_text, read_jsonl
from percli.log import log, result

REPO = Path(__file__).resolve().parents[1]
LOSSES = ("ce", "perce")
LAUNCHERS: dict[str, list[str]] = {
    "local": ["launcher=local"],
    "zero2": ["launcher=deepspeed", "launcher.zero_stage=2"],
    "zero3": ["launcher=deepspeed", "launcher.zero_stage=3"],
    # The same global batch of 4 as the 1-process runs: 2 processes x 2 rows.
    "ddp2": ["launcher=ddp", "launcher.num_processes=2", "train.batch_size=2"],
}
VLLM_MISSING = "vllm is not installed here (it pins another torch: pip install -e '.[vllm]' in its own environment)"


def base_overrides(model: str, steps: int, tiny_data: bool) -> list[str]:
    small = ["data.max_prompt_tokens=192", "data.max_response_tokens=24", "data.num_users=4"] if tiny_data else []
    return ["experiment=demo", f"model={model}", f"train.max_steps={steps}", "train.save_every=100000",
            "eval.after_train=false", "logger=none", *small]


def launchers_for(n_gpus: int, wanted: list[str] | None = None) -> list[str]:
    """The launchers this machine can run: DDP needs two devices (GPUs, or CPU processes with --allow-cpu)."""
    names = wanted or [n for n in LAUNCHERS if n != "ddp2" or n_gpus >= 2]
    return [n for n in names if n in LAUNCHERS]


def run_train(run_dir: Path, overrides: list[str], timeout: float) -> dict[str, Any]:
    """One `percli train`; its train_log.jsonl summarised by `summarize_log`, or the error line."""
    env = {**os.environ, "PERCLI_OUTPUT_DIR": str(run_dir.parent), "WANDB_MODE": "disabled"}
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "percli", "train", *overrides, f"hydra.run.dir={run_dir}"],
                           capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "error": f"timed out after {timeout:.0f} s", "wall_s": timeout}
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines()
        return {"status": "failed", "error": lines[-1] if lines else f"exit {r.returncode}", "wall_s": wall}
    return {**summarize_log(read_jsonl(run_dir / "train_log.jsonl")), "wall_s": wall}


def summarize_log(rows: list[dict]) -> dict[str, Any]:
    """Median step time after the first step (allocator / kernel warm-up), peak memory, last loss."""
    timed = [r["step_time"] for r in rows[1:]] or [r["step_time"] for r in rows]
    memory = [r["max_memory_mb"] for r in rows if r.get("max_memory_mb") is not None]
    return {"status": "ok", "steps": len(rows), "step_s": statistics.median(timed),
            "max_memory_mb": max(memory) if memory else None, "final_loss": rows[-1]["loss"]}


def ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def ratios(runs: dict[str, dict[str, dict]]) -> dict[str, dict[str, float | None]]:
    """Per launcher: PerCE / CE step time and peak memory (None where a run failed or has no CUDA memory)."""
    out = {}
    for launcher, by_loss in runs.items():
        ce, perce = by_loss.get("ce", {}), by_loss.get("perce", {})
        ok = ce.get("status") == "ok" and perce.get("status") == "ok"
        out[launcher] = {"step_time": ratio(perce.get("step_s"), ce.get("step_s")) if ok else None,
                         "memory": ratio(perce.get("max_memory_mb"), ce.get("max_memory_mb")) if ok else None}
    return out


def vllm_check(model: str, work: Path, timeout: float) -> dict[str, Any]:
    if importlib.util.find_spec("vllm") is None:
        return {"status": "skipped", "reason": VLLM_MISSING}
    run_dir = work / "vllm"
    env = {**os.environ, "PERCLI_OUTPUT_DIR": str(work), "WANDB_MODE": "disabled"}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "percli", "eval", "experiment=demo", f"model={model}",
                        "eval.backend=vllm", "logger=none", f"hydra.run.dir={run_dir}"],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines()
        return {"status": "failed", "error": lines[-1] if lines else f"exit {r.returncode}"}
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return {"status": "ok", "seconds": time.perf_counter() - t0, "num_examples": metrics.get("num_examples")}


def generation(model_name: str, device: str, batch_size: int, new_tokens: int) -> dict[str, Any]:
    from percli.data.longlamp import load_examples
    from percli.evaluation import generation_throughput
    from percli.models import chat_prompt_ids, load_model_and_tokenizer
    from percli.preflight import compose_config

    cfg = compose_config("eval", ["experiment=demo", f"model={model_name}"])
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    model, tok = load_model_and_tokenizer(cfg.model, seed=cfg.seed, dtype=dtype)
    model.to(device).eval()
    prompts = [chat_prompt_ids(tok, ex.input) for ex in load_examples(cfg, "test")][:batch_size]
    one = generation_throughput(model, tok, prompts, batch_size=1, max_new_tokens=new_tokens)
    many = generation_throughput(model, tok, prompts, batch_size=len(prompts), max_new_tokens=new_tokens)
    return {"batch_1": one, "batched": many, "speedup": ratio(many["tokens_per_s"], one["tokens_per_s"])}


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def markdown(res: dict[str, Any]) -> str:
    """The short table: one row per launcher, then generation and vLLM."""
    lines = [f"# percli gpu-check ({res['device']}, {res['precision']}, model={res['model']}, "
             f"{res['steps']} steps per run)", "",
             "| launcher | CE step s | PerCE step s | PerCE/CE time | CE peak MB | PerCE peak MB | PerCE/CE memory |",
             "|---|---|---|---|---|---|---|"]
    for launcher, by_loss in res["runs"].items():
        ce, perce, r = by_loss["ce"], by_loss["perce"], res["ratios"][launcher]
        if ce["status"] != "ok" or perce["status"] != "ok":
            failed = ce if ce["status"] != "ok" else perce
            lines.append(f"| {launcher} | failed: {failed['error']} | | | | | |")
            continue
        lines.append(f"| {launcher} | {ce['step_s']:.3f} | {perce['step_s']:.3f} | {_fmt(r['step_time'], '.3f')} | "
                     f"{_fmt(ce['max_memory_mb'], '.0f')} | {_fmt(perce['max_memory_mb'], '.0f')} | "
                     f"{_fmt(r['memory'], '.3f')} |")
    g = res["generation"]
    lines += ["", f"Generation (greedy): batch 1 {g['batch_1']['tokens_per_s']:.1f} tok/s, batch "
                  f"{g['batched']['batch_size']} {g['batched']['tokens_per_s']:.1f} tok/s ({g['speedup']:.2f}x)."]
    v = res["vllm"]
    lines.append(f"vLLM: {v['status']}" + {"ok": f", {v.get('num_examples')} examples in {v.get('seconds', 0):.1f} s",
                                           "skipped": f" ({v.get('reason')})",
                                           "failed": f": {v.get('error')}"}[v["status"]])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "results"))
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--launchers", help=f"comma-separated subset of {','.join(LAUNCHERS)}")
    ap.add_argument("--gen-batch", type=int, default=8)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=300, help="seconds per training run")
    ap.add_argument("--allow-cpu", action="store_true", help="run on the CPU (fp32, small shapes): tests this script")
    args = ap.parse_args(argv)

    n_gpus = torch.cuda.device_count()
    if n_gpus == 0 and not args.allow_cpu:
        result("gpu-check: no CUDA GPU is visible on this machine; nothing to check (run it on a GPU node)")
        return 0
    device = "cuda" if n_gpus else "cpu"
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    start = time.time()
    runs: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="percli-gpu-check-") as tmp:
        work = Path(tmp)
        base = base_overrides(args.model, args.steps, tiny_data=device == "cpu")
        wanted = args.launchers.split(",") if args.launchers else None
        for launcher in launchers_for(n_gpus if device == "cuda" else 2, wanted):
            for loss in LOSSES:
                log.info(f"gpu-check: train {launcher} loss={loss}...")
                res = run_train(work / f"{launcher}-{loss}", [*base, *LAUNCHERS[launcher], f"loss={loss}"],
                                args.timeout)
                runs.setdefault(launcher, {})[loss] = res
        log.info("gpu-check: generation...")
        gen = generation(args.model, device, args.gen_batch, args.gen_tokens)
        vllm = vllm_check(args.model, work, args.timeout)
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "device": torch.cuda.get_device_name(0) if n_gpus else "cpu",
           "gpus": n_gpus, "precision": "bf16" if bf16 else "fp32", "model": args.model, "steps": args.steps,
           "torch": torch.__version__, "runs": runs, "ratios": ratios(runs), "generation": gen, "vllm": vllm,
           "wall_s": round(time.time() - start, 1)}
    out = Path(args.out)
    atomic_write_json(out / "gpu_check.json", res)
    atomic_write_text(out / "gpu_check.md", markdown(res))
    result(markdown(res))
    log.info(f"gpu-check: wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} in {res['wall_s']:.0f} s")
    failed = [f"{launcher}/{loss}" for launcher, by in runs.items() for loss, r in by.items() if r["status"] != "ok"]
    return 1 if failed or vllm["status"] == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
