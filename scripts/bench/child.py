"""`python -m scripts.bench.child KIND SPEC THREADS`: one measurement in this fresh process (peak memory,
or the timed generation passes of one pair).

KIND names the work (see MEASURES); SPEC is a JSON object with its parameters. Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

from percli.logprobs import response_logprobs
from percli.models import load_model_and_tokenizer
from scripts.bench import generation, subject
from scripts.bench.memory import make_resident, peak_above_baseline_mb
from scripts.bench.naive import NaivePerCE, naive_logprobs


def _cfg(spec: dict, loss: str):
    return subject.bench_cfg(Path(spec["data"]), model=spec.get("model", "smollm2-135m"), loss=loss,
                             max_response_tokens=spec.get("max_response_tokens", 4096))


def percli_steps(spec: dict, work: Path) -> dict:
    """`steps` steps of percli's Trainer with `spec["loss"]`."""
    trainer = subject.make_trainer(_cfg(spec, spec["loss"]), work / "run")
    make_resident(trainer.scorer)
    return peak_above_baseline_mb(lambda: [subject.step(trainer) for _ in range(spec["steps"])])


def trl_steps(spec: dict, work: Path) -> dict:
    """`steps` steps of TRL's SFTTrainer on the same example."""
    from scripts.bench.peer import sft_dataset, sft_trainer  # trl: the optional bench extra

    cfg = _cfg(spec, "ce")
    trainer = sft_trainer(cfg, sft_dataset(*subject.encode(cfg)), work / "trl", steps=spec["steps"])
    make_resident(trainer.model)
    return peak_above_baseline_mb(trainer.train)


def naive_steps(spec: dict, work: Path) -> dict:
    """`steps` naive PerCE steps (full logits for both views)."""
    cfg = _cfg(spec, "perce")
    pairs, collate = subject.encode(cfg)
    batch = collate(pairs[:1])
    naive = NaivePerCE(cfg)
    make_resident(naive.model)
    return peak_above_baseline_mb(lambda: [naive.step(batch) for _ in range(spec["steps"])])


def _logprob_memory(spec: dict, lean: bool) -> dict:
    """No-grad response log-probs of `tokens` random tokens (all scored) over the model's vocabulary."""
    model, tok = load_model_and_tokenizer(subject.bench_cfg(Path("."), model=spec["model"]).model, seed=0)
    t = int(spec["tokens"])
    ids = torch.randint(0, len(tok) - 100, (1, t), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    make_resident(model)
    with torch.no_grad():
        fn = (lambda: response_logprobs(model, ids, mask, ids)) if lean else (lambda: naive_logprobs(model, ids, mask, ids))
        res = peak_above_baseline_mb(fn)
    return {**res, "tokens": t, "vocab": len(tok), "full_logits_fp32_mb": t * len(tok) * 4 / 2**20}


MEASURES = {
    "percli": percli_steps,
    "trl": trl_steps,
    "naive": naive_steps,
    "lean_logp": lambda spec, work: _logprob_memory(spec, lean=True),
    "naive_logp": lambda spec, work: _logprob_memory(spec, lean=False),
    "generate": lambda spec, work: generation.passes(spec),
}


def main() -> None:
    kind, spec, threads = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="percli-bench-child-") as tmp:
        result = MEASURES[kind](spec, Path(tmp))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
