"""Fused losses for the CPU: the loss and its input gradient in one pass over the input.

Softmax cross-entropy works row by row while the row sits in L1: max, log-sum-exp, loss and
gradient = (softmax - target) * scale. The exponentials are computed in the logits' precision with a
vectorizable exp (``vector_math.py``); sums are carried in float64 so a float32 loss over a large batch
keeps its digits. Serial, for the same reason as the dense epilogues (they sit next to a GEMM).
"""

import math

import numpy as np
from numba import njit

from .vector_math import exp


@njit(fastmath={"reassoc"}, cache=True)
def _sums_in_float64(first, second):
    """(sum(first), sum(second)) in float64. Reassociation lets LLVM keep several partial sums in vector lanes:
    in one chain each add waits for the last (5 ms of a 13 ms loss at 4096 x 1000). The order is fixed by this
    function's compiled loop, vectorized once, so the result does not change between calls or callers
    (compile_step's bit-exact tests); only these additions carry the flag, so exp's rounding tricks are not
    reassociated. (Fused multiply-adds in the kernel itself did make compile_step's copy differ: not used.)"""
    first_total = 0.0
    second_total = 0.0
    for j in range(first.shape[0]):
        first_total += first[j]
        second_total += second[j]
    return first_total, second_total


@njit(inline="always")
def _largest(row):
    """max(row) over four interleaved running maxima: one running maximum is a chain of compares, each waiting
    for the last (a max is exact, so the result is the same in any order)."""
    m0 = m1 = m2 = m3 = row[0]
    n = row.shape[0]
    j = 0
    while j + 4 <= n:
        m0 = max(m0, row[j])
        m1 = max(m1, row[j + 1])
        m2 = max(m2, row[j + 2])
        m3 = max(m3, row[j + 3])
        j += 4
    for j in range(j, n):
        m0 = max(m0, row[j])
    return max(max(m0, m1), max(m2, m3))


@njit(cache=True)
def softmax_cross_entropy_kernel(logits, labels, label_smoothing, scale, grad_out):
    T = grad_out.dtype.type
    rows, classes = logits.shape
    off_target = label_smoothing / classes
    total = 0.0
    for i in range(rows):
        row = logits[i]
        largest = _largest(row)
        out_row = grad_out[i]
        for j in range(classes):  # the exponentials, kept for the gradient below (vectorized: vector_math.exp)
            out_row[j] = exp(row[j] - largest)
        sum_exp, sum_logits = _sums_in_float64(out_row, row)
        log_sum = math.log(sum_exp)
        sum_shifted = sum_logits - classes * np.float64(largest)
        label = labels[i]
        # -sum_j q_j log p_j with q = (1 - s) onehot + s / C and log p_j = shifted_j - log_sum
        target_shifted = np.float64(row[label] - largest)
        total += (1.0 - label_smoothing) * (log_sum - target_shifted) + off_target * (classes * log_sum - sum_shifted)
        inverse = T(1.0 / sum_exp)
        off_target_scaled = T(off_target * scale)
        scale_t = T(scale)
        for j in range(classes):
            out_row[j] = out_row[j] * inverse * scale_t - off_target_scaled
        out_row[label] -= T((1.0 - label_smoothing) * scale)
    return total * scale


@njit(cache=True)
def mse_kernel(pred, target, scale, grad_out):
    T = grad_out.dtype.type
    total = 0.0
    for k in range(pred.shape[0]):
        diff = pred[k] - target[k]
        total += np.float64(diff) * diff
        grad_out[k] = T(2.0 * scale) * diff
    return total * scale


@njit(cache=True)
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
    return softmax_cross_entropy_kernel(logits, labels, float(label_smoothing), scale, grad_out)


def mse(pred, target, reduction_sum, grad_out):
    scale = 1.0 if reduction_sum else 1.0 / pred.size
    return mse_kernel(pred.reshape(-1), target.reshape(-1), scale, grad_out.reshape(-1))


def binary_cross_entropy_with_logits(logits, targets, reduction_sum, grad_out):
    scale = 1.0 if reduction_sum else 1.0 / logits.size
    return bce_with_logits_kernel(logits.reshape(-1), targets.reshape(-1), scale, grad_out.reshape(-1))
