"""`retriever` group (conf/retriever/*.yaml): which k profile items each prompt gets."""

from __future__ import annotations

from collections.abc import Iterable

from percli.schema.field import Field, between, non_negative, positive

GROUP = "retriever"


def _retrievers() -> Iterable[str]:
    # Function-local: percli.data.retrieval loads numpy and rank_bm25, which a config error need not wait for.
    from percli.data.retrieval import RETRIEVERS

    return RETRIEVERS

FIELDS: dict[str, Field] = {
    "name": Field(str, "how profile items are ranked: lexical (bm25), dense (contriever, minilm), random or newest first",
                  choices=_retrievers),
    "k": Field(int, "profile items per prompt; 0: no profile, the prompt is the input alone (LongLaMP's "
                    "non-personalised baseline)", non_negative, "a non-negative integer (the paper uses 4; 0: no profile)"),
    "model_id": Field(str, "dense: HF repo id or local dir of the encoder"),
    "batch_size": Field(int, "dense: texts per encoder forward", positive, "a positive integer"),
    "max_length": Field(int, "dense: tokens per text (padded and truncated)", between(2, 8192),
                        "an integer in [2, 8192] (512 for Contriever)"),
    "normalize": Field(bool, "dense: unit-length embeddings (dot product = cosine)"),
    "seed": Field(int, "random: seed of the per-example draw", non_negative, "a non-negative integer"),
}
