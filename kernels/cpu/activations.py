"""Activation formulas as Numba scalar functions, inlined into the fused kernels.

``activate_row`` / ``activation_grad_row`` branch on the activation code once per row, then run a loop
specialized to that one formula (``map_row``), so cheap activations vectorize (a loop that branches per element
does not) and every kernel stays one pass over memory. Sigmoid, SiLU, ELU, tanh and
both GELUs vectorize too: their exp, expm1, tanh and normal distribution (erf's) are ``vector_math``'s arithmetic,
not libm calls. Constants are built with the data's own type ``T`` (float32 stays float32). Formulas and conventions
match ``reference/activations.py``.
"""

import math

from numba import njit, uint64

from ..reference import activations as table
from .counter_rng import uniform
from .reductions import largest, sum_in_float64
from .vector_math import exp, expm1, log1p, normal_cdf_pdf, tanh
from .vector_width import wide_vectors
from .reference_counts import WITHOUT_REFERENCE_COUNTS

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
    e = exp(-abs(z))  # in (0, 1]: never overflows; both signs from it, selected without a branch
    r = T(1.0) / (T(1.0) + e)
    return r if z >= 0 else e * r


@njit(inline="always")
def sigmoid_pair(z, T):
    """(sigmoid(z), sigmoid(-z)) from one exp; sigmoid(-z) rather than 1 - sigmoid(z), which cancels for large z."""
    e = exp(-abs(z))
    r = T(1.0) / (T(1.0) + e)
    return (r, e * r) if z >= 0 else (e * r, r)


@njit(inline="always")
def hypot_one(z, T):
    """sqrt(z^2 + 1) without overflowing z^2: past |z| = 1e18 it is |z| exactly in both precisions."""
    return math.sqrt(z * z + T(1.0)) if abs(z) < T(1.0e18) else abs(z)


@njit(inline="always")
def tanh_gelu_inner(z, T):
    """(u, u') of tanh-GELU, u = sqrt(2/pi) (z + 0.044715 z^3), with z capped at 1e4: past it the activation is
    exactly 0 or z, and z^3 would overflow (its derivative then gave 0 * inf)."""
    capped = min(max(z, T(-1.0e4)), T(1.0e4))
    inner = T(0.7978845608028654) * (capped + T(0.044715) * capped * capped * capped)
    return inner, T(0.7978845608028654) * (T(1.0) + T(3.0 * 0.044715) * capped * capped)


@njit(inline="always")
def soft_clipping_lower_half(w, p0, T):
    """Soft clipping for w <= 1/2; above, f(z) = 1 - f(1 - z) (its symmetry): the difference of two softplus of
    nearly equal large arguments cancelled to 0 (soft_clipping(1e8) was 0)."""
    return (softplus(p0 * w, T) - softplus(p0 * (w - T(1.0)), T)) / p0


@njit(inline="always")
def softplus(z, T):
    return max(z, T(0.0)) + log1p(exp(-abs(z)))


@njit(inline="always")
def rrelu_slope(p0, p1, T, seed, counter, index):
    return p0 + (p1 - p0) * T(uniform(seed, counter, uint64(index)))


# One scalar function per activation, all with the same arguments, so ``map_row`` can take any of them:
# z (and y for derivatives), the constants p0, p1, the type T, the RNG key (seed, counter), the element's flat
# index (RReLU's draw) and its column (BReLU).


@njit(inline="always")
def identity_value(z, p0, p1, T, seed, counter, index, column):
    return z


@njit(inline="always")
def identity_derivative(z, y, p0, p1, T, seed, counter, index, column):
    return T(1.0)


@njit(inline="always")
def binary_step_value(z, p0, p1, T, seed, counter, index, column):
    return T(1.0) if z >= 0 else T(0.0)


@njit(inline="always")
def binary_step_derivative(z, y, p0, p1, T, seed, counter, index, column):
    return T(0.0)


@njit(inline="always")
def sigmoid_value(z, p0, p1, T, seed, counter, index, column):
    return sigmoid(z, T)


@njit(inline="always")
def sigmoid_derivative(z, y, p0, p1, T, seed, counter, index, column):
    return y * (T(1.0) - y)


@njit(inline="always")
def tanh_value(z, p0, p1, T, seed, counter, index, column):
    return tanh(z)


@njit(inline="always")
def tanh_derivative(z, y, p0, p1, T, seed, counter, index, column):
    return T(1.0) - y * y


@njit(inline="always")
def softsign_value(z, p0, p1, T, seed, counter, index, column):
    return z / (T(1.0) + abs(z))


@njit(inline="always")
def softsign_derivative(z, y, p0, p1, T, seed, counter, index, column):
    d = T(1.0) + abs(z)
    return T(1.0) / (d * d)


@njit(inline="always")
def sqnl_value(z, p0, p1, T, seed, counter, index, column):
    if z > 2:
        return T(1.0)
    if z >= 0:
        return z - z * z * T(0.25)
    if z >= -2:
        return z + z * z * T(0.25)
    return T(-1.0)


@njit(inline="always")
def sqnl_derivative(z, y, p0, p1, T, seed, counter, index, column):
    if z > 2 or z < -2:
        return T(0.0)
    if z >= 0:
        return T(1.0) - z * T(0.5)
    return T(1.0) + z * T(0.5)


@njit(inline="always")
def relu_value(z, p0, p1, T, seed, counter, index, column):
    return z if z > 0 else T(0.0)


@njit(inline="always")
def relu_derivative(z, y, p0, p1, T, seed, counter, index, column):
    return T(1.0) if z > 0 else T(0.0)


@njit(inline="always")
def brelu_value(z, p0, p1, T, seed, counter, index, column):
    if column % 2 == 1:
        return z if z < 0 else T(0.0)
    return z if z > 0 else T(0.0)


@njit(inline="always")
def brelu_derivative(z, y, p0, p1, T, seed, counter, index, column):
    if column % 2 == 1:
        return T(1.0) if z < 0 else T(0.0)
    return T(1.0) if z > 0 else T(0.0)


@njit(inline="always")
def leaky_relu_value(z, p0, p1, T, seed, counter, index, column):
    return z if z > 0 else p0 * z


@njit(inline="always")
def leaky_relu_derivative(z, y, p0, p1, T, seed, counter, index, column):
    return T(1.0) if z > 0 else p0


@njit(inline="always")
def rrelu_value(z, p0, p1, T, seed, counter, index, column):
    return z if z >= 0 else rrelu_slope(p0, p1, T, seed, counter, index) * z


@njit(inline="always")
def rrelu_derivative(z, y, p0, p1, T, seed, counter, index, column):
    return T(1.0) if z >= 0 else rrelu_slope(p0, p1, T, seed, counter, index)


@njit(inline="always")
def elu_value(z, p0, p1, T, seed, counter, index, column):
    return z if z > 0 else p0 * expm1(z)


@njit(inline="always")
def elu_derivative(z, y, p0, p1, T, seed, counter, index, column):
    return T(1.0) if z > 0 else y + p0


@njit(inline="always")
def bent_identity_value(z, p0, p1, T, seed, counter, index, column):
    # sqrt(z^2 + 1) - 1 = z^2 / (sqrt(z^2 + 1) + 1): no cancellation near 0, no overflow for large |z|
    return z * (z / (hypot_one(z, T) + T(1.0))) * T(0.5) + z


@njit(inline="always")
def bent_identity_derivative(z, y, p0, p1, T, seed, counter, index, column):
    return z / hypot_one(z, T) * T(0.5) + T(1.0)


@njit(inline="always")
def silu_value(z, p0, p1, T, seed, counter, index, column):
    return z * sigmoid(z, T)


@njit(inline="always")
def silu_derivative(z, y, p0, p1, T, seed, counter, index, column):
    s, s_negative = sigmoid_pair(z, T)
    return s * (T(1.0) + z * s_negative)


@njit(inline="always")
def soft_clipping_value(z, p0, p1, T, seed, counter, index, column):
    upper = z > T(0.5)  # selects, not branches: the loop stays vectorized
    lower_half = soft_clipping_lower_half(T(1.0) - z if upper else z, p0, T)
    return T(1.0) - lower_half if upper else lower_half


@njit(inline="always")
def soft_clipping_derivative(z, y, p0, p1, T, seed, counter, index, column):
    w = T(1.0) - z if z > T(0.5) else z  # f'(z) = f'(1 - z): two sigmoids near 1 would cancel
    return sigmoid(p0 * w, T) - sigmoid(p0 * (w - T(1.0)), T)


@njit(inline="always")
def gelu_value(z, p0, p1, T, seed, counter, index, column):
    return z * normal_cdf_pdf(z)[0]


@njit(inline="always")
def gelu_derivative(z, y, p0, p1, T, seed, counter, index, column):
    cdf, pdf = normal_cdf_pdf(z)
    return cdf + z * pdf


@njit(inline="always")
def gelu_tanh_value(z, p0, p1, T, seed, counter, index, column):
    # 0.5 z (1 + tanh(u)) = z sigmoid(2u): 1 + tanh(u) cancels to 0 in the lower tail
    return z * sigmoid(T(2.0) * tanh_gelu_inner(z, T)[0], T)


@njit(inline="always")
def gelu_tanh_derivative(z, y, p0, p1, T, seed, counter, index, column):
    inner, slope = tanh_gelu_inner(z, T)
    s, s_negative = sigmoid_pair(T(2.0) * inner, T)
    return s + z * (T(2.0) * s * s_negative * slope)  # z last: inf * 0 never meets


@njit(inline="always")
def softplus_value(z, p0, p1, T, seed, counter, index, column):
    return z if p0 * z > p1 else softplus(p0 * z, T) / p0


@njit(inline="always")
def softplus_derivative(z, y, p0, p1, T, seed, counter, index, column):
    return T(1.0) if p0 * z > p1 else sigmoid(p0 * z, T)


@njit(inline="always")
def map_row(f, z, y, p0, p1, T, seed, counter, base):
    """y[j] = f(z[j]) over one row; a loop of its own per activation, so simple ones vectorize."""
    for j in range(z.shape[0]):
        y[j] = f(z[j], p0, p1, T, seed, counter, base + j, j)


@njit(inline="always")
def map_grad_row(f, grad_y, z, y, grad_z, p0, p1, T, seed, counter, base):
    """grad_z[j] = grad_y[j] * f'(z[j]) over one row."""
    for j in range(z.shape[0]):
        grad_z[j] = grad_y[j] * f(z[j], y[j], p0, p1, T, seed, counter, base + j, j)


@njit(inline="always")
def activate_row(code, z, y, p0, p1, T, seed, counter, base):
    """y = act(z) over one row (z may be y). The branch is taken once per row, not per element."""
    if code == RELU:
        map_row(relu_value, z, y, p0, p1, T, seed, counter, base)
    elif code == IDENTITY:
        map_row(identity_value, z, y, p0, p1, T, seed, counter, base)
    elif code == LEAKY_RELU:
        map_row(leaky_relu_value, z, y, p0, p1, T, seed, counter, base)
    elif code == SIGMOID:
        map_row(sigmoid_value, z, y, p0, p1, T, seed, counter, base)
    elif code == TANH:
        map_row(tanh_value, z, y, p0, p1, T, seed, counter, base)
    elif code == GELU:
        map_row(gelu_value, z, y, p0, p1, T, seed, counter, base)
    elif code == GELU_TANH:
        map_row(gelu_tanh_value, z, y, p0, p1, T, seed, counter, base)
    elif code == SILU:
        map_row(silu_value, z, y, p0, p1, T, seed, counter, base)
    elif code == ELU:
        map_row(elu_value, z, y, p0, p1, T, seed, counter, base)
    elif code == SOFTPLUS:
        map_row(softplus_value, z, y, p0, p1, T, seed, counter, base)
    elif code == BINARY_STEP:
        map_row(binary_step_value, z, y, p0, p1, T, seed, counter, base)
    elif code == SOFTSIGN:
        map_row(softsign_value, z, y, p0, p1, T, seed, counter, base)
    elif code == SQNL:
        map_row(sqnl_value, z, y, p0, p1, T, seed, counter, base)
    elif code == BRELU:
        map_row(brelu_value, z, y, p0, p1, T, seed, counter, base)
    elif code == RRELU:
        map_row(rrelu_value, z, y, p0, p1, T, seed, counter, base)
    elif code == BENT_IDENTITY:
        map_row(bent_identity_value, z, y, p0, p1, T, seed, counter, base)
    elif code == SOFT_CLIPPING:
        map_row(soft_clipping_value, z, y, p0, p1, T, seed, counter, base)
    elif code == SOFTMAX:
        softmax_row(z, y, T)
    else:
        y[:] = T(math.nan)  # unknown code: poison the output rather than guess


@njit(inline="always")
def activation_grad_row(code, grad_y, z, y, grad_z, p0, p1, T, seed, counter, base):
    """grad_z = grad_y * act'(z) over one row."""
    if code == RELU:
        map_grad_row(relu_derivative, grad_y, z, y, grad_z, p0, p1, T, seed, counter, base)
    elif code == IDENTITY:
        map_grad_row(identity_derivative, grad_y, z, y, grad_z, p0, p1, T, seed, counter, base)
    elif code == LEAKY_RELU:
        map_grad_row(leaky_relu_derivative, grad_y, z, y, grad_z, p0, p1, T, seed, counter, base)
    elif code == SIGMOID:
        map_grad_row(sigmoid_derivative, grad_y, z, y, grad_z, p0, p1, T, seed, counter, base)
    elif code == TANH:
        map_grad_row(tanh_derivative, grad_y, z, y, grad_z, p0, p1, T, seed, counter, base)
    elif code == GELU:
        map_grad_row(gelu_derivative, grad_y, z, y, grad_z, p0, p1, T, seed, counter, base)
    elif code == GELU_TANH:
        map_grad_row(gelu_tanh_derivative, grad_y, z, y, grad_z, p0, p1, T, seed, counter, base)
    elif code == SILU:
        map_grad_row(silu_derivative, grad_y, z, y, grad_z, p0, p1, T, seed, counter, base)
    elif code == ELU:
        map_grad_row(elu_derivative, grad_y, z, y, grad_z, p0, p1, T, seed, counter, base)
    elif code == SOFTPLUS:
        map_grad_row(softplus_derivative, grad_y, z, y, grad_z, p0, p1, T, seed, counter, base)
    elif code == BINARY_STEP:
        map_grad_row(binary_step_derivative, grad_y, z, y, grad_z, p0, p1, T, seed, counter, base)
    elif code == SOFTSIGN:
        map_grad_row(softsign_derivative, grad_y, z, y, grad_z, p0, p1, T, seed, counter, base)
    elif code == SQNL:
        map_grad_row(sqnl_derivative, grad_y, z, y, grad_z, p0, p1, T, seed, counter, base)
    elif code == BRELU:
        map_grad_row(brelu_derivative, grad_y, z, y, grad_z, p0, p1, T, seed, counter, base)
    elif code == RRELU:
        map_grad_row(rrelu_derivative, grad_y, z, y, grad_z, p0, p1, T, seed, counter, base)
    elif code == BENT_IDENTITY:
        map_grad_row(bent_identity_derivative, grad_y, z, y, grad_z, p0, p1, T, seed, counter, base)
    elif code == SOFT_CLIPPING:
        map_grad_row(soft_clipping_derivative, grad_y, z, y, grad_z, p0, p1, T, seed, counter, base)
    elif code == SOFTMAX:
        softmax_backward_row(grad_y, y, grad_z, T)
    else:
        grad_z[:] = T(math.nan)


@njit(inline="always")
def softmax_row(z, y, T):
    """y = softmax(z) over one row (z and y may be the same row); each loop vectorizes (``reductions.py``)."""
    shift = largest(z)
    for j in range(z.shape[0]):
        y[j] = exp(z[j] - shift)
    inverse = T(1.0 / sum_in_float64(y))
    for j in range(z.shape[0]):
        y[j] *= inverse


@njit(inline="always")
def softmax_backward_row(grad_y, y, grad_z, T):
    dot = T(0.0)
    for j in range(y.shape[0]):
        dot += grad_y[j] * y[j]
    for j in range(y.shape[0]):
        grad_z[j] = y[j] * (grad_y[j] - dot)


# The kernels call these per row rather than inlining the whole dispatch above: all 18 formulas inlined into
# every batch-norm and dense kernel cost 10-27 s of cold compilation per kernel; compiled once here they are
# shared, and a call per row costs nanoseconds next to the row's loop. The in-place forms pass one array where
# the formulas read and write the same row: given two arguments, LLVM must assume a partial overlap and does
# not vectorize. error_model="numpy": a division is a plain division, where Python's model adds a zero check that
# keeps every loop with a division from vectorizing; the formulas never divide by zero for valid parameters.
# wide_vectors(): 512-bit vectors where the CPU has them (vector_width.py); the float32 formulas ran 1.07-1.31x
# faster that way at 256x1024 (forward; backward 0.95-1.35x), bit-identical. Only these three: the kernels' inline
# identity and ReLU loops measured within noise with it.
@njit(cache=True, **WITHOUT_REFERENCE_COUNTS, error_model="numpy")
def activate_row_in_place(code, y, p0, p1, seed, counter, base):
    """y = act(y) over one row."""
    wide_vectors()
    activate_row(code, y, y, p0, p1, y.dtype.type, seed, counter, base)


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS, error_model="numpy")
def activation_grad_row_in_place(code, grad_y, z_then_grad_z, y, p0, p1, seed, counter, base):
    """z_then_grad_z = grad_y * act'(z_then_grad_z) over one row."""
    wide_vectors()
    activation_grad_row(code, grad_y, z_then_grad_z, y, z_then_grad_z, p0, p1, grad_y.dtype.type, seed, counter,
                        base)


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS, error_model="numpy")
def activation_grad_row_call(code, grad_y, z, y, grad_z, p0, p1, seed, counter, base):
    """grad_z = grad_y * act'(z) over one row (grad_z a different row from z)."""
    wide_vectors()
    activation_grad_row(code, grad_y, z, y, grad_z, p0, p1, grad_z.dtype.type, seed, counter, base)


# -- what the kernels call: the identity and ReLU inline, the others only where asked for ------------------------
# The three functions above hold every activation's formulas: about 5 s of cold compilation each, half of the main
# job's first run. The kernels call the three below instead: the identity and ReLU are inline loops there, and the
# others go through the functions above only when ``any_activation`` is not None. ``any_activation_for(code)`` is
# None for the identity and ReLU, so Numba prunes those calls and a model of ReLU and identity layers never compiles
# the other activations. A wrong None with another code makes the row NaN rather than the identity.
def any_activation_for(code):
    """The kernels' ``any_activation`` argument for an activation code (see above)."""
    return None if code in (IDENTITY, RELU) else True


@njit(inline="always")
def activate_in_place(code, y, p0, p1, seed, counter, base, any_activation):
    """y = act(y) over one row."""
    if code == RELU:
        map_row(relu_value, y, y, p0, p1, y.dtype.type, seed, counter, base)
    elif code == IDENTITY:
        pass
    elif any_activation is None:
        y[:] = y.dtype.type(math.nan)
    else:
        activate_row_in_place(code, y, p0, p1, seed, counter, base)


@njit(inline="always")
def grad_in_place(code, grad_y, z_then_grad_z, y, p0, p1, seed, counter, base, any_activation):
    """z_then_grad_z = grad_y * act'(z_then_grad_z) over one row."""
    T = grad_y.dtype.type
    if code == RELU:
        map_grad_row(relu_derivative, grad_y, z_then_grad_z, y, z_then_grad_z, p0, p1, T, seed, counter, base)
    elif code == IDENTITY:
        map_grad_row(identity_derivative, grad_y, z_then_grad_z, y, z_then_grad_z, p0, p1, T, seed, counter, base)
    elif any_activation is None:
        z_then_grad_z[:] = T(math.nan)
    else:
        activation_grad_row_in_place(code, grad_y, z_then_grad_z, y, p0, p1, seed, counter, base)


@njit(inline="always")
def grad(code, grad_y, z, y, grad_z, p0, p1, seed, counter, base, any_activation):
    """grad_z = grad_y * act'(z) over one row (grad_z a different row from z)."""
    T = grad_y.dtype.type
    if code == RELU:
        map_grad_row(relu_derivative, grad_y, z, y, grad_z, p0, p1, T, seed, counter, base)
    elif code == IDENTITY:
        map_grad_row(identity_derivative, grad_y, z, y, grad_z, p0, p1, T, seed, counter, base)
    elif any_activation is None:
        grad_z[:] = T(math.nan)
    else:
        activation_grad_row_call(code, grad_y, z, y, grad_z, p0, p1, seed, counter, base)
