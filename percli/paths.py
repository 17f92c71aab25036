"""Where percli's files live: the Hydra config tree, the repository root and the asset cache."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

REPO_ROOT = Path(__file__).resolve().parent.parent
# A wheel carries the config tree as percli/conf (setup.py copies it there); a checkout has it at the top.
_PACKAGED_CONF = Path(__file__).resolve().parent / "conf"
CONF_DIR = _PACKAGED_CONF if _PACKAGED_CONF.is_dir() else REPO_ROOT / "conf"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def cache_dir(cfg: DictConfig | None = None) -> Path:
    """`paths.cache_dir` of a run's config when set, else $PERCLI_CACHE, else ~/.cache/percli."""
    configured = OmegaConf.select(cfg, "paths.cache_dir", default=None) if cfg is not None else None
    if configured:
        return Path(str(configured)).expanduser()
    return Path(os.environ.get("PERCLI_CACHE", Path.home() / ".cache" / "percli")).expanduser()


def conf_options(group: str) -> tuple[str, ...]:
    """The options of a config group (`conf/<group>/*.yaml`), sorted: what `group=...` accepts."""
    return tuple(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")))


def shown(path: Path) -> Path:
    """`path` relative to the working directory when it lies inside it, else unchanged: a table written in a
    checkout then names its runs as `outputs/...`, not by the absolute paths of the machine that made it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path
