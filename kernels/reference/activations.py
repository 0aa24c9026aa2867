"""Activation formulas and their derivatives, written plainly in numpy: the ground truth.

``forward(z, code, params, seed, counter)`` returns ``y = f(z)``; ``derivative(z, y, ...)`` returns ``f'(z)``
element by element (softmax, being row-wise, has ``softmax_backward`` instead). ``params`` holds the
activation's constants in the order of ``activation_table.PARAMS``. Where the lecture table and PyTorch
differ, PyTorch wins: ReLU'(0) = 0; leaky ReLU and RReLU use their slope for z < 0 only; softplus turns linear
where beta * z > threshold; ELU uses its exponential branch for z <= 0.

Every formula holds over the whole finite range, tails included: float32 is computed in float64 and rounded once,
and the forms below never overflow in between nor cancel where the result is small (erfc for GELU's lower tail,
a sigmoid for tanh-GELU's 1 + tanh, hypot for bent identity, soft clipping's symmetry f(z) = 1 - f(1 - z)).
Sigmoid's, tanh's and ELU's derivatives are read from the output, as PyTorch's sigmoid and tanh do (no
pre-activation is kept for them): they are exact to the output's absolute precision, not relative in the tails.
"""

import math

import numpy as np

from .. import activation_table as table
from .. import counter_rng

_erfc = np.vectorize(math.erfc, otypes=[np.float64])
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_CUBIC = 0.044715


def sigmoid(z):
    """1 / (1 + e^-z), from e^-|z| (never overflows; the lower tail keeps its relative precision)."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def normal_cdf(z):
    """Phi(z) = erfc(-z / sqrt 2) / 2: no cancellation in the lower tail, where 1 + erf(z / sqrt 2) gives 0."""
    return 0.5 * _erfc(-z / math.sqrt(2.0))


def tanh_gelu_inner(z):
    """u = sqrt(2/pi) (z + 0.044715 z^3), with z capped at 1e4 (past it the result is exactly 0 or z; z^3 would
    overflow and its derivative give 0 * inf)."""
    capped = np.clip(z, -1e4, 1e4)
    return SQRT_2_OVER_PI * (capped + GELU_CUBIC * capped**3), SQRT_2_OVER_PI * (1 + 3 * GELU_CUBIC * capped**2)


def soft_clipping_lower_half(w, alpha):
    """Soft clipping for w <= 1/2; the upper half is 1 - f(1 - z) (the curve's symmetry), where the difference of
    two softplus of nearly equal large arguments would cancel to 0."""
    return (softplus(alpha * w) - softplus(alpha * (w - 1))) / alpha


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
    with np.errstate(over="ignore", under="ignore"):
        return _forward(z.astype(np.float64), code, params, seed, counter).astype(z.dtype)


def _forward(z, code, params, seed, counter):
    p0, p1 = float(params[0]), float(params[1])
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
        slope = rrelu_slopes(z.shape, params, seed, counter).astype(params.dtype)  # drawn in the data type
        return np.where(z >= 0, z, slope * z).astype(z.dtype)
    if code == table.ELU:
        return np.where(z > 0, z, p0 * np.expm1(z)).astype(z.dtype)
    if code == table.BENT_IDENTITY:
        # (sqrt(z^2 + 1) - 1) / 2 + z, with sqrt(z^2 + 1) - 1 = z^2 / (hypot(z, 1) + 1): no overflow, no cancellation
        return z * (z / (np.hypot(z, 1.0) + 1)) / 2 + z
    if code == table.SILU:
        return z * sigmoid(z)
    if code == table.SOFT_CLIPPING:
        # (1/a) log((1 + e^{a z}) / (1 + e^{a (z - 1)})), as a difference of softplus for stability
        upper = z > 0.5
        lower_half = soft_clipping_lower_half(np.where(upper, 1 - z, z), p0)
        return np.where(upper, 1 - lower_half, lower_half)
    if code == table.GELU:
        return z * normal_cdf(z)
    if code == table.GELU_TANH:
        # 0.5 z (1 + tanh(u)) = z sigmoid(2u): 1 + tanh(u) cancels to 0 in the lower tail, the sigmoid does not
        return z * sigmoid(2 * tanh_gelu_inner(z)[0])
    if code == table.SOFTPLUS:
        return np.where(p0 * z > p1, z, softplus(p0 * z) / p0).astype(z.dtype)
    if code == table.SOFTMAX:
        return softmax(z)
    raise ValueError(f"unknown activation code {code}")


def derivative(z, y, code, params, seed=0, counter=0):
    """f'(z) element by element; ``y`` is ``forward(z)``."""
    with np.errstate(over="ignore", under="ignore"):
        return _derivative(z.astype(np.float64), y.astype(np.float64), code, params, seed, counter).astype(z.dtype)


def _derivative(z, y, code, params, seed, counter):
    p0, p1 = float(params[0]), float(params[1])
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
        slope = rrelu_slopes(z.shape, params, seed, counter).astype(params.dtype)  # drawn in the data type
        return np.where(z >= 0, one, slope).astype(z.dtype)
    if code == table.ELU:
        return np.where(z > 0, one, y + p0).astype(z.dtype)
    if code == table.BENT_IDENTITY:
        return z / np.hypot(z, 1.0) / 2 + 1
    if code == table.SILU:
        return sigmoid(z) * (1 + z * sigmoid(-z))  # sigmoid(-z), not 1 - sigmoid(z): no cancellation for large z
    if code == table.SOFT_CLIPPING:
        w = np.where(z > 0.5, 1 - z, z)  # f'(z) = f'(1 - z): the difference of two sigmoids near 1 would cancel
        return sigmoid(p0 * w) - sigmoid(p0 * (w - 1))
    if code == table.GELU:
        pdf = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        return normal_cdf(z) + z * pdf
    if code == table.GELU_TANH:
        # d/dz z s(2u) = s + 2 z s (1 - s) u'
        inner, slope = tanh_gelu_inner(z)
        s = sigmoid(2 * inner)
        return s + z * (2 * s * sigmoid(-2 * inner) * slope)  # z last: inf * 0 never meets
    if code == table.SOFTPLUS:
        return np.where(p0 * z > p1, one, sigmoid(p0 * z)).astype(z.dtype)
    raise ValueError(f"activation code {code} has no element-wise derivative")


def activation_backward(grad_y, z, y, code, params, seed=0, counter=0):
    """dL/dz from dL/dy: the chain rule through the activation."""
    if code == table.SOFTMAX:
        return softmax_backward(grad_y, y)
    return grad_y * derivative(z, y, code, params, seed, counter)
