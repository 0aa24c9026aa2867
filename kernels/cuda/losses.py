"""Launchers for losses.cu: the CPU backend's loss signatures. Each returns the loss as a Python float (one small
copy to the host) and writes the input gradient into ``grad_out``."""

import numpy as np

from .launch import THREADS, array_module, blocks, kernel, row_threads, total, workspace

SOURCE = "losses.cu"


def softmax_cross_entropy(logits, labels, label_smoothing, reduction_sum, grad_out):
    rows, classes = logits.shape
    scale = 1.0 if reduction_sum else 1.0 / rows
    partials = workspace("loss_partials", (rows,), np.float64, logits)
    labels = array_module(labels).ascontiguousarray(labels, dtype=np.int64)  # the kernel reads int64, densely
    kernel(SOURCE, "softmax_cross_entropy", logits.dtype, like=logits)(
        (rows,), row_threads(classes),
        (logits, labels, np.int64(classes), np.float64(label_smoothing), np.float64(scale), grad_out, partials))
    return total(partials, logits)


def _elementwise(name, first, second, reduction_sum, grad_out):
    n = first.size
    scale = 1.0 if reduction_sum else 1.0 / n
    grid = blocks(n)
    partials = workspace("loss_partials", grid, np.float64, first)
    kernel(SOURCE, name, first.dtype, like=first)(
        grid, (THREADS,), (first.reshape(-1), second.reshape(-1), np.int64(n), np.float64(scale),
                           grad_out.reshape(-1), partials))
    return total(partials, first)


def mse(pred, target, reduction_sum, grad_out):
    return _elementwise("mse", pred, target, reduction_sum, grad_out)


def binary_cross_entropy_with_logits(logits, targets, reduction_sum, grad_out):
    return _elementwise("bce_with_logits", logits, targets, reduction_sum, grad_out)
