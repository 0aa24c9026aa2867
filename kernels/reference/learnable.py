"""Activations with learnable parameters, plainly: PReLU, adaptive piecewise linear (APL), soft exponential.

Parameters are per feature (the last axis) and broadcast over the batch; a single shared value is an array
of shape (1,). Backward writes dL/dx and adds (``accumulate``) or writes the parameter gradients.
"""

import numpy as np

from .dense import accumulate_into


def _store(grad, value, accumulate):
    accumulate_into(grad, value.reshape(grad.shape), accumulate)


def prelu_forward(x, slope, y_out):
    """y = x for x >= 0, slope * x otherwise (He et al., 2015)."""
    y_out[...] = np.where(x >= 0, x, slope * x)


def prelu_backward(x, slope, grad_y, grad_x, grad_slope, accumulate):
    grad_x[...] = np.where(x >= 0, grad_y, slope * grad_y)
    per_feature = np.where(x >= 0, 0, x * grad_y).sum(axis=0)
    _store(grad_slope, per_feature.sum(keepdims=True) if grad_slope.size == 1 else per_feature, accumulate)


def apl_forward(x, hinge_slopes, hinge_offsets, y_out):
    """y = max(0, x) + sum_s a_s max(0, -x + b_s) (Agostinelli et al., 2015); a, b have shape (S, features)."""
    y = np.maximum(x, 0)
    for a, b in zip(hinge_slopes, hinge_offsets):
        y = y + a * np.maximum(b - x, 0)
    y_out[...] = y


def apl_backward(x, hinge_slopes, hinge_offsets, grad_y, grad_x, grad_slopes, grad_offsets, accumulate):
    dx = (x > 0).astype(x.dtype)
    for s, (a, b) in enumerate(zip(hinge_slopes, hinge_offsets)):
        active = (b - x > 0).astype(x.dtype)
        dx = dx - a * active
        _store(grad_slopes[s], (grad_y * np.maximum(b - x, 0)).sum(axis=0), accumulate)
        _store(grad_offsets[s], (grad_y * a * active).sum(axis=0), accumulate)
    grad_x[...] = grad_y * dx


def soft_exponential_value(x, alpha):
    """f(alpha, x) (Godfrey & Gashler, 2015): -ln(1 - a(x + a))/a for a < 0, x for a = 0, (e^{ax} - 1)/a + a for a > 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        negative = -np.log(1 - alpha * (x + alpha)) / alpha
        positive = np.expm1(alpha * x) / alpha + alpha
    return np.where(alpha < 0, negative, np.where(alpha > 0, positive, x))


def soft_exponential_forward(x, alpha, y_out):
    y_out[...] = soft_exponential_value(x, alpha)


def soft_exponential_backward(x, alpha, grad_y, grad_x, grad_alpha, accumulate):
    with np.errstate(divide="ignore", invalid="ignore"):
        u = 1 - alpha * (x + alpha)
        dx = np.where(alpha < 0, 1 / u, np.exp(alpha * x))
        da_negative = np.log(u) / alpha**2 + (x + 2 * alpha) / (alpha * u)
        da_positive = (x * np.exp(alpha * x)) / alpha - np.expm1(alpha * x) / alpha**2 + 1
    da = np.where(alpha < 0, da_negative, np.where(alpha > 0, da_positive, x * x / 2 + 1))
    grad_x[...] = grad_y * dx
    per_feature = (grad_y * da).sum(axis=0)
    _store(grad_alpha, per_feature.sum(keepdims=True) if grad_alpha.size == 1 else per_feature, accumulate)
