"""Response-token log-probs without full [B, T, V] fp32 logits: the scoring core of PerContrast and the losses.

For response token t of an example with profile p and query x, PerContrast's

    PIR_t = log P(y_t | p, x, y<t) - log P(y_t | x, y<t)

takes both terms from the same model on the same response token ids: the first from the full stream
(`full_*` keys of a `PairCollator` batch), the second from the profile-free stream (`free_*`), without
gradient.

Memory. A 151k vocabulary makes `[B, T, V]` fp32 logits the largest tensor of a step (B=4, T=4096:
10 GB). `response_logprobs` runs the backbone (`causal_lm.get_decoder()`) to the final hidden states,
gathers them at the N response positions only, and applies the LM head + log-softmax in chunks of at
most `chunk_size` positions, so at most `chunk_size x V` fp32 logits are alive at once. Under autograd each
chunk is checkpointed: the backward pass recomputes that chunk's logits instead of keeping N x V of them.
Peak extra memory: O(chunk_size x V) however long the batch is.

Precision. The head's matmul and the log-softmax run in fp32 from the model's own (bf16) hidden states and
head weights: rounding the logits to bf16 first moves each log-prob by up to ~0.06 nats, which PIR, a
difference of two log-probs, would inherit.

Ranks. DeepSpeed ZeRO-3 records the order of submodule calls in its first steps and asserts that every
rank makes the same calls. The number of head calls therefore must not depend on a rank's own data: a
`TokenScorer` built with `sync_chunks` (the trainer passes the max over ranks) splits every forward's
positions into that many chunks, empty ones included, on every rank.

Training wraps the causal LM in `TokenScorer` and hands the WRAPPER to accelerate / DDP / DeepSpeed, so
that they see one forward that uses every parameter:

    scorer = TokenScorer(causal_lm, chunk_size=cfg.loss.chunk_size)   # before accelerator.prepare
    scorer, optimizer = accelerator.prepare(scorer, optimizer)
    scores = scorer(batch["full_input_ids"], batch["full_attention_mask"], batch["full_labels"],
                    with_entropy=schedule.with_entropy)              # TokenScores, logp carries grad
    weights, stats = schedule.weights(step, scorer, batch, scores)  # see percli.schedule
    loss = weighted_nll(scores.logp, weights, num_tokens_global)    # see percli.losses
    ...
    accelerator.unwrap_model(scorer).causal_lm.save_pretrained(...)  # the HF model, without the wrapper

Enable gradient checkpointing / LoRA on `causal_lm` before wrapping it; both keep working because the
wrapper calls the (PEFT-wrapped) decoder and LM head modules themselves. Position ids are derived from the
attention mask, so left and right padding give the same scores as an unpadded forward.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from percli.errors import DataError

IGNORE_INDEX = -100
DEFAULT_CHUNK_SIZE = 256


class TokenScores(NamedTuple):
    """Scores of the N response tokens of a batch, in row-major order (row, then position).

    A NamedTuple so that DDP / accelerate treat it as a container of tensors (pytree-flattenable).
    """

    logp: Tensor  # [N] fp32 log P(y_t | prefix); carries grad when computed with grad enabled
    entropy: Tensor | None  # [N] fp32 detached predictive entropy in nats (with_entropy=True), else None
    row: Tensor  # [N] long, batch row of each token
    target: Tensor  # [N] long, the scored token ids


def response_mask(labels: Tensor) -> Tensor:
    """[B, T-1] bool: position t predicts a response token (HF labels are aligned with input_ids)."""
    return labels[:, 1:] != IGNORE_INDEX


def count_response_tokens(labels: Tensor) -> int:
    return int(response_mask(labels).sum())


def _unwrap(model: nn.Module) -> nn.Module:
    """The causal LM inside a TokenScorer and/or a DDP / DeepSpeed wrapper (`.module`)."""
    while True:
        if isinstance(model, TokenScorer):
            return model.causal_lm
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


@contextlib.contextmanager
def _fp32_forward(head: nn.Module) -> Iterator[None]:
    """Inside, calling `head` (an nn.Linear) computes fp32 logits from its own weights, whatever their dtype.

    The module itself is called, not its weight, so that ZeRO-3's hooks gather the weight for the call;
    autocast is off so that the fp32 operands stay fp32."""
    if not isinstance(head, nn.Linear):  # e.g. a PEFT-wrapped head: its own forward, upcast afterwards
        yield
        return

    def forward(x: Tensor) -> Tensor:
        bias = None if head.bias is None else head.bias.float()
        return F.linear(x.float(), head.weight.float(), bias)

    previous = head.__dict__.get("forward")
    head.forward = forward
    try:
        yield
    finally:
        if previous is None:
            del head.forward
        else:
            head.forward = previous


def _score_chunk(head: nn.Module, hidden: Tensor, target: Tensor, softcap: float | None,
                 with_entropy: bool) -> tuple[Tensor, Tensor | None]:
    with _fp32_forward(head), torch.autocast(hidden.device.type, enabled=False):
        logits = head(hidden).float()
    if softcap:  # Gemma-style final logit soft-capping, as the model's own forward applies it
        logits = torch.tanh(logits / softcap) * softcap
    # logsumexp + gather instead of log_softmax: one [c, V] buffer fewer.
    lse = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, target[:, None]).squeeze(-1) - lse
    entropy = None
    if with_entropy:
        with torch.no_grad():  # EntCE only uses it detached
            entropy = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return logp, entropy


def response_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    labels: Tensor,
    *,
    with_entropy: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    sync_chunks: Callable[[int], int] | None = None,
) -> TokenScores:
    """log P(y_t | y<t) at every position whose shifted label is not -100, never holding [B, T, V] fp32.

    `model` is a causal LM (HF `PreTrainedModel`, PEFT-wrapped or not). Works with and without grad.
    `sync_chunks(local chunk count)` returns the chunk count every rank uses (module header: Ranks).
    """
    causal_lm = _unwrap(model)
    mask = response_mask(labels)
    if bool((attention_mask[:, 1:] == 0)[mask].any()):
        raise DataError("a response label sits on a padded position (attention_mask=0); the collator "
                        "must mask labels of padding with -100")
    rows, cols = mask.nonzero(as_tuple=True)  # row-major, so rows come out sorted
    target = labels[:, 1:][mask]
    # Positions count real tokens only: left padding then scores exactly like an unpadded sequence.
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    out = causal_lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                  position_ids=position_ids, use_cache=False)
    hidden = out[0][rows, cols]  # [N, H]: the only hidden states the LM head needs
    head = causal_lm.get_output_embeddings()
    softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
    # Checkpoint each chunk when a backward will follow: autograd then keeps the chunk's inputs, not its logits.
    use_ckpt = torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in head.parameters()))
    n_chunks = math.ceil(hidden.shape[0] / chunk_size)
    if sync_chunks is not None:
        n_chunks = sync_chunks(n_chunks)
    logps, ents = [], []
    # n_chunks >= the local count, so no chunk is longer than chunk_size.
    chunks = zip(torch.tensor_split(hidden, n_chunks), torch.tensor_split(target, n_chunks)) if n_chunks else []
    for h, t in chunks:
        args = (head, h, t, softcap, with_entropy)
        lp, ent = checkpoint(_score_chunk, *args, use_reentrant=False) if use_ckpt else _score_chunk(*args)
        logps.append(lp)
        ents.append(ent)
    empty = hidden.new_zeros(0, dtype=torch.float32)
    logp = torch.cat(logps) if logps else empty
    entropy = (torch.cat(ents) if ents else empty) if with_entropy else None
    return TokenScores(logp=logp, entropy=entropy, row=rows, target=target)


class TokenScorer(nn.Module):
    """nn.Module around a causal LM whose forward returns `TokenScores` of the response tokens.

    Prepare THIS module with accelerate / DDP / DeepSpeed (not the bare LM) so the memory-lean forward
    is the module's forward. `scorer.causal_lm` is the HF model (save / generate with it).
    """

    def __init__(self, causal_lm: nn.Module, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 sync_chunks: Callable[[int], int] | None = None):
        super().__init__()
        self.causal_lm = causal_lm
        self.chunk_size = chunk_size
        self.sync_chunks = sync_chunks

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor,
                with_entropy: bool = False) -> TokenScores:
        return response_logprobs(self.causal_lm, input_ids, attention_mask, labels, with_entropy=with_entropy,
                                 chunk_size=self.chunk_size, sync_chunks=self.sync_chunks)


def _is_scorer(model: nn.Module) -> bool:
    while model is not None:
        if isinstance(model, TokenScorer):
            return True
        model = getattr(model, "module", None)
    return False


def stream_logprobs(model: nn.Module, batch: dict[str, Any], stream: str, *, with_entropy: bool = False,
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> TokenScores:
    """TokenScores of one stream ("full" or "free") of a PairCollator batch, through the scorer's forward
    when `model` is a (wrapped) TokenScorer so that DDP / DeepSpeed hooks run."""
    ids, att, lab = (batch[f"{stream}_input_ids"], batch[f"{stream}_attention_mask"], batch[f"{stream}_labels"])
    if _is_scorer(model):
        return model(ids, att, lab, with_entropy=with_entropy)
    return response_logprobs(model, ids, att, lab, with_entropy=with_entropy, chunk_size=chunk_size)


def check_aligned(full: TokenScores, free: TokenScores, ids: Sequence[str] | None = None) -> None:
    """Both streams must score the same response tokens, row by row (the collator's invariant)."""
    if full.target.shape == free.target.shape and bool((full.row == free.row).all()) \
            and bool((full.target == free.target).all()):
        return
    n_rows = int(torch.cat([full.row, free.row]).max()) + 1 if full.row.numel() + free.row.numel() else 0
    for r in range(n_rows):
        a, b = full.target[full.row == r], free.target[free.row == r]
        if a.shape != b.shape or not bool((a == b).all()):
            name = ids[r] if ids is not None and r < len(ids) else f"row {r}"
            raise DataError(f"example {name}: the full stream has {a.numel()} response tokens and the "
                            f"profile-free stream {b.numel()} (or different ids); both streams must carry "
                            "identical response ids (check data.max_prompt_tokens / max_response_tokens)")
    raise DataError("full and profile-free streams disagree on response tokens")


def contrast_batch(model: nn.Module, batch: dict[str, Any], *, with_entropy: bool = False,
                   chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict[str, Tensor | None]:
    """PerContrast for a PairCollator batch, both passes without grad.

    Returns logp_full, logp_free, pir (= logp_full - logp_free), row, target ([N] each, row-major) and
    entropy (full stream, or None).
    """
    with torch.no_grad():
        full = stream_logprobs(model, batch, "full", with_entropy=with_entropy, chunk_size=chunk_size)
        free = stream_logprobs(model, batch, "free", chunk_size=chunk_size)
    check_aligned(full, free, batch.get("ids"))
    return {"logp_full": full.logp, "logp_free": free.logp, "pir": full.logp - free.logp,
            "row": full.row, "target": full.target, "entropy": full.entropy}
