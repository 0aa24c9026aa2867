"""Data helpers: mini-batches and input standardization."""

import numpy as np

from .normalization import Standardize, standardize  # noqa: F401


class batches:
    """Mini-batches of (x, y), reshuffled every time you iterate (once per epoch).

    Each batch is gathered into two buffers reused from batch to batch (no copy of the whole dataset per
    epoch, no allocation per batch): a batch is valid until the next one is drawn. ``len()`` is the number of
    batches per epoch. With ``shuffle`` the order comes from ``seed`` and the epoch number, so a run repeats.

    >>> for xb, yb in fastdl.data.batches(x, y, 32, seed=0): ...  # doctest: +SKIP
    """

    def __init__(self, x, y, batch_size, shuffle=True, seed=None, drop_last=False):
        if len(x) != len(y):
            raise ValueError(f"batches: x has {len(x)} samples but y has {len(y)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batches: batch_size must be a positive integer, got {batch_size!r}")
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle, self.drop_last = shuffle, drop_last
        self.seed = np.random.SeedSequence(seed).entropy if seed is None else seed
        self.epoch = 0
        self._order = np.arange(len(x))
        self._x_buffer = np.empty((self.batch_size,) + x.shape[1:], x.dtype)
        self._y_buffer = np.empty((self.batch_size,) + y.shape[1:], y.dtype)

    def __len__(self):
        full, rest = divmod(len(self.x), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self):
        if self.shuffle:
            self._order[:] = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))
        self.epoch += 1
        for start in range(0, len(self.x), self.batch_size):
            indices = self._order[start:start + self.batch_size]
            if len(indices) < self.batch_size and self.drop_last:
                return
            count = len(indices)
            np.take(self.x, indices, axis=0, out=self._x_buffer[:count])
            np.take(self.y, indices, axis=0, out=self._y_buffer[:count])
            yield self._x_buffer[:count], self._y_buffer[:count]
