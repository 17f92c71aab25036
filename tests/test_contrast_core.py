"""PerContrast core: memory-lean response log-probs equal brute-force full-logit values; PIR; memory bound."""

from __future__ import annotations

import weakref

import pytest
import torch
from perce_util import PAD, brute_logprobs, collate, make_pairs, small_lm
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from percli.errors import DataError
from percli.logprobs import TokenScorer, TokenScores, check_aligned, contrast_batch, response_logprobs


@pytest.fixture(scope="module")
def tiny():
    """`model=tiny`: random 2-layer Qwen3 over the real 151,669-token Qwen3 vocabulary."""
    from percli.models import load_model
    from percli.preflight import compose_config

    cfg = compose_config("contrast", ["model=tiny"])
    return load_model(cfg.model, seed=0).eval()


@pytest.mark.parametrize("side", ["right", "left"])
def test_batched_padded_pir_equals_brute_force_on_tiny(tiny, side):
    pairs = make_pairs(5, seed=1)
    vocab = tiny.config.vocab_size
    for p in pairs:  # spread ids over the whole 151k vocabulary
        for k in ("full", "free", "response"):
            p[k] = (p[k] * 1543) % vocab
    batch = collate(pairs, side)
    out = contrast_batch(tiny, batch, chunk_size=4)  # several chunks, boundaries inside examples
    ref_full = torch.cat([brute_logprobs(tiny, p["full"], p["response"]) for p in pairs])
    ref_free = torch.cat([brute_logprobs(tiny, p["free"], p["response"]) for p in pairs])
    torch.testing.assert_close(out["logp_full"], ref_full, atol=1e-5, rtol=0)
    torch.testing.assert_close(out["logp_free"], ref_free, atol=1e-5, rtol=0)
    torch.testing.assert_close(out["pir"], ref_full - ref_free, atol=1e-5, rtol=0)
    expected_rows = [r for r, p in enumerate(pairs) for _ in range(len(p["response"]))]
    assert out["row"].tolist() == expected_rows
    assert out["target"].tolist() == torch.cat([p["response"] for p in pairs]).tolist()


def test_grad_path_values_and_gradients_equal_brute_force():
    model = small_lm(seed=3)
    pairs = make_pairs(3, seed=2)
    batch = collate(pairs, "left")
    scores = response_logprobs(model, batch["full_input_ids"], batch["full_attention_mask"], batch["full_labels"],
                               chunk_size=2)
    assert scores.logp.requires_grad
    scores.logp.sum().backward()
    lean_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    ref = torch.cat([_brute_with_grad(model, p["full"], p["response"]) for p in pairs])
    ref.sum().backward()
    torch.testing.assert_close(scores.logp.detach(), ref.detach(), atol=1e-5, rtol=0)
    for n, p in model.named_parameters():
        torch.testing.assert_close(lean_grads[n], p.grad, atol=1e-5, rtol=1e-4, msg=n)


def _brute_with_grad(model, prompt, response):
    logits = model(torch.cat([prompt, response])[None]).logits[0].float()
    return logits.log_softmax(-1)[len(prompt) - 1 + torch.arange(len(response)), response]


def test_entropy_equals_brute_force():
    model = small_lm(seed=4)
    pairs = make_pairs(2, seed=5)
    batch = collate(pairs, "right")
    with torch.no_grad():
        s = response_logprobs(model, batch["full_input_ids"], batch["full_attention_mask"], batch["full_labels"],
                              with_entropy=True, chunk_size=3)
    refs = []
    for p in pairs:
        with torch.no_grad():
            lp = model(torch.cat([p["full"], p["response"]])[None]).logits[0].float().log_softmax(-1)
        pos = len(p["full"]) - 1 + torch.arange(len(p["response"]))
        refs.append(-(lp[pos].exp() * lp[pos]).sum(-1))
    torch.testing.assert_close(s.entropy, torch.cat(refs), atol=1e-5, rtol=0)
    assert s.entropy.max() <= torch.log(torch.tensor(float(model.config.vocab_size)))


def test_token_scorer_module_and_peft_lora():
    from peft import LoraConfig, get_peft_model

    base = small_lm(seed=6)
    pairs = make_pairs(3, seed=7)
    batch = collate(pairs, "right")
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))  # random B: LoRA changes outputs
    scorer = TokenScorer(peft_model, chunk_size=2)
    out = scorer(batch["full_input_ids"], batch["full_attention_mask"], batch["full_labels"])
    assert isinstance(out, TokenScores)
    ref = torch.cat([_brute_with_grad(peft_model, p["full"], p["response"]) for p in pairs])
    torch.testing.assert_close(out.logp.detach(), ref.detach(), atol=1e-5, rtol=0)
    with peft_model.disable_adapter():
        plain = torch.cat([brute_logprobs(base, p["full"], p["response"]) for p in pairs])
    assert (out.logp.detach() - plain).abs().max() > 1e-3  # the adapters really were in the path
    out.logp.sum().backward()
    lora_grads = [p.grad for n, p in peft_model.named_parameters() if "lora_" in n]
    assert lora_grads and all(g is not None and g.abs().sum() > 0 for g in lora_grads)
    # contrast_batch goes through the wrapper's forward and agrees with the bare model
    torch.testing.assert_close(contrast_batch(scorer, batch)["pir"], contrast_batch(peft_model, batch)["pir"])


def test_misaligned_streams_are_a_data_error():
    pairs = make_pairs(2, seed=8)
    batch = collate(pairs, "right")
    batch["free_labels"][1, (batch["free_labels"][1] != -100).nonzero()[0, 0]] = -100  # drop one free token
    with pytest.raises(DataError, match="example ex1: the full stream has"):
        contrast_batch(small_lm(), batch)
    scores = TokenScores(torch.zeros(2), None, torch.tensor([0, 0]), torch.tensor([5, 6]))
    check_aligned(scores, scores)


def test_label_on_padding_is_rejected():
    batch = collate(make_pairs(2, seed=9), "right")
    row = int(batch["full_attention_mask"].sum(1).argmin())
    batch["full_labels"][row, -1] = 5  # a label on a padded position
    assert batch["full_input_ids"][row, -1] == PAD
    with pytest.raises(DataError, match="padded position"):
        response_logprobs(small_lm(), batch["full_input_ids"], batch["full_attention_mask"], batch["full_labels"])


class _LiveTensorBytes(TorchDispatchMode):
    """Bytes of tensor storages created inside the mode and still alive, with their peak, plus the largest
    single tensor. Storages that existed before (weights, inputs) are not counted."""

    def __init__(self, external: list[torch.Tensor]):
        super().__init__()
        self.external = {t.untyped_storage().data_ptr() for t in external}
        self.live: dict[int, list[int]] = {}
        self.current = self.peak = self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key == 0 or key in self.external:
            return
        entry = self.live.get(key)
        if entry is None:
            entry = self.live[key] = [storage.nbytes(), 0]
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
            self.largest = max(self.largest, storage.nbytes())
        entry[1] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        entry = self.live[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[key]


def _peak(model, batch, chunk: int) -> tuple[int, int, int]:
    external = [*model.parameters(), *model.buffers(), *(v for v in batch.values() if isinstance(v, torch.Tensor))]
    with torch.no_grad(), _LiveTensorBytes(external) as mode:
        s = response_logprobs(model, batch["full_input_ids"], batch["full_attention_mask"], batch["full_labels"],
                              chunk_size=chunk)
    return mode.peak, mode.largest, s.logp.numel()


def test_peak_memory_does_not_grow_with_tokens_times_vocab(tiny):
    """151,669-token vocabulary: the lean pass never creates a tensor bigger than chunk x V fp32 and its peak
    stays flat when the response grows 4x, while full fp32 logits would need N x V x 4 bytes."""
    vocab, chunk = tiny.config.vocab_size, 32
    chunk_bytes = chunk * vocab * 4
    peaks = []
    for resp_len in (64, 256):
        g = torch.Generator().manual_seed(0)
        pairs = [{"full": torch.randint(2, vocab, (16,), generator=g), "free": torch.randint(2, vocab, (4,), generator=g),
                  "response": torch.randint(2, vocab, (resp_len - 8 * i,), generator=g), "index": i} for i in range(2)]
        peak, largest, n = _peak(tiny, collate(pairs, "left"), chunk)
        full_logits_bytes = n * vocab * 4
        assert largest <= chunk_bytes  # no [N, V] (let alone [B, T, V]) logits tensor ever exists
        assert peak < 3 * chunk_bytes + 4 * 1024**2, (peak, chunk_bytes)
        peaks.append((peak, full_logits_bytes))
    (p_small, f_small), (p_big, f_big) = peaks
    # The probe does see full logits when they exist: the model's own forward + fp32 log_softmax.
    batch = collate(pairs, "left")
    with torch.no_grad(), _LiveTensorBytes([*tiny.parameters(), *tiny.buffers(), batch["full_input_ids"]]) as naive:
        tiny(batch["full_input_ids"], attention_mask=batch["full_attention_mask"]).logits.float().log_softmax(-1)
    assert naive.peak > f_big
    assert f_big - f_small > 100 * 1024**2  # full logits would grow by >100 MB ...
    assert p_big - p_small < 0.02 * (f_big - f_small), peaks  # ... the lean peak grows by < 2% of that


def _saved_bytes(fn) -> int:
    """Bytes of distinct storages autograd keeps for backward while `fn` runs (what training holds on to)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def test_training_forward_keeps_no_logits_for_backward(tiny):
    """With grad, each LM-head chunk is checkpointed: autograd keeps hidden states, not N x V logits."""
    vocab = tiny.config.vocab_size
    g = torch.Generator().manual_seed(1)
    pairs = [{"full": torch.randint(2, vocab, (8,), generator=g), "free": torch.randint(2, vocab, (4,), generator=g),
              "response": torch.randint(2, vocab, (200,), generator=g), "index": i} for i in range(2)]
    batch = collate(pairs, "right")
    args = (batch["full_input_ids"], batch["full_attention_mask"], batch["full_labels"])
    lean = _saved_bytes(lambda: response_logprobs(tiny, *args, chunk_size=32))
    naive = _saved_bytes(lambda: tiny(args[0], attention_mask=args[1]).logits.float().log_softmax(-1))
    n_logits_bytes = 400 * vocab * 4
    assert naive > n_logits_bytes  # the plain forward keeps (at least) the N x V fp32 logits
    assert lean < 0.05 * n_logits_bytes, (lean, n_logits_bytes)  # measured: 4.7 MB vs 231 MB of logits
