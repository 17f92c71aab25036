"""Which dataset rows each rank trains on at each optimizer step: a pure function of (seed, step)."""

from __future__ import annotations

from percli.data.collate import batch_indices


class StepSampler:
    """Every epoch is cut into global batches of batch_size x grad_accum x world_size rows (the order from
    `percli.data.collate.batch_indices`: shuffled with seed and epoch, optionally grouped by length);
    an incomplete last global batch is dropped, so every rank does the same work. Micro-batch m of rank
    r is slice (m * world + r) of its global batch, so 1 process x 4 rows, 2 processes x 2 rows and
    1 process x 2 rows x 2 accumulation steps train on the same rows at every step. Being a function of
    the step, the data order needs no state of its own in a checkpoint.
    """

    def __init__(self, lengths: list[int], batch_size: int, grad_accum: int, world: int, seed: int,
                 group_by_length: bool = False):
        self.lengths, self.seed, self.group = lengths, seed, group_by_length
        self.batch_size, self.grad_accum, self.world = batch_size, grad_accum, world
        self.global_batch = batch_size * grad_accum * world
        self.steps_per_epoch = len(lengths) // self.global_batch
        self._epoch: tuple[int, list[list[int]]] | None = None

    def _batches(self, epoch: int) -> list[list[int]]:
        if self._epoch is None or self._epoch[0] != epoch:
            batches = batch_indices(self.lengths, self.global_batch, group_by_length=self.group, seed=self.seed,
                                    epoch=epoch, shuffle=True)
            self._epoch = (epoch, [b for b in batches if len(b) == self.global_batch])
        return self._epoch[1]

    def micro_batches(self, step: int, rank: int) -> list[list[int]]:
        """Row indices of rank `rank`'s micro-batches at optimizer step `step` (0-based)."""
        epoch, k = divmod(step, self.steps_per_epoch)
        rows = self._batches(epoch)[k]
        b = self.batch_size
        return [rows[(m * self.world + rank) * b:(m * self.world + rank + 1) * b] for m in range(self.grad_accum)]
