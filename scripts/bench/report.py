"""results/bench.md (one table with every ratio) and results/bench_scaling.png, from results/bench.json."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)


def _ci(ci: list[float]) -> str:
    return "-" if any(math.isnan(x) for x in ci) else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _row(measure: str, ratio: float, ci: list[float], wall: str, goal: str, met: bool | None, detail: str) -> str:
    verdict = "-" if met is None else ("yes" if met else "**no**")
    return f"| {measure} | {ratio:.3f} | {_ci(ci)} | {wall} | {goal} | {verdict} | {detail} |"


def _timed(measure: str, res: dict, goal: str, met: bool | None, detail: str) -> str:
    cpu, wall = res["cpu"], res["wall"]
    extra = f"{detail}; {cpu['pairs']} pairs, stopped by {res['stopped']}"
    return _row(measure, cpu["ratio"], cpu["ci"], f"{wall['ratio']:.3f}", goal, met, extra)


def table_rows(res: dict) -> list[str]:
    rows = []
    if "cpu" in res.get("step", {}):  # (bench.json from before CIs has other keys: not shown)
        s = res["step"]
        rows.append(_timed("PerCE / CE step time", s, f"<= 1 + r/3 + 0.05 = {s['bound'] + 0.05:.3f}",
                           s["cpu"]["ratio"] <= s["bound"] + 0.05,
                           f"r = {s['r']:.3f}; {s['cpu']['a_median']:.2f} s / {s['cpu']['b_median']:.2f} s CPU"))
    if "pairs" in res.get("memory", {}):
        m = res["memory"]
        rows.append(_row("PerCE / CE peak memory", m["ratio"], m["ci"], "-", "<= 1.10", m["ratio"] <= 1.10,
                         f"{m['a_median']:.0f} MB / {m['b_median']:.0f} MB, {m['pairs']} fresh-process pairs"))
    if "cpu" in res.get("generation", {}):
        g = res["generation"]
        rows.append(_timed("batched / batch-1 generation, short prompts", g, ">= 4x", g["gen_batch_speedup"] >= 4,
                           f"{g['batched_tokens_per_s_cpu']:.1f} vs {g['batch_1_tokens_per_s_cpu']:.1f} tok/s (CPU), "
                           f"batch {g['batch_size']}, {g['prompt_tokens_mean']:.0f}-token prompts{_fresh(g)}"))
    if "pairs" in res.get("contrast_memory", {}):
        c = res["contrast_memory"]
        rows.append(_row(f"lean / naive contrast log-prob memory, V={c['vocab']:,}, T={c['tokens']}", c["ratio"],
                         c["ci"], "-", "lean < 1/4 of the full fp32 logits",
                         c["a_median"] < 0.25 * c["full_logits_fp32_mb"],
                         f"lean {c['a_median']:.0f} MB, naive {c['b_median']:.0f} MB; full fp32 logits "
                         f"{c['full_logits_fp32_mb']:.0f} MB"))
    if "ce_vs_peer" in res:
        p = res["ce_vs_peer"]
        rows.append(_timed("percli CE / TRL SFTTrainer step time", p, "<= 1.05", p["cpu"]["ratio"] <= 1.05,
                           f"{p['cpu']['a_median']:.2f} s / {p['cpu']['b_median']:.2f} s CPU; first loss "
                           f"{p['percli_first_loss']:.6f} vs {p['peer_first_loss']:.6f}"))
        m = p["memory"]
        rows.append(_row("percli CE / TRL SFTTrainer peak memory", m["ratio"], m["ci"], "-", "<= 1.05",
                         m["ratio"] <= 1.05, f"{m['a_median']:.0f} MB / {m['b_median']:.0f} MB"))
    for n in res.get("perce_vs_naive", []):
        big = n["vocab"] > 100_000
        where = f"V={n['vocab']:,}, {n['shape']['response']:.0f} response tokens"
        rows.append(_timed(f"percli PerCE / naive PerCE step time ({where})", n, "<= 1.0" if big else "-",
                           (n["cpu"]["ratio"] <= 1.0) if big else None, f"first loss {n['percli_first_loss']:.6f} vs {n['naive_first_loss']:.6f}"))
        m = n["memory"]
        rows.append(_row(f"percli PerCE / naive PerCE peak memory ({where})", m["ratio"], m["ci"], "-",
                         "<= 0.5" if big else "-", (m["ratio"] <= 0.5) if big else None,
                         f"{m['a_median']:.0f} MB / {m['b_median']:.0f} MB"))
    for c in res.get("logprob_memory", []):
        rows.append(_row(f"lean / naive log-prob memory, V={c['vocab']:,}, T={c['tokens']}", c["ratio"], c["ci"],
                         "-", "lean flat in T x V", None,
                         f"lean {c['a_median']:.0f} MB, naive {c['b_median']:.0f} MB; full fp32 logits "
                         f"{c['full_logits_fp32_mb']:.0f} MB"))
    for p in res.get("scaling", []):
        rows.append(_row(f"scaling: PerCE / CE at r = {p['r']:.3f}", p["ratio"], p["ci"], f"{p['wall_ratio']:.3f}",
                         f"<= bound + 0.05 = {p['bound'] + 0.05:.3f}", p["ratio"] <= p["bound"] + 0.05,
                         f"ratio - bound = {p['ratio'] - p['bound']:+.3f}; full {p['shape']['full']:.0f} tokens; "
                         f"{p['pairs']} pairs, stopped by {p['stopped']}"))
    if "generation_long" in res:
        g = res["generation_long"]
        share = g["prefill_share"]
        rows.append(_timed("batched / batch-1 generation, LongLaMP prompts", g, "reported", None,
                           f"{g['prompt_tokens_mean']:.0f}-token prompts, {g['new_tokens']} new tokens, batch "
                           f"{g['batch_size']}; prefill {share['batch_1']:.0%} of batch-1 time, "
                           f"{share['batched']:.0%} of batched{_fresh(g)}"))
    return rows


def _fresh(gen: dict) -> str:
    # Results written before generation pairs ran in fresh processes have no "processes" key.
    return ", a fresh process per pair" if gen.get("processes") else ""


def agree(runs: list[dict]) -> bool:
    """Each run's ratio lies inside every other run's 95% CI."""
    return all(a is b or b["ci"][0] <= a["ratio"] <= b["ci"][1] for a in runs for b in runs)


def overlap(runs: list[dict]) -> bool:
    """The runs' 95% CIs share at least one value."""
    return max(r["ci"][0] for r in runs) <= min(r["ci"][1] for r in runs)


def _verdict(runs: list[dict]) -> str:
    if agree(runs):
        return "agree: each ratio lies in the other run's CI"
    if overlap(runs):
        return "**partly**: the CIs overlap, but not every ratio lies in the other run's CI"
    return "**disagree**: the CIs do not overlap"


def repeat_lines(res: dict) -> list[str]:
    """Back-to-back `make bench` runs, headline ratio by headline ratio."""
    repeats = {k: v for k, v in res.get("repeats", {}).items() if len(v) > 1}
    if not repeats:
        return []
    lines = ["Back-to-back runs of `make bench` (the table shows the last one):", ""]
    for key, runs in repeats.items():
        values = "; ".join(f"{r['ratio']:.3f} {_ci(r['ci'])}" for r in runs)
        lines.append(f"- `{key}`: {values}: {_verdict(runs)}")
    return [*lines, ""]


def markdown(res: dict) -> str:
    runs = "; ".join(f"`{part}` {r['date']} (load {r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f}, "
                     f"{r['wall_s'] / 60:.1f} min)" for part, r in sorted(res["runs"].items()))
    mach = res["machine"]
    return "\n".join([
        "# percli bench", "",
        f"{mach['device']} ({mach.get('cpu', '')}, {mach['cpu_count']} cores), torch {mach['torch']}, "
        f"{mach['torch_threads']} torch thread(s); smollm2-135m fp32 unless a row names the 151,669-token vocabulary "
        f"(tiny Qwen3). Runs: {runs}.", "",
        "Ratios are percli / other. Timed ratios: geometric mean of interleaved pairs (order swapped every pair) "
        "on CPU time (`time.process_time`), which the goals use, with a Student-t 95% CI; the wall-time ratio is "
        "beside it. Memory: peak RSS above the post-setup RSS, each side in fresh processes, alternated. "
        "`met` judges the point estimate: where the CI crosses the goal, the goal is not established either way.", "",
        "| measure | ratio | 95% CI | wall ratio | goal | met | detail |",
        "|---|---|---|---|---|---|---|",
        *table_rows(res), "",
        *repeat_lines(res),
    ])


def scaling_png(res: dict, path: Path) -> None:
    """PerCE / CE step ratio against r with the bound 1 + r/3; lean vs naive log-prob memory against T x V."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    pts = sorted(res.get("scaling", []), key=lambda p: p["r"])
    if pts:
        r = [p["r"] for p in pts]
        ratio = [p["ratio"] for p in pts]
        err = [[p["ratio"] - p["ci"][0] for p in pts], [p["ci"][1] - p["ratio"] for p in pts]]
        ax.errorbar(r, ratio, yerr=err, fmt="o", capsize=4, label="PerCE / CE step (CPU time, 95% CI)")
        grid = [i / 100 for i in range(5, 56)]
        ax.plot(grid, [1 + x / 3 for x in grid], "k-", label="bound 1 + r/3")
        ax.plot(grid, [1.05 + x / 3 for x in grid], "k:", label="bound + 0.05")
    ax.set_xlabel("r = profile-free length / full length")
    ax.set_ylabel("step-time ratio")
    ax.set_title("PerCE overhead vs profile-free share")
    ax.legend(fontsize=8)
    series = res.get("logprob_memory", []) + ([res["contrast_memory"]] if "pairs" in res.get("contrast_memory", {}) else [])
    for c, key, style in (("lean", "a_median", "o-"), ("naive", "b_median", "s--")):
        for vocab in sorted({m["vocab"] for m in series}):
            ms = sorted((m for m in series if m["vocab"] == vocab), key=lambda m: m["tokens"])
            bx.plot([m["tokens"] * vocab for m in ms], [m[key] for m in ms], style, label=f"{c}, V={vocab:,}")
    if not series:
        bx.text(0.5, 0.5, "not measured in this run", ha="center", va="center", transform=bx.transAxes)
    else:
        bx.legend(fontsize=8)
    bx.set_xscale("log")
    bx.set_yscale("log")
    bx.set_xlabel("T x V (scored tokens x vocabulary)")
    bx.set_ylabel("peak memory above baseline (MB)")
    bx.set_title("response log-prob memory (no grad)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
