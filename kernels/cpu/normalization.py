"""Batch normalization and dropout for the CPU.

Batch norm training forward is two passes over x: (1) per-feature shifted sums over fixed blocks of
BLOCK_ROWS rows (each block's partials in float64, shifted by the first row so data with a large mean keeps
its digits), combined in block order, so the result never depends on the thread count; (2) one pass that
normalizes, scales, shifts and applies the fused activation in place on each output row. Running statistics
are updated in the same call. Backward is two passes too: the reductions sum(dz) and sum(dz * x_hat), then
dx, recomputing x_hat and the activation's derivative on the fly (never materialized).

Each kernel body is written once (inlined helpers with ``prange``) and compiled twice: ``*_parallel`` for
inputs of at least PARALLEL_MIN_ELEMENTS, ``*_serial`` below, where waking a second thread pool costs more
than it saves (see ``dense.py``).
"""

import math

import numpy as np
from numba import njit, prange

from .activations import activate_row, activation_grad_row
from .counter_rng import uniform

BLOCK_ROWS = 64
PARALLEL_MIN_ELEMENTS = 1 << 18


def blocks_for(rows):
    return (rows + BLOCK_ROWS - 1) // BLOCK_ROWS


@njit(inline="always")
def _statistics(x, workspace, mean_out, inv_std_out, eps):
    """Biased mean and 1/sqrt(var + eps) per feature; returns nothing, fills mean_out and inv_std_out."""
    rows, columns = x.shape
    blocks = (rows + 64 - 1) // 64
    shift = x[0]
    for b in prange(blocks):
        sums = workspace[2 * b]
        squares = workspace[2 * b + 1]
        sums[:] = 0.0
        squares[:] = 0.0
        for i in range(b * 64, min(rows, (b + 1) * 64)):
            row = x[i]
            for j in range(columns):
                d = np.float64(row[j]) - np.float64(shift[j])
                sums[j] += d
                squares[j] += d * d
    for j in range(columns):
        total = 0.0
        total_squares = 0.0
        for b in range(blocks):  # fixed order: the same result for any number of threads
            total += workspace[2 * b, j]
            total_squares += workspace[2 * b + 1, j]
        shifted_mean = total / rows
        variance = max(total_squares / rows - shifted_mean * shifted_mean, 0.0)
        mean_out[j] = np.float64(shift[j]) + shifted_mean
        inv_std_out[j] = 1.0 / math.sqrt(variance + eps)
        workspace[0, j] = variance  # kept for the running-variance update


@njit(inline="always")
def _normalize(x, weight, bias, mean, inv_std, code, params, seed, counter, y_out):
    T = y_out.dtype.type
    rows, columns = x.shape
    p0 = params[0]
    p1 = params[1]
    blocks = (rows + 64 - 1) // 64
    for b in prange(blocks):
        for i in range(b * 64, min(rows, (b + 1) * 64)):
            row = x[i]
            y_row = y_out[i]
            for j in range(columns):
                y_row[j] = T(weight[j] * ((row[j] - mean[j]) * inv_std[j]) + bias[j])
            activate_row(code, y_row, y_row, p0, p1, T, seed, counter, i * columns)


@njit(inline="always")
def _forward_train(x, weight, bias, eps, running_factor, running_mean, running_var, code, params, seed, counter,
                   mean_out, inv_std_out, y_out, workspace):
    _statistics(x, workspace, mean_out, inv_std_out, eps)
    rows = x.shape[0]
    if running_factor >= 0:
        for j in range(x.shape[1]):
            unbiased = workspace[0, j] * rows / (rows - 1)
            running_mean[j] = (1 - running_factor) * running_mean[j] + running_factor * mean_out[j]
            running_var[j] = (1 - running_factor) * running_var[j] + running_factor * unbiased
    _normalize(x, weight, bias, mean_out, inv_std_out, code, params, seed, counter, y_out)


@njit(inline="always")
def _forward_eval(x, weight, bias, eps, running_mean, running_var, code, params, seed, counter, inv_std_out, y_out):
    for j in range(x.shape[1]):
        inv_std_out[j] = 1.0 / math.sqrt(running_var[j] + eps)
    _normalize(x, weight, bias, running_mean, inv_std_out, code, params, seed, counter, y_out)


@njit(inline="always")
def _grad_z_row(i, x, grad_y, y, weight, bias, mean, inv_std, code, p0, p1, T, seed, counter, out_row):
    """out_row = dL/dz for row i: z recomputed from x, the activation's derivative applied on the fly."""
    row = x[i]
    for j in range(x.shape[1]):
        out_row[j] = T(weight[j] * ((row[j] - mean[j]) * inv_std[j]) + bias[j])
    activation_grad_row(code, grad_y[i], out_row, y[i], out_row, p0, p1, T, seed, counter, i * x.shape[1])


@njit(inline="always")
def _backward(x, grad_y, y, weight, bias, mean, inv_std, code, params, seed, counter, training, grad_x, grad_weight,
              grad_bias, accumulate, workspace, scratch):
    T = grad_x.dtype.type
    rows, columns = x.shape
    p0 = params[0]
    p1 = params[1]
    blocks = (rows + 64 - 1) // 64
    for b in prange(blocks):
        sum_dz = workspace[2 * b]
        sum_dz_x_hat = workspace[2 * b + 1]
        sum_dz[:] = 0.0
        sum_dz_x_hat[:] = 0.0
        grad_z = scratch[b]
        for i in range(b * 64, min(rows, (b + 1) * 64)):
            _grad_z_row(i, x, grad_y, y, weight, bias, mean, inv_std, code, p0, p1, T, seed, counter, grad_z)
            row = x[i]
            for j in range(columns):
                sum_dz[j] += grad_z[j]
                sum_dz_x_hat[j] += grad_z[j] * ((row[j] - mean[j]) * inv_std[j])
    for j in range(columns):
        total = 0.0
        total_x_hat = 0.0
        for b in range(blocks):
            total += workspace[2 * b, j]
            total_x_hat += workspace[2 * b + 1, j]
        grad_bias[j] = (grad_bias[j] if accumulate else 0) + total
        grad_weight[j] = (grad_weight[j] if accumulate else 0) + total_x_hat
        workspace[0, j] = total / rows
        workspace[1, j] = total_x_hat / rows
    for b in prange(blocks):
        for i in range(b * 64, min(rows, (b + 1) * 64)):
            out = grad_x[i]
            _grad_z_row(i, x, grad_y, y, weight, bias, mean, inv_std, code, p0, p1, T, seed, counter, out)
            row = x[i]
            for j in range(columns):
                scale = weight[j] * inv_std[j]
                if training:
                    x_hat = (row[j] - mean[j]) * inv_std[j]
                    out[j] = T(scale * (out[j] - workspace[0, j] - x_hat * workspace[1, j]))
                else:
                    out[j] = T(scale * out[j])


@njit(parallel=True, cache=True)
def forward_train_parallel(x, weight, bias, eps, running_factor, running_mean, running_var, code, params, seed, counter, mean_out, inv_std_out, y_out, workspace):
    _forward_train(x, weight, bias, eps, running_factor, running_mean, running_var, code, params, seed, counter, mean_out, inv_std_out, y_out, workspace)


@njit(cache=True)
def forward_train_serial(x, weight, bias, eps, running_factor, running_mean, running_var, code, params, seed, counter, mean_out, inv_std_out, y_out, workspace):
    _forward_train(x, weight, bias, eps, running_factor, running_mean, running_var, code, params, seed, counter, mean_out, inv_std_out, y_out, workspace)


@njit(parallel=True, cache=True)
def forward_eval_parallel(x, weight, bias, eps, running_mean, running_var, code, params, seed, counter, inv_std_out, y_out):
    _forward_eval(x, weight, bias, eps, running_mean, running_var, code, params, seed, counter, inv_std_out, y_out)


@njit(cache=True)
def forward_eval_serial(x, weight, bias, eps, running_mean, running_var, code, params, seed, counter, inv_std_out, y_out):
    _forward_eval(x, weight, bias, eps, running_mean, running_var, code, params, seed, counter, inv_std_out, y_out)


@njit(parallel=True, cache=True)
def backward_parallel(x, grad_y, y, weight, bias, mean, inv_std, code, params, seed, counter, training, grad_x, grad_weight, grad_bias, accumulate, workspace, scratch):
    _backward(x, grad_y, y, weight, bias, mean, inv_std, code, params, seed, counter, training, grad_x, grad_weight, grad_bias, accumulate, workspace, scratch)


@njit(cache=True)
def backward_serial(x, grad_y, y, weight, bias, mean, inv_std, code, params, seed, counter, training, grad_x, grad_weight, grad_bias, accumulate, workspace, scratch):
    _backward(x, grad_y, y, weight, bias, mean, inv_std, code, params, seed, counter, training, grad_x, grad_weight, grad_bias, accumulate, workspace, scratch)


def _large(x):
    return x.size >= PARALLEL_MIN_ELEMENTS


def batchnorm_forward_train(x, weight, bias, eps, running_factor, running_mean, running_var, code, params, seed,
                            counter, mean_out, inv_std_out, y_out, workspace, scratch):
    kernel = forward_train_parallel if _large(x) else forward_train_serial
    kernel(x, weight, bias, float(eps), float(running_factor), running_mean, running_var, code, params,
           np.uint64(seed), np.uint64(counter), mean_out, inv_std_out, y_out, workspace)


def batchnorm_forward_eval(x, weight, bias, eps, running_mean, running_var, code, params, seed, counter,
                           inv_std_out, y_out):
    kernel = forward_eval_parallel if _large(x) else forward_eval_serial
    kernel(x, weight, bias, float(eps), running_mean, running_var, code, params, np.uint64(seed), np.uint64(counter),
           inv_std_out, y_out)


def batchnorm_backward(x, grad_y, y, weight, bias, mean, inv_std, code, params, seed, counter, training,
                       grad_x, grad_weight, grad_bias, accumulate, workspace, scratch):
    kernel = backward_parallel if _large(x) else backward_serial
    kernel(x, grad_y, y, weight, bias, mean, inv_std, code, params, np.uint64(seed), np.uint64(counter),
           bool(training), grad_x, grad_weight, grad_bias, bool(accumulate), workspace, scratch)


@njit(inline="always")
def _dropout_forward(x, p, scale, seed, counter, mask_out, y_out):
    n = x.shape[0]
    blocks = (n + 4095) // 4096
    for b in prange(blocks):
        for k in range(b * 4096, min(n, (b + 1) * 4096)):
            keep = uniform(seed, counter, np.uint64(k)) >= p
            mask_out[k] = keep
            y_out[k] = x[k] * scale if keep else 0


@njit(parallel=True, cache=True)
def dropout_forward_parallel(x, p, scale, seed, counter, mask_out, y_out):
    _dropout_forward(x, p, scale, seed, counter, mask_out, y_out)


@njit(cache=True)
def dropout_forward_serial(x, p, scale, seed, counter, mask_out, y_out):
    _dropout_forward(x, p, scale, seed, counter, mask_out, y_out)


@njit(cache=True)
def dropout_backward_kernel(grad_y, mask, scale, grad_x):
    for k in range(grad_y.shape[0]):
        grad_x[k] = grad_y[k] * scale if mask[k] else 0


def dropout_forward(x, p, seed, counter, mask_out, y_out):
    scale = x.dtype.type(1.0 / (1.0 - p))
    kernel = dropout_forward_parallel if _large(x) else dropout_forward_serial
    kernel(x.reshape(-1), float(p), scale, np.uint64(seed), np.uint64(counter), mask_out.reshape(-1), y_out.reshape(-1))


def dropout_backward(grad_y, mask, p, grad_x):
    dropout_backward_kernel(grad_y.reshape(-1), mask.reshape(-1), grad_y.dtype.type(1.0 / (1.0 - p)), grad_x.reshape(-1))
