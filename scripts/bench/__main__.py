"""`python -m scripts.bench [--part core|peers]`: measure, merge into results/bench.json, render bench.md.

render: re-render bench.md / bench_scaling.png from bench.json, merging in `--merge` files first.
core (`make bench`, ~10 min on 2 shared cores): PerCE / CE step time and memory, short-prompt generation
speed-up, the contrast pass's log-prob memory on the 151k vocabulary.
peers (`make bench-peers`, slower): percli CE against TRL's SFTTrainer, percli PerCE against the naive
full-logit form (49k and 151k vocabularies, 1k and 2k response tokens), the PerCE / CE scaling with r,
log-prob memory against T x V, generation on LongLaMP-length prompts.
Each part replaces only its own keys in bench.json, so one file holds the latest of both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from percli.io import atomic_write_json, atomic_write_text
from scripts.bench import generation, memory, overhead
from scripts.bench.data import profile_words_for, write_review_data
from scripts.bench.report import markdown, scaling_png

REPO = Path(__file__).resolve().parents[2]
R_MAIN = 0.2  # the LongLaMP review shape: ~1,500 profile tokens over a ~400-token profile-free sequence
RESPONSE_WORDS = 50  # shorter than the real ~300-word reviews so a pair of steps takes seconds, same r
SCALING_RS = (0.1, 0.2, 0.35, 0.5)
SCALING_RESPONSE_WORDS = 100  # profile-free part ~193 tokens: r = 0.5 needs a profile no shorter than its ~162-token minimum
NAIVE_RESPONSE_TOKENS = (1024, 2048)
PROFILE_WORDS_NAIVE = 60


def machine(threads: int) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": threads,
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            info["cpu"] = line.split(":", 1)[1].strip()
            break
    return info


def core(work: Path, args, save) -> dict:
    """PerCE / CE step and memory, the contrast pass's 151k-vocabulary memory, short-prompt generation;
    `save` after each, so a run cut short keeps what it measured."""
    rule = {"half_width": args.half_width, "time_cap_s": args.cap}
    words = profile_words_for(R_MAIN, work / "calibrate", response_words=RESPONSE_WORDS)
    data = write_review_data(work / "main", profile_item_words=words, response_words=RESPONSE_WORDS)
    step = overhead.perce_vs_ce(data, work / "step", **rule)
    save({"r": step["r"], "bound": step["bound"] + 0.05, "perce_ce_step_ratio": step["cpu"]["ratio"],
          "perce_ce_step_ratio_ci": step["cpu"]["ci"], "step": step})
    mem = memory.alternated(("percli", {"data": str(data), "loss": "perce", "steps": 2}),
                            ("percli", {"data": str(data), "loss": "ce", "steps": 2}), args.threads, args.mem_repeats)
    save({"perce_ce_mem_ratio": mem["ratio"], "perce_ce_mem_ratio_ci": mem["ci"], "memory": mem})
    contrast = memory.alternated(("lean_logp", {"model": "tiny", "tokens": 4096}),
                                 ("naive_logp", {"model": "tiny", "tokens": 4096}), args.threads, args.mem_repeats)
    contrast.update({k: contrast["runs"]["a"][0][k] for k in ("tokens", "vocab", "full_logits_fp32_mb")})
    save({"contrast_memory": contrast})
    gen_data = write_review_data(work / "gen", profile_item_words=words, response_words=RESPONSE_WORDS, n_examples=8)
    gen = generation.throughput(gen_data, batch_size=8, new_tokens=32, with_profile=False, threads=args.threads,
                                half_width=args.half_width, time_cap_s=args.cap, min_pairs=3)
    return {"gen_batch_speedup": gen["gen_batch_speedup"], "gen_batch_speedup_ci": gen["cpu"]["ci"],
            "generation": gen}


def naive_summary(rows: list[dict]) -> dict:
    """The naive-PerCE rows and, when measured, the headline keys: 151k vocabulary, 2k response tokens."""
    out: dict = {"perce_vs_naive": rows}
    key = next((r for r in rows if r["vocab"] > 100_000 and r["shape"]["response"] >= 2000), None)
    if key is not None:
        out.update({"perce_vs_naive_step": key["cpu"]["ratio"], "perce_vs_naive_step_ci": key["cpu"]["ci"],
                    "perce_vs_naive_mem": key["memory"]["ratio"], "perce_vs_naive_mem_ci": key["memory"]["ci"]})
    return out


def peers(work: Path, args, save) -> dict:
    """The slow comparisons, section by section (`--sections`); `save(section_result)` after each one so a
    failure late in the run keeps what was measured."""
    from scripts.bench import naive, peer  # trl: the optional `bench` extra, needed by this part only

    rule = {"half_width": args.half_width, "time_cap_s": args.cap}
    words = profile_words_for(R_MAIN, work / "calibrate", response_words=RESPONSE_WORDS)
    data = write_review_data(work / "main", profile_item_words=words, response_words=RESPONSE_WORDS)
    if "trl" in args.sections:
        trl = peer.ce_vs_trl(data, work / "trl", **rule)
        trl["memory"] = memory.alternated(("percli", {"data": str(data), "loss": "ce", "steps": 2}),
                                          ("trl", {"data": str(data), "steps": 2}), args.threads, args.mem_repeats)
        save({"ce_vs_peer": trl, "ce_vs_peer_step": trl["cpu"]["ratio"], "ce_vs_peer_step_ci": trl["cpu"]["ci"],
              "ce_vs_peer_mem": trl["memory"]["ratio"], "ce_vs_peer_mem_ci": trl["memory"]["ci"]})
    if "naive" in args.sections:
        long_data = write_review_data(work / "long", profile_item_words=PROFILE_WORDS_NAIVE, response_words=2400)
        rows = []
        for model in args.naive_models.split(","):
            for tokens in map(int, args.naive_tokens.split(",")):
                res = naive.perce_vs_naive(long_data, work / f"naive-{model}-{tokens}", model=model,
                                           max_response_tokens=tokens, **rule)
                spec = {"data": str(long_data), "model": model, "loss": "perce", "steps": 2,
                        "max_response_tokens": tokens}
                # SmolLM2 at 2k tokens: one fresh-process pair (memory repeats within ~1%; time is the limit).
                res["memory"] = memory.alternated(("percli", spec), ("naive", spec), args.threads,
                                                  args.mem_repeats if model == "tiny" else 1)
                rows.append(res)
                save({"perce_vs_naive": rows})
        save(naive_summary(rows))
    if "scaling" in args.sections:
        points: list[dict] = []
        for r in sorted(SCALING_RS, reverse=True):  # the short sequences (large r) first
            points.append(overhead.scaling_point(work / "scaling", r, response_words=SCALING_RESPONSE_WORDS, **rule))
            save({"scaling": points, "scaling_ci": [p["ci"] for p in points]})
    if "logprob" in args.sections:
        series = []
        for model, tokens in (("tiny", 1024), ("tiny", 2048), ("tiny", 4096), ("smollm2-135m", 1024),
                              ("smollm2-135m", 2048)):
            spec = {"model": model, "tokens": tokens}
            m = memory.alternated(("lean_logp", spec), ("naive_logp", spec), args.threads, 1)
            m.update({k: m["runs"]["a"][0][k] for k in ("tokens", "vocab", "full_logits_fp32_mb")})
            series.append(m)
        save({"logprob_memory": series})
    if "gen_long" in args.sections:
        gen_data = write_review_data(work / "gen-long", profile_item_words=words * 3, response_words=RESPONSE_WORDS,
                                     n_examples=args.long_prompts)
        gen = generation.throughput(gen_data, batch_size=args.long_prompts, new_tokens=128, with_profile=True,
                                    threads=args.threads, half_width=args.half_width, time_cap_s=1.0, min_pairs=2)
        save({"generation_long": gen, "gen_long_batch_speedup": gen["gen_batch_speedup"],
              "gen_long_batch_speedup_ci": gen["cpu"]["ci"]})
    return {}


REPEATED = ("perce_ce_step_ratio", "perce_ce_mem_ratio", "gen_batch_speedup")


def render(work: Path, args, save) -> dict:
    """No measurement: merge the `--merge` bench.json files (parts run in separate processes) and re-render."""
    merged: dict = {}
    rows: list[dict] = []
    for i, other in enumerate(args.merge):
        data = json.loads(Path(other).read_text())
        merged.setdefault("runs", {}).update({f"{k}-{i}": v for k, v in data.pop("runs", {}).items()})
        rows += data.pop("perce_vs_naive", [])
        # A headline ratio that an earlier file measured too: both runs are kept, so bench.md can say whether
        # back-to-back runs agree within their CIs.
        for key in REPEATED:
            if key in data:
                merged.setdefault("repeats", {}).setdefault(key, []).append(
                    {"run": f"core-{i}", "ratio": data[key], "ci": data.get(f"{key}_ci")})
        merged.update(data)
    if rows:  # the naive rows of several processes (models or lengths split between them)
        merged.update(naive_summary(rows))
    return merged


PARTS = {"core": core, "peers": peers, "render": render}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=sorted(PARTS), default="core")
    ap.add_argument("--out", default=str(REPO / "results"))
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 on a shared machine, where idle OpenMP workers spin and bill CPU time")
    ap.add_argument("--half-width", type=float, default=0.03, help="stop a timed ratio at this 95%% CI half-width")
    ap.add_argument("--cap", type=float, default=150.0, help="time cap in seconds of sampling per timed ratio")
    ap.add_argument("--mem-repeats", type=int, default=2, help="fresh-process memory measurements per side")
    ap.add_argument("--sections", default="trl,naive,scaling,logprob,gen_long",
                    help="peers part: comma-separated sections to run (trl, naive, scaling, logprob, gen_long)")
    ap.add_argument("--naive-models", default="tiny,smollm2-135m", help="peers part: models of the naive rows")
    ap.add_argument("--naive-tokens", default=",".join(map(str, NAIVE_RESPONSE_TOKENS)),
                    help="peers part: response lengths of the naive rows")
    ap.add_argument("--merge", nargs="*", default=[], help="render part: bench.json files to merge in")
    ap.add_argument("--long-prompts", type=int, default=4, help="LongLaMP-length prompts (= batch) for generation")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    args.sections = set(args.sections.split(","))
    out = Path(args.out)
    path = out / "bench.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    run = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_before": list(os.getloadavg()),
           # Where the files went (--out, --merge) is this machine's business, not a setting of the run.
           "args": {**{k: v for k, v in vars(args).items() if k not in ("out", "merge")},
                    "sections": sorted(args.sections)}}
    start = time.time()

    def save(section: dict) -> None:
        if args.part == "render":
            res.setdefault("runs", {}).update(section.pop("runs", {}))
            res.update(section)
            atomic_write_json(path, res)
            return
        res.update(section)
        res.update({"machine": machine(args.threads), "date": time.strftime("%Y-%m-%d"),
                    "clock": "cpu (time.process_time); wall-time ratios beside"})
        # The peers part may run section by section (--sections): one record per invocation.
        key = args.part if args.part == "core" else f"{args.part}:{','.join(sorted(args.sections))}"
        res.setdefault("runs", {})[key] = {**run, "load_after": list(os.getloadavg()),
                                                 "wall_s": time.time() - start}
        res["wall_s"] = time.time() - start
        atomic_write_json(path, res)

    with tempfile.TemporaryDirectory(prefix="percli-bench-") as tmp:
        save(PARTS[args.part](Path(tmp), args, save))
    atomic_write_text(out / "bench.md", markdown(res))
    if "scaling" in res:
        scaling_png(res, out / "bench_scaling.png")
    print(markdown(res))
    print(f"bench: wrote {path} and {out / 'bench.md'} in {res['wall_s']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
