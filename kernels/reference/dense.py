"""Dense layer, plainly: z = x @ W + b, y = act(z); backward by the chain rule.

Same signatures as every backend: outputs are written into the arrays passed in. ``bias`` and ``grad_bias``
of size 0 mean "no bias"; ``grad_x=None`` skips the input gradient.
"""

import numpy as np

from ..bfloat16 import round_nearest
from ..ops import ActivationArgs, dense_bindings
from . import activations
from .dropout import dropout_backward, dropout_forward


def activation_forward(x, activation, y_out):
    code, params, seed, counter = activation
    y_out[...] = activations.forward(x, code, params, seed, counter)


def activation_backward(grad_y, z, y, activation, grad_z_out):
    code, params, seed, counter = activation
    grad_z_out[...] = activations.activation_backward(grad_y, z, y, code, params, seed, counter)


def dense_forward(x, weight, bias, activation, z_out, y_out):
    """Returns whether x @ W is finite (it is not whenever x holds NaN or Inf)."""
    code, params, seed, counter = activation
    z = x @ weight
    finite = bool(np.isfinite(z).all())
    if bias.size:
        z = z + bias
    y_out[...] = activations.forward(z, code, params, seed, counter)
    if z_out is not y_out:
        z_out[...] = z
    return finite


def dense_backward(x, weight, grad_y, z, y, activation, grad_z_work, grad_weight, grad_bias, grad_x, accumulate):
    code, params, seed, counter = activation
    grad_z = activations.activation_backward(grad_y, z, y, code, params, seed, counter)
    grad_z_work[...] = grad_z
    accumulate_into(grad_weight, x.T @ grad_z, accumulate)
    if grad_bias.size:
        accumulate_into(grad_bias, grad_z.sum(axis=0), accumulate)
    if grad_x is not None:
        grad_x[...] = grad_z @ weight.T


def dense_dropout_forward(x, weight, bias, activation, p, dropout_seed, z_out, a_out, mask_out, y_out):
    """a = act(x @ W + b), then inverted dropout: y = a * mask / (1 - p), the mask drawn from (dropout_seed,
    counter)."""
    finite = dense_forward(x, weight, bias, activation, z_out, a_out)
    dropout_forward(a_out, p, dropout_seed, activation.counter, mask_out, y_out)
    return finite


def dense_dropout_backward(x, weight, grad_y, z, a, mask, p, activation, grad_z_work, grad_weight, grad_bias, grad_x,
                           accumulate):
    grad_a = np.empty_like(grad_y)
    dropout_backward(grad_y, mask, p, grad_a)
    dense_backward(x, weight, grad_a, z, a, activation, grad_z_work, grad_weight, grad_bias, grad_x, accumulate)


def round_bfloat16(x, y_out):
    y_out[...] = round_nearest(x).reshape(y_out.shape)


def bfloat16_through_float32(round_bfloat16, dense_forward, dense_backward):
    """(dense_forward_bfloat16, dense_backward_bfloat16) of a backend without a bfloat16 GEMM, from its own ops: the
    operands rounded to bfloat16 (into x_rounded_out and weight_rounded_out, which the backward then takes), then
    the float32 products (a product of two bfloat16 values is exact in float32; the sums are float32's). The bits
    arguments are left alone."""
    identities = {}  # dtype -> the identity's ActivationArgs: the backward's dZ is formed and rounded already

    def dense_forward_bfloat16(x, weight, bias, activation, z_out, y_out, x_rounded_out, weight_rounded_out, x_bits,
                               weight_bits):
        round_bfloat16(x, x_rounded_out)
        round_bfloat16(weight, weight_rounded_out)
        return dense_forward(x_rounded_out, weight_rounded_out, bias, activation, z_out, y_out)

    def dense_backward_bfloat16(x, weight, grad_z, grad_z_work, grad_weight, grad_bias, grad_x, accumulate, x_bits,
                                weight_bits, grad_bits, forward_bits):
        identity = identities.get(grad_z.dtype)
        if identity is None:
            identity = identities[grad_z.dtype] = ActivationArgs(
                activations.IDENTITY, np.zeros(activations.NUM_PARAMS, grad_z.dtype), 0, 0)
        dense_backward(x, weight, grad_z, grad_z, grad_z, identity, grad_z_work, grad_weight, grad_bias, grad_x,
                       accumulate)

    return dense_forward_bfloat16, dense_backward_bfloat16


dense_forward_bfloat16, dense_backward_bfloat16 = bfloat16_through_float32(round_bfloat16, dense_forward,
                                                                           dense_backward)


def accumulate_into(grad, value, accumulate):
    """grad += value, or grad = value (an overwrite, so a stale NaN in grad does not survive)."""
    if accumulate:
        grad += value
    else:
        grad[...] = value


def all_finite(x):
    return bool(np.isfinite(x).all())


bind_dense_forward, bind_dense_backward = dense_bindings(dense_forward, dense_backward)
