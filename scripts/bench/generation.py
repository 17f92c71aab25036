"""Evaluation speed: greedy tokens/s of the batched eval path against batch 1, and the share of prefill.

Equal work on both sides: every prompt yields exactly `new_tokens` (eos ignored). A measurement is one
pass over all prompts; the speed-up is the ratio of their times (batch-1 seconds / batched seconds). The
prefill share is the time of a pass that generates one token per prompt (prefill + one step) over the
time of the full pass.

Each pair runs in a fresh process (`scripts.bench.child generate`) that loads the model, warms up and
times both passes, the order swapped every pair. Batch-1 decoding reads every weight per token, and how
fast it does so changed between processes: batch-1 passes took 20-22 s in one `make bench` run and 24-26 s
in the next while the batched passes took the same time. Pairs timed inside one process left that out of
the CI, so the CI of one run did not cover the next.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from percli.data.longlamp import load_examples
from percli.generation import eval_prompt_ids, generate
from percli.models import chat_prompt_ids, load_model_and_tokenizer
from scripts.bench import subject
from scripts.bench.memory import run_child
from scripts.bench.stats import Sequential, Timing, timed


def _pass(model, tok, prompts: list[list[int]], batch_size: int, new_tokens: int) -> Timing:
    return timed(lambda: generate(model, tok, prompts, batch_size=batch_size, max_new_tokens=new_tokens,
                                  ignore_eos=True, progress=False))


def passes(spec: dict) -> dict:
    """In this process: load the model, warm up, then time the batch-1 and the batched pass in the order
    `spec["a_first"]` says (with `with_profile`, also the one-token passes for the prefill share)."""
    cfg = subject.bench_cfg(Path(spec["data"]), model=spec.get("model", "smollm2-135m"))
    model, tok = load_model_and_tokenizer(cfg.model)
    model.eval()
    examples = load_examples(cfg, "test")
    if spec["with_profile"]:  # the full LongLaMP prompt, profile included, as evaluation sees it
        prompts, _ = eval_prompt_ids(examples, tok, int(cfg.data.max_prompt_tokens))
    else:  # the short profile-free query, where decoding dominates and batching pays off most
        prompts = [chat_prompt_ids(tok, ex.input) for ex in examples]
    batch, new_tokens = int(spec["batch_size"]), int(spec["new_tokens"])
    prompts = prompts[:batch]
    for bs in (1, batch):  # warm-up: allocations and kernel choice at both shapes
        _pass(model, tok, prompts[:bs], bs, 2)
    order = (1, batch) if spec["a_first"] else (batch, 1)
    times = {bs: _pass(model, tok, prompts, bs, new_tokens) for bs in order}
    out = {"batch_1": vars(times[1]), "batched": vars(times[batch]), "prompts": len(prompts),
           "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts)}
    if spec["with_profile"]:
        out["prefill_share"] = {"batch_1": _pass(model, tok, prompts, 1, 1).cpu_s / times[1].cpu_s,
                                "batched": _pass(model, tok, prompts, batch, 1).cpu_s / times[batch].cpu_s}
    return out


def throughput(data_dir: Path, *, batch_size: int, new_tokens: int, with_profile: bool, threads: int,
               model: str = "smollm2-135m", **rule) -> dict:
    """Batched / batch-1 speed-up (with CI) on the bench examples' prompts, one fresh process per pair.

    `with_profile`: the full LongLaMP prompt; otherwise the short profile-free query.
    """
    seq = Sequential(f"generation batch 1 / batch {batch_size} time", **rule)
    children = []
    while True:
        spec = {"data": str(data_dir), "model": model, "batch_size": batch_size, "new_tokens": new_tokens,
                "with_profile": with_profile, "a_first": seq.a_first()}
        children.append(run_child("generate", spec, threads))
        if seq.add(Timing(**children[-1]["batch_1"]), Timing(**children[-1]["batched"])):
            break
    res = seq.result()
    tokens = children[0]["prompts"] * new_tokens
    one_s, many_s = res["cpu"]["a_median"], res["cpu"]["b_median"]
    out = {**res, "gen_batch_speedup": res["cpu"]["ratio"], "prompt_tokens_mean": children[0]["prompt_tokens_mean"],
           "prompts": children[0]["prompts"], "new_tokens": new_tokens, "batch_size": batch_size,
           "processes": len(children), "batch_1_tokens_per_s_cpu": tokens / one_s,
           "batched_tokens_per_s_cpu": tokens / many_s, "batch_1_tokens_per_s_wall": tokens / res["wall"]["a_median"],
           "batched_tokens_per_s_wall": tokens / res["wall"]["b_median"]}
    if with_profile:
        out["prefill_share"] = {side: statistics.median(c["prefill_share"][side] for c in children)
                                for side in ("batch_1", "batched")}
    return out
