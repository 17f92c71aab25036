"""ROUGE-1/2/L/Lsum and METEOR exactly as HF evaluate's `rouge` and `meteor` metric scripts compute them.

evaluate's scripts live on the hub (offline they cannot load), so the same computation is done here:
- ROUGE: `rouge_score.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=False)` with its
  default tokenizer, `scorer.score(reference, prediction)`; rougeLsum splits sentences on "\\n" only
  (evaluate does not set `split_summaries`). Per example we keep the F-measure.
- METEOR: nltk `single_meteor_score(word_tokenize(ref), word_tokenize(pred), alpha=0.9, beta=3, gamma=0.5)`
  with WordNet 3.0 and English punkt_tab (see percli.nltk_data), averaged with np.mean.

Aggregation:
- "mean": the mean of the per-example F-measures (evaluate's `use_aggregator=False`, then averaged). This is
  deterministic and what percli reports.
- "bootstrap": evaluate's default `use_aggregator=True`, i.e. rouge_score's BootstrapAggregator (1000
  resamples, mid = median of the resampled means). That aggregator draws from numpy's *global* RNG; here the
  same draws come from a private `RandomState(seed)`, which yields the stream `np.random.seed(seed)` would,
  so seed 0 equals evaluate run right after `np.random.seed(0)` and the caller's global RNG is never touched.
  METEOR has no aggregator in evaluate: it is the mean in both modes.

Planted recall (synthetic data): of the user's planted names that the reference itself contains, the share
the prediction contains too (whole words, case-insensitive). `names_within` first cuts the reference to the
generation length in tokens, so a name the model had no room to write does not count: a generation equal to
its reference scores 1.0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from nltk import word_tokenize
from nltk.translate.meteor_score import single_meteor_score
from rouge_score import rouge_scorer

from percli.errors import DataError
from percli.names import ROUGE_TYPES
from percli.nltk_data import ensure_nltk_data

if TYPE_CHECKING:  # only the caller's tokenizer object is used
    from transformers import PreTrainedTokenizerBase

AGGREGATES = ("mean", "bootstrap")
# rouge_score.scoring.BootstrapAggregator's defaults, which evaluate uses.
BOOTSTRAP_SAMPLES = 1000
METEOR_PARAMS = {"alpha": 0.9, "beta": 3, "gamma": 0.5}


def _check_inputs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise DataError(
            f"{len(predictions)} predictions but {len(references)} references; score equal-length lists"
        )
    if not predictions:
        raise DataError("nothing to score: 0 predictions; check the split or eval.max_examples")
    for i, (p, r) in enumerate(zip(predictions, references)):
        if not isinstance(p, str) or not isinstance(r, str):
            raise DataError(
                f"example {i}: prediction and reference must be strings, got "
                f"{type(p).__name__} and {type(r).__name__}"
            )


def names_in(text: str, words: Sequence[str]) -> list[str]:
    """The `words` that occur in `text` as whole words, case-insensitively, in the order given."""
    low = text.lower()
    return [w for w in words if re.search(rf"\b{re.escape(w.lower())}\b", low)]


def names_within(reference: str, words: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_tokens: int
                 ) -> list[str]:
    """The `words` the reference names within its first `max_tokens` tokens (the generation length)."""
    ids = tokenizer(reference, add_special_tokens=False)["input_ids"]
    return names_in(tokenizer.decode(ids[:max_tokens]) if len(ids) > max_tokens else reference, words)


def planted_recall(prediction: str, reference: str, words: Sequence[str]) -> float | None:
    """Of the planted `words` the reference contains, the share the prediction contains; None when it has none."""
    named = names_in(reference, words)
    return len(names_in(prediction, named)) / len(named) if named else None


def rouge_matrices(predictions: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Per ROUGE type, a float64 [n, 3] matrix of (precision, recall, fmeasure) per example."""
    scorer = rouge_scorer.RougeScorer(rouge_types=list(ROUGE_TYPES), use_stemmer=False)
    rows: dict[str, list[tuple[float, float, float]]] = {t: [] for t in ROUGE_TYPES}
    for pred, ref in zip(predictions, references):
        score = scorer.score(ref, pred)  # rouge_score's order: (target, prediction)
        for t in ROUGE_TYPES:
            rows[t].append(tuple(score[t]))
    return {t: np.array(rows[t], dtype=np.float64).reshape(-1, 3) for t in ROUGE_TYPES}


def meteor_scores(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """METEOR per example, on nltk `word_tokenize` tokens (evaluate's path for nltk >= 3.6.5)."""
    ensure_nltk_data()
    return [
        float(single_meteor_score(word_tokenize(ref), word_tokenize(pred), **METEOR_PARAMS))
        for pred, ref in zip(predictions, references)
    ]


def bootstrap_mid(matrix: np.ndarray, rng: np.random.RandomState, n_samples: int = BOOTSTRAP_SAMPLES) -> np.ndarray:
    """Median over `n_samples` resampled means of each column: BootstrapAggregator's `mid`, same draws."""
    n = matrix.shape[0]
    means = np.zeros((n_samples, matrix.shape[1]))
    for i in range(n_samples):
        # One draw of n indices per resample, in the aggregator's order, so the RNG stream lines up.
        means[i, :] = np.mean(matrix[rng.choice(np.arange(n), size=n), :], axis=0)
    return np.percentile(means, 50.0, axis=0)


def compute(
    predictions: Sequence[str], references: Sequence[str], aggregate: str = "mean", seed: int = 0
) -> dict:
    """Score predictions against references (one reference each).

    Returns {"rouge1", "rouge2", "rougeL", "rougeLsum", "meteor": float, "num_examples": int,
    "aggregate": str, "per_example": [{"rouge1", "rouge2", "rougeL", "rougeLsum", "meteor"}, ...]} where
    per-example ROUGE values are F-measures, in input order.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate={aggregate!r}; expected one of {AGGREGATES}")
    predictions, references = list(predictions), list(references)
    _check_inputs(predictions, references)
    rouge = rouge_matrices(predictions, references)
    meteor = meteor_scores(predictions, references)

    result: dict = {}
    if aggregate == "mean":
        for t in ROUGE_TYPES:
            result[t] = float(np.mean(rouge[t][:, 2]))
    else:
        rng = np.random.RandomState(seed)
        for t in ROUGE_TYPES:  # the aggregator's dict order: each type consumes its draws in turn
            result[t] = float(bootstrap_mid(rouge[t], rng)[2])
    result["meteor"] = float(np.mean(meteor))
    result["num_examples"] = len(predictions)
    result["aggregate"] = aggregate
    result["per_example"] = [
        {**{t: float(rouge[t][i, 2]) for t in ROUGE_TYPES}, "meteor": meteor[i]} for i in range(len(predictions))
    ]
    return result
