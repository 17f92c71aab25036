"""Batches in length order, one rule for every pass that pads a batch to its longest member (generation,
PerContrast scoring, dense retrieval): longest first, so members of a batch have similar lengths and a batch
that runs out of memory does so at once."""

from __future__ import annotations

from collections.abc import Sequence


def longest_first(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices in batches of `batch_size`, longest first (a stable sort: ties keep the given order)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[b:b + batch_size] for b in range(0, len(order), batch_size)]
