"""The config schema (percli/schema): every key of every composed config is declared there, each with a
one-line doc; bad values fail with one exact line."""

from __future__ import annotations

import pytest
from helpers import GROUPS, command_config, composed, group_option_overrides, group_options
from omegaconf import DictConfig

from percli.cli import COMMANDS
from percli.data.longlamp import SOURCES
from percli.data.retrieval import RETRIEVERS
from percli.errors import ConfigError
from percli.losses import LOSSES
from percli.paths import conf_options
from percli.preflight import compose_config
from percli.schedule import SCHEDULES
from percli.schema import SCHEMA, Field, check_values, leaf_keys, validate

# Under pytest-xdist one worker runs the whole module, so its module-scoped fixture (every config composed)
# is built once, not once per worker.
pytestmark = pytest.mark.xdist_group("schema")

PRESETS = conf_options("experiment")


@pytest.fixture(scope="module")
def configs() -> dict[str, DictConfig]:
    """Every command as composed by default, and the train config with each option of each group and each
    experiment preset: together they hold every key any config file sets."""
    out = {command: command_config(command) for command in COMMANDS}
    out |= {f"train {group}={option}": composed("train", *group_option_overrides(group, option))
            for group in GROUPS for option in group_options(group)}
    out |= {f"train experiment={name}": composed("train", f"experiment={name}") for name in PRESETS}
    return out


def test_every_leaf_key_has_a_schema_entry(configs: dict[str, DictConfig]) -> None:
    undeclared = sorted({f"{key} (in {label})" for label, cfg in configs.items() for key in leaf_keys(cfg)
                         if key not in SCHEMA})
    assert undeclared == [], "declare these in percli/schema/<group>.py"


def test_every_schema_entry_is_set_by_some_config(configs: dict[str, DictConfig]) -> None:
    leaves = {key for cfg in configs.values() for key in leaf_keys(cfg)}
    # A mapping key (model.arch) counts when some config sets it to null and another fills it in.
    mappings = {key.rpartition(".")[0] for key in leaves}
    assert sorted(set(SCHEMA) - leaves - mappings) == []


def test_keys_nobody_reads_are_gone(configs: dict[str, DictConfig]) -> None:
    leaves = {key for cfg in configs.values() for key in leaf_keys(cfg)}
    assert not leaves & {"model.tokenizer", "data.eval_split", "paths.root_dir"}


def test_every_field_has_a_one_line_doc() -> None:
    for key, field in SCHEMA.items():
        assert isinstance(field, Field) and field.doc.strip() == field.doc, key
        assert field.doc and "\n" not in field.doc and len(field.doc) <= 110, key


@pytest.mark.parametrize(("key", "registry"), [
    ("loss.name", LOSSES), ("table.baseline_loss", LOSSES), ("schedule.name", SCHEDULES),
    ("retriever.name", RETRIEVERS), ("data.source", SOURCES)])
def test_name_choices_come_from_the_registries(key: str, registry: dict) -> None:
    assert SCHEMA[key].allowed() == tuple(registry) and registry


@pytest.mark.parametrize(
    ("command", "overrides", "message"),
    [
        ("train", ["data=local", "data.path=3"], "data.path=3 has the wrong type (int); expected a string or null"),
        ("eval", ["eval.split=null"], "eval.split=null is not allowed; expected a split name such as val or test"),
        ("train", ["model=qwen3-4b", "model.hub_id=[a,b]"],
         "model.hub_id=['a', 'b'] has the wrong type (list); expected a string or null"),
        ("train", ["retriever=contriever", "retriever.model_id=null"],
         "retriever.model_id=null is not allowed; expected a string"),
        ("train", ["model.lora.target_modules=7"],
         "model.lora.target_modules=7 has the wrong type (int); expected a string or a list"),
        ("train", ["launcher=deepspeed", "launcher.zero_stage=4"], "launcher.zero_stage=4 is out of range; expected 0, 1, 2 or 3"),
        ("train", ["train.lr=true"],
         "train.lr=True has the wrong type (bool); expected a positive number such as 1e-5"),
        ("train", ["model.dtype=fp8"],
         "model.dtype='fp8' is out of range; expected auto, float32, bfloat16 or float16"),
        ("table", ["table.metrics=[rouge1,bleu]"], "table.metrics=['rouge1', 'bleu'] is out of range; "
         "expected a list of rouge1, rouge2, rougeL, rougeLsum, meteor or planted_recall"),
        ("train", ["loss.name=focal"], "loss.name='focal' is out of range; expected ce, perce, longce, lossce, entce or dft"),
        ("train", ["schedule.name=hourly"],
         "schedule.name='hourly' is out of range; expected online, periodic or warmup"),
    ],
)
def test_bad_value_is_one_exact_line(command: str, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(compose_config(command, overrides))
    assert str(info.value) == message


def test_registry_names_are_checked_after_the_cheap_checks() -> None:
    cfg = compose_config("train", ["schedule.name=hourly"])
    check_values(cfg)  # passes: the schedule registry (torch) is read only by check_names
    with pytest.raises(ConfigError, match="schedule.name='hourly'"):
        validate(cfg)
    both = compose_config("train", ["schedule.name=hourly", "train.batch_size=0"])
    with pytest.raises(ConfigError, match="train.batch_size=0 is out of range"):
        validate(both)


def test_cli_config_errors_are_one_exact_line_with_exit_2(cli) -> None:
    """Both steps of the CLI's pre-run check: a value rule, and a heavy registry's name in one sweep job."""
    r = cli("train", "data.max_response_tokens=0")
    assert (r.returncode, r.stderr.strip()) == (
        2, "percli: error: data.max_response_tokens=0 is out of range; expected a positive integer")
    r = cli("train", "-m", "data=synthetic", "retriever=bm25", "schedule.name=online,hourly")
    assert (r.returncode, r.stderr.strip()) == (
        2, "percli: error: schedule.name='hourly' is out of range; expected online, periodic or warmup "
           "(in sweep job data=synthetic retriever=bm25 schedule.name=hourly)")
