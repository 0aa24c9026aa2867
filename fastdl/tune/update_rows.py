"""The members' update hyperparameter rows, computed for several steps ahead.

Each member's optimizer turns its parameter groups into rows of scalars for the update kernel (``group_scalars``;
Adam's depend on the step number through the bias corrections). Asking K optimizers for their rows at every step is
K Python calls over K scattered objects, run right after the members' kernels have pushed them out of the caches.
So the members' hyperparameters are read once into arrays, and again only after an edit of any optimizer
(``fastdl.optim.optimizer.hyperparameter_edits`` moves on every setting of a hyperparameter or option, a
scheduler's included); the algorithm computes every member's rows at once over those arrays, for the next several
step numbers (``stacked_scalars``, bit for bit each member's own ``group_scalars``); and the population step copies
each member's row for its step number into place itself (``kernels/cpu/population.py``), asking for new rows when a
member's step number passes them. An algorithm without the stacked form has each member asked, one step ahead.
"""

from __future__ import annotations

import numpy as np

from ..optim.optimizer import hyperparameter_edits


WINDOW_ROWS = 4096  # rows computed ahead at most (32 KiB per column): 64 steps of 64 members of one group


def _stacked_form(optimizer):
    """The optimizer's ``stacked_scalars``, or None where its class has none, or has a ``group_scalars`` of its own
    that the stacked form it inherits does not know (a subclass that changes the rows)."""
    cls = type(optimizer)
    owner = next(klass for klass in cls.__mro__ if "stacked_scalars" in vars(klass))
    if optimizer.stacked_scalars is None or cls.group_scalars is not owner.group_scalars:
        return None
    return optimizer.stacked_scalars


class UpdateRows:
    """The update rows and the clipping and skipping options of a population's optimizers (one algorithm): the
    rows of each member's next steps (``rows_window[j, k]`` is member k's for its step number ``rows_first[k] + j``),
    which the population step copies into place itself (``kernels/cpu/population.py``)."""

    def __init__(self, optimizers):
        self._optimizers = optimizers
        self._stacked = _stacked_form(optimizers[0])
        self._read_at = None  # hyperparameter_edits() when the values below were read
        self._values = None
        self.clipping = self.skipping = self.measures_norm = None
        self.rows_window = np.zeros((0, len(optimizers), 0, 0))
        self.rows_first = np.zeros(len(optimizers), np.int64)

    def refresh(self):
        """Read every member's hyperparameters and options again if any optimizer was edited since the last read
        (the window of rows is then computed anew)."""
        edits = hyperparameter_edits()
        if edits == self._read_at:
            return
        optimizers = self._optimizers
        self.clipping = np.array([optimizer.max_grad_norm or 0.0 for optimizer in optimizers])
        self.skipping = np.array([optimizer.skip_nonfinite for optimizer in optimizers], bool)
        self.measures_norm = (self.clipping > 0) | self.skipping
        if self._stacked is not None:
            self._values = {name: np.array([[group[name] for group in optimizer.param_groups]
                                            for optimizer in optimizers], np.float64)
                            for name in optimizers[0]._group_names}
            groups = len(optimizers[0].param_groups)
            for name in optimizers[0].row_options:
                self._values[name] = np.array([[float(getattr(optimizer, name))] * groups for optimizer in optimizers])
        self.rows_window = self.rows_window[:0]
        self._read_at = edits

    def compute_window(self, next_steps):
        """The rows of every member's next steps, member k's from its step number ``next_steps[k]`` on."""
        members = len(self._optimizers)
        if self._stacked is None:  # one step ahead, each member asked in turn
            rows = [[optimizer.group_scalars(group, step) for group in optimizer.param_groups]
                    for optimizer, step in zip(self._optimizers, next_steps.tolist())]
            self.rows_window = np.array([rows], np.float64)
        else:
            groups = next(iter(self._values.values())).shape[1]
            ahead = max(1, WINDOW_ROWS // (members * groups))
            steps = (next_steps[None, :] + np.arange(ahead)[:, None]).reshape(-1)
            values = {name: np.broadcast_to(value, (ahead,) + value.shape).reshape((-1,) + value.shape[1:])
                      for name, value in self._values.items()}
            rows = self._stacked(values, steps)
            self.rows_window = np.ascontiguousarray(rows.reshape((ahead, members) + rows.shape[1:]))
        self.rows_first = next_steps.copy()
