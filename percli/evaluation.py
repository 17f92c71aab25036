"""`percli eval`: batched generation on a split -> predictions.jsonl -> ROUGE/METEOR (HF evaluate parity).

Generation (backend hf): each example's full prompt (retrieved profile items + input, the official
LongLaMP template, fitted to `data.max_prompt_tokens` exactly as training fits it) goes through the model's
chat template; prompts are sorted by length (longest first, so a batch that runs out of memory does so at
once and batches carry little padding), LEFT-padded (a decoder continues from the last column), and decoded
with HF `generate`: greedy by default, sampling with `eval.do_sample/temperature/top_p` seeded by `seed`.
`eval.predictions=FILE` skips the model and scores an existing jsonl of prediction/reference pairs.
`eval.backend=vllm` runs the same prompts through vLLM when it is installed (its own environment).

Outputs in the run dir (atomic): predictions.jsonl (id, prediction, reference[, planted_words]),
scores.jsonl (per-example metrics), metrics.json (the aggregates; what `percli table` reads).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from percli import metrics as metrics_lib
from percli.data.collate import fit_profile, pad_rows
from percli.data.longlamp import load_examples, subsample
from percli.device import default_device
from percli.errors import ConfigError, DataError, EnvironmentProblem
from percli.eval_inputs import VLLM_MISSING, read_predictions
from percli.io import atomic_write_json, atomic_write_jsonl
from percli.log import log, result
from percli.models import chat_prompt_ids, checkpoint_dir, load_model_and_tokenizer, load_tokenizer

PLANTED = "planted_recall"


# ------------------------------------------------------------------------------------------- generation
@dataclass
class GenerationResult:
    texts: list[str]          # in the order of the prompts given
    new_tokens: list[int]     # generated tokens per prompt, up to and including its eos
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return sum(self.new_tokens) / self.seconds if self.seconds > 0 else 0.0


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """The chat end-of-turn token plus whatever the model's generation config calls eos."""
    ids = {tokenizer.eos_token_id}
    cfg_eos = getattr(model.generation_config, "eos_token_id", None)
    ids.update(cfg_eos if isinstance(cfg_eos, list) else [cfg_eos])
    return sorted(i for i in ids if i is not None)


def generate(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    batch_size: int,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    ignore_eos: bool = False,
    progress: bool = True,
) -> GenerationResult:
    """Generate a continuation for each tokenised prompt: length-sorted, left-padded batches.

    `ignore_eos` forces exactly `max_new_tokens` per prompt (for throughput measurements that compare
    batch sizes on equal work). The torch RNG used for sampling is private (forked, seeded by `seed`).
    """
    if not prompt_ids:
        return GenerationResult([], [], 0.0)
    if any(len(p) == 0 for p in prompt_ids):
        raise DataError("an empty prompt cannot be generated from; every prompt needs at least one token")
    device = next(model.parameters()).device
    eos = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if do_sample else {"do_sample": False}
    # A copy of the model's generation config: its own sampling defaults (e.g. a top_k) must not leak into
    # greedy decoding, and the model object is left as it was.
    gen_config = model.generation_config.__class__.from_dict(
        {**model.generation_config.to_dict(), "temperature": None, "top_p": None, "top_k": None,
         "max_length": None}
    )
    gen_config.update(max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad_id, **sampling)
    if ignore_eos:
        gen_config.update(min_new_tokens=max_new_tokens)

    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
    texts: list[str] = [""] * len(prompt_ids)
    counts: list[int] = [0] * len(prompt_ids)
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(order), unit="ex", desc="generate", disable=not progress, file=sys.stderr)
    start = time.perf_counter()
    try:
        # manual_seed also seeds every CUDA device, so fork them all to leave the caller's RNG untouched.
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))), torch.inference_mode():
            torch.manual_seed(seed)
            for b in range(0, len(order), batch_size):
                idx = order[b:b + batch_size]
                ids, mask = pad_rows([prompt_ids[i] for i in idx], pad_id, "left")  # decoders continue at the end
                out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                     generation_config=gen_config)
                new = out[:, ids.shape[1]:].tolist()
                for i, row in zip(idx, new):
                    cut = next((j for j, t in enumerate(row) if t in eos), None)
                    kept = row if cut is None else row[:cut]
                    counts[i] = len(row) if cut is None else cut + 1
                    texts[i] = tokenizer.decode(kept, skip_special_tokens=True).strip()
                bar.update(len(idx))
                bar.set_postfix(tok_s=f"{sum(counts[i] for i in order[:b + len(idx)]) / (time.perf_counter() - start):.1f}")
    finally:
        bar.close()
        model.train(was_training)
    return GenerationResult(texts, counts, time.perf_counter() - start)


def generation_throughput(
    model: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]], *, batch_size: int,
    max_new_tokens: int, ignore_eos: bool = True, warmup: bool = True,
) -> dict[str, float]:
    """Greedy generation speed on `prompt_ids` at one batch size: {batch_size, tokens, seconds, tokens_per_s}.

    With `ignore_eos` every prompt yields exactly `max_new_tokens`, so batch sizes are compared on equal
    work. `warmup` first runs one short batch so one-off costs (allocations, kernel selection) are excluded.
    """
    if warmup:
        generate(model, tokenizer, prompt_ids[:batch_size], batch_size=batch_size, max_new_tokens=2,
                 ignore_eos=True, progress=False)
    res = generate(model, tokenizer, prompt_ids, batch_size=batch_size, max_new_tokens=max_new_tokens,
                   ignore_eos=ignore_eos, progress=False)
    return {"batch_size": batch_size, "tokens": sum(res.new_tokens), "seconds": res.seconds,
            "tokens_per_s": res.tokens_per_s}


# ------------------------------------------------------------------------------------------- prompts
def eval_prompt_ids(examples: Sequence[Any], tokenizer: Any, max_prompt_tokens: int) -> tuple[list[list[int]], int]:
    """Chat-templated full prompts, fitted to `max_prompt_tokens` as training fits them (profile items
    dropped from the end, then the last one cut). An input that alone exceeds the budget is kept whole:
    evaluation never drops an example. Returns (ids per example, number over budget)."""
    def ids_of(prompt: str) -> list[int]:
        return chat_prompt_ids(tokenizer, prompt)

    out, over = [], 0
    for ex in examples:
        ids = ids_of(ex.input)
        if len(ids) > max_prompt_tokens:
            over += 1  # no room for any profile item: the input alone, whole
        else:
            _, ids, _, _ = fit_profile(ex.task, ex.input, ex.profile, max_prompt_tokens, ids_of)
        out.append(ids)
    return out, over


# ------------------------------------------------------------------------------------------- scoring
def planted_recall(prediction: str, words: Sequence[str]) -> float:
    """The fraction of the user's planted words that appear as whole words in the prediction."""
    if not words:
        return 0.0
    text = prediction.lower()
    return sum(1 for w in words if re.search(rf"\b{re.escape(w.lower())}\b", text)) / len(words)


def score_rows(rows: Sequence[dict], aggregate: str, seed: int) -> tuple[dict, list[dict]]:
    """metrics.json values and per-example scores for rows of {id, prediction, reference[, planted_words]}."""
    res = metrics_lib.compute([r["prediction"] for r in rows], [r["reference"] for r in rows],
                              aggregate=aggregate, seed=seed)
    # user_id lets `percli compare` resample users, not items, when a user has several test items.
    per_example = [{"id": r["id"], **({"user_id": r["user_id"]} if "user_id" in r else {}), **s}
                   for r, s in zip(rows, res.pop("per_example"))]
    planted = [(i, r["planted_words"]) for i, r in enumerate(rows) if r.get("planted_words")]
    if planted:
        for i, words in planted:
            per_example[i][PLANTED] = planted_recall(rows[i]["prediction"], words)
        res[PLANTED] = sum(per_example[i][PLANTED] for i, _ in planted) / len(planted)
        res["planted_examples"] = len(planted)
    return res, per_example


def _write_and_report(rows: list[dict], extra: dict, cfg: DictConfig, run_dir: Path) -> dict:
    aggregate = str(OmegaConf.select(cfg, "eval.aggregate", default="mean"))
    scores, per_example = score_rows(rows, aggregate, int(OmegaConf.select(cfg, "seed", default=0)))
    scores.update(extra)
    atomic_write_jsonl(run_dir / "predictions.jsonl", rows)
    atomic_write_jsonl(run_dir / "scores.jsonl", per_example)
    atomic_write_json(run_dir / "metrics.json", scores)
    shown = "  ".join(f"{k} {scores[k]:.4f}" for k in (*metrics_lib.METRIC_KEYS, PLANTED) if k in scores)
    result(f"percli: eval on {scores['num_examples']} examples ({aggregate}): {shown}\n"
           f"percli: wrote {run_dir / 'metrics.json'} and predictions.jsonl")
    return scores


# ------------------------------------------------------------------------------------------- entry points
def _generation_options(cfg: DictConfig) -> dict:
    e = cfg.eval
    return {"batch_size": int(e.batch_size), "max_new_tokens": int(e.max_new_tokens), "do_sample": bool(e.do_sample),
            "temperature": float(e.temperature), "top_p": float(e.top_p), "seed": int(cfg.seed)}


def _rows(examples: Sequence[Any], texts: Sequence[str]) -> list[dict]:
    rows = []
    for ex, text in zip(examples, texts):
        row = {"id": ex.id, "user_id": ex.user_id, "prediction": text, "reference": ex.output}
        if ex.meta.get("planted_words"):
            row["planted_words"] = list(ex.meta["planted_words"])
        rows.append(row)
    return rows


def _limit(examples: Sequence[Any], cfg: DictConfig) -> list[Any]:
    """The whole split, or a random eval.max_examples of it seeded by data.seed (not the run's seed: runs
    of different seeds must score the same examples to be compared pairwise)."""
    n = OmegaConf.select(cfg, "eval.max_examples", default=None)
    return subsample(list(examples), n, int(OmegaConf.select(cfg, "data.seed", default=0)))


def evaluate_model(model: Any, tokenizer: Any, examples: Sequence[Any], cfg: DictConfig, run_dir: Path) -> dict:
    """Generate for `examples` (at most eval.max_examples, a seeded random subset) with the HF backend, score, write
    predictions.jsonl / scores.jsonl / metrics.json into `run_dir`; returns the metrics.json dict."""
    examples = _limit(examples, cfg)
    if not examples:
        raise DataError("no examples to evaluate; check the split, data.max_examples and eval.max_examples")
    prompt_ids, over = eval_prompt_ids(examples, tokenizer, int(cfg.data.max_prompt_tokens))
    if over:
        log.info(f"{over} prompts exceed data.max_prompt_tokens={cfg.data.max_prompt_tokens} even without "
                 "profile; generated from the whole input anyway")
    opts = _generation_options(cfg)
    gen = generate(model, tokenizer, prompt_ids, **opts)
    extra = _extra(cfg, "hf", opts, gen.new_tokens, gen.seconds, prompt_ids)
    return _write_and_report(_rows(examples, gen.texts), extra, cfg, Path(run_dir))


def _extra(cfg: DictConfig, backend: str, opts: dict, new_tokens: Sequence[int], seconds: float,
           prompt_ids: Sequence[Sequence[int]]) -> dict:
    return {
        "task": str(cfg.task.name),
        "split": str(cfg.eval.split),
        "model": str(OmegaConf.select(cfg, "model.path", default=None) or cfg.model.name),
        "generation": {"backend": backend, **opts, "prompts": len(prompt_ids),
                       "prompt_tokens": sum(len(p) for p in prompt_ids), "new_tokens": int(sum(new_tokens)),
                       "seconds": round(seconds, 3),
                       "tokens_per_s": round(sum(new_tokens) / seconds, 2) if seconds > 0 else 0.0},
    }


def _require_vllm() -> Any:
    try:
        import vllm  # an optional extra in its own environment (it pins another torch)
    except ImportError:
        raise EnvironmentProblem(VLLM_MISSING) from None
    return vllm


def _vllm_generate(cfg: DictConfig, tokenizer: Any, prompt_ids: Sequence[Sequence[int]]
                   ) -> tuple[list[str], list[int], float]:
    """The same prompts through vLLM (GPU machines, own environment; see README)."""
    vllm = _require_vllm()
    source = checkpoint_dir(cfg.model)
    if source is None:
        raise ConfigError(f"eval.backend=vllm needs a checkpoint directory; model={cfg.model.name} is random-init "
                          "(set model.path=<run>/checkpoints/final or eval.backend=hf)")
    e = cfg.eval
    params = vllm.SamplingParams(max_tokens=int(e.max_new_tokens), seed=int(cfg.seed),
                                 temperature=float(e.temperature) if e.do_sample else 0.0,
                                 top_p=float(e.top_p) if e.do_sample else 1.0)
    llm = vllm.LLM(model=source, seed=int(cfg.seed))
    start = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": list(p)} for p in prompt_ids], params)
    seconds = time.perf_counter() - start
    return [o.outputs[0].text.strip() for o in outs], [len(o.outputs[0].token_ids) for o in outs], seconds


def run(cfg: DictConfig, run_dir: Path) -> None:
    """`percli eval`: score eval.predictions, or load the model and examples, generate and score."""
    run_dir = Path(run_dir)
    if cfg.eval.predictions:
        rows = read_predictions(Path(str(cfg.eval.predictions)).expanduser())
        _write_and_report(rows, {"source": str(cfg.eval.predictions)}, cfg, run_dir)
        return
    if cfg.eval.backend == "vllm":
        _require_vllm()  # before any data or model work
    examples = _limit(load_examples(cfg, str(cfg.eval.split)), cfg)
    if cfg.eval.backend == "vllm":
        tokenizer = load_tokenizer(cfg.model)
        prompt_ids, _ = eval_prompt_ids(examples, tokenizer, int(cfg.data.max_prompt_tokens))
        texts, new_tokens, seconds = _vllm_generate(cfg, tokenizer, prompt_ids)
        extra = _extra(cfg, "vllm", _generation_options(cfg), new_tokens, seconds, prompt_ids)
        _write_and_report(_rows(examples, texts), extra, cfg, run_dir)
        return
    model, tokenizer = load_model_and_tokenizer(cfg.model, seed=int(cfg.seed))
    model.to(default_device())  # load_model leaves the model on the CPU
    evaluate_model(model, tokenizer, examples, cfg, run_dir)

