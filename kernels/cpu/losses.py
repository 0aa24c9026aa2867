"""Fused losses for the CPU: the loss and its input gradient in one pass over the input.

Softmax cross-entropy: max, log-sum-exp, loss and gradient = (softmax - target) * scale. The exponentials are
computed in the logits' precision with a vectorizable exp (``vector_math.py``); sums are carried in float64 so a
float32 loss over a large batch keeps its digits. Serial, for the same reason as the dense epilogues (they sit next
to a GEMM).

Rows of at least WIDE_CLASSES classes run with 512-bit vectors (``vector_width.py``), row by row while the row sits
in L1. Narrower rows (a classifier's usual 2-20 classes) fill too few vectors for that: a loop of 10 exps is one
vector and two scalar exps, so they run the exps as one loop over the whole contiguous batch, between a pass that
writes each row's shifted logits and one that sums, logs and scales each row (1.8x faster at 10 classes and 32-4096
rows; the same operations on the same values, so the same bits). ``wide_rows(classes)`` gives the kernel's ``wide``
argument: True or None, two compiled variants.
"""

import math

import numpy as np
from numba import njit

from .reductions import largest as _largest
from .reductions import sums_in_float64 as _sums_in_float64
from .vector_math import exp
from .vector_width import wide_vectors
from .reference_counts import WITHOUT_REFERENCE_COUNTS

WIDE_CLASSES = 64


def wide_rows(classes):
    return True if classes >= WIDE_CLASSES else None


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS)
def softmax_cross_entropy_kernel(logits, labels, label_smoothing, scale, grad_out, wide):
    if wide is not None:  # pruned at compile time where wide is None
        wide_vectors()
    T = grad_out.dtype.type
    rows, classes = logits.shape
    off_target = label_smoothing / classes
    if wide is None:  # narrow rows: the exponentials as one loop over the batch (vectorized: vector_math.exp)
        for i in range(rows):
            row = logits[i]
            largest = _largest(row)
            out_row = grad_out[i]
            for j in range(classes):
                out_row[j] = row[j] - largest
        every = grad_out.reshape(-1)  # C-contiguous (the callers' contract)
        for k in range(every.shape[0]):
            every[k] = exp(every[k])
    total = 0.0
    for i in range(rows):
        row = logits[i]
        largest = _largest(row)  # narrow rows: again (a few compares), as no array is at hand to keep it in
        out_row = grad_out[i]
        if wide is not None:  # the exponentials of the row, while it sits in L1
            for j in range(classes):
                out_row[j] = exp(row[j] - largest)
        sum_exp, sum_logits = _sums_in_float64(out_row, row)
        log_sum = math.log(sum_exp)
        sum_shifted = sum_logits - classes * np.float64(largest)
        label = labels[i]
        # a label out of range makes the loss NaN (never an index): the caller then names the labels
        valid = 0 <= label < classes
        # -sum_j q_j log p_j with q = (1 - s) onehot + s / C and log p_j = shifted_j - log_sum
        target_shifted = np.float64(row[label] - largest) if valid else math.nan
        total += (1.0 - label_smoothing) * (log_sum - target_shifted) + off_target * (classes * log_sum - sum_shifted)
        inverse = T(1.0 / sum_exp)
        off_target_scaled = T(off_target * scale)
        scale_t = T(scale)
        for j in range(classes):
            out_row[j] = out_row[j] * inverse * scale_t - off_target_scaled
        if valid:
            out_row[label] -= T((1.0 - label_smoothing) * scale)
    return total * scale


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS)
def mse_kernel(pred, target, scale, grad_out):
    T = grad_out.dtype.type
    total = 0.0
    for k in range(pred.shape[0]):
        diff = pred[k] - target[k]
        total += np.float64(diff) * diff
        grad_out[k] = T(2.0 * scale) * diff
    return total * scale


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS)
def bce_with_logits_kernel(logits, targets, scale, grad_out):
    T = grad_out.dtype.type
    total = 0.0
    for k in range(logits.shape[0]):
        z = np.float64(logits[k])
        t = np.float64(targets[k])
        total += max(z, 0.0) + math.log1p(math.exp(-abs(z))) - t * z
        s = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
        grad_out[k] = T((s - t) * scale)
    return total * scale


def softmax_cross_entropy(logits, labels, label_smoothing, reduction_sum, grad_out):
    scale = 1.0 if reduction_sum else 1.0 / logits.shape[0]
    return softmax_cross_entropy_kernel(logits, labels, float(label_smoothing), scale, grad_out,
                                        wide_rows(logits.shape[1]))


def mse(pred, target, reduction_sum, grad_out):
    scale = 1.0 if reduction_sum else 1.0 / pred.size
    return mse_kernel(pred.reshape(-1), target.reshape(-1), scale, grad_out.reshape(-1))


def binary_cross_entropy_with_logits(logits, targets, reduction_sum, grad_out):
    scale = 1.0 if reduction_sum else 1.0 / logits.size
    return bce_with_logits_kernel(logits.reshape(-1), targets.reshape(-1), scale, grad_out.reshape(-1))
