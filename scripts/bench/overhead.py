"""What PerCE costs over CE inside percli: step-time ratio against the bound 1 + r/3, and how it scales with r.

The contrast pass is one no-grad forward over the profile-free sequence: about r/3 of a training step's
FLOPs (forward + backward ~ 3 forwards) with r = profile-free length / full length. Both losses run
through percli's Trainer on the same example, interleaved.
"""

from __future__ import annotations

from pathlib import Path

from scripts.bench import subject
from scripts.bench.data import profile_words_for, write_review_data
from scripts.bench.stats import interleaved, timed


def bound(r: float) -> float:
    return 1 + r / 3


def perce_vs_ce(data_dir: Path, work: Path, *, model: str = "smollm2-135m", **rule) -> dict:
    """PerCE / CE step time through the Trainer (CPU-time ratio with CI), r and the bound 1 + r/3."""
    trainers = {loss: subject.make_trainer(subject.bench_cfg(data_dir, model=model, loss=loss), work / f"{loss}")
                for loss in ("ce", "perce")}
    for t in trainers.values():  # warm-up: allocator, kernels, optimizer state
        subject.step(t)
    shape = subject.shape(trainers["ce"].pairs)
    res = interleaved(lambda: timed(lambda: subject.step(trainers["perce"])),
                      lambda: timed(lambda: subject.step(trainers["ce"])), f"PerCE / CE (r={shape['r']:.2f})", **rule)
    return {**res, "r": shape["r"], "bound": bound(shape["r"]), "shape": shape}


def scaling_point(work: Path, r: float, *, response_words: int, **rule) -> dict:
    """PerCE / CE at target r, holding the query and response fixed and sizing the profile."""
    words = profile_words_for(r, work / "calibrate", response_words=response_words)
    data = write_review_data(work / f"r{r}", profile_item_words=words, response_words=response_words)
    res = perce_vs_ce(data, work / f"scaling-r{r}", **rule)
    return {"r_target": r, "r": res["r"], "ratio": res["cpu"]["ratio"], "ci": res["cpu"]["ci"], "bound": res["bound"],
            "wall_ratio": res["wall"]["ratio"], "wall_ci": res["wall"]["ci"], "pairs": res["cpu"]["pairs"],
            "stopped": res["stopped"], "shape": res["shape"], "cpu": res["cpu"], "wall": res["wall"]}
