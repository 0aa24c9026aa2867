"""Data helpers: mini-batches and input standardization."""

import numpy as np

from .normalization import Standardize, standardize  # noqa: F401
from .seeding import default_seed


class batches:
    """Mini-batches of (x, y), reshuffled every time you iterate (once per epoch).

    Each batch is gathered into two buffers reused from batch to batch (no copy of the whole dataset per
    epoch, no allocation per batch): a batch is valid until the next one is drawn. ``len()`` is the number of
    batches per epoch. With ``shuffle`` the order comes from ``seed`` and the epoch number, so a run repeats.

    Data-parallel training: with ``rank`` and ``world_size`` every rank takes its own contiguous share of each
    global batch of ``batch_size * world_size`` samples of the epoch's permutation (all ranks need the same
    ``seed``), so world_size ranks at batch B see exactly the samples of one process at batch world_size * B.
    A last global batch that does not split evenly drops its remainder (at most world_size - 1 samples).

    >>> for xb, yb in fastdl.data.batches(x, y, 32, seed=0): ...  # doctest: +SKIP
    """

    def __init__(self, x, y, batch_size, shuffle=True, seed=None, drop_last=False, rank=0, world_size=1):
        if len(x) != len(y):
            raise ValueError(f"batches: x has {len(x)} samples but y has {len(y)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batches: batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(world_size, bool) or not isinstance(world_size, (int, np.integer)) or world_size < 1:
            raise ValueError(f"batches: world_size must be a positive integer, got {world_size!r}")
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < world_size:
            raise ValueError(f"batches: rank must lie in [0, {world_size}), got {rank!r}")
        if world_size > 1 and seed is None and shuffle:
            raise ValueError("batches: with world_size > 1 every rank needs the same seed (pass seed=...)")
        self.rank, self.world_size = int(rank), int(world_size)
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle, self.drop_last = shuffle, drop_last
        self.seed = default_seed(seed, "batches")
        self.epoch = 0
        self._order = np.arange(len(x))
        self._x_buffer = np.empty((self.batch_size,) + x.shape[1:], x.dtype)
        self._y_buffer = np.empty((self.batch_size,) + y.shape[1:], y.dtype)

    def __len__(self):
        full, rest = divmod(len(self.x), self.batch_size * self.world_size)
        last = rest // self.world_size
        return full + (1 if last and not (self.drop_last and last < self.batch_size) else 0)

    def __iter__(self):
        if self.shuffle:
            self._order[:] = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))
        self.epoch += 1
        step = self.batch_size * self.world_size
        for start in range(0, len(self.x), step):
            block = self._order[start:start + step]
            share = len(block) // self.world_size
            if share == 0 or (share < self.batch_size and self.drop_last):
                return
            indices = block[self.rank * share:(self.rank + 1) * share]
            count = len(indices)
            np.take(self.x, indices, axis=0, out=self._x_buffer[:count])
            np.take(self.y, indices, axis=0, out=self._y_buffer[:count])
            yield self._x_buffer[:count], self._y_buffer[:count]
