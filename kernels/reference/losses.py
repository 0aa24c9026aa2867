"""Losses with their input gradients, plainly, as PyTorch defines them.

Each returns the loss as a Python float and writes d(loss)/d(input) into ``grad_out``. ``reduction_sum``
selects ``reduction="sum"``; otherwise the mean (over samples for cross-entropy, over elements for MSE/BCE).
"""

import functools

import numpy as np

from .activations import sigmoid, softmax, softplus


def _quiet(loss):
    """NaN or Inf in the inputs becomes fastdl.losses' ValueError naming the input, not numpy's RuntimeWarning (the
    compiled backends' kernels raise no warnings, so only these pay for the context)."""
    @functools.wraps(loss)
    def quiet(*args):
        with np.errstate(invalid="ignore", over="ignore"):
            return loss(*args)
    return quiet


@_quiet
def softmax_cross_entropy(logits, labels, label_smoothing, reduction_sum, grad_out):
    n, classes = logits.shape
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    target = np.full(logits.shape, label_smoothing / classes, dtype=logits.dtype)
    valid = (labels >= 0) & (labels < classes)  # an invalid label: that sample's loss is NaN (as on every backend)
    target[np.arange(n)[valid], labels[valid]] += 1 - label_smoothing
    per_sample = np.where(valid, -(target * log_probs).sum(axis=1), np.nan)
    scale = 1.0 if reduction_sum else 1.0 / n
    grad_out[...] = (softmax(logits) - target) * scale
    return float(per_sample.sum() * scale)


@_quiet
def mse(pred, target, reduction_sum, grad_out):
    diff = pred - target
    scale = 1.0 if reduction_sum else 1.0 / diff.size
    grad_out[...] = 2 * diff * scale
    return float((diff * diff).sum() * scale)


@_quiet
def binary_cross_entropy_with_logits(logits, targets, reduction_sum, grad_out):
    # -[t log s(z) + (1 - t) log(1 - s(z))] = softplus(z) - t z
    per_element = softplus(logits) - targets * logits
    scale = 1.0 if reduction_sum else 1.0 / logits.size
    grad_out[...] = (sigmoid(logits) - targets) * scale
    return float(per_element.sum() * scale)
