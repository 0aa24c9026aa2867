"""The training loop, for those who want one: ``fit``, ``evaluate``, ``History``, ``EarlyStopping``.

Thin and optional: it does exactly what a hand-written loop would (forward, loss, backward, optimizer step,
schedule step per epoch; the first four fused by ``compile_step``), so layers and optimizers stay usable without it.
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

from . import losses as fastdl_losses
from ._files import atomic_path
from ._typing import Array, Loss
from .backend import asarray, get_backend, to_numpy
from .data import batches
from .layers import Module
from .optim import lr_scheduler
from .optim.optimizer import Optimizer
from .seeding import default_seed
from .step import check_optimizer_holds_the_model, compile_step, flat_layers


class EarlyStopping:
    """Stop when the validation loss has not improved by ``min_delta`` for ``patience`` epochs; with
    ``restore_best`` the model gets the weights of its best epoch back at the end."""

    def __init__(self, patience=5, min_delta=0.0, restore_best=True):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"EarlyStopping: patience must be a positive integer, got {patience!r}")
        self.patience, self.min_delta, self.restore_best = patience, float(min_delta), restore_best
        self.best_loss, self.best_epoch, self.best_state, self.waited = math.inf, None, None, 0

    def update(self, epoch, val_loss, model):
        """Record an epoch; returns True when training should stop."""
        if val_loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.waited = val_loss, epoch, 0
            if self.restore_best:
                self.best_state = model.state_dict()
            return False
        self.waited += 1
        return self.waited >= self.patience


class History:
    """Per-epoch records: ``history.records`` (dicts) and ``history["val_loss"]`` (a list per key)."""

    def __init__(self):
        self.records = []
        self.stopped_early = False
        self.best_epoch = None

    def __getitem__(self, key):
        return [record.get(key) for record in self.records]

    def __len__(self):
        return len(self.records)

    def best(self):
        """The epoch with the lowest validation loss (``fit``'s early stopping sets it), else the lowest training
        loss; None before any epoch."""
        if self.best_epoch is not None:
            return self.best_epoch
        key = "val_loss" if any(value is not None for value in self["val_loss"]) else "loss"
        scored = [(record[key], record["epoch"]) for record in self.records if record.get(key) is not None]
        return min(scored)[1] if scored else None

    def figure(self):
        """The learning curves as a matplotlib figure: one panel per metric (loss; accuracy for classification),
        training solid and validation dashed, labelled axes, the best epoch (``best()``) marked."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as error:
            raise RuntimeError('History.plot needs matplotlib: pip install matplotlib (or ".[plot]" in a checkout)') \
                from error
        epochs = [record["epoch"] for record in self.records]
        metrics = [metric for metric in ("loss", "accuracy")
                   if any(value is not None for value in self[metric] + self["val_" + metric])]
        figure, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
        best = self.best()
        for axis, metric in zip(axes[0], metrics):
            for prefix, style in (("", "-"), ("val_", "--")):
                values = self[prefix + metric]
                if any(value is not None for value in values):
                    axis.plot(epochs, values, style, label=("validation " if prefix else "training ") + metric)
            if best is not None:
                axis.axvline(best, color="gray", linestyle=":", label=f"best epoch ({best})")
            axis.set_xlabel("epoch")
            axis.set_ylabel(metric)
            axis.set_title(metric)
            axis.legend()
        figure.tight_layout()
        return figure

    def plot(self, path):
        """Learning curves (see ``figure``) to a PNG, written atomically; returns the path."""
        figure = self.figure()
        import matplotlib.pyplot as plt  # figure() has imported it, or raised a clear error

        path = os.fspath(path)
        try:
            with atomic_path(path, suffix=".png") as temporary:
                figure.savefig(temporary, dpi=100)
        finally:
            plt.close(figure)
        return path


def _is_classification(loss):
    return loss is fastdl_losses.softmax_cross_entropy


def _check_data(data, name, classification, dtype):
    """fit's (x, y) pairs: arrays, x of shape (samples, features) in the model's dtype, as many labels as samples,
    and for softmax cross-entropy integer class labels."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"fit: {name} must be an (x, y) pair, got {type(data).__name__}")
    x, y = data
    for role, array in (("x", x), ("y", y)):
        if not (hasattr(array, "shape") and hasattr(array, "dtype")):
            raise TypeError(f"fit: {name}'s {role} must be an array (numpy, or the active backend's), got "
                            f"{type(array).__name__}; np.asarray makes one")
    if x.ndim != 2:
        raise ValueError(f"fit: {name}'s x must have 2 dimensions (samples, features), got shape {tuple(x.shape)}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"fit: {name}'s x has dtype {x.dtype}, the model's parameters {dtype} (shape "
                        f"{tuple(x.shape)}); convert it with x.astype(np.{dtype})")
    if len(x) == 0:
        raise ValueError(f"fit: {name}'s x has no rows (shape {tuple(x.shape)})")
    if len(y) != len(x):
        raise ValueError(f"fit: {name}'s x has {len(x)} samples but its y has {len(y)}")
    if classification and (np.ndim(y) != 1 or getattr(getattr(y, "dtype", None), "kind", "") not in "iu"):
        raise ValueError(f"fit: softmax_cross_entropy takes {name}'s y as integer class labels of shape ({len(x)},), "
                         f"got {getattr(y, 'dtype', type(y).__name__)} {tuple(np.shape(y))}")
    if not classification and dtype is not None and y.dtype != dtype:
        raise TypeError(f"fit: {name}'s y has dtype {y.dtype}, the model's parameters {dtype} (shape "
                        f"{tuple(y.shape)}); convert it with y.astype(np.{dtype})")


def _check_values(data, name, classification, model):
    """What a batch of ``data`` would be refused for, checked over the whole set before the first batch: a bad
    sample in a late batch would otherwise stop fit after it had trained on the others."""
    x, y = data
    layers = flat_layers(model)
    features = next((width for width in map(_width_in, layers) if width is not None), None)
    if features is not None and x.shape[1] != features:
        raise ValueError(f"fit: {name}'s x has {x.shape[1]} features, the model takes {features} (shape "
                         f"{tuple(x.shape)})")
    if not _all_finite(x):
        raise ValueError(f"fit: {name}'s x contains NaN or Inf (shape {tuple(x.shape)})")
    if classification:
        classes = next((width for width in map(_width_out, reversed(layers)) if width is not None), None)
        low, high = int(y.min()), int(y.max())
        if classes is not None and (low < 0 or high >= classes):
            raise ValueError(f"fit: {name}'s labels must lie in [0, {classes}) for the model's {classes} outputs, got "
                             f"values in [{low}, {high}]")
    elif y.dtype.kind == "f" and not _all_finite(y):  # integer or boolean targets hold no NaN
        raise ValueError(f"fit: {name}'s y contains NaN or Inf (shape {tuple(y.shape)})")


def _width_in(layer):
    return getattr(layer, "in_features", None) or getattr(layer, "num_features", None)


def _width_out(layer):
    return getattr(layer, "out_features", None) or getattr(layer, "num_features", None)


def _all_finite(array):
    backend = get_backend()
    if isinstance(array, backend.array_type):
        return bool(backend.kernels.all_finite(array))
    return bool(np.isfinite(to_numpy(array)).all())


EVALUATION_BATCH = 1024  # evaluate's default chunk of rows (Population.fit scores its members in the same chunks)


def evaluate(model: Module, x: Array, y: Array, loss: Loss = fastdl_losses.softmax_cross_entropy,
             batch_size: int = EVALUATION_BATCH) -> dict:
    """{"loss": mean loss, "accuracy": fraction correct (softmax cross-entropy only)} in eval mode.

    The model's train/eval mode is restored afterwards."""
    fastdl_losses.check_loss(loss, "evaluate")
    if len(x) == 0:
        raise ValueError(f"evaluate: x has no rows (shape {tuple(x.shape)}); there is nothing to score")
    modes = [module.training for module in model.modules()]
    model.eval()
    try:
        total_loss, correct = 0.0, 0
        for start in range(0, len(x), batch_size):
            xb, yb = asarray(x[start:start + batch_size]), y[start:start + batch_size]
            outputs = model(xb)
            value, _ = loss(outputs, asarray(yb))
            total_loss += float(value) * len(yb)
            if _is_classification(loss):
                correct += int((to_numpy(outputs).argmax(axis=1) == to_numpy(yb)).sum())
    finally:
        for module, mode in zip(model.modules(), modes):
            module.training = mode
    result = {"loss": total_loss / len(x)}
    if _is_classification(loss):
        result["accuracy"] = correct / len(x)
    return result


class _Progress:
    """A bar redrawn in place on a terminal; elsewhere nothing until the epoch's one-line summary."""

    def __init__(self, enabled, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and self.stream.isatty()

    def batch(self, epoch, epochs, done, total, loss):
        if self.live and (done == total or done % max(1, total // 50) == 0):
            filled = int(30 * done / total)
            self.stream.write(f"\repoch {epoch}/{epochs} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total} "
                              f"loss {loss:.4f}")
            self.stream.flush()

    def epoch(self, record, epochs):
        if not self.enabled:
            return
        parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['loss']:.4f}"]
        for key in ("accuracy", "val_loss", "val_accuracy"):
            if record.get(key) is not None:
                parts.append(f"{key} {record[key]:.4f}")
        parts.append(f"{record['samples_per_second']:,.0f} samples/s")
        self.stream.write(("\r" if self.live else "") + "  ".join(parts) + " " * 10 + "\n")
        self.stream.flush()


class _DistributedStep:
    """Forward, loss, backward with the gradients all-reduced as the backward goes, update: the layer path
    (the all-reduce must sit between backward and update, which a compiled step cannot leave)."""

    def __init__(self, model, loss, optimizer):
        self.model, self.loss, self.optimizer, self.outputs = model, loss, optimizer, None

    def __call__(self, x, y):
        from . import distributed

        self.outputs = self.model(x)
        value, grad = self.loss(self.outputs, y)
        distributed.backward_and_allreduce(self.model, grad, self.optimizer)
        self.optimizer.step()
        return float(value)


def fit(model: Module, loss: Loss, optimizer: Optimizer, train: tuple[Array, Array],
        val: tuple[Array, Array] | None = None, epochs: int = 10, batch_size: int = 32, scheduler=None,
        early_stopping: EarlyStopping | None = None, callbacks: list | None = None, progress: bool = True,
        seed: int | None = None, distributed: bool = False, batch_callbacks: list | None = None,
        accumulation_steps: int = 1) -> History:
    """Train ``model`` on ``train=(x, y)`` with mini-batches; returns a ``History``.

    Each epoch: shuffled mini-batches (``fastdl.data.batches``), forward, ``loss(outputs, targets)`` -> (value,
    gradient), backward, ``optimizer.step()``, as one compiled call per batch (``fastdl.compile_step``) when the
    model, loss and backend allow it, else layer by layer (with one ``CompileStepFallback`` warning); then
    ``scheduler.step()`` (per epoch), evaluation on ``val``, ``early_stopping`` on the validation loss (restoring
    the best weights at the end) and each callback as ``callback(record, model)``; a callback returning True stops
    training. ``batch_callbacks`` are called the same way after every step with ``{"epoch", "batch", "loss",
    "lr"}``; one returning True ends training after that step (the epoch's record then covers the batches that ran).
    ``fastdl.CSVLogger(path)`` logs every epoch. Records hold loss, accuracy (softmax cross-entropy), val_loss,
    val_accuracy, seconds and samples_per_second per epoch.

    ``accumulation_steps=k`` updates once every k batches with the mean gradient over their samples (one batch
    of ``k * batch_size`` in memory of one; ``fastdl.compile_step``'s accumulation), and once more at the end of
    an epoch for the batches left over.

    ``distributed=True`` (inside ``mpirun``, see ``fastdl.distributed``): rank 0's weights, optimizer state and
    seed go to every rank, each rank trains on its share of every global batch of ``batch_size * world_size``,
    gradients are averaged over the ranks after each backward (overlapping it), and the records hold the
    global loss and accuracy; only rank 0 shows progress.
    """
    fastdl_losses.check_loss(loss, "fit")
    check_optimizer_holds_the_model(model, optimizer, "fit")
    dtype = next((parameter.dtype for parameter in model.parameters()), None)
    classification = _is_classification(loss)
    for name, data in (("train", train), ("val", val)):
        if data is not None:  # refused before an epoch trains, not at its first batch or when it ends
            _check_data(data, name, classification, dtype)
            _check_values(data, name, classification, model)
    x, y = train
    if early_stopping is not None and val is None:
        raise ValueError("fit: early_stopping watches the validation loss; pass val=(x_val, y_val)")
    follows_val_loss = isinstance(scheduler, lr_scheduler.ReduceLROnPlateau)
    if follows_val_loss and val is None:
        raise ValueError("fit: ReduceLROnPlateau follows the validation loss; pass val=(x_val, y_val)")
    if distributed and accumulation_steps != 1:
        raise ValueError("fit: accumulation_steps with distributed=True is not supported (the gradients' all-reduce "
                         "would run on every micro-batch); use a larger batch_size, which spreads over the ranks")
    if distributed:
        from . import distributed as dist

        dist.init()
        seed = dist.broadcast_object(default_seed(seed, "fit"))
        dist.broadcast_parameters(model)
        dist.broadcast_optimizer_state(optimizer)
        loader = batches(x, y, batch_size, shuffle=True, seed=seed, rank=dist.rank(), world_size=dist.world_size())
        step = _DistributedStep(model, loss, optimizer)
        progress = progress and dist.is_main()
    else:
        loader = batches(x, y, batch_size, shuffle=True, seed=default_seed(seed, "fit"))
        # one compiled call per batch where the model allows it
        step = compile_step(model, loss, optimizer, accumulation_steps=accumulation_steps)
    bar = _Progress(progress)
    history = History()
    model.train()
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        total_loss, correct, seen = 0.0, 0, 0
        stop = False
        for done, (xb, yb) in enumerate(loader, start=1):
            value = step(asarray(xb), asarray(yb))
            if _is_classification(loss):
                correct += int((to_numpy(step.outputs).argmax(axis=1) == yb).sum())
            total_loss += float(value) * len(yb)
            seen += len(yb)
            bar.batch(epoch, epochs, done, len(loader), total_loss / seen)
            if batch_callbacks:
                batch_record = {"epoch": epoch, "batch": done, "loss": float(value), "lr": optimizer.lr}
                for callback in batch_callbacks:
                    stop = bool(callback(batch_record, model)) or stop
                if distributed:  # every rank stops at the same step, or the others would wait in a collective
                    stop = dist.sum_over_ranks([float(stop)])[0] > 0
                if stop:
                    break
        if not distributed:
            step.flush()  # the epoch's last micro-batches, when they do not fill an accumulation
        seconds = time.perf_counter() - start
        if distributed:  # the epoch's totals over every rank
            total_loss, correct, seen = dist.sum_over_ranks([total_loss, correct, seen])
        record = {"epoch": epoch, "loss": total_loss / seen, "lr": optimizer.lr, "seconds": seconds,
                  "samples_per_second": seen / seconds}
        if _is_classification(loss):
            record["accuracy"] = correct / seen
        if scheduler is not None and not follows_val_loss:
            scheduler.step()
        if val is not None:
            scores = evaluate(model, val[0], val[1], loss=loss)
            record.update({f"val_{key}": value for key, value in scores.items()})
            if follows_val_loss:
                scheduler.step(record["val_loss"])
        history.records.append(record)
        bar.epoch(record, epochs)
        stop = (early_stopping is not None and early_stopping.update(epoch, record["val_loss"], model)) or stop
        for callback in callbacks or ():
            stop = bool(callback(record, model)) or stop
        if distributed:
            stop = dist.sum_over_ranks([float(stop)])[0] > 0
        if stop:
            history.stopped_early = True
            break
    if early_stopping is not None:
        history.best_epoch = early_stopping.best_epoch
        if early_stopping.restore_best and early_stopping.best_state is not None:
            model.load_state_dict(early_stopping.best_state)
    return history
