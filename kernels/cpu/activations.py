"""Activation formulas as Numba scalar functions, inlined into the fused kernels.

``value`` and ``derivative`` branch on the activation code; the code is the same for every element of a call,
so the branch is perfectly predicted and the kernels stay one pass over memory. Constants are built with the
data's own type ``T`` (float32 stays float32). Formulas and conventions match ``reference/activations.py``.
"""

import math

import numpy as np
from numba import njit, uint64

from .. import activation_table as table
from .counter_rng import uniform

IDENTITY = table.IDENTITY
BINARY_STEP = table.BINARY_STEP
SIGMOID = table.SIGMOID
TANH = table.TANH
SOFTSIGN = table.SOFTSIGN
SQNL = table.SQNL
RELU = table.RELU
BRELU = table.BRELU
LEAKY_RELU = table.LEAKY_RELU
RRELU = table.RRELU
ELU = table.ELU
BENT_IDENTITY = table.BENT_IDENTITY
SILU = table.SILU
SOFT_CLIPPING = table.SOFT_CLIPPING
GELU = table.GELU
GELU_TANH = table.GELU_TANH
SOFTPLUS = table.SOFTPLUS
SOFTMAX = table.SOFTMAX


@njit(inline="always")
def sigmoid(z, T):
    if z >= 0:
        return T(1.0) / (T(1.0) + math.exp(-z))
    e = math.exp(z)
    return e / (T(1.0) + e)


@njit(inline="always")
def softplus(z, T):
    return max(z, T(0.0)) + math.log1p(math.exp(-abs(z)))


@njit(inline="always")
def rrelu_slope(p0, p1, T, seed, counter, index):
    return p0 + (p1 - p0) * T(uniform(seed, counter, uint64(index)))


@njit(inline="always")
def value(code, z, p0, p1, T, seed, counter, index, column):
    """f(z) for one element; ``index`` is its flat position (RReLU's draw), ``column`` its column (BReLU)."""
    if code == RELU:
        return z if z > 0 else T(0.0)
    if code == IDENTITY:
        return z
    if code == LEAKY_RELU:
        return z if z > 0 else p0 * z
    if code == SIGMOID:
        return sigmoid(z, T)
    if code == TANH:
        return math.tanh(z)
    if code == GELU:
        return T(0.5) * z * (T(1.0) + math.erf(z * T(0.7071067811865476)))
    if code == GELU_TANH:
        return T(0.5) * z * (T(1.0) + math.tanh(T(0.7978845608028654) * (z + T(0.044715) * z * z * z)))
    if code == SILU:
        return z * sigmoid(z, T)
    if code == ELU:
        return z if z > 0 else p0 * math.expm1(z)
    if code == SOFTPLUS:
        return z if p0 * z > p1 else softplus(p0 * z, T) / p0
    if code == BINARY_STEP:
        return T(1.0) if z >= 0 else T(0.0)
    if code == SOFTSIGN:
        return z / (T(1.0) + abs(z))
    if code == SQNL:
        if z > 2:
            return T(1.0)
        if z >= 0:
            return z - z * z * T(0.25)
        if z >= -2:
            return z + z * z * T(0.25)
        return T(-1.0)
    if code == BRELU:
        if column % 2 == 1:
            return z if z < 0 else T(0.0)
        return z if z > 0 else T(0.0)
    if code == RRELU:
        return z if z >= 0 else rrelu_slope(p0, p1, T, seed, counter, index) * z
    if code == BENT_IDENTITY:
        return (math.sqrt(z * z + T(1.0)) - T(1.0)) * T(0.5) + z
    if code == SOFT_CLIPPING:
        return (softplus(p0 * z, T) - softplus(p0 * (z - T(1.0)), T)) / p0
    return z * T(math.nan)  # unknown code: poison the output rather than guess


@njit(inline="always")
def derivative(code, z, y, p0, p1, T, seed, counter, index, column):
    """f'(z) for one element, given z and y = f(z)."""
    if code == RELU:
        return T(1.0) if z > 0 else T(0.0)
    if code == IDENTITY:
        return T(1.0)
    if code == LEAKY_RELU:
        return T(1.0) if z > 0 else p0
    if code == SIGMOID:
        return y * (T(1.0) - y)
    if code == TANH:
        return T(1.0) - y * y
    if code == GELU:
        cdf = T(0.5) * (T(1.0) + math.erf(z * T(0.7071067811865476)))
        return cdf + z * math.exp(T(-0.5) * z * z) * T(0.3989422804014327)
    if code == GELU_TANH:
        t = math.tanh(T(0.7978845608028654) * (z + T(0.044715) * z * z * z))
        slope = T(0.7978845608028654) * (T(1.0) + T(3.0 * 0.044715) * z * z)
        return T(0.5) * (T(1.0) + t) + T(0.5) * z * (T(1.0) - t * t) * slope
    if code == SILU:
        s = sigmoid(z, T)
        return s * (T(1.0) + z * (T(1.0) - s))
    if code == ELU:
        return T(1.0) if z > 0 else y + p0
    if code == SOFTPLUS:
        return T(1.0) if p0 * z > p1 else sigmoid(p0 * z, T)
    if code == BINARY_STEP:
        return T(0.0)
    if code == SOFTSIGN:
        d = T(1.0) + abs(z)
        return T(1.0) / (d * d)
    if code == SQNL:
        if z > 2 or z < -2:
            return T(0.0)
        if z >= 0:
            return T(1.0) - z * T(0.5)
        return T(1.0) + z * T(0.5)
    if code == BRELU:
        if column % 2 == 1:
            return T(1.0) if z < 0 else T(0.0)
        return T(1.0) if z > 0 else T(0.0)
    if code == RRELU:
        return T(1.0) if z >= 0 else rrelu_slope(p0, p1, T, seed, counter, index)
    if code == BENT_IDENTITY:
        return z / (T(2.0) * math.sqrt(z * z + T(1.0))) + T(1.0)
    if code == SOFT_CLIPPING:
        return sigmoid(p0 * z, T) - sigmoid(p0 * (z - T(1.0)), T)
    return T(math.nan)


@njit(inline="always")
def softmax_row(z, y, T):
    """y = softmax(z) over one row (z and y may be the same row)."""
    largest = z[0]
    for j in range(1, z.shape[0]):
        largest = max(largest, z[j])
    total = T(0.0)
    for j in range(z.shape[0]):
        e = math.exp(z[j] - largest)
        y[j] = e
        total += e
    inverse = T(1.0) / total
    for j in range(z.shape[0]):
        y[j] *= inverse


@njit(inline="always")
def softmax_backward_row(grad_y, y, grad_z, T):
    dot = T(0.0)
    for j in range(y.shape[0]):
        dot += grad_y[j] * y[j]
    for j in range(y.shape[0]):
        grad_z[j] = y[j] * (grad_y[j] - dot)
