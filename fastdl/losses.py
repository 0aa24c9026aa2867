"""Losses, each returning ``(loss, grad_of_input)`` from one fused pass, as PyTorch defines them.

``reduction="mean"`` (default) divides by the batch size for cross-entropy and by the number of elements for MSE and
BCE; ``"sum"`` does not divide. An empty batch gives NaN for the mean and 0 for the sum, as in PyTorch (its gradient is
empty); the compiled training step refuses one instead. Pass ``out=`` (an array shaped like the input) to receive the
gradient without allocating.

NaN or Inf in an input is a ValueError, found without a pass of its own: it always makes the loss NaN or Inf
(every input element enters the loss's sum: a NaN stays NaN, an Inf becomes Inf or, times a zero target
weight, NaN), so the inputs are scanned, to name the culprit, only when the loss comes out non-finite. A finite
input can still overflow a float64 MSE; that loss is returned as it is. A cross-entropy label outside
[0, classes) is found the same way: every backend's kernel makes that sample's loss NaN (it never indexes with
it), and the labels are checked, before the logits, only then (on a GPU: no reductions and host reads of the
labels' minimum and maximum in every call). ``out`` is written either way.

>>> loss, grad = softmax_cross_entropy(np.zeros((2, 3), np.float32), np.array([0, 2]))
"""

from __future__ import annotations

import math

import numpy as np

from . import _checks
from ._typing import Array
from .backend import get_backend

REDUCTIONS = ("mean", "sum")


def check_loss(loss, owner):
    """A loss argument must be a function ``loss(outputs, targets) -> (value, gradient)``; a name such as
    "cross_entropy" is refused here, with the functions to pass, rather than failing at the first batch."""
    if not callable(loss):
        raise TypeError(f"{owner}: loss must be a loss function such as fastdl.losses.softmax_cross_entropy, "
                        f"fastdl.losses.mse or fastdl.losses.binary_cross_entropy_with_logits, got "
                        f"{type(loss).__name__} {loss!r}")


def _reduction_sum(reduction, owner):
    if reduction not in REDUCTIONS:
        raise ValueError(f"{owner}: reduction must be 'mean' or 'sum', got {reduction!r}")
    return reduction == "sum"


def _finite(loss, owner, inputs):
    """``loss``, after naming any input that holds NaN or Inf; the inputs are scanned only for a non-finite loss."""
    if not math.isfinite(loss):
        for name, array in inputs:
            _checks.array(array, owner, name, finite=True)
    return loss


def _empty_batch_loss(reduction_sum):
    """The loss of a batch without samples: the sum over nothing, or that sum divided by zero (NaN, as PyTorch)."""
    return 0.0 if reduction_sum else math.nan


def _checked_call(logits, labels, out, backend):
    """Whether a classification loss's call would pass every check below as it is: the backend's arrays, float
    logits of shape (N, C) with N and C positive, int64 labels of shape (N,), a C-contiguous writable ``out`` like
    the logits. Small models call a loss every few microseconds: this one expression costs a third of the checks
    it stands for, and anything else (including a non-finite loss) goes through them, for their messages."""
    array_type = backend.array_type
    return (isinstance(logits, array_type) and isinstance(labels, array_type) and isinstance(out, array_type)
            and logits.ndim == 2 and logits.dtype in _checks.FLOAT_DTYPES and logits.flags.c_contiguous
            and logits.shape[0] > 0 and logits.shape[1] > 0 and labels.dtype == np.int64
            and labels.shape == logits.shape[:1] and out.shape == logits.shape and out.dtype == logits.dtype
            and out.flags.c_contiguous and out.flags.writeable)


def _gradient_buffer(out, like, owner, xp):
    if out is None:
        return xp.empty_like(like)
    _checks.backend_array(out, owner, "out")
    if out.shape != like.shape or out.dtype != like.dtype or not out.flags.c_contiguous:
        raise ValueError(f"{owner}: out must be a C-contiguous {like.dtype} array of shape {tuple(like.shape)}, "
                         f"got {out.dtype} {tuple(out.shape)}")
    if not out.flags.writeable:
        raise ValueError(f"{owner}: out is read-only ({out.dtype} {tuple(out.shape)}); pass a writable array")
    return out


def softmax_cross_entropy(logits: Array, labels: Array, reduction: str = "mean", label_smoothing: float = 0.0,
                          out: Array | None = None) -> tuple[float, Array]:
    """Cross-entropy of softmax(logits) against integer labels, and its gradient w.r.t. the logits.

    loss_i = -sum_j q_ij log softmax(logits_i)_j with q_i = (1 - s) onehot(label_i) + s / C (label smoothing s,
    Szegedy et al., 2016); gradient = (softmax(logits) - q) / N for the mean. Computed from the shifted logits,
    so it never overflows.
    """
    owner = "softmax_cross_entropy"
    backend = get_backend()
    if _checked_call(logits, labels, out, backend) and 0.0 <= label_smoothing <= 1.0 and reduction in REDUCTIONS:
        loss = backend.kernels.softmax_cross_entropy(logits, labels, float(label_smoothing), reduction == "sum", out)
        if math.isfinite(loss):
            return loss, out
    _checks.backend_array(logits, owner, "logits")
    if getattr(logits, "ndim", None) == 1 and getattr(logits.dtype, "kind", "") in "iu" \
            and getattr(labels, "ndim", None) == 2:
        raise TypeError(f"{owner}: logits are integers of shape {tuple(logits.shape)} and labels floats of shape "
                        f"{tuple(labels.shape)}: were they swapped? The call is softmax_cross_entropy(logits, labels)")
    _checks.float_array(logits, owner, "logits")
    backend = _checks.array(logits, owner, "logits", ndim=2)
    _checks.backend_array(labels, owner, "labels")
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"{owner}: labels must have shape ({logits.shape[0]},) to match logits {tuple(logits.shape)}, "
                         f"got {tuple(labels.shape)}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{owner}: labels must be integers, got dtype {labels.dtype}")
    if logits.shape[1] == 0:
        raise ValueError(f"{owner}: logits must have at least one class, got shape {tuple(logits.shape)}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{owner}: label_smoothing must lie in [0, 1], got {label_smoothing}")
    reduction_sum = _reduction_sum(reduction, owner)
    grad = _gradient_buffer(out, logits, owner, backend.xp)
    if logits.shape[0] == 0:
        return _empty_batch_loss(reduction_sum), grad
    logits = backend.xp.ascontiguousarray(logits)
    int_labels = labels.astype(np.int64, copy=False)
    loss = backend.kernels.softmax_cross_entropy(logits, int_labels, float(label_smoothing), reduction_sum, grad)
    if not math.isfinite(loss) and labels.size:  # a label out of range, or NaN/Inf in the logits: name the culprit
        _check_labels(labels, logits.shape, owner)
    return _finite(loss, owner, [("logits", logits)]), grad


def _check_labels(labels, shape, owner):
    classes = shape[1]
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        raise ValueError(f"{owner}: labels must lie in [0, {classes}) for logits of shape {tuple(shape)}, "
                         f"got values in [{low}, {high}]")


def _pair(owner, first, second, names):
    _checks.backend_array(first, owner, names[0])
    _checks.float_array(first, owner, names[0])
    backend = _checks.array(first, owner, names[0])
    _checks.array(second, owner, names[1], dtype=first.dtype)
    _checks.same_shape(first, second, owner, *names)
    xp = backend.xp
    return backend, xp.ascontiguousarray(first), xp.ascontiguousarray(second)


def mse(pred: Array, target: Array, reduction: str = "mean", out: Array | None = None) -> tuple[float, Array]:
    """Mean squared error: mean((pred - target)^2); gradient 2 (pred - target) / n."""
    backend, pred, target = _pair("mse", pred, target, ("pred", "target"))
    grad = _gradient_buffer(out, pred, "mse", backend.xp)
    reduction_sum = _reduction_sum(reduction, "mse")
    if pred.size == 0:
        return _empty_batch_loss(reduction_sum), grad
    loss = backend.kernels.mse(pred, target, reduction_sum, grad)
    return _finite(loss, "mse", [("pred", pred), ("target", target)]), grad


def binary_cross_entropy_with_logits(logits: Array, targets: Array, reduction: str = "mean",
                                     out: Array | None = None) -> tuple[float, Array]:
    """-[t log sigmoid(z) + (1 - t) log(1 - sigmoid(z))], computed as softplus(z) - t z; gradient sigmoid(z) - t."""
    owner = "binary_cross_entropy_with_logits"
    backend, logits, targets = _pair(owner, logits, targets, ("logits", "targets"))
    grad = _gradient_buffer(out, logits, owner, backend.xp)
    reduction_sum = _reduction_sum(reduction, owner)
    if logits.size == 0:
        return _empty_batch_loss(reduction_sum), grad
    loss = backend.kernels.binary_cross_entropy_with_logits(logits, targets, reduction_sum, grad)
    return _finite(loss, owner, [("logits", logits), ("targets", targets)]), grad
