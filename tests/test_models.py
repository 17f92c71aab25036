"""Model registry: tiny determinism, the real Qwen3 tokenizer, real SmolLM2 weights."""

from __future__ import annotations

import torch

from percli.assets import QWEN3_CHAT_TEMPLATE
from percli.models import chat_prompt_ids, load_model, load_model_and_tokenizer, load_tokenizer
from percli.preflight import compose_config


def _model_cfg(*overrides: str):
    return compose_config("train", list(overrides)).model


def test_tiny_is_seeded():
    cfg = _model_cfg()
    tok = load_tokenizer(cfg)
    a = load_model(cfg, seed=7, tokenizer=tok)
    torch.manual_seed(123)  # the caller's RNG state must not matter
    b = load_model(cfg, seed=7, tokenizer=tok)
    c = load_model(cfg, seed=8, tokenizer=tok)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.model.layers[0].mlp.up_proj.weight, c.model.layers[0].mlp.up_proj.weight)
    assert a.config.num_hidden_layers == 2 and a.config.hidden_size == 64
    assert a.config.vocab_size == len(tok) == 151669
    ids = torch.tensor([[9707, 1879]])
    assert torch.equal(a(ids).logits, b(ids).logits)


def test_qwen3_tokenizer_known_ids_and_round_trip():
    tok = load_tokenizer(_model_cfg())
    # Ids of the released Qwen2/Qwen3 vocabulary.
    assert tok("Hello world", add_special_tokens=False).input_ids == [9707, 1879]
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]) == [
        151643, 151644, 151645, 151667, 151668]
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>")
    text = "The user's café costs 93.78% more (i.e. ¥1,234) — naïve ünïcode\n\ttabs  spaces"
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text


def test_qwen3_chat_template_exact():
    tok = load_tokenizer(_model_cfg())
    ids = chat_prompt_ids(tok, "Write a review.")
    assert tok.decode(ids) == (
        "<|im_start|>user\nWrite a review.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def test_qwen3_chat_template_file_renders_qwen3_turns():
    tok = load_tokenizer(_model_cfg())
    tok.chat_template = QWEN3_CHAT_TEMPLATE.read_text(encoding="utf-8")  # the file, not the cached build
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
             {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Review it."}]
    head = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nReview it.<|im_end|>\n")
    assert tok.apply_chat_template(turns, tokenize=False) == head
    assert tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True) == head + "<|im_start|>assistant\n"
    assert tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True, enable_thinking=False) == (
        head + "<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_smollm2_completes_capital_of_france():
    model, tok = load_model_and_tokenizer(_model_cfg("model=smollm2-135m"))
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        next_id = model(**ids).logits[0, -1].argmax().item()
    assert tok.decode([next_id]) == " Paris"
