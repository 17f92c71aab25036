"""Paired token streams: (full prompt + response) and (profile-free prompt + response), same response ids.

Both prompts go through the model's chat template (`percli.models.chat_prompt_ids`); the response is
`tokenizer(output)` + [eos], appended by id to both, so the response tokens are identical by construction
and gathering response positions row-major lines them up 1:1 between the streams.

Length control (`data.max_prompt_tokens` counts the chat-templated prompt, `data.max_response_tokens` the
response with its eos):
- profile first: drop whole items from the end, then cut the last kept item's main text at a word boundary
  to fill the remaining budget;
- the input is never cut: an example whose profile-free prompt alone is too long is dropped (counted);
- the response is cut only at `max_response_tokens` (a cut response loses its eos).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import PreTrainedTokenizerBase

from percli.data.example import Example
from percli.data.prompts import MAIN_FIELD, decode_main_text, format_item, format_prompt
from percli.data.synthetic import planted_token_mask
from percli.logprobs import IGNORE_INDEX
from percli.models import chat_prompt_ids


@dataclass
class EncodedPair:
    id: str
    index: int  # position in the example list given to encode_examples
    full_ids: list[int]
    free_ids: list[int]
    response_start_full: int
    response_start_free: int
    response_ids: list[int]
    response_offsets: list[tuple[int, int]]  # char span of each response token in `output` (eos: empty)
    full_prompt: str
    free_prompt: str
    items_kept: int  # profile items in the full prompt (the last one possibly cut)
    item_cut: bool
    planted: list[bool] | None = None  # per response token: inside a planted name (synthetic truth spans)


@dataclass
class DropReport:
    examples: int = 0
    kept: int = 0
    dropped_input_too_long: int = 0
    empty_profile: int = 0
    items_dropped: int = 0
    items_cut: int = 0
    profile_emptied: int = 0
    responses_cut: int = 0
    dropped_ids: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"encoded {self.kept}/{self.examples} examples; dropped {self.dropped_input_too_long} "
                f"(input alone over max_prompt_tokens); profile truncation: {self.items_dropped} items dropped, "
                f"{self.items_cut} items cut, {self.profile_emptied} examples left without profile; "
                f"{self.empty_profile} had an empty profile; {self.responses_cut} responses cut at max_response_tokens")


def _chat_ids_fn(tokenizer: PreTrainedTokenizerBase) -> Callable[[str], list[int]]:
    return lambda prompt: chat_prompt_ids(tokenizer, prompt)


def encode_response(tokenizer: PreTrainedTokenizerBase, output: str, max_tokens: int
                    ) -> tuple[list[int], list[tuple[int, int]], bool]:
    """tokenizer(output) + [eos], with char offsets, cut at `max_tokens`; returns (ids, offsets, was_cut)."""
    enc = tokenizer(output, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"]) + [tokenizer.eos_token_id]
    offsets = [tuple(o) for o in enc["offset_mapping"]] + [(len(output), len(output))]
    return ids[:max_tokens], offsets[:max_tokens], len(ids) > max_tokens


def fit_profile(task: str, input: str, items: Sequence[dict], budget: int,
                prompt_ids: Callable[[str], list[int]]) -> tuple[str, list[int], int, bool]:
    """The longest full prompt within `budget` tokens: whole items dropped from the end, then the last kept
    item's (decoded) main text cut at a word boundary. Returns (prompt, ids, items kept, last item cut)."""
    mains = [decode_main_text(task, it[MAIN_FIELD[task]]) for it in items]
    strings = [format_item(task, it, m) for it, m in zip(items, mains)]

    def build(n: int, cut_words: int | None = None) -> tuple[str, list[int]]:
        parts = strings[:n]
        if cut_words is not None:
            parts = parts + [format_item(task, items[n], " ".join(mains[n].split(" ")[:cut_words]))]
        prompt = format_prompt(task, input, parts)
        return prompt, prompt_ids(prompt)

    prompt, ids = build(len(items))
    if len(ids) <= budget:
        return prompt, ids, len(items), False
    n = len(items) - 1  # items[:n] whole; items[n] is the candidate for cutting
    while n > 0:
        prompt, ids = build(n)
        if len(ids) <= budget:
            break
        n -= 1
    if n == 0:
        prompt, ids = build(0)  # the input alone; the caller has checked that it fits
    words = mains[n].split(" ")
    lo, hi, best = 1, len(words) - 1, None  # the whole item is known not to fit
    while lo <= hi:
        mid = (lo + hi) // 2
        cand = build(n, mid)
        if len(cand[1]) <= budget:
            best, lo = cand, mid + 1
        else:
            hi = mid - 1
    if best is not None:
        return best[0], best[1], n + 1, True
    return prompt, ids, n, False


def encode_examples(examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, data_cfg: Any
                    ) -> tuple[list[EncodedPair], DropReport]:
    """Tokenise each example into the paired streams; examples whose input alone is too long are dropped
    (counted in the report, whose `summary()` the caller logs)."""
    prompt_ids = _chat_ids_fn(tokenizer)
    budget, max_resp = int(data_cfg.max_prompt_tokens), int(data_cfg.max_response_tokens)
    report = DropReport(examples=len(examples))
    pairs: list[EncodedPair] = []
    for index, ex in enumerate(examples):
        free_ids = prompt_ids(ex.input)
        if len(free_ids) > budget:
            report.dropped_input_too_long += 1
            report.dropped_ids.append(ex.id)
            continue
        if not ex.profile:
            report.empty_profile += 1
        full_prompt, full_ids, kept, cut = fit_profile(ex.task, ex.input, ex.profile, budget, prompt_ids)
        report.items_dropped += len(ex.profile) - kept
        report.items_cut += int(cut)
        report.profile_emptied += int(kept == 0 and bool(ex.profile))
        resp, offsets, resp_cut = encode_response(tokenizer, ex.output, max_resp)
        report.responses_cut += int(resp_cut)
        pair = EncodedPair(
            id=ex.id, index=index, full_ids=full_ids + resp, free_ids=free_ids + resp,
            response_start_full=len(full_ids), response_start_free=len(free_ids), response_ids=resp,
            response_offsets=offsets, full_prompt=full_prompt, free_prompt=ex.input, items_kept=kept, item_cut=cut,
            planted=planted_token_mask(offsets, ex.meta["planted_spans"]) if "planted_spans" in ex.meta else None)
        assert pair.full_ids[pair.response_start_full:] == pair.free_ids[pair.response_start_free:] == resp
        pairs.append(pair)
    report.kept = len(pairs)
    return pairs, report


def pad(rows: Sequence[Sequence[int]], value: int, side: str) -> torch.Tensor:
    """[B, max len] long tensor of the rows, filled with `value` on the left or right."""
    return pad_sequence([torch.tensor(r, dtype=torch.long) for r in rows], batch_first=True, padding_value=value,
                        padding_side=side)


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of token-id rows padded on `side` ("left" for generation)."""
    return pad(rows, pad_id, side), pad([[1] * len(r) for r in rows], 0, side)


class PairCollator:
    """Pads both streams of a batch; labels carry the token id at response positions and -100 elsewhere
    (HF convention: aligned with input_ids, the model shifts)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, padding_side: str = "right") -> None:
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.padding_side = padding_side

    def _pad(self, rows: list[list[int]], starts: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, mask = pad_rows(rows, self.pad_id, self.padding_side)
        labels = pad([[IGNORE_INDEX] * start + row[start:] for row, start in zip(rows, starts)], IGNORE_INDEX,
                     self.padding_side)
        return ids, mask, labels

    def __call__(self, pairs: list[EncodedPair]) -> dict[str, Any]:
        full = self._pad([p.full_ids for p in pairs], [p.response_start_full for p in pairs])
        free = self._pad([p.free_ids for p in pairs], [p.response_start_free for p in pairs])
        # The PerCE invariant: the same response tokens, in the same row-major order, in both streams.
        assert torch.equal(full[2][full[2] != IGNORE_INDEX], free[2][free[2] != IGNORE_INDEX])
        return {
            "full_input_ids": full[0], "full_attention_mask": full[1], "full_labels": full[2],
            "free_input_ids": free[0], "free_attention_mask": free[1], "free_labels": free[2],
            "ids": [p.id for p in pairs],
            "index": torch.tensor([p.index for p in pairs], dtype=torch.long),
            # Row-major like TokenScores: the training log's weight mass on planted vs other tokens.
            **({"planted": torch.tensor([t for p in pairs for t in p.planted], dtype=torch.bool)}
               if all(p.planted is not None for p in pairs) else {}),
        }


def batch_indices(lengths: Sequence[int], batch_size: int, *, group_by_length: bool, seed: int,
                  epoch: int = 0, shuffle: bool = True) -> list[list[int]]:
    """Batches of dataset indices. With `group_by_length`, indices are shuffled, sorted by length inside
    windows of 50 batches, cut into batches, and the batches shuffled: little padding, random order."""
    rng = random.Random(f"{seed}|{epoch}")
    order = list(range(len(lengths)))
    if shuffle:
        rng.shuffle(order)
    if group_by_length:
        window = batch_size * 50
        order = [i for s in range(0, len(order), window)
                 for i in sorted(order[s:s + window], key=lambda i: -lengths[i])]
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    if group_by_length and shuffle:
        rng.shuffle(batches)
    return batches
