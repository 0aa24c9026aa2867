"""Learnable activations for the CPU (PReLU, APL, soft exponential): one pass forward, one pass backward.

Inputs are viewed as rows of features; parameters are per feature, or one shared value (size 1). Backward
writes dL/dx and the parameter gradients in the same pass. Formulas as in ``reference/learnable.py``.
"""

import math

from numba import njit

from .reference_counts import WITHOUT_REFERENCE_COUNTS


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS)
def prelu_forward_kernel(x, slope, y):
    shared = slope.shape[0] == 1
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            a = slope[0] if shared else slope[j]
            v = x[i, j]
            y[i, j] = v if v >= 0 else a * v


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS)
def prelu_backward_kernel(x, slope, grad_y, grad_x, grad_slope, accumulate):
    shared = slope.shape[0] == 1
    if not accumulate:
        grad_slope[:] = 0
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            a = slope[0] if shared else slope[j]
            v = x[i, j]
            if v >= 0:
                grad_x[i, j] = grad_y[i, j]
            else:
                grad_x[i, j] = a * grad_y[i, j]
                grad_slope[0 if shared else j] += v * grad_y[i, j]


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS)
def apl_forward_kernel(x, hinge_slopes, hinge_offsets, y):
    T = y.dtype.type
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[i, j]
            out = v if v > 0 else T(0.0)
            for s in range(hinge_slopes.shape[0]):
                out += hinge_slopes[s, j] * max(hinge_offsets[s, j] - v, T(0.0))
            y[i, j] = out


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS)
def apl_backward_kernel(x, hinge_slopes, hinge_offsets, grad_y, grad_x, grad_slopes, grad_offsets, accumulate):
    T = grad_x.dtype.type
    if not accumulate:
        grad_slopes[:] = 0
        grad_offsets[:] = 0
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[i, j]
            g = grad_y[i, j]
            dx = T(1.0) if v > 0 else T(0.0)
            for s in range(hinge_slopes.shape[0]):
                gap = hinge_offsets[s, j] - v
                if gap > 0:
                    dx -= hinge_slopes[s, j]
                    grad_slopes[s, j] += g * gap
                    grad_offsets[s, j] += g * hinge_slopes[s, j]
            grad_x[i, j] = g * dx


@njit(inline="always")
def soft_exponential_parts(v, a, T):
    """(f, df/dx, df/da) at one element."""
    if a < 0:
        u = T(1.0) - a * (v + a)
        return -math.log(u) / a, T(1.0) / u, math.log(u) / (a * a) + (v + T(2.0) * a) / (a * u)
    if a > 0:
        e = math.exp(a * v)
        em1 = math.expm1(a * v)
        return em1 / a + a, e, v * e / a - em1 / (a * a) + T(1.0)
    return v, T(1.0), v * v * T(0.5) + T(1.0)


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS)
def soft_exponential_forward_kernel(x, alpha, y):
    T = y.dtype.type
    shared = alpha.shape[0] == 1
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            y[i, j] = soft_exponential_parts(x[i, j], alpha[0] if shared else alpha[j], T)[0]


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS)
def soft_exponential_backward_kernel(x, alpha, grad_y, grad_x, grad_alpha, accumulate):
    T = grad_x.dtype.type
    shared = alpha.shape[0] == 1
    if not accumulate:
        grad_alpha[:] = 0
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            _, dx, da = soft_exponential_parts(x[i, j], alpha[0] if shared else alpha[j], T)
            grad_x[i, j] = grad_y[i, j] * dx
            grad_alpha[0 if shared else j] += grad_y[i, j] * da


def _rows(x):
    return x.reshape(-1, x.shape[-1])


def prelu_forward(x, slope, y_out):
    prelu_forward_kernel(_rows(x), slope, _rows(y_out))


def prelu_backward(x, slope, grad_y, grad_x, grad_slope, accumulate):
    prelu_backward_kernel(_rows(x), slope, _rows(grad_y), _rows(grad_x), grad_slope, accumulate)


def apl_forward(x, hinge_slopes, hinge_offsets, y_out):
    apl_forward_kernel(_rows(x), hinge_slopes, hinge_offsets, _rows(y_out))


def apl_backward(x, hinge_slopes, hinge_offsets, grad_y, grad_x, grad_slopes, grad_offsets, accumulate):
    apl_backward_kernel(_rows(x), hinge_slopes, hinge_offsets, _rows(grad_y), _rows(grad_x), grad_slopes,
                        grad_offsets, accumulate)


def soft_exponential_forward(x, alpha, y_out):
    soft_exponential_forward_kernel(_rows(x), alpha, _rows(y_out))


def soft_exponential_backward(x, alpha, grad_y, grad_x, grad_alpha, accumulate):
    soft_exponential_backward_kernel(_rows(x), alpha, _rows(grad_y), _rows(grad_x), grad_alpha, accumulate)
