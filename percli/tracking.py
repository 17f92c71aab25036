"""Experiment tracking (`logger=none|wandb`) and the loss curve plot.

W&B is an observer, never a dependency of the result: any W&B failure (no network, bad entity, missing
package) prints ONE warning and turns the tracker into a no-op; training goes on. `logger=none` logs
nothing and imports nothing. Only the main process tracks.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from percli.io import atomic_write_bytes, atomic_write_json
from percli.log import log

RUN_FILE = "wandb_run.json"  # the W&B run id, so a resumed run and the post-train eval log into the same run


class Tracker:
    def __init__(self, cfg: DictConfig, run_dir: Path, *, enabled: bool = True, job: str = "train"):
        self._run = None
        self._warned = False
        self.run_dir = Path(run_dir)
        if not enabled or cfg.logger.name == "none":
            return
        self._guard(lambda: self._init(cfg, job))

    def _init(self, cfg: DictConfig, job: str) -> None:
        import wandb  # optional: logger=none never loads it

        log = cfg.logger
        previous = _read_run_id(self.run_dir)
        self._run = wandb.init(
            project=log.project,
            entity=log.entity,
            group=log.group,
            tags=[str(t) for t in log.tags] if log.tags else None,
            mode=log.mode,
            dir=str(self.run_dir),
            name=self.run_dir.name,
            job_type=job,
            config=OmegaConf.to_container(cfg, resolve=True),
            id=previous,
            resume="allow" if previous else None,
            reinit="create_new",
        )
        if log.mode != "disabled":
            atomic_write_json(self.run_dir / RUN_FILE, {"id": self._run.id, "project": log.project,
                                                        "entity": log.entity, "mode": log.mode})

    @property
    def active(self) -> bool:
        return self._run is not None

    def log(self, row: dict[str, Any], step: int) -> None:
        if self._run is not None:
            clean = {f"train/{k}": v for k, v in row.items() if v is not None and k != "step"}
            self._guard(lambda: self._run.log(clean, step=step))

    def log_image(self, key: str, path: Path) -> None:
        if self._run is not None and Path(path).is_file():
            self._guard(lambda: self._run.log({key: _wandb().Image(str(path))}))

    def summary(self, values: dict[str, Any], prefix: str = "") -> None:
        """Scalars into the run summary (e.g. the final metrics)."""
        if self._run is None:
            return

        def _set() -> None:
            for k, v in _flat(values, prefix).items():
                self._run.summary[k] = v

        self._guard(_set)

    def finish(self) -> None:
        if self._run is not None:
            run, self._run = self._run, None
            self._guard(run.finish)

    def _guard(self, fn) -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - tracking must never stop training
            if not self._warned:
                self._warned = True
                log.warning(f"W&B failed ({type(e).__name__}: {e}); training goes on without it")
            self._run = None


def _wandb():
    import wandb  # optional, as in Tracker._init

    return wandb


def _read_run_id(run_dir: Path) -> str | None:
    path = run_dir / RUN_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("id")
    except (OSError, ValueError):
        return None


def _flat(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "/"))
        elif isinstance(v, (int, float, str, bool)):
            out[key] = v
    return out


def plot_loss(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """loss (and ce_loss, when it differs) against step, written atomically; None without rows."""
    rows = [r for r in rows if r.get("loss") is not None]
    if not rows:
        return None
    # matplotlib is heavy and only the end of training plots; the OO API renders with Agg, never pyplot's backend.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.subplots()
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["loss"] for r in rows], label="loss (weighted)", marker="." if len(rows) < 50 else None)
    ce = [r.get("ce_loss") for r in rows]
    if all(c is not None for c in ce) and any(not math.isclose(c, r["loss"]) for c, r in zip(ce, rows)):
        ax.plot(steps, ce, label="ce_loss (unweighted)", alpha=0.7)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats / response token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    return atomic_write_bytes(path, png.getvalue())
