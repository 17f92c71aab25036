"""`percli data`: statistics of one task/source/split as the model sees it, and the rendered prompts.

Writes into the run dir: `prompts.jsonl` (id, user_id, full_prompt, free_prompt, response), `data_stats.json`
(the printed table, machine-readable) and, for synthetic data, `truth.jsonl` (planted words and their
character spans in each response).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from percli.data.longlamp import load_examples
from percli.io import atomic_write_json, atomic_write_jsonl
from percli.log import result

QUANTILES = (0, 25, 50, 75, 95, 100)
COLUMNS = ("mean", "min", "p25", "p50", "p75", "p95", "max")


def describe(values: Sequence[float]) -> dict[str, float]:
    """Mean and the QUANTILES (linear interpolation) of `values`; zeros for an empty list."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return dict.fromkeys(COLUMNS, 0.0)
    return dict(zip(COLUMNS, [float(arr.mean()), *(float(q) for q in np.percentile(arr, QUANTILES))]))


def format_table(rows: dict[str, dict[str, float]]) -> str:
    width = max(len(name) for name in rows)
    lines = [" " * width + "".join(f"{c:>9}" for c in COLUMNS)]
    for name, stats in rows.items():
        digits = 2 if name.startswith("r ") else 1
        lines.append(f"{name:<{width}}" + "".join(f"{stats[c]:>9.{digits}f}" for c in COLUMNS))
    return "\n".join(lines)


def run(cfg: DictConfig, run_dir: Path) -> None:
    split = cfg.data.split
    examples = load_examples(cfg, split)
    # torch + transformers take seconds to import: loaded only once the data is known to be good.
    from percli.data.collate import encode_examples
    from percli.models import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    pairs, report = encode_examples(examples, tokenizer, cfg.data)
    by_index = {p.index: examples[p.index] for p in pairs}

    full_tokens = [p.response_start_full for p in pairs]
    free_tokens = [p.response_start_free for p in pairs]
    rows = {
        "profile items (all)": describe([ex.meta["profile_size"] for ex in examples]),
        "profile items (prompt)": describe([p.items_kept for p in pairs]),
        "full prompt words": describe([len(p.full_prompt.split()) for p in pairs]),
        "full prompt tokens": describe(full_tokens),
        "free prompt words": describe([len(p.free_prompt.split()) for p in pairs]),
        "free prompt tokens": describe(free_tokens),
        "response words": describe([len(by_index[p.index].output.split()) for p in pairs]),
        "response tokens": describe([len(p.response_ids) for p in pairs]),
        "r = free/full tokens": describe([fr / fu for fr, fu in zip(free_tokens, full_tokens)]),
    }
    header = (f"percli data: task={cfg.task.name} ({cfg.task.setting}) source={cfg.data.source} split={split} "
              f"retriever={cfg.retriever.name} k={cfg.retriever.k} model={cfg.model.name} "
              f"(max_prompt_tokens={cfg.data.max_prompt_tokens}, max_response_tokens={cfg.data.max_response_tokens})")
    users = len({ex.user_id for ex in examples})
    empty = sum(1 for ex in examples if not ex.profile)
    counts = (f"examples: {len(examples)} loaded, {len(pairs)} encoded, {report.dropped_input_too_long} dropped; "
              f"users: {users}; empty profiles: {empty}")
    tokens_note = "tokens = chat-templated prompt / response incl. eos, with the model's tokenizer"
    result("\n".join([header, counts, format_table(rows), tokens_note, report.summary()]))

    atomic_write_jsonl(run_dir / "prompts.jsonl", [
        {"id": p.id, "user_id": by_index[p.index].user_id, "full_prompt": p.full_prompt,
         "free_prompt": p.free_prompt, "response": by_index[p.index].output} for p in pairs])
    written = ["prompts.jsonl", "data_stats.json"]
    truth = [{"id": ex.id, "user_id": ex.user_id, "planted_words": ex.meta["planted_words"],
              "spans": ex.meta["planted_spans"]} for ex in examples if "planted_words" in ex.meta]
    if truth:
        atomic_write_jsonl(run_dir / "truth.jsonl", truth)
        written.append("truth.jsonl")
    atomic_write_json(run_dir / "data_stats.json", {
        "task": cfg.task.name, "source": cfg.data.source, "split": split, "examples": len(examples),
        "encoded": len(pairs), "users": users, "empty_profiles": empty, "table": rows,
        "drops": {k: v for k, v in vars(report).items() if k != "dropped_ids"}})
    result(f"wrote {', '.join(written)} to {run_dir}")
