"""Fail fast without a model/dataset hub: a plain hub call here hangs 23-46 s before it errors."""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError

from percli.errors import EnvironmentProblem

LONGLAMP = "LongLaMP/LongLaMP"   # the dataset hub repo of data=hub


@cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """True if the Hugging Face hub answers a TCP connect within `timeout` seconds (DNS included).

    When it does not, offline mode is switched on for the rest of the process."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        _go_offline()
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    # getaddrinfo can't be given a timeout, so the probe runs in a daemon thread we stop waiting for.
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    reachable = bool(result and result[0])
    if not reachable:
        _go_offline()
    return reachable


def _go_offline() -> None:
    """Later transformers/datasets calls then fail at once instead of retrying for ~40 s."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    # Libraries already imported read the variables at import time.
    for module, attr in (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE")):
        if module in sys.modules:
            setattr(sys.modules[module], attr, True)


def hub_snapshot(repo_id: str, unreachable: str, download: bool = True) -> str | None:
    """A local directory of `repo_id`: the HF cache if it has it, else a download if the hub answers;
    `unreachable` is the error when neither can work. With download=False it only checks (None: a
    download would be needed and could succeed)."""
    try:
        return snapshot_download(repo_id, local_files_only=True)
    except LocalEntryNotFoundError:
        pass
    if not hub_reachable():
        raise EnvironmentProblem(unreachable)
    return snapshot_download(repo_id) if download else None


def hub_model_dir(repo_id: str, model_name: str, download: bool = True) -> str | None:
    """`model=<model_name>`'s checkpoint directory (see hub_snapshot)."""
    return hub_snapshot(repo_id, f"model={model_name} ({repo_id}) is not in the local HF cache and the model hub "
                                 f"is unreachable; pass model.path=DIR with a local checkpoint, or download it on a "
                                 f"machine with network (`hf download {repo_id}`)", download)


def dense_retriever_dir(model_id: str, retriever_name: str, download: bool = True) -> str | None:
    """`retriever=<retriever_name>`'s encoder directory (see hub_snapshot)."""
    return hub_snapshot(model_id, f"retriever={retriever_name} needs {model_id}, which is not in the local HF cache, "
                                  "and the hub is unreachable; use retriever=minilm (offline dense) or retriever=bm25, "
                                  "or set retriever.model_id=DIR to a local copy", download)


def dataset_cached(repo_id: str, config_name: str) -> bool:
    """True if `datasets` may load (repo_id, config_name) without the hub: its prepared Arrow copy or the repo's
    files are in the local caches. Read from the cache layout, since importing `datasets` takes seconds."""
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE") or Path(constants.HF_HOME) / "datasets").expanduser()
    namespace, _, name = repo_id.rpartition("/")
    # datasets' own naming: namespace___snake_case_name (datasets.naming.camelcase_to_snakecase)
    snake = re.sub(r"([a-z\d])([A-Z])", r"\1_\2", re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)).lower()
    prepared = datasets_cache / (f"{namespace}___{snake}" if namespace else snake) / config_name
    files = Path(constants.HF_HUB_CACHE) / f"datasets--{repo_id.replace('/', '--')}"
    return prepared.is_dir() or files.is_dir()


def check_hub_dataset(repo_id: str, config_name: str, offline_hint: str) -> None:
    """Fail in a second, not after the hub's retries, where a dataset is neither cached nor downloadable."""
    if not dataset_cached(repo_id, config_name) and not hub_reachable():
        raise EnvironmentProblem(f"{repo_id} ({config_name}) is not in the local HF cache and the dataset hub is "
                                 f"unreachable; {offline_hint}")
