"""`percli eval`: generation on a split -> predictions.jsonl -> ROUGE/METEOR (HF evaluate parity).

Generation (backend hf) is percli.generation's: in this process, or data-parallel on the launcher's
processes (`launcher=ddp launcher.num_processes=N`: one per GPU), with the same predictions.
`eval.predictions=FILE` skips the model and scores an existing jsonl of prediction/reference pairs.
`eval.backend=vllm` runs the same prompts through vLLM when it is installed (its own environment).

Outputs in the run dir (atomic): predictions.jsonl (id, prediction, reference[, planted_words]),
scores.jsonl (per-example metrics), metrics.json (the aggregates; what `percli table` reads).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from percli import metrics as metrics_lib
from percli.distributed import world_size
from percli.errors import ConfigError, EnvironmentProblem
from percli.eval_inputs import VLLM_MISSING, read_predictions
from percli.generation import eval_examples, eval_prompt_ids, generate_examples, generation_options
from percli.io import atomic_write_json, atomic_write_jsonl
from percli.launch import check_launcher, warn_idle_gpus
from percli.log import result
from percli.models import checkpoint_dir, load_tokenizer
from percli.names import METRIC_KEYS, PLANTED


# ------------------------------------------------------------------------------------------- scoring
def metric_rows(rows: Sequence[dict], aggregate: str, seed: int) -> tuple[dict, list[dict]]:
    """metrics.json values and per-example scores for rows of {id, prediction, reference[, planted_words]}."""
    res = metrics_lib.compute([r["prediction"] for r in rows], [r["reference"] for r in rows],
                              aggregate=aggregate, seed=seed)
    # user_id lets `percli compare` resample users, not items, when a user has several test items.
    per_example = [{"id": r["id"], **({"user_id": r["user_id"]} if "user_id" in r else {}), **s}
                   for r, s in zip(rows, res.pop("per_example"))]
    recalls = [(i, metrics_lib.planted_recall(r["prediction"], r["reference"], r.get("planted_words") or []))
               for i, r in enumerate(rows)]
    planted = [(i, v) for i, v in recalls if v is not None]   # references that name none are not counted
    if planted:
        for i, value in planted:
            per_example[i][PLANTED] = value
        res[PLANTED] = sum(v for _, v in planted) / len(planted)
        res["planted_examples"] = len(planted)
    return res, per_example


def _write_and_report(rows: list[dict], extra: dict, cfg: DictConfig, run_dir: Path) -> dict:
    aggregate = str(OmegaConf.select(cfg, "eval.aggregate", default="mean"))
    scores, per_example = metric_rows(rows, aggregate, int(OmegaConf.select(cfg, "seed", default=0)))
    scores.update(extra)
    atomic_write_jsonl(run_dir / "predictions.jsonl", rows)
    atomic_write_jsonl(run_dir / "scores.jsonl", per_example)
    atomic_write_json(run_dir / "metrics.json", scores)
    shown = "  ".join(f"{k} {scores[k]:.4f}" for k in (*METRIC_KEYS, PLANTED) if k in scores)
    result(f"percli: eval on {scores['num_examples']} examples ({aggregate}): {shown}\n"
           f"percli: wrote {run_dir / 'metrics.json'} and predictions.jsonl")
    return scores


# ------------------------------------------------------------------------------------------- entry points
def _rows(examples: Sequence[Any], texts: Sequence[str], max_new_tokens: int, tokenizer: Any) -> list[dict]:
    """predictions.jsonl rows. Planted names count only where the reference names them within the first
    `max_new_tokens` tokens: a generation of that length can contain them, so recall can reach 1."""
    rows = []
    for ex, text in zip(examples, texts):
        row = {"id": ex.id, "user_id": ex.user_id, "prediction": text, "reference": ex.output}
        if ex.meta.get("planted_words"):
            row["planted_words"] = metrics_lib.names_within(ex.output, list(ex.meta["planted_words"]), tokenizer,
                                                            max_new_tokens)
        rows.append(row)
    return rows


def evaluate_generations(cfg: DictConfig, run_dir: Path, checkpoint: Path | None = None) -> dict:
    """Generate for the eval split with the HF backend (cfg.model, or `checkpoint`), on the launcher's
    processes, score, and write predictions.jsonl / scores.jsonl / metrics.json; returns metrics.json."""
    examples = eval_examples(cfg)
    gen, prompt_lengths = generate_examples(cfg, run_dir, examples, checkpoint)
    extra = _extra(cfg, "hf", generation_options(cfg), gen.new_tokens, gen.seconds, prompt_lengths)
    extra["generation"]["processes"] = world_size(cfg)
    rows = _rows(examples, gen.texts, int(cfg.eval.max_new_tokens), load_tokenizer(cfg.model))
    return _write_and_report(rows, extra, cfg, Path(run_dir))


def _extra(cfg: DictConfig, backend: str, opts: dict, new_tokens: Sequence[int], seconds: float,
           prompt_lengths: Sequence[int]) -> dict:
    return {
        "task": str(cfg.task.name),
        "split": str(cfg.eval.split),
        "model": str(OmegaConf.select(cfg, "model.path", default=None) or cfg.model.name),
        "generation": {"backend": backend, **opts, "prompts": len(prompt_lengths),
                       "prompt_tokens": int(sum(prompt_lengths)), "new_tokens": int(sum(new_tokens)),
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
    llm = vllm.LLM(model=source, seed=int(cfg.seed), tensor_parallel_size=world_size(cfg))
    start = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": list(p)} for p in prompt_ids], params)
    seconds = time.perf_counter() - start
    return [o.outputs[0].text.strip() for o in outs], [len(o.outputs[0].token_ids) for o in outs], seconds


def run(cfg: DictConfig, run_dir: Path) -> None:
    """`percli eval`: score eval.predictions, or generate on the split and score."""
    run_dir = Path(run_dir)
    if cfg.eval.predictions:
        rows = read_predictions(Path(str(cfg.eval.predictions)).expanduser())
        _write_and_report(rows, {"source": str(cfg.eval.predictions)}, cfg, run_dir)
        return
    if cfg.eval.backend == "vllm":
        _require_vllm()  # before any data or model work
        examples = eval_examples(cfg)
        tokenizer = load_tokenizer(cfg.model)
        prompt_ids, _ = eval_prompt_ids(examples, tokenizer, int(cfg.data.max_prompt_tokens))
        texts, new_tokens, seconds = _vllm_generate(cfg, tokenizer, prompt_ids)
        extra = _extra(cfg, "vllm", generation_options(cfg), new_tokens, seconds, [len(p) for p in prompt_ids])
        _write_and_report(_rows(examples, texts, int(cfg.eval.max_new_tokens), tokenizer), extra, cfg, run_dir)
        return
    check_launcher(cfg)
    warn_idle_gpus(cfg)
    evaluate_generations(cfg, run_dir)
