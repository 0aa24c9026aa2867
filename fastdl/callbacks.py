"""Callbacks for ``fit``: an epoch callback is called as ``callback(record, model)`` after each epoch, a batch
callback (``fit(batch_callbacks=...)``) the same way after each step; either stops training by returning True."""

import csv
import os

from ._files import atomic_path


class CSVLogger:
    """An epoch callback that keeps ``path`` a CSV file of every epoch's record (epoch, loss, accuracy, val_loss,
    ..., lr, seconds), rewritten atomically after each epoch: complete and readable while training runs.

    >>> history = fit(model, loss, optimizer, data, callbacks=[CSVLogger("training.csv")])  # doctest: +SKIP
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.rows = []

    def __call__(self, record, model):
        self.rows.append(dict(record))
        columns = list(dict.fromkeys(key for row in self.rows for key in row))  # in order of first appearance
        with atomic_path(self.path, suffix=".csv") as temporary:
            with open(temporary, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=columns)
                writer.writeheader()
                writer.writerows(self.rows)
        return False
