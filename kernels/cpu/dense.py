"""Fused dense kernels for the CPU: GEMM through BLAS, then ONE pass for everything element-wise.

Forward: ``np.matmul(x, W, out=y)`` (numpy's BLAS, its own thread pool), then ``activate_rows`` adds the bias,
saves the pre-activation only when the activation's derivative needs it, and applies the activation, all
while each row is in L1. Backward: ``activation_grad_rows`` forms dZ = dY * act'(z) and the bias gradient
in the same pass (dZ is never read twice), then two GEMMs write dW and dX into the caller's buffers.

Why the element-wise passes are serial: they sit between GEMMs, and on the CPU a second thread pool
(Numba's) waking up next to BLAS's spinning threads costs milliseconds (measured: a 17 us parallel pass took
5.5 ms after a GEMM), while the serial pass costs about 2% of the GEMM it follows. One pool is busy at a time.

The identity and ReLU are computed inline; every other activation goes through ``activations.py``'s row
functions, which a kernel compiles in only when called with ``any_activation=True`` (see there).
"""

import numpy as np
from numba import njit

from .activations import activate_in_place, any_activation_for, grad, grad_in_place
from .counter_rng import uniform


@njit(inline="always")
def _bias_activate_row(i, source, bias, code, p0, p1, seed, counter, z_out, save_z, y_out, copy_source,
                       any_activation):
    columns = source.shape[1]
    y_row = y_out[i]
    # copies as plain loops: Numba's slice assignment (row[:] = other) took twice as long (100 vs 50 us, 256x1024)
    if copy_source:
        source_row = source[i]
        for j in range(columns):
            y_row[j] = source_row[j]
    if bias.shape[0] > 0:
        for j in range(columns):
            y_row[j] += bias[j]
    if save_z:
        z_row = z_out[i]
        for j in range(columns):
            z_row[j] = y_row[j]
    activate_in_place(code, y_row, p0, p1, seed, counter, i * columns, any_activation)


@njit(cache=True)
def activate_rows(source, bias, code, params, seed, counter, z_out, save_z, y_out, copy_source, any_activation):
    """y_out = act(source + bias) row by row; z_out = source + bias when save_z.

    The activation always runs in place on the output row: when input and output rows are different
    arguments LLVM must assume they overlap and will not vectorize (measured: 78 us instead of 20 us for a
    256x1024 ReLU), so the row is first brought into the output while it sits in L1. ``copy_source`` is False
    when ``source`` already is the output (the dense forward, after its GEMM).
    """
    for i in range(source.shape[0]):
        _bias_activate_row(i, source, bias, code, params[0], params[1], seed, counter, z_out, save_z, y_out,
                           copy_source, any_activation)


@njit(cache=True)
def activate_dropout_rows(a_out, bias, code, params, seed, counter, z_out, save_z, p, scale, dropout_seed, mask_out,
                          y_out, any_activation):
    """a_out = act(a_out + bias), then y_out = a_out * scale where the mask keeps, row by row while the row is
    in L1: the mask and values are exactly those of a Dropout layer with seed ``dropout_seed`` (same counter)."""
    rows, columns = a_out.shape
    for i in range(rows):
        _bias_activate_row(i, a_out, bias, code, params[0], params[1], seed, counter, z_out, save_z, a_out, False,
                           any_activation)
        a_row = a_out[i]
        mask_row = mask_out[i]
        y_row = y_out[i]
        for j in range(columns):
            keep = uniform(dropout_seed, counter, np.uint64(i * columns + j)) >= p
            mask_row[j] = keep
            y_row[j] = a_row[j] * scale if keep else 0


@njit(cache=True)
def activation_grad_rows(grad_y, z, y, code, params, seed, counter, grad_z, grad_bias, accumulate_bias,
                         any_activation):
    """grad_z = grad_y * act'(z) and grad_bias (+)= column sums of grad_z, in one pass."""
    rows, columns = grad_y.shape
    has_bias = grad_bias.shape[0] > 0
    p0 = params[0]
    p1 = params[1]
    if has_bias and not accumulate_bias:
        grad_bias[:] = 0
    for i in range(rows):
        grad(code, grad_y[i], z[i], y[i], grad_z[i], p0, p1, seed, counter, i * columns, any_activation)
        if has_bias:
            for j in range(columns):
                grad_bias[j] += grad_z[i, j]


@njit(cache=True)
def dropout_activation_grad_rows(grad_y, mask, scale, z, a, code, params, seed, counter, grad_z, grad_bias,
                                 accumulate_bias, any_activation):
    """grad_z = (grad_y * mask * scale) * act'(z) and grad_bias (+)= its column sums, in one pass."""
    rows, columns = grad_y.shape
    has_bias = grad_bias.shape[0] > 0
    p0 = params[0]
    p1 = params[1]
    if has_bias and not accumulate_bias:
        grad_bias[:] = 0
    for i in range(rows):
        out = grad_z[i]
        z_row = z[i]
        for j in range(columns):
            out[j] = z_row[j]
        # act'(z) dy in place over z's copy, then the mask: with the masked dy as the activation's input and output
        # (one row passed twice), LLVM's overlap check sent every row to the scalar loop (2x slower for ReLU, 7x
        # for GELU at 256x1024)
        grad_in_place(code, grad_y[i], out, a[i], p0, p1, seed, counter, i * columns, any_activation)
        mask_row = mask[i]
        for j in range(columns):
            out[j] = out[j] * scale if mask_row[j] else 0
        if has_bias:
            for j in range(columns):
                grad_bias[j] += out[j]


@njit(cache=True)
def all_finite_kernel(flat):
    """x - x is 0 for finite x and NaN for NaN or +-Inf. Counting the misses is an integer reduction, which
    vectorizes (a float sum or an early exit would not)."""
    misses = 0
    for k in range(flat.shape[0]):
        misses += flat[k] - flat[k] != 0
    return misses == 0


def all_finite(x):
    return all_finite_kernel(x.reshape(-1) if x.flags.c_contiguous else x.ravel())


def _as_rows(x):
    return x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x


def activation_forward(x, code, params, seed, counter, y_out):
    rows = _as_rows(y_out)
    activate_rows(_as_rows(x), params[:0], code, params, np.uint64(seed), np.uint64(counter), rows, False, rows, True,
                  any_activation_for(code))


def activation_backward(grad_y, z, y, code, params, seed, counter, grad_z_out):
    activation_grad_rows(_as_rows(grad_y), _as_rows(z), _as_rows(y), code, params, np.uint64(seed),
                         np.uint64(counter), _as_rows(grad_z_out), params[:0], False, any_activation_for(code))


def dense_forward(x, weight, bias, code, params, seed, counter, z_out, y_out):
    np.matmul(x, weight, out=y_out)
    activate_rows(y_out, bias, code, params, np.uint64(seed), np.uint64(counter), z_out, z_out is not y_out,
                  y_out, False, any_activation_for(code))


def dense_dropout_forward(x, weight, bias, code, params, seed, counter, p, dropout_seed, z_out, a_out, mask_out,
                          y_out):
    np.matmul(x, weight, out=a_out)
    activate_dropout_rows(a_out, bias, code, params, np.uint64(seed), np.uint64(counter), z_out, z_out is not a_out,
                          float(p), y_out.dtype.type(1.0 / (1.0 - p)), np.uint64(dropout_seed), mask_out, y_out,
                          any_activation_for(code))


def dense_dropout_backward(x, weight, grad_y, z, a, mask, p, code, params, seed, counter,
                           grad_z_work, grad_weight, grad_bias, grad_x, accumulate):
    dropout_activation_grad_rows(grad_y, mask, grad_y.dtype.type(1.0 / (1.0 - p)), z, a, code, params,
                                 np.uint64(seed), np.uint64(counter), grad_z_work, grad_bias, accumulate,
                                 any_activation_for(code))
    _weight_and_input_grads(x, weight, grad_z_work, grad_weight, grad_x, accumulate)


def dense_backward(x, weight, grad_y, z, y, code, params, seed, counter,
                   grad_z_work, grad_weight, grad_bias, grad_x, accumulate):
    activation_grad_rows(grad_y, z, y, code, params, np.uint64(seed), np.uint64(counter), grad_z_work,
                         grad_bias, accumulate, any_activation_for(code))
    _weight_and_input_grads(x, weight, grad_z_work, grad_weight, grad_x, accumulate)


def _weight_and_input_grads(x, weight, grad_z_work, grad_weight, grad_x, accumulate):
    if accumulate:
        grad_weight += x.T @ grad_z_work  # the rarer path: one temporary, the default path allocates nothing
    else:
        np.matmul(x.T, grad_z_work, out=grad_weight)
    if grad_x is not None:
        np.matmul(grad_z_work, weight.T, out=grad_x)
