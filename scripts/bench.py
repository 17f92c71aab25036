"""`make bench`: what PerCE costs over CE, measured in one run on this machine.

1. Step time: CE and PerCE training steps of smollm2-135m on the same LongLaMP-review-shaped batches
   (about 1,500 profile tokens with k=4 and 300-400 response tokens), alternated after a warm-up,
   medians reported -> perce_ce_step_ratio, against bound = 1 + r/3 + 0.05 with r = free / full tokens.
2. Peak memory: each loss in a fresh subprocess; on CPU the peak RSS above the post-setup baseline
   (Linux VmHWM, reset through /proc/self/clear_refs after setup), on GPU torch.cuda.max_memory_allocated
   -> perce_ce_mem_ratio.
3. Generation: greedy tokens/s of batch 1 vs the batched eval path -> gen_batch_speedup.
4. The contrast pass's log-prob memory on a 151k vocabulary (tiny model, real Qwen3 tokenizer): the
   memory-lean path vs naive full-vocabulary log-softmax, each in a fresh subprocess.

Steps run through percli.train's own Trainer, so the numbers are those of `percli train`.
Writes results/bench.json and results/bench.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PROFILE_ITEM_WORDS = 280  # ~375 SmolLM2 tokens after the Contriever decode; x4 items ~ 1,500 tokens
RESPONSE_WORDS = 270  # ~350 response tokens
N_EXAMPLES = 8


# ------------------------------------------------------------------------------------------- data
def write_bench_data(out_dir: Path) -> Path:
    """LongLaMP product-review records with real-data lengths, built from the synthetic generator's text."""
    from percli.data.synthetic import generate
    from percli.io import atomic_write_jsonl

    recs = [r.record for r in generate("review", "train", num_users=N_EXAMPLES, examples_per_user=4,
                                       profile_size=16, seed=0)]
    by_user: dict[str, list[dict]] = {}
    for r in recs:
        by_user.setdefault(r["reviewerId"], []).append(r)

    def words(texts: list[str], n: int) -> str:
        pool = " ".join(texts).split()
        while len(pool) < n:
            pool += pool
        return " ".join(pool[:n])

    rows = []
    for user, user_recs in list(by_user.items())[:N_EXAMPLES]:
        first, items = user_recs[0], user_recs[0]["profile"]
        profile = []
        for j in range(4):
            item = dict(items[j])
            item["reviewText"] = words([it["reviewText"] for it in items[j * 4:(j + 1) * 4]], PROFILE_ITEM_WORDS)
            profile.append(item)
        rows.append({"id": first["id"], "reviewerId": user, "input": first["input"],
                     "output": words([r["output"] for r in user_recs], RESPONSE_WORDS), "profile": profile})
    atomic_write_jsonl(out_dir / "train.jsonl", rows)
    atomic_write_jsonl(out_dir / "test.jsonl", rows)
    return out_dir


def bench_cfg(data_dir: Path, loss: str, steps: int):
    from percli.preflight import compose_config

    return compose_config("train", [
        "model=smollm2-135m", "task=review", "data=local", f"data.path={data_dir}", "data.max_prompt_tokens=4096",
        "data.max_response_tokens=512", "retriever=bm25", "retriever.k=4", f"loss={loss}", "launcher=local",
        "logger=none", "train.batch_size=1", "train.grad_accum=1", f"train.max_steps={steps}",
        "train.save_every=100000", "train.warmup_ratio=0", "eval.after_train=false",
    ])


def make_trainer(data_dir: Path, loss: str, run_dir: Path, steps: int):
    from percli.train import StopRequest, Trainer, make_accelerator

    cfg = bench_cfg(data_dir, loss, steps)
    run_dir.mkdir(parents=True, exist_ok=True)
    acc = make_accelerator(cfg)
    stop = StopRequest(run_dir, watch_file=False)
    stop.restore()  # a benchmark has no checkpoint to save: SIGTERM / Ctrl-C just end it
    return Trainer(cfg, run_dir, acc, stop)


def timed_step(trainer) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    trainer.scorer.train()
    trainer.train_step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------ 1. time
def step_times(data_dir: Path, work: Path, reps: int) -> dict:
    trainers = {loss: make_trainer(data_dir, loss, work / f"time-{loss}", steps=reps + 2) for loss in ("ce", "perce")}
    pairs = trainers["ce"].pairs
    full = sum(len(p.full_ids) for p in pairs)
    free = sum(len(p.free_ids) for p in pairs)
    resp = sum(len(p.response_ids) for p in pairs)
    profile = sum(p.response_start_full - p.response_start_free for p in pairs)
    for t in trainers.values():  # warm-up: allocator, kernels, optimizer state
        timed_step(t)
    times: dict[str, list[float]] = {"ce": [], "perce": []}
    for i in range(reps):  # alternate, swapping the order every repetition, so drift hits both alike
        for loss in (("ce", "perce") if i % 2 == 0 else ("perce", "ce")):
            times[loss].append(timed_step(trainers[loss]))
            print(f"bench: {loss} step {i + 1}/{reps}: {times[loss][-1]:.2f} s", file=sys.stderr)
    ce, perce = statistics.median(times["ce"]), statistics.median(times["perce"])
    r = free / full
    return {
        "r": r, "bound": 1 + r / 3 + 0.05, "perce_ce_step_ratio": perce / ce,
        "ce_step_s": ce, "perce_step_s": perce, "raw_step_s": times,
        "tokens": {"full_mean": full / len(pairs), "free_mean": free / len(pairs),
                   "response_mean": resp / len(pairs), "profile_mean": profile / len(pairs),
                   "examples": len(pairs)},
    }


# ---------------------------------------------------------------------------------------- 2. memory
def _vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def memory_child(data_dir: Path, loss: str, work: Path, steps: int) -> dict:
    trainer = make_trainer(data_dir, loss, work / f"mem-{loss}", steps=steps + 1)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        for _ in range(steps + 1):
            timed_step(trainer)
        return {"method": f"torch.cuda.max_memory_allocated above the post-setup allocation over {steps + 1} steps",
                "baseline_mb": base / 2**20,
                "peak_above_baseline_mb": (torch.cuda.max_memory_allocated() - base) / 2**20}
    # Baseline after setup (model loaded, data encoded), before any step; the steps then allocate the
    # AdamW state (the same for both losses) and the step's activations, where the losses differ.
    base = _vm_kib("VmRSS")
    reset_peak_rss()
    for _ in range(steps + 1):
        timed_step(trainer)
    return {"method": f"peak RSS (VmHWM, reset after setup) above the post-setup RSS over {steps + 1} steps",
            "baseline_mb": base / 1024, "peak_above_baseline_mb": (_vm_kib("VmHWM") - base) / 1024}


def contrast_memory_child(mode: str) -> dict:
    """Log-probs of 4 x 1,024 response tokens over the real 151,669-token Qwen3 vocabulary."""
    from percli.models import load_model_and_tokenizer
    from percli.preflight import compose_config
    from percli.scoring import response_logprobs

    model, tok = load_model_and_tokenizer(compose_config("train", []).model, seed=0)
    b, t = 4, 1024
    ids = torch.randint(0, 150000, (b, t), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    base = _vm_kib("VmRSS")
    reset_peak_rss()
    with torch.no_grad():
        if mode == "lean":
            logp = response_logprobs(model, ids, mask, ids).logp
        else:  # what a plain implementation does: full [B, T, V] fp32 logits, log_softmax, gather
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1).flatten()
    return {"peak_above_baseline_mb": (_vm_kib("VmHWM") - base) / 1024, "tokens": int(logp.numel()),
            "vocab": len(tok), "full_logits_fp32_mb": b * t * len(tok) * 4 / 2**20}


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"bench child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------ 3. generation
def generation(data_dir: Path, batch_size: int, new_tokens: int) -> dict:
    from percli.data.longlamp import load_examples
    from percli.evaluation import generation_throughput
    from percli.models import chat_prompt_ids, load_model_and_tokenizer

    cfg = bench_cfg(data_dir, "ce", 1)
    model, tok = load_model_and_tokenizer(cfg.model)
    model.eval()
    examples = load_examples(cfg, "test")
    # Decode-bound prompts (the profile-free query): batching pays off in decoding, where batch 1 reads all
    # weights for every token; with ~2k-token prompts prefill dominates and the speed-up shrinks.
    prompts = [chat_prompt_ids(tok, ex.input) for ex in examples][:batch_size]
    one = generation_throughput(model, tok, prompts, batch_size=1, max_new_tokens=new_tokens)
    many = generation_throughput(model, tok, prompts, batch_size=batch_size, max_new_tokens=new_tokens)
    return {"gen_batch_speedup": many["tokens_per_s"] / one["tokens_per_s"], "batch_1": one,
            "batched": many, "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts)}


# ------------------------------------------------------------------------------------------ report
def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
    else:
        info["device"] = "cpu"
        try:
            info["cpu"] = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                               if ln.startswith("model name"))
        except StopIteration:
            pass
    return info


def markdown(res: dict) -> str:
    t, m, g, c = res["step"], res["memory"], res["generation"], res["contrast_memory"]
    ok = lambda good: "yes" if good else "**no**"  # noqa: E731
    rows = [
        "| measure | value | target | met |",
        "|---|---|---|---|",
        f"| PerCE / CE step time | {t['perce_ce_step_ratio']:.3f} ({t['perce_step_s']:.2f} s / {t['ce_step_s']:.2f} s) "
        f"| <= 1 + r/3 + 0.05 = {t['bound']:.3f} (r = {t['r']:.3f}) | {ok(t['perce_ce_step_ratio'] <= t['bound'])} |",
        f"| PerCE / CE peak memory | {res['perce_ce_mem_ratio']:.3f} ({m['perce']['peak_above_baseline_mb']:.0f} MB / "
        f"{m['ce']['peak_above_baseline_mb']:.0f} MB) | <= 1.10 | {ok(res['perce_ce_mem_ratio'] <= 1.10)} |",
        f"| batched / batch-1 generation | {g['gen_batch_speedup']:.2f}x ({g['batched']['tokens_per_s']:.1f} vs "
        f"{g['batch_1']['tokens_per_s']:.1f} tok/s, batch {g['batched']['batch_size']}) | >= 4x | "
        f"{ok(g['gen_batch_speedup'] >= 4)} |",
        f"| contrast log-prob memory, 151k vocab | lean {c['lean']['peak_above_baseline_mb']:.0f} MB vs naive "
        f"{c['naive']['peak_above_baseline_mb']:.0f} MB ({c['lean']['tokens']} tokens; full fp32 logits "
        f"{c['lean']['full_logits_fp32_mb']:.0f} MB) | does not grow with T x V | "
        f"{ok(c['lean']['peak_above_baseline_mb'] < 0.25 * c['lean']['full_logits_fp32_mb'])} |",
    ]
    tok = t["tokens"]
    mach = res["machine"]
    return "\n".join([
        "# percli bench", "",
        f"{res['date']}, {mach['device']} ({mach.get('cpu', '')}, {mach['cpu_count']} cores), torch {mach['torch']}; "
        f"smollm2-135m, {'bf16' if mach['device'] != 'cpu' else 'fp32'}.", "",
        *rows, "",
        f"Shape: {tok['examples']} LongLaMP-review-shaped examples, batch 1, k=4: full sequence "
        f"{tok['full_mean']:.0f} tokens (profile {tok['profile_mean']:.0f}), profile-free {tok['free_mean']:.0f}, "
        f"response {tok['response_mean']:.0f}. Step times are medians of {len(t['raw_step_s']['ce'])} alternated "
        "steps after one warm-up step each, through percli.train's Trainer (forward, backward, AdamW step).",
        f"Memory: {m['ce']['method']}, each loss in a fresh process.",
        f"Generation: greedy, {g['batched']['tokens'] // max(1, g['batched']['batch_size'])} new tokens per prompt "
        f"(eos ignored), prompts of {g['prompt_tokens_mean']:.0f} tokens.",
        "",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "results"))
    ap.add_argument("--reps", type=int, default=3, help="alternated timed steps per loss")
    ap.add_argument("--gen-batch", type=int, default=8)
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:  # a fresh process for one memory measurement
        kind, *rest = args.child
        if kind == "train":
            result = memory_child(Path(rest[0]), rest[1], Path(rest[2]), steps=1)
        else:
            result = contrast_memory_child(rest[0])
        print(json.dumps(result))
        return

    from percli.io import atomic_write_json, atomic_write_text

    start = time.time()
    with tempfile.TemporaryDirectory(prefix="percli-bench-") as tmp:
        work = Path(tmp)
        data_dir = write_bench_data(work / "data")
        print("bench: step time (CE vs PerCE, alternated)...", file=sys.stderr)
        step = step_times(data_dir, work, args.reps)
        print("bench: peak memory (fresh process per loss)...", file=sys.stderr)
        memory = {loss: run_child("train", str(data_dir), loss, str(work)) for loss in ("ce", "perce")}
        print("bench: contrast log-prob memory on a 151k vocabulary...", file=sys.stderr)
        contrast_mem = {mode: run_child("contrast", mode) for mode in ("lean", "naive")}
        print("bench: generation throughput...", file=sys.stderr)
        gen = generation(data_dir, args.gen_batch, args.gen_tokens)
    res = {
        "date": time.strftime("%Y-%m-%d"), "machine": machine(),
        "r": step["r"], "bound": step["bound"], "perce_ce_step_ratio": step["perce_ce_step_ratio"],
        "perce_ce_mem_ratio": memory["perce"]["peak_above_baseline_mb"] / memory["ce"]["peak_above_baseline_mb"],
        "gen_batch_speedup": gen["gen_batch_speedup"],
        "step": step, "memory": memory, "generation": gen, "contrast_memory": contrast_mem,
        "wall_s": time.time() - start,
    }
    out = Path(args.out)
    atomic_write_json(out / "bench.json", res)
    atomic_write_text(out / "bench.md", markdown(res))
    print(markdown(res))
    print(f"bench: wrote {out / 'bench.json'} and {out / 'bench.md'} in {res['wall_s']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
