"""Paired token streams: identical response ids, labels, padding on either side, truncation rules."""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch
from omegaconf import OmegaConf

from percli.data.collate import PairCollator, batch_indices, encode_examples, fit_profile
from percli.data.example import Example
from percli.logprobs import IGNORE_INDEX
from percli.models import chat_prompt_ids
from percli.preflight import compose_config

WORDS = "the cat sat on a mat and the dog ran far".split()  # single word pieces: dec() leaves them as they are


@lru_cache(maxsize=1)
def _tokenizer():
    from percli.models import load_tokenizer

    return load_tokenizer(compose_config("train", []).model)  # model=tiny: the real Qwen3 tokenizer


def _item(n_words: int, tag: str = "s") -> dict:
    return {"summary": tag, "content": " ".join(WORDS[i % len(WORDS)] for i in range(n_words))}


def _words(prompt: str) -> list[str]:
    return prompt.split()


# With whitespace "tokens", a topic item of m main-text words costs 5 + m, each join ", and " 2, and the suffix
# ". Following the given patterns, in" 6; so three 10-word items cost 3 * 15 + 2 * 2 + 6 = 55.
ITEMS = [_item(10, "a"), _item(10, "b"), _item(10, "c")]


@pytest.mark.parametrize("budget, kept, cut, length", [
    (55, 3, False, 55),   # everything fits
    (45, 2, False, 38),   # third item dropped: cut to w >= 1 words it costs 38 + 2 + 5 + w > 45
    (46, 3, True, 46),    # ... but one more word of budget keeps its first word
    (50, 3, True, 50),    # third item cut to 5 words: 38 + 2 + 5 + 5 = 50
    (21, 1, False, 21),   # one whole item: 15 + 6
    (14, 1, True, 14),    # first item cut to 3 words: 5 + 3 + 6
    (10, 0, False, 1),    # not even one word of profile fits: the prompt is the input alone
])
def test_fit_profile_drops_items_from_the_end_then_cuts_the_last_kept(budget: int, kept: int, cut: bool,
                                                                    length: int) -> None:
    prompt, ids, n, was_cut = fit_profile("topic", "in", ITEMS, budget, _words)
    assert (n, was_cut, len(ids)) == (kept, cut, length)
    if budget == 14:
        assert prompt == '"a" is a summary for "the cat sat" . Following the given patterns, in'
    if budget == 50:
        assert prompt.startswith('"a" is a summary for "the cat sat on a mat and the dog ran" , and "b"')
        assert prompt.endswith(', and "c" is a summary for "the cat sat on a" . Following the given patterns, in')
    if budget == 10:
        assert prompt == "in"


def _examples() -> list[Example]:
    return [
        Example("e0", "u0", "topic", "Write about cats.", "Cats sleep a lot. Mine sleeps all day!", [_item(30)]),
        Example("e1", "u1", "topic", "Write about dogs" + " and why they bark at night" * 8, "Dogs bark.",
                [_item(5), _item(7, "t")]),
        Example("e2", "u2", "topic", "Short.", "A much longer response that goes on, and on, and on for a while.", []),
    ]


def _data_cfg(prompt: int = 1000, response: int = 100):
    return OmegaConf.create({"max_prompt_tokens": prompt, "max_response_tokens": response})


def test_response_is_output_tokens_plus_eos_with_char_offsets() -> None:
    tok = _tokenizer()
    pairs, report = encode_examples(_examples(), tok, _data_cfg())
    assert report.kept == 3 and report.empty_profile == 1
    for p, ex in zip(pairs, _examples()):
        assert p.response_ids == tok(ex.output, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert "".join(ex.output[s:e] for s, e in p.response_offsets) == ex.output
        assert p.response_offsets[-1] == (len(ex.output), len(ex.output))
        assert p.free_ids[:p.response_start_free] == chat_prompt_ids(tok, ex.input)  # the input is never cut
        assert p.full_ids[:p.response_start_full] == chat_prompt_ids(tok, p.full_prompt)
        assert p.full_ids[p.response_start_full:] == p.free_ids[p.response_start_free:] == p.response_ids
    assert pairs[2].full_prompt == pairs[2].free_prompt == "Short."  # empty profile: full prompt = input


@pytest.mark.parametrize("side", ["right", "left"])
def test_collated_streams_share_response_labels_under_either_padding(side: str) -> None:
    tok = _tokenizer()
    pairs, _ = encode_examples(_examples(), tok, _data_cfg())
    batch = PairCollator(tok, padding_side=side)(pairs)
    assert batch["ids"] == ["e0", "e1", "e2"] and batch["index"].tolist() == [0, 1, 2]
    for stream in ("full", "free"):
        ids, mask, labels = (batch[f"{stream}_{k}"] for k in ("input_ids", "attention_mask", "labels"))
        assert ids.shape == mask.shape == labels.shape
        for b, p in enumerate(pairs):
            row = p.full_ids if stream == "full" else p.free_ids
            start = p.response_start_full if stream == "full" else p.response_start_free
            real = mask[b].bool()
            assert ids[b][real].tolist() == row
            assert (ids[b][~real] == tok.pad_token_id).all()
            assert mask[b].tolist() == ([1] * len(row) + [0] * (ids.shape[1] - len(row)) if side == "right"
                                        else [0] * (ids.shape[1] - len(row)) + [1] * len(row))
            expected = [IGNORE_INDEX] * start + p.response_ids
            assert labels[b][real].tolist() == expected and (labels[b][~real] == IGNORE_INDEX).all()
    # Row-major gathered response labels are the same sequence in both streams.
    full = batch["full_labels"][batch["full_labels"] != IGNORE_INDEX]
    free = batch["free_labels"][batch["free_labels"] != IGNORE_INDEX]
    assert torch.equal(full, free) and full.numel() == sum(len(p.response_ids) for p in pairs)


def test_budgets_drop_long_inputs_cut_profiles_and_responses() -> None:
    tok = _tokenizer()
    exs = _examples()
    free_len = [len(chat_prompt_ids(tok, e.input)) for e in exs]
    budget = free_len[0] + 25  # e0's 30-word item cannot fit whole; e1's input alone is too long
    assert free_len[1] > budget >= free_len[2]
    pairs, report = encode_examples(exs, tok, _data_cfg(budget, 5))
    assert [p.id for p in pairs] == ["e0", "e2"] and [p.index for p in pairs] == [0, 2]
    assert report.dropped_input_too_long == 1 and report.dropped_ids == ["e1"]
    assert pairs[0].item_cut and pairs[0].items_kept == 1 and report.items_cut == 1
    assert budget - 3 <= pairs[0].response_start_full <= budget
    assert all(len(p.response_ids) == 5 for p in pairs) and report.responses_cut == 2
    assert tok.eos_token_id not in pairs[1].response_ids  # a cut response loses its eos
    assert "dropped 1 (input alone over max_prompt_tokens)" in report.summary()
    assert "\n" not in report.summary()


def test_length_grouped_batches_cover_every_index_once() -> None:
    lengths = [5, 50, 7, 48, 6, 49, 8, 47]
    for group in (False, True):
        batches = batch_indices(lengths, 2, group_by_length=group, seed=0)
        assert sorted(i for b in batches for i in b) == list(range(8))
        assert batches == batch_indices(lengths, 2, group_by_length=group, seed=0)
    grouped = batch_indices(lengths, 2, group_by_length=True, seed=0)
    assert all(abs(lengths[a] - lengths[b]) <= 2 for a, b in grouped)  # long with long, short with short
