"""What `percli eval` needs before any model work, light enough for the CLI's preflight (no torch): the
predictions file it scores (`eval.predictions`) and the optional vLLM backend (`eval.backend=vllm`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from percli.errors import DataError, EnvironmentProblem
from percli.io import numbered_jsonl

VLLM_MISSING = ("eval.backend=vllm needs vLLM, which is not installed here; vLLM pins its own torch, so install it "
                "in a separate environment (pip install -e '.[vllm]') or use eval.backend=hf")


def read_predictions(path: Path) -> list[dict]:
    """Rows of a predictions jsonl ({prediction, reference} and optional id/name, planted_words)."""
    if not path.is_file():
        raise DataError(f"eval.predictions={path} does not exist; point it at a jsonl of "
                        "{\"prediction\": ..., \"reference\": ...} rows (e.g. an earlier run's predictions.jsonl)")
    rows = []
    for lineno, row in numbered_jsonl(path):
        if not isinstance(row, dict) or not isinstance(row.get("prediction"), str) \
                or not isinstance(row.get("reference"), str):
            raise DataError(f"{path}:{lineno} needs string fields 'prediction' and 'reference'")
        out = {"id": str(row.get("id", row.get("name", lineno))), "prediction": row["prediction"],
               "reference": row["reference"]}
        if row.get("planted_words"):
            out["planted_words"] = list(row["planted_words"])
        if row.get("user_id") is not None:
            out["user_id"] = str(row["user_id"])
        rows.append(out)
    if not rows:
        raise DataError(f"eval.predictions={path} has no rows")
    return rows


def check_vllm_installed() -> None:
    """Fail with one line where vLLM is absent; finding it does not import it (vLLM loads its own torch)."""
    if importlib.util.find_spec("vllm") is None:
        raise EnvironmentProblem(VLLM_MISSING)
