"""Evaluation speed: greedy tokens/s of the batched eval path against batch 1, and the share of prefill.

Equal work on both sides: every prompt yields exactly `new_tokens` (eos ignored). A measurement is one
pass over all prompts; batch 1 and batched passes are interleaved, so the speed-up is the ratio of
their times (batch-1 seconds / batched seconds). The prefill share is the time of a pass that generates
one token per prompt (prefill + one step) over the time of the full pass.
"""

from __future__ import annotations

from pathlib import Path

from percli.data.longlamp import load_examples
from percli.evaluation import eval_prompt_ids, generate
from percli.models import chat_prompt_ids, load_model_and_tokenizer
from scripts.bench import subject
from scripts.bench.stats import Timing, interleaved, timed


def _pass(model, tok, prompts: list[list[int]], batch_size: int, new_tokens: int) -> Timing:
    return timed(lambda: generate(model, tok, prompts, batch_size=batch_size, max_new_tokens=new_tokens,
                                  ignore_eos=True, progress=False))


def throughput(data_dir: Path, *, batch_size: int, new_tokens: int, with_profile: bool, **rule) -> dict:
    """Batched / batch-1 speed-up (with CI) on the bench examples' prompts.

    `with_profile`: the full LongLaMP prompt (profile included, as evaluation sees it); otherwise the
    short profile-free query, where decoding dominates and batching pays off most.
    """
    cfg = subject.bench_cfg(data_dir, model="smollm2-135m")
    model, tok = load_model_and_tokenizer(cfg.model)
    model.eval()
    examples = load_examples(cfg, "test")
    if with_profile:
        prompts, _ = eval_prompt_ids(examples, tok, int(cfg.data.max_prompt_tokens))
    else:
        prompts = [chat_prompt_ids(tok, ex.input) for ex in examples]
    prompts = prompts[:batch_size]
    for bs in (1, batch_size):  # warm-up: allocations and kernel choice at both shapes
        _pass(model, tok, prompts[:bs], bs, 2)
    res = interleaved(lambda: _pass(model, tok, prompts, 1, new_tokens),
                      lambda: _pass(model, tok, prompts, batch_size, new_tokens),
                      f"generation batch 1 / batch {batch_size} time", **rule)
    tokens = len(prompts) * new_tokens
    one_s, many_s = res["cpu"]["a_median"], res["cpu"]["b_median"]
    out = {**res, "gen_batch_speedup": res["cpu"]["ratio"], "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts),
           "prompts": len(prompts), "new_tokens": new_tokens, "batch_size": batch_size,
           "batch_1_tokens_per_s_cpu": tokens / one_s, "batched_tokens_per_s_cpu": tokens / many_s,
           "batch_1_tokens_per_s_wall": tokens / res["wall"]["a_median"],
           "batched_tokens_per_s_wall": tokens / res["wall"]["b_median"]}
    if with_profile:
        out["prefill_share"] = {"batch_1": _pass(model, tok, prompts, 1, 1).cpu_s / one_s,
                                "batched": _pass(model, tok, prompts, batch_size, 1).cpu_s / many_s}
    return out
