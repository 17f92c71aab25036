"""LongLaMP examples from the hub, local files or the synthetic generator, normalised to one type.

`load_examples(cfg, split)` reads a split, validates every record (bad data fails with one line naming
the file, line and field), subsamples the training split (`data.max_examples` caps `data.split`, seeded
by `data.seed`) and retrieves each example's top-k profile items (`cfg.retriever`), so `Example.profile`
holds the retrieved items in retrieval order.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from percli.data.example import Example
from percli.data.prompts import MAIN_FIELD, TEMPLATE_FIELDS
from percli.data.retrieval import retrieve
from percli.data.synthetic import SPLITS as SYNTHETIC_SPLITS
from percli.data.synthetic import USER_FIELD, generate
from percli.errors import ConfigError, DataError, EnvironmentProblem
from percli.hub import LONGLAMP, check_hub_dataset, hub_reachable
from percli.log import log
from percli.paths import cache_dir

HUB_DATASET = LONGLAMP
# What works where data=hub cannot: named in the one-line error.
OFFLINE_HINT = ("run offline with data=synthetic retriever=bm25 (seeded LongLaMP-schema data), or use a copy on "
                "disk: data.source=local data.path=DIR with {train,val,test}.jsonl files")
HUB_SPLITS = ("train", "val", "test")
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


# ------------------------------------------------------------------------------------------- sources
# A source reads one split: (numbered records, origin for messages, planted-word truth by example id).
Records = tuple[list[tuple[int, Any]], str, dict[str, dict]]


def hub_config_name(cfg: DictConfig) -> str:
    """The LongLaMP hub config of cfg's task and setting, e.g. product_review_user."""
    return f"{cfg.task.hub_name}_{cfg.task.setting}"


def check_hub_data(cfg: DictConfig) -> None:
    """data=hub without the hub or a cached copy fails here in a second (preflight), before any run dir exists."""
    check_hub_dataset(HUB_DATASET, hub_config_name(cfg), OFFLINE_HINT)


def _hub_records(cfg: DictConfig, split: str) -> Records:
    config_name = hub_config_name(cfg)
    origin = f"{HUB_DATASET}:{config_name}:{split}"
    if split not in HUB_SPLITS:
        raise DataError(f"split={split!r} is not a LongLaMP split; choose one of: {', '.join(HUB_SPLITS)}")
    reachable = hub_reachable(timeout=3)  # unreachable -> HF offline mode: only the local cache can answer
    import datasets  # seconds to import, and only data.source=hub needs it

    try:
        ds = datasets.load_dataset(HUB_DATASET, config_name, split=split)
    except Exception as e:  # noqa: BLE001 - datasets raises many types for "not available"
        if not reachable:
            raise EnvironmentProblem(
                f"the dataset hub is unreachable and {HUB_DATASET} ({config_name}) is not in the local cache; "
                + OFFLINE_HINT
            ) from None
        raise DataError(f"could not load {origin}: {' '.join(str(e).split())[:300]}") from None
    return list(enumerate((dict(r) for r in ds), 1)), origin, {}


def _local_file(path: Path, split: str) -> Path:
    if not path.exists():
        raise DataError(f"data.path={path} does not exist; point it at a directory of "
                        "{split}.jsonl/.json/.parquet files or at one such file")
    if path.is_file():
        return path  # a single file serves whatever split is asked for
    for suffix in LOCAL_SUFFIXES:
        if (path / f"{split}{suffix}").is_file():
            return path / f"{split}{suffix}"
    have = sorted(p.name for p in path.iterdir() if p.suffix in LOCAL_SUFFIXES)
    raise DataError(f"split={split!r} has no {split}.jsonl/.json/.parquet in data.path={path} "
                    f"(found: {', '.join(have) or 'no data files'}); set data.split to one that exists")


def _first_bad_utf8_line(raw: bytes) -> int:
    for lineno, line in enumerate(raw.split(b"\n"), 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return lineno
    return 0


def read_records(path: Path) -> list[tuple[int, Any]]:
    """(line or record number, record) pairs from a .jsonl, .json (a list) or .parquet file."""
    if path.suffix not in LOCAL_SUFFIXES:
        raise DataError(f"{path} is not a .jsonl, .json or .parquet file")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty; it should hold LongLaMP records (input, output, profile)")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # only .parquet files need it

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # noqa: BLE001 - pyarrow's errors for a broken file vary
            raise DataError(f"{path} is not a readable parquet file ({type(e).__name__}: {e})") from None
        return list(enumerate(rows, 1))
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}:{_first_bad_utf8_line(raw)} is not valid UTF-8; re-encode the file as UTF-8") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno} is not valid JSON ({e.msg}); a .json file must hold one list "
                            "of records, use .jsonl for one record per line") from None
        if not isinstance(data, list):
            raise DataError(f"{path} holds a JSON {type(data).__name__}, expected a list of records")
        return list(enumerate(data, 1))
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno} is not valid JSON ({e.msg}); a .jsonl file holds one JSON "
                            "record per line") from None
    if not records:
        raise DataError(f"{path} has no records (only blank lines)")
    return records


def _local_records(cfg: DictConfig, split: str) -> Records:
    if not cfg.data.path:
        raise DataError("data.source=local needs data.path=DIR (a directory of {split}.jsonl/.json/.parquet "
                        "files) or data.path=FILE")
    path = _local_file(Path(str(cfg.data.path)).expanduser(), split)
    return read_records(path), str(path), {}


def _synthetic_records(cfg: DictConfig, split: str) -> Records:
    if split not in SYNTHETIC_SPLITS:
        raise DataError(f"split={split!r} is not a synthetic split; choose one of: {', '.join(SYNTHETIC_SPLITS)}")
    d = cfg.data
    recs = generate(cfg.task.name, split, num_users=d.num_users, examples_per_user=d.examples_per_user,
                    profile_size=d.profile_size, seed=d.seed, setting=cfg.task.setting,
                    val_users=d.get("val_users"), test_users=d.get("test_users"),
                    eval_examples_per_user=d.get("eval_examples_per_user"))
    truth = {r.id: r.truth() for r in recs}
    return list(enumerate((r.record for r in recs), 1)), f"synthetic:{cfg.task.name}:{split}", truth


# data.source -> its reader (conf/data/<source>.yaml).
SOURCES: dict[str, Callable[[DictConfig, str], Records]] = {
    "hub": _hub_records, "local": _local_records, "synthetic": _synthetic_records,
}


# ------------------------------------------------------------------------------------------- records
def _normalise_item(task: str, item: Any, where: str, j: int) -> dict:
    if not isinstance(item, dict):
        raise DataError(f"{where}: profile item {j} is a {type(item).__name__}, expected an object")
    item = dict(item)
    if task == "topic" and "content" not in item and "output" in item:
        # The official code names topic items input/output; the hub data names them summary/content.
        item["summary"] = item.pop("input", item.get("summary"))
        item["content"] = item.pop("output")
    missing = [f for f in TEMPLATE_FIELDS[task] if f not in item]
    if missing:
        raise DataError(f"{where}: profile item {j} lacks {missing[0]!r}, which the {task} template needs "
                        f"(fields: {', '.join(TEMPLATE_FIELDS[task])}); is task={task} the right task?")
    if not isinstance(item[MAIN_FIELD[task]], str):
        raise DataError(f"{where}: profile item {j} field {MAIN_FIELD[task]!r} is "
                        f"{type(item[MAIN_FIELD[task]]).__name__}, expected text")
    return item


def normalise_record(task: str, record: Any, where: str, default_id: str) -> Example:
    """One raw LongLaMP record -> Example with the full profile; `where` names it in error messages."""
    if not isinstance(record, dict):
        raise DataError(f"{where} is a {type(record).__name__}, expected a record object "
                        "with input, output and profile")
    for key in ("input", "output", "profile"):
        if key not in record:
            raise DataError(f"{where}: the record has no {key!r} field (has: {', '.join(sorted(record)) or 'none'}); "
                            "LongLaMP records need input, output and profile")
    for key in ("input", "output"):
        if not isinstance(record[key], str):
            raise DataError(f"{where}: {key!r} is {type(record[key]).__name__}, expected text")
    profile = record["profile"] if record["profile"] is not None else []
    if not isinstance(profile, list):
        raise DataError(f"{where}: 'profile' is {type(profile).__name__}, expected a list of items")
    user = record.get(USER_FIELD[task], record.get("user_id"))
    return Example(
        id=str(record.get("id", default_id)),
        user_id=str(user) if user is not None else "unknown",
        task=task,
        input=record["input"],
        output=record["output"],
        profile=[_normalise_item(task, it, where, j) for j, it in enumerate(profile)],
    )


def load_raw_examples(cfg: DictConfig, split: str) -> tuple[list[Example], str]:
    """All examples of a split with their full profiles (no subsampling, no retrieval), and their origin."""
    task, source = cfg.task.name, cfg.data.source
    if source not in SOURCES:
        raise ConfigError(f"data.source={source!r} is not a known source; choose one of: {', '.join(SOURCES)}")
    numbered, origin, truth = SOURCES[source](cfg, split)
    line_word = "line" if origin.endswith(".jsonl") else "record"
    examples = [normalise_record(task, rec, f"{origin} {line_word} {n}", f"{split}-{n:06d}") for n, rec in numbered]
    for ex in examples:
        ex.meta["profile_size"] = len(ex.profile)
        if ex.id in truth:
            ex.meta["planted_words"] = truth[ex.id]["planted_words"]
            ex.meta["planted_spans"] = truth[ex.id]["spans"]
    if not any(ex.profile for ex in examples):
        raise DataError(f"{origin}: none of the {len(examples)} examples has a profile item; personalisation "
                        "needs profiles (is this the right file?)")
    return examples, origin


def subsample(examples: list[Example], max_examples: int | None, seed: int) -> list[Example]:
    """A seeded subset of at most `max_examples`, in the original order."""
    if not max_examples or max_examples >= len(examples):
        return examples
    keep = sorted(random.Random(seed).sample(range(len(examples)), max_examples))
    return [examples[i] for i in keep]


def load_examples(cfg: DictConfig, split: str) -> list[Example]:
    """Load, validate, subsample and retrieve: `profile` holds the top-k items in retrieval order."""
    examples, origin = load_raw_examples(cfg, split)
    # data.max_examples caps the split data.split names (the one training reads); an evaluation split is
    # read whole, and subsampled only by eval.max_examples (percli/evaluation.py).
    if split == cfg.data.split:
        examples = subsample(examples, cfg.data.max_examples, cfg.data.seed)
    selected = retrieve(examples, cfg.task.name, cfg.retriever, cache_dir=cache_dir(cfg))
    for ex, idx in zip(examples, selected):
        ex.meta["retrieved"] = idx
        ex.profile = [ex.profile[i] for i in idx]
    empty = sum(1 for ex in examples if not ex.profile)
    log.info(f"data {origin}: {len(examples)} examples, {empty} with an empty profile (kept, full prompt = input), "
             f"retriever={cfg.retriever.name} k={cfg.retriever.k}")
    return examples

