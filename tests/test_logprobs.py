"""Response-token scoring under bf16 and under rank-agreed chunking; optimizer groups that survive ZeRO-3."""

from __future__ import annotations

import pytest
import torch
from helpers import composed
from perce_util import collate, make_pairs

from percli.logprobs import TokenScorer, response_logprobs, response_mask
from percli.models import load_model_and_tokenizer
from percli.training_setup import build_optimizer


@pytest.fixture(scope="module")
def tiny_bf16():
    """The tiny Qwen3 (151,669-token vocabulary) with bf16 weights, as DeepSpeed bf16 trains it."""
    model, _ = load_model_and_tokenizer(composed("train", "model=tiny", "debug=smoke").model, seed=0)
    return model.to(torch.bfloat16).eval()


def _fp32_reference(model, batch: dict) -> torch.Tensor:
    """Log-probs from the model's own bf16 hidden states and bf16 head weights, multiplied in fp32."""
    ids, att, lab = batch["full_input_ids"], batch["full_attention_mask"], batch["full_labels"]
    with torch.no_grad():
        position_ids = (att.long().cumsum(-1) - 1).clamp(min=0)
        hidden = model.get_decoder()(input_ids=ids, attention_mask=att, position_ids=position_ids)[0]
        mask = response_mask(lab)
        h = hidden[:, :-1][mask]
        assert h.dtype == torch.bfloat16
        logits = h.float() @ model.get_output_embeddings().weight.float().T
        return logits.log_softmax(-1).gather(-1, lab[:, 1:][mask][:, None]).squeeze(-1)


def test_bf16_logprobs_equal_an_fp32_head_on_the_bf16_hidden_states(tiny_bf16):
    batch = collate(make_pairs(4, seed=1), "right")
    want = _fp32_reference(tiny_bf16, batch)
    with torch.no_grad():
        got = response_logprobs(tiny_bf16, batch["full_input_ids"], batch["full_attention_mask"],
                                batch["full_labels"], chunk_size=5).logp
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-4, rtol=0), (got - want).abs().max()
    # What the test guards against: logits rounded to bf16 before the log-softmax miss the tolerance.
    with torch.no_grad():
        mask = response_mask(batch["full_labels"])
        h = tiny_bf16.get_decoder()(input_ids=batch["full_input_ids"],
                                    attention_mask=batch["full_attention_mask"])[0][:, :-1][mask]
        rounded = tiny_bf16.get_output_embeddings()(h).float().log_softmax(-1)
        rounded = rounded.gather(-1, batch["full_labels"][:, 1:][mask][:, None]).squeeze(-1)
    assert (rounded - want).abs().max() > 5e-4


def test_the_head_is_called_as_often_as_the_ranks_agreed():
    model, _ = load_model_and_tokenizer(composed("train", "model=tiny", "debug=smoke").model, seed=0)
    batch = collate(make_pairs(2, seed=3), "right")
    n = int(response_mask(batch["full_labels"]).sum())
    calls: list[int] = []
    hook = model.get_output_embeddings().register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    try:
        alone = TokenScorer(model, chunk_size=4)(batch["full_input_ids"], batch["full_attention_mask"],
                                                 batch["full_labels"])
        assert len(calls) == -(-n // 4) and max(calls) <= 4
        calls.clear()
        # Another rank has more response tokens: this one makes n + 3 calls, some of them on empty chunks.
        synced = TokenScorer(model, chunk_size=4, sync_chunks=lambda local: local + n + 3)(
            batch["full_input_ids"], batch["full_attention_mask"], batch["full_labels"])
        assert len(calls) == -(-n // 4) + n + 3 and calls.count(0) == len(calls) - n
        calls.clear()
        synced.logp.sum().backward()  # checkpointed chunks recompute in the backward: as often again
        assert len(calls) == -(-n // 4) + n + 3
    finally:
        hook.remove()
        model.zero_grad(set_to_none=True)
    assert torch.allclose(synced.logp.detach(), alone.logp, atol=1e-6)


def test_weight_decay_groups_do_not_depend_on_parameter_shapes():
    # ZeRO-3 keeps every parameter as a 1-D shard: groups decided by ndim would put all of them in no-decay.
    model, _ = load_model_and_tokenizer(composed("train", "model=tiny", "debug=smoke").model, seed=0)
    train_cfg = composed("train", "debug=smoke", "train.weight_decay=0.1").train

    def groups(m) -> dict[float, set[str]]:
        names = {id(p): n for n, p in m.named_parameters()}
        return {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in build_optimizer(m, train_cfg).param_groups}

    shaped = groups(model)
    assert shaped[0.1] == {n for n, p in model.named_parameters() if p.ndim >= 2}
    assert shaped[0.0] == {n for n, p in model.named_parameters() if p.ndim < 2} != set()
    for p in model.parameters():
        p.data = p.data.flatten()
    assert groups(model) == shaped
