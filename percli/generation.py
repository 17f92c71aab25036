"""Generation for evaluation: prompts, length-sorted batches, HF `generate`, and its data-parallel form.

Each example's full prompt (retrieved profile items + input, the official LongLaMP template, fitted to
`data.max_prompt_tokens` exactly as training fits it) goes through the model's chat template. Prompts are
sorted by length (longest first, so a batch that runs out of memory does so at once and batches carry
little padding) and cut into batches: the *batch plan*. Each batch is LEFT-padded (a decoder continues from
the last column) and decoded with HF `generate`: greedy by default, sampling with
`eval.do_sample/temperature/top_p` seeded by `seed` + the batch's index in the plan.

Data-parallel (launcher=ddp|deepspeed with several processes): rank r generates batches r, r + world, ...
of the same plan, in its own worker, and writes them to run_dir/.generation/rank-r.jsonl; the parent
gathers them in prompt order. Every batch holds the same prompts with the same padding as in one process,
and each batch's sampling seed depends on the plan only, so the predictions equal one process's, byte for
byte with greedy decoding and the same batch size. The workers need no process group.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from percli.batching import longest_first
from percli.data.collate import fit_profile, pad_rows
from percli.data.longlamp import load_examples, subsample
from percli.device import default_device, precision_dtype, release_device_memory
from percli.distributed import rank, world_size
from percli.errors import DataError
from percli.io import atomic_write_jsonl, atomic_write_text, read_jsonl
from percli.launch import run_in_workers
from percli.log import log
from percli.models import chat_prompt_ids, load_model, load_model_and_tokenizer

SHARDS_DIR = ".generation"
# The key of a generation job's config that names the checkpoint to load instead of cfg.model.
SOURCE_KEY = "generation_checkpoint"


@dataclass
class GenerationResult:
    texts: list[str | None]   # in the order of the prompts given; None for prompts another rank generated
    new_tokens: list[int]     # generated tokens per prompt, up to and including its eos (0 where not generated)
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


def batch_plan(prompt_ids: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Prompt indices in batches, longest prompts first (a stable sort: ties keep the given order)."""
    return longest_first([len(p) for p in prompt_ids], batch_size)


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
    shard: tuple[int, int] = (0, 1),
) -> GenerationResult:
    """Generate a continuation for each tokenised prompt: length-sorted, left-padded batches.

    `shard=(rank, world)` generates only the plan's batches rank, rank + world, ... (data-parallel ranks).
    `ignore_eos` forces exactly `max_new_tokens` per prompt (for throughput measurements that compare
    batch sizes on equal work). The torch RNG used for sampling is private (forked), seeded per batch.
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

    rank, world = shard
    batches = list(enumerate(batch_plan(prompt_ids, batch_size)))[rank::world]
    texts: list[str | None] = [None] * len(prompt_ids)
    counts: list[int] = [0] * len(prompt_ids)
    was_training = model.training
    model.eval()
    bar = tqdm(total=sum(len(idx) for _, idx in batches), unit="ex", desc="generate", disable=not progress,
               file=sys.stderr)
    start = time.perf_counter()
    try:
        # manual_seed also seeds every CUDA device, so fork them all to leave the caller's RNG untouched.
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))), torch.inference_mode():
            for j, idx in batches:
                torch.manual_seed(seed + j)  # the plan's batch index: the same draw on any number of ranks
                ids, mask = pad_rows([prompt_ids[i] for i in idx], pad_id, "left")  # decoders continue at the end
                out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                     generation_config=gen_config)
                new = out[:, ids.shape[1]:].tolist()
                for i, row in zip(idx, new):
                    cut = next((k for k, t in enumerate(row) if t in eos), None)
                    kept = row if cut is None else row[:cut]
                    counts[i] = len(row) if cut is None else cut + 1
                    texts[i] = tokenizer.decode(kept, skip_special_tokens=True).strip()
                bar.update(len(idx))
                bar.set_postfix(tok_s=f"{sum(counts) / (time.perf_counter() - start):.1f}")
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


def limit_examples(examples: Sequence[Any], cfg: DictConfig) -> list[Any]:
    """The whole split, or a random eval.max_examples of it seeded by data.seed (not the run's seed: runs
    of different seeds must score the same examples to be compared pairwise)."""
    n = OmegaConf.select(cfg, "eval.max_examples", default=None)
    return subsample(list(examples), n, int(OmegaConf.select(cfg, "data.seed", default=0)))


def eval_examples(cfg: DictConfig) -> list[Any]:
    """The examples `percli eval` generates for: eval.split, limited to eval.max_examples."""
    examples = limit_examples(load_examples(cfg, str(cfg.eval.split)), cfg)
    if not examples:
        raise DataError("no examples to evaluate; check the split, data.max_examples and eval.max_examples")
    return examples


def generation_options(cfg: DictConfig) -> dict:
    e = cfg.eval
    return {"batch_size": int(e.batch_size), "max_new_tokens": int(e.max_new_tokens), "do_sample": bool(e.do_sample),
            "temperature": float(e.temperature), "top_p": float(e.top_p), "seed": int(cfg.seed)}


def load_checkpoint_model(cfg: DictConfig, path: Path) -> tuple[Any, Any]:
    """A saved model directory (a run's checkpoints/final) as (model, tokenizer) on this process's device,
    in the run's precision; LoRA adapters on their base."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = precision_dtype(cfg)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if (Path(path) / "adapter_config.json").is_file():
        from peft import PeftModel  # optional: only LoRA runs need peft

        model = PeftModel.from_pretrained(load_model(cfg.model, seed=cfg.seed, dtype=dtype, tokenizer=tokenizer), path)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return model.to(default_device()).eval(), tokenizer


def _load(cfg: DictConfig) -> tuple[Any, Any]:
    source = OmegaConf.select(cfg, SOURCE_KEY, default=None)
    if source:
        return load_checkpoint_model(cfg, Path(source))
    model, tokenizer = load_model_and_tokenizer(cfg.model, seed=int(cfg.seed))
    return model.to(default_device()), tokenizer  # load_model leaves the model on the CPU


def generate_examples(cfg: DictConfig, run_dir: Path, examples: Sequence[Any],
                      checkpoint: Path | None = None) -> tuple[GenerationResult, list[int]]:
    """Generate for `examples` with the model of cfg (or `checkpoint`), here or on the launcher's ranks.

    Returns the result (every text set) and each prompt's length in tokens. The model and the device
    memory it held are released before this returns, so that the next job starts clean."""
    if world_size(cfg) > 1:
        return _generate_in_workers(cfg, Path(run_dir), len(examples), checkpoint)
    model, tokenizer = load_checkpoint_model(cfg, checkpoint) if checkpoint else _load(cfg)
    try:
        prompt_ids = _prompts(cfg, tokenizer, examples)
        return generate(model, tokenizer, prompt_ids, **generation_options(cfg)), [len(p) for p in prompt_ids]
    finally:
        del model
        release_device_memory()


def _prompts(cfg: DictConfig, tokenizer: Any, examples: Sequence[Any]) -> list[list[int]]:
    prompt_ids, over = eval_prompt_ids(examples, tokenizer, int(cfg.data.max_prompt_tokens))
    if over:
        log.info(f"{over} prompts exceed data.max_prompt_tokens={cfg.data.max_prompt_tokens} even without "
                 "profile; generated from the whole input anyway")
    return prompt_ids


def _generate_in_workers(cfg: DictConfig, run_dir: Path, n_examples: int, checkpoint: Path | None
                         ) -> tuple[GenerationResult, list[int]]:
    """One generation worker per rank (its own device, no process group), then their shards in prompt order."""
    shards = run_dir / SHARDS_DIR
    for old in shards.glob("rank-*.jsonl"):
        old.unlink()
    job_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    OmegaConf.update(job_cfg, SOURCE_KEY, str(checkpoint) if checkpoint else None, force_add=True)
    atomic_write_text(shards / "config.yaml", OmegaConf.to_yaml(job_cfg))
    run_in_workers(cfg, run_dir, "generate", shards / "config.yaml")
    texts: list[str | None] = [None] * n_examples
    counts, lengths, seconds = [0] * n_examples, [0] * n_examples, 0.0
    for path in sorted(shards.glob("rank-*.jsonl")):
        for row in read_jsonl(path):
            if "seconds" in row:
                seconds = max(seconds, float(row["seconds"]))  # the ranks run side by side
                continue
            i = int(row["index"])
            texts[i], counts[i], lengths[i] = row["text"], int(row["new_tokens"]), int(row["prompt_tokens"])
    missing = [i for i, t in enumerate(texts) if t is None]
    if missing:
        raise DataError(f"{len(missing)} of {n_examples} examples have no generation in {shards} (first: index "
                        f"{missing[0]}); the generation workers did not cover the plan")
    return GenerationResult(texts, counts, seconds), lengths


def generate_shard(cfg: DictConfig, run_dir: Path) -> None:
    """A generation worker (`percli.worker generate`): this rank's batches -> .generation/rank-N.jsonl."""
    me, world = rank(), world_size(cfg)
    examples = eval_examples(cfg)
    model, tokenizer = _load(cfg)
    prompt_ids = eval_prompt_ids(examples, tokenizer, int(cfg.data.max_prompt_tokens))[0]
    res = generate(model, tokenizer, prompt_ids, **generation_options(cfg), progress=me == 0, shard=(me, world))
    rows = [{"index": i, "text": t, "new_tokens": n, "prompt_tokens": len(prompt_ids[i])}
            for i, (t, n) in enumerate(zip(res.texts, res.new_tokens)) if t is not None]
    atomic_write_jsonl(Path(run_dir) / SHARDS_DIR / f"rank-{me}.jsonl", [*rows, {"seconds": res.seconds}])
