"""The activations every backend implements: their codes and constants, and their formulas and derivatives written
plainly in numpy (the ground truth). Adding an activation starts here; the Numba and CUDA kernels follow it.

Kernels receive an activation as ``(code, params)``: ``code`` picks the formula and ``params`` is a small array of
the data's dtype holding its constants in the order of ``PARAMS`` below, so float32 kernels never promote to
float64 and changing a constant never recompiles. ``NEEDS_PREACTIVATION`` lists the codes whose derivative needs
``z`` (the input of the activation); the others differentiate from the output ``y`` alone, so a layer saves only
``y`` for them. The CUDA compilers receive the codes as ``-DFASTDL_<NAME>=<code>`` (kernels/cuda/sources.py).

``forward(z, code, params, seed, counter)`` returns ``y = f(z)``; ``derivative(z, y, ...)`` returns ``f'(z)``
element by element (softmax, being row-wise, has ``softmax_backward`` instead). ``params`` holds the
activation's constants in the order of ``PARAMS``. Where the lecture table and PyTorch
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

from .. import counter_rng

IDENTITY = 0
BINARY_STEP = 1
SIGMOID = 2
TANH = 3
SOFTSIGN = 4
SQNL = 5
RELU = 6
BRELU = 7
LEAKY_RELU = 8
RRELU = 9
ELU = 10
BENT_IDENTITY = 11
SILU = 12
SOFT_CLIPPING = 13
GELU = 14
GELU_TANH = 15
SOFTPLUS = 16
SOFTMAX = 17

# every code by name (the constants above are this module's only upper-case names so far)
CODES = {name: code for name, code in dict(globals()).items() if name.isupper()}

# name -> (code, ((parameter name, default), ...)) in the order they sit in the params array.
PARAMS = {
    "identity": (IDENTITY, ()),
    "binary_step": (BINARY_STEP, ()),
    "sigmoid": (SIGMOID, ()),
    "tanh": (TANH, ()),
    "softsign": (SOFTSIGN, ()),
    "sqnl": (SQNL, ()),
    "relu": (RELU, ()),
    "brelu": (BRELU, ()),
    "leaky_relu": (LEAKY_RELU, (("alpha", 0.01),)),
    "rrelu": (RRELU, (("lower", 1.0 / 8.0), ("upper", 1.0 / 3.0))),
    "elu": (ELU, (("alpha", 1.0),)),
    "bent_identity": (BENT_IDENTITY, ()),
    "silu": (SILU, ()),
    "soft_clipping": (SOFT_CLIPPING, (("alpha", 1.0),)),
    "gelu": (GELU, ()),  # approximate="tanh" selects GELU_TANH
    "softplus": (SOFTPLUS, (("beta", 1.0), ("threshold", 20.0))),
    "softmax": (SOFTMAX, ()),
}

NEEDS_PREACTIVATION = frozenset(
    {SQNL, BRELU, LEAKY_RELU, RRELU, BENT_IDENTITY, SILU, SOFT_CLIPPING, GELU, GELU_TANH, SOFTPLUS, SOFTSIGN}
)

# Codes that are applied row by row rather than element by element.
ROW_WISE = frozenset({SOFTMAX})

NUM_PARAMS = 2  # length of every params array

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
    if code == IDENTITY:
        return z.copy()
    if code == BINARY_STEP:
        return (z >= 0).astype(z.dtype)
    if code == SIGMOID:
        return sigmoid(z)
    if code == TANH:
        return np.tanh(z)
    if code == SOFTSIGN:
        return z / (1 + np.abs(z))
    if code == SQNL:
        return np.where(z > 2, 1, np.where(z >= 0, z - z * z / 4, np.where(z >= -2, z + z * z / 4, -1))).astype(z.dtype)
    if code == RELU:
        return np.where(z > 0, z, 0).astype(z.dtype)
    if code == BRELU:
        return np.where(column_parity(z), -np.maximum(-z, 0), np.maximum(z, 0)).astype(z.dtype)
    if code == LEAKY_RELU:
        return np.where(z > 0, z, p0 * z).astype(z.dtype)
    if code == RRELU:
        slope = rrelu_slopes(z.shape, params, seed, counter).astype(params.dtype)  # drawn in the data type
        return np.where(z >= 0, z, slope * z).astype(z.dtype)
    if code == ELU:
        return np.where(z > 0, z, p0 * np.expm1(z)).astype(z.dtype)
    if code == BENT_IDENTITY:
        # (sqrt(z^2 + 1) - 1) / 2 + z, with sqrt(z^2 + 1) - 1 = z^2 / (hypot(z, 1) + 1): no overflow, no cancellation
        return z * (z / (np.hypot(z, 1.0) + 1)) / 2 + z
    if code == SILU:
        return z * sigmoid(z)
    if code == SOFT_CLIPPING:
        # (1/a) log((1 + e^{a z}) / (1 + e^{a (z - 1)})), as a difference of softplus for stability
        upper = z > 0.5
        lower_half = soft_clipping_lower_half(np.where(upper, 1 - z, z), p0)
        return np.where(upper, 1 - lower_half, lower_half)
    if code == GELU:
        return z * normal_cdf(z)
    if code == GELU_TANH:
        # 0.5 z (1 + tanh(u)) = z sigmoid(2u): 1 + tanh(u) cancels to 0 in the lower tail, the sigmoid does not
        return z * sigmoid(2 * tanh_gelu_inner(z)[0])
    if code == SOFTPLUS:
        return np.where(p0 * z > p1, z, softplus(p0 * z) / p0).astype(z.dtype)
    if code == SOFTMAX:
        return softmax(z)
    raise ValueError(f"unknown activation code {code}")


def derivative(z, y, code, params, seed=0, counter=0):
    """f'(z) element by element; ``y`` is ``forward(z)``."""
    with np.errstate(over="ignore", under="ignore"):
        return _derivative(z.astype(np.float64), y.astype(np.float64), code, params, seed, counter).astype(z.dtype)


def _derivative(z, y, code, params, seed, counter):
    p0, p1 = float(params[0]), float(params[1])
    one = np.ones_like(z)
    if code == IDENTITY:
        return one
    if code == BINARY_STEP:
        return np.zeros_like(z)  # zero almost everywhere; undefined at 0, where we use 0 too
    if code == SIGMOID:
        return y * (1 - y)
    if code == TANH:
        return 1 - y * y
    if code == SOFTSIGN:
        return 1 / (1 + np.abs(z)) ** 2
    if code == SQNL:
        return np.where(z > 2, 0, np.where(z >= 0, 1 - z / 2, np.where(z >= -2, 1 + z / 2, 0))).astype(z.dtype)
    if code == RELU:
        return (z > 0).astype(z.dtype)
    if code == BRELU:
        # d/dz of -relu(-z) is relu'(-z): 1 where z < 0
        return np.where(column_parity(z), z < 0, z > 0).astype(z.dtype)
    if code == LEAKY_RELU:
        return np.where(z > 0, one, p0).astype(z.dtype)
    if code == RRELU:
        slope = rrelu_slopes(z.shape, params, seed, counter).astype(params.dtype)  # drawn in the data type
        return np.where(z >= 0, one, slope).astype(z.dtype)
    if code == ELU:
        return np.where(z > 0, one, y + p0).astype(z.dtype)
    if code == BENT_IDENTITY:
        return z / np.hypot(z, 1.0) / 2 + 1
    if code == SILU:
        return sigmoid(z) * (1 + z * sigmoid(-z))  # sigmoid(-z), not 1 - sigmoid(z): no cancellation for large z
    if code == SOFT_CLIPPING:
        w = np.where(z > 0.5, 1 - z, z)  # f'(z) = f'(1 - z): the difference of two sigmoids near 1 would cancel
        return sigmoid(p0 * w) - sigmoid(p0 * (w - 1))
    if code == GELU:
        pdf = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        return normal_cdf(z) + z * pdf
    if code == GELU_TANH:
        # d/dz z s(2u) = s + 2 z s (1 - s) u'
        inner, slope = tanh_gelu_inner(z)
        s = sigmoid(2 * inner)
        return s + z * (2 * s * sigmoid(-2 * inner) * slope)  # z last: inf * 0 never meets
    if code == SOFTPLUS:
        return np.where(p0 * z > p1, one, sigmoid(p0 * z)).astype(z.dtype)
    raise ValueError(f"activation code {code} has no element-wise derivative")


def activation_backward(grad_y, z, y, code, params, seed=0, counter=0):
    """dL/dz from dL/dy: the chain rule through the activation."""
    if code == SOFTMAX:
        return softmax_backward(grad_y, y)
    return grad_y * derivative(z, y, code, params, seed, counter)
