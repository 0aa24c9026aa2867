"""Batch normalization and dropout, plainly.

Batch norm over (N, C): training normalizes with the batch mean and the biased batch variance, then
y = act(weight * x_hat + bias); running statistics follow PyTorch's BatchNorm1d:
running = (1 - factor) * running + factor * batch_stat with the UNBIASED variance (factor = momentum, or
1 / batches_seen for a cumulative average, or no update when factor < 0); an update also counts the batch in
``num_batches_tracked`` (one element). Evaluation uses the running statistics. ``workspace``/``scratch``/``totals``
arguments exist for the compiled backends and are ignored here.

Inverted dropout keeps an element when its counter-based uniform draw u >= p and scales survivors by
1 / (1 - p); the mask is stored as bytes.
"""

import numpy as np

from ..ops import batchnorm_bindings
from . import activations
from .dense import accumulate_into


def batchnorm_forward_train(x, weight, bias, eps, running_factor, running_mean, running_var, num_batches_tracked,
                            activation, mean_out, inv_std_out, y_out, workspace, scratch, totals):
    """Returns False, changing nothing, when x holds NaN or Inf."""
    code, params, seed, counter = activation
    if not np.isfinite(x).all():
        return False
    n = x.shape[0]
    mean = x.mean(axis=0, dtype=np.float64)
    variance = ((x - mean) ** 2).mean(axis=0)
    if running_factor >= 0:
        running_mean[...] = (1 - running_factor) * running_mean + running_factor * mean
        running_var[...] = (1 - running_factor) * running_var + running_factor * variance * n / (n - 1)
        num_batches_tracked += 1
    mean_out[...] = mean
    inv_std_out[...] = 1 / np.sqrt(variance + eps)
    z = weight * ((x - mean_out) * inv_std_out) + bias
    y_out[...] = activations.forward(z.astype(x.dtype), code, params, seed, counter)
    return True


def batchnorm_forward_eval(x, weight, bias, eps, running_mean, running_var, activation, mean_out, inv_std_out, y_out,
                           workspace):
    """Returns False, computing nothing, when x holds NaN or Inf. mean_out receives the running mean (the
    statistics the backward uses)."""
    code, params, seed, counter = activation
    if not np.isfinite(x).all():
        return False
    mean_out[...] = running_mean
    inv_std_out[...] = 1 / np.sqrt(running_var + eps)
    z = weight * ((x - running_mean) * inv_std_out) + bias
    y_out[...] = activations.forward(z.astype(x.dtype), code, params, seed, counter)
    return True


def batchnorm_backward(x, grad_y, y, weight, bias, mean, inv_std, activation, training, grad_x, grad_weight,
                       grad_bias, accumulate, workspace, scratch, totals):
    """Closed form (Ioffe & Szegedy, 2015): dx = w inv_std / N (N dz - sum(dz) - x_hat sum(dz x_hat)) in training;
    dx = w inv_std dz in evaluation, where the statistics are constants."""
    code, params, seed, counter = activation
    n = x.shape[0]
    x_hat = (x - mean) * inv_std
    z = (weight * x_hat + bias).astype(x.dtype)
    grad_z = activations.activation_backward(grad_y, z, y, code, params, seed, counter)
    sum_dz = grad_z.sum(axis=0, dtype=np.float64)
    sum_dz_x_hat = (grad_z * x_hat).sum(axis=0, dtype=np.float64)
    accumulate_into(grad_bias, sum_dz, accumulate)
    accumulate_into(grad_weight, sum_dz_x_hat, accumulate)
    if training:
        grad_x[...] = weight * inv_std / n * (n * grad_z - sum_dz - x_hat * sum_dz_x_hat)
    else:
        grad_x[...] = weight * inv_std * grad_z


bind_batchnorm_forward_train, bind_batchnorm_backward = batchnorm_bindings(batchnorm_forward_train,
                                                                                 batchnorm_backward)
