"""Activation formulas and their derivatives, written plainly in numpy: the ground truth.

``forward(z, code, params, seed, counter)`` returns ``y = f(z)``; ``derivative(z, y, ...)`` returns ``f'(z)``
element by element (softmax, being row-wise, has ``softmax_backward`` instead). ``params`` holds the
activation's constants in the order of ``activation_table.PARAMS``. Where the lecture table and PyTorch
differ, PyTorch wins: ReLU'(0) = 0; leaky ReLU and RReLU use their slope for z < 0 only; softplus turns linear
where beta * z > threshold; ELU uses its exponential branch for z <= 0.
"""

import math

import numpy as np

from .. import activation_table as table
from .. import counter_rng

_erf = np.vectorize(math.erf, otypes=[np.float64])
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_CUBIC = 0.044715


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def softplus(z):
    """log(1 + e^z) without overflow."""
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def rrelu_slopes(shape, params, seed, counter):
    """Training-mode RReLU slopes: uniform in [lower, upper), one per element, from the counter RNG."""
    lower, upper = float(params[0]), float(params[1])
    u = counter_rng.uniform(seed, counter, np.arange(int(np.prod(shape)))).reshape(shape)
    return lower + (upper - lower) * u


def column_parity(z):
    """True in the odd columns (BReLU flips those)."""
    return (np.arange(z.shape[-1]) % 2 == 1) & np.ones(z.shape, dtype=bool)


def softmax(z):
    shifted = z - z.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(grad_y, y):
    """Jacobian-vector product of the row softmax: dz = y * (dy - sum(dy * y))."""
    return y * (grad_y - (grad_y * y).sum(axis=-1, keepdims=True))


def forward(z, code, params, seed=0, counter=0):
    p0, p1 = params[0], params[1]
    if code == table.IDENTITY:
        return z.copy()
    if code == table.BINARY_STEP:
        return (z >= 0).astype(z.dtype)
    if code == table.SIGMOID:
        return sigmoid(z)
    if code == table.TANH:
        return np.tanh(z)
    if code == table.SOFTSIGN:
        return z / (1 + np.abs(z))
    if code == table.SQNL:
        return np.where(z > 2, 1, np.where(z >= 0, z - z * z / 4, np.where(z >= -2, z + z * z / 4, -1))).astype(z.dtype)
    if code == table.RELU:
        return np.where(z > 0, z, 0).astype(z.dtype)
    if code == table.BRELU:
        return np.where(column_parity(z), -np.maximum(-z, 0), np.maximum(z, 0)).astype(z.dtype)
    if code == table.LEAKY_RELU:
        return np.where(z > 0, z, p0 * z).astype(z.dtype)
    if code == table.RRELU:
        slope = rrelu_slopes(z.shape, params, seed, counter).astype(z.dtype)
        return np.where(z >= 0, z, slope * z).astype(z.dtype)
    if code == table.ELU:
        return np.where(z > 0, z, p0 * np.expm1(z)).astype(z.dtype)
    if code == table.BENT_IDENTITY:
        return (np.sqrt(z * z + 1) - 1) / 2 + z
    if code == table.SILU:
        return z * sigmoid(z)
    if code == table.SOFT_CLIPPING:
        # (1/a) log((1 + e^{a z}) / (1 + e^{a (z - 1)})), as a difference of softplus for stability
        return ((softplus(p0 * z) - softplus(p0 * (z - 1))) / p0).astype(z.dtype)
    if code == table.GELU:
        return (0.5 * z * (1 + _erf(z / math.sqrt(2.0)))).astype(z.dtype)
    if code == table.GELU_TANH:
        return (0.5 * z * (1 + np.tanh(SQRT_2_OVER_PI * (z + GELU_CUBIC * z**3)))).astype(z.dtype)
    if code == table.SOFTPLUS:
        return np.where(p0 * z > p1, z, softplus(p0 * z) / p0).astype(z.dtype)
    if code == table.SOFTMAX:
        return softmax(z)
    raise ValueError(f"unknown activation code {code}")


def derivative(z, y, code, params, seed=0, counter=0):
    """f'(z) element by element; ``y`` is ``forward(z)``."""
    p0, p1 = params[0], params[1]
    one = np.ones_like(z)
    if code == table.IDENTITY:
        return one
    if code == table.BINARY_STEP:
        return np.zeros_like(z)  # zero almost everywhere; undefined at 0, where we use 0 too
    if code == table.SIGMOID:
        return y * (1 - y)
    if code == table.TANH:
        return 1 - y * y
    if code == table.SOFTSIGN:
        return 1 / (1 + np.abs(z)) ** 2
    if code == table.SQNL:
        return np.where(z > 2, 0, np.where(z >= 0, 1 - z / 2, np.where(z >= -2, 1 + z / 2, 0))).astype(z.dtype)
    if code == table.RELU:
        return (z > 0).astype(z.dtype)
    if code == table.BRELU:
        # d/dz of -relu(-z) is relu'(-z): 1 where z < 0
        return np.where(column_parity(z), z < 0, z > 0).astype(z.dtype)
    if code == table.LEAKY_RELU:
        return np.where(z > 0, one, p0).astype(z.dtype)
    if code == table.RRELU:
        slope = rrelu_slopes(z.shape, params, seed, counter).astype(z.dtype)
        return np.where(z >= 0, one, slope).astype(z.dtype)
    if code == table.ELU:
        return np.where(z > 0, one, y + p0).astype(z.dtype)
    if code == table.BENT_IDENTITY:
        return z / (2 * np.sqrt(z * z + 1)) + 1
    if code == table.SILU:
        s = sigmoid(z)
        return s * (1 + z * (1 - s))
    if code == table.SOFT_CLIPPING:
        return sigmoid(p0 * z) - sigmoid(p0 * (z - 1))
    if code == table.GELU:
        cdf = 0.5 * (1 + _erf(z / math.sqrt(2.0)))
        pdf = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        return (cdf + z * pdf).astype(z.dtype)
    if code == table.GELU_TANH:
        inner = SQRT_2_OVER_PI * (z + GELU_CUBIC * z**3)
        t = np.tanh(inner)
        return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * GELU_CUBIC * z * z)
    if code == table.SOFTPLUS:
        return np.where(p0 * z > p1, one, sigmoid(p0 * z)).astype(z.dtype)
    raise ValueError(f"activation code {code} has no element-wise derivative")


def activation_backward(grad_y, z, y, code, params, seed=0, counter=0):
    """dL/dz from dL/dy: the chain rule through the activation."""
    if code == table.SOFTMAX:
        return softmax_backward(grad_y, y)
    return grad_y * derivative(z, y, code, params, seed, counter)
