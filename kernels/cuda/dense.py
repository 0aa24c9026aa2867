"""Launchers for activations.cu: the dense layer and the activations, with the CPU backend's signatures.

GEMMs go to cuBLAS (``gemm.py``; numpy on the emulator), everything after them is one kernel pass.
"""

import numpy as np

from ..ops import dense_bindings
from ..reference.activations import IDENTITY, NUM_PARAMS, SOFTMAX
from ..reference.dense import bfloat16_through_float32
from .flags import device_flag
from .gemm import bfloat16_supported, gemm_ex, matmul
from .launch import (NULL, THREADS, array_module, blocks, device_total, launch, optional, row_chunks, row_threads,
                     workspace)
from .sources import COLUMN_BLOCK

SOURCE = "activations.cu"
IDENTITY_PARAMS = np.zeros(NUM_PARAMS)  # read on the host, as scalars
ROWS_PER_CHUNK = 64


def _rows(x):
    return x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x


def _launch(name, like, grid, block, args):
    launch(SOURCE, name, like, grid, block, args)


def _bias_activation(z, bias, a, code, params, seed, counter, mask=None, y=None, p=0.0, dropout_seed=0):
    """z += bias; a = act(z); with a mask: y = dropout(a). z and a may be one array."""
    rows, cols = _rows(z).shape
    T = z.dtype.type
    if code == SOFTMAX:
        _launch("softmax_rows", z, (rows,), row_threads(cols), (z, optional(bias), a, np.int64(cols)))
        if mask is not None:
            from .dropout import dropout_forward

            dropout_forward(a, p, dropout_seed, counter, mask, y)
        return
    scale = T(1.0 / (1.0 - p)) if mask is not None else T(1.0)
    _launch("bias_activation", z, blocks(z.size), (THREADS,),
            (z, optional(bias), a, optional(mask), NULL if y is None else y, np.int64(z.size), np.int64(cols),
             np.int32(code), T(params[0]), T(params[1]), np.uint64(seed), np.uint64(counter), np.float64(p), scale,
             np.uint64(dropout_seed)))


def _activation_grad(grad_y, z, y, code, params, seed, counter, grad_z, grad_bias, accumulate, mask=None, p=0.0):
    """grad_z = act'(z) * grad_a (grad_a = grad_y, or dropout's masked grad_y); grad_bias (+)= its column sums."""
    rows, cols = _rows(grad_z).shape
    T = grad_z.dtype.type
    scale = T(1.0 / (1.0 - p)) if mask is not None else T(1.0)
    if code == SOFTMAX:  # row-wise: the softmax backward first, then only the column sums below
        source = grad_y
        if mask is not None:
            from .dropout import dropout_backward

            source = workspace("masked_grad", grad_y.shape, grad_y.dtype, grad_y)
            dropout_backward(grad_y, mask, p, source)
        _launch("softmax_backward_rows", grad_z, (rows,), row_threads(cols), (source, y, grad_z, np.int64(cols)))
        if grad_bias is None or grad_bias.size == 0:
            return
        grad_y, mask, code = grad_z, None, -1
    rows_per_chunk, chunks = row_chunks(rows, ROWS_PER_CHUNK)
    has_bias = grad_bias is not None and grad_bias.size > 0
    partials = workspace("bias_partials", (chunks, cols), np.float64, grad_z) if has_bias else None
    grid = ((cols + COLUMN_BLOCK[0] - 1) // COLUMN_BLOCK[0], chunks)
    _launch("activation_grad_partials", grad_z, grid, COLUMN_BLOCK,
            (grad_y, z, y, optional(mask), scale, grad_z, optional(partials), np.int64(rows), np.int64(cols),
             np.int64(rows_per_chunk), np.int32(code), T(params[0]), T(params[1]), np.uint64(seed),
             np.uint64(counter)))
    if has_bias:
        _launch("column_sums", grad_z, blocks(cols), (THREADS,),
                (partials, np.int64(chunks), np.int64(cols), grad_bias, np.int32(bool(accumulate))))


def activation_forward(x, activation, y_out):
    code, params, seed, counter = activation
    _bias_activation(x, None, y_out, code, params, seed, counter)  # without a bias, z (here x) is only read


def activation_backward(grad_y, z, y, activation, grad_z_out):
    code, params, seed, counter = activation
    if code == SOFTMAX:
        _activation_grad(_rows(grad_y), _rows(z), _rows(y), code, params, seed, counter, _rows(grad_z_out), None,
                         False)
        return
    _launch("activation_backward", grad_z_out, blocks(grad_z_out.size), (THREADS,),
            (grad_y, z, y, grad_z_out, np.int64(grad_z_out.size), np.int64(grad_z_out.shape[-1]), np.int32(code),
             grad_z_out.dtype.type(params[0]), grad_z_out.dtype.type(params[1]), np.uint64(seed),
             np.uint64(counter)))


def dense_forward(x, weight, bias, activation, z_out, y_out):
    code, params, seed, counter = activation
    matmul(x, weight, z_out)
    finite = device_flag(_nonfinite_count(z_out), 0.0)  # the product before the bias; read when the layer asks
    _bias_activation(z_out, bias, y_out, code, params, seed, counter)
    return finite


def dense_dropout_forward(x, weight, bias, activation, p, dropout_seed, z_out, a_out, mask_out, y_out):
    code, params, seed, counter = activation
    matmul(x, weight, z_out)
    finite = device_flag(_nonfinite_count(z_out), 0.0)
    _bias_activation(z_out, bias, a_out, code, params, seed, counter, mask_out, y_out, p, dropout_seed)
    return finite


def dense_backward(x, weight, grad_y, z, y, activation, grad_z_work, grad_weight, grad_bias, grad_x, accumulate):
    code, params, seed, counter = activation
    _activation_grad(grad_y, z, y, code, params, seed, counter, grad_z_work, grad_bias, accumulate)
    _weight_and_input_grads(x, weight, grad_z_work, grad_weight, grad_x, accumulate)


def dense_dropout_backward(x, weight, grad_y, z, a, mask, p, activation, grad_z_work, grad_weight, grad_bias, grad_x,
                           accumulate):
    code, params, seed, counter = activation
    _activation_grad(grad_y, z, a, code, params, seed, counter, grad_z_work, grad_bias, accumulate, mask, p)
    _weight_and_input_grads(x, weight, grad_z_work, grad_weight, grad_x, accumulate)


def _weight_and_input_grads(x, weight, grad_z, grad_weight, grad_x, accumulate):
    matmul(x.T, grad_z, grad_weight, accumulate)
    if grad_x is not None:
        matmul(grad_z, weight.T, grad_x)


def _nonfinite_count(x):
    """How many elements of x are NaN or Inf, as a one-element float64 array on x's device (nothing waits)."""
    flat = array_module(x).ascontiguousarray(x).reshape(-1)  # a kernel reads raw memory: no strided views
    grid = blocks(flat.size)
    partials = workspace("nonfinite_partials", grid, np.float64, x)
    _launch("count_nonfinite", flat, grid, (THREADS,), (flat, np.int64(flat.size), partials))
    return device_total(partials, x)


def all_finite(x):
    return device_flag(_nonfinite_count(x), 0.0)


def round_bfloat16(x, y_out):
    if x.dtype != np.float32:
        raise TypeError(f"round_bfloat16: x must be float32, got {x.dtype}")
    n = x.size
    _launch("round_bfloat16", x, blocks(n), (THREADS,), (x.reshape(-1), y_out.reshape(-1), np.int64(n)))


bind_dense_forward, bind_dense_backward = dense_bindings(dense_forward, dense_backward)


def bfloat16_bits(x, bits_out):
    """The bit patterns (uint16) of float32 x rounded to the nearest bfloat16 (ties to even): cuBLAS's operands."""
    n = x.size
    _launch("bfloat16_bits", x, blocks(n), (THREADS,), (x.reshape(-1), bits_out.reshape(-1), np.int64(n)))


# GPUs without bfloat16 tensor cores: the rounded operands through the float32 GEMM (the same products)
_float32_forward_bfloat16, _float32_backward_bfloat16 = bfloat16_through_float32(round_bfloat16, dense_forward,
                                                                                 dense_backward)


def dense_forward_bfloat16(x, weight, bias, activation, z_out, y_out, x_rounded_out, weight_rounded_out, x_bits,
                           weight_bits):
    """dense_forward on x and W rounded to bfloat16: their bit patterns through cuBLAS's bfloat16 GEMM (float32
    sums), then the epilogue pass; the bits are left for the backward. Before compute capability 8.0, the rounded
    operands through the float32 GEMM."""
    if not bfloat16_supported(x):
        return _float32_forward_bfloat16(x, weight, bias, activation, z_out, y_out, x_rounded_out,
                                         weight_rounded_out, x_bits, weight_bits)
    code, params, seed, counter = activation
    bfloat16_bits(x, x_bits)
    bfloat16_bits(weight, weight_bits)
    gemm_ex(x_bits, weight_bits, z_out)
    finite = device_flag(_nonfinite_count(z_out), 0.0)
    _bias_activation(z_out, bias, y_out, code, params, seed, counter)
    return finite


def dense_backward_bfloat16(x, weight, grad_z, grad_z_work, grad_weight, grad_bias, grad_x, accumulate, x_bits,
                            weight_bits, grad_bits, forward_bits):
    """The products of a bfloat16 backward, dZ formed and rounded by the layer: dX = dZ @ W.T and dW (+)= x.T @ dZ
    through cuBLAS's bfloat16 GEMM on the operands' bits (the forward's, or taken here after a forward with
    dropout), db (+)= the column sums of dZ."""
    if not bfloat16_supported(x):
        return _float32_backward_bfloat16(x, weight, grad_z, grad_z_work, grad_weight, grad_bias, grad_x,
                                          accumulate, x_bits, weight_bits, grad_bits, forward_bits)
    if not forward_bits:
        bfloat16_bits(x, x_bits)
        bfloat16_bits(weight, weight_bits)
    bfloat16_bits(grad_z, grad_bits)
    # the identity's backward pass: grad_z_work = dZ and the bias's column sums, as the float32 path computes them
    _activation_grad(grad_z, grad_z, grad_z, IDENTITY, IDENTITY_PARAMS, 0, 0, grad_z_work, grad_bias, accumulate)
    gemm_ex(x_bits, grad_bits, grad_weight, transpose_a=True, accumulate=accumulate)
    if grad_x is not None:
        gemm_ex(grad_bits, weight_bits, grad_x, transpose_b=True)
