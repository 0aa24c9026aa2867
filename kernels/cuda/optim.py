"""Launchers for optim.cu: the signatures of kernels/cpu/optim.py, on CuPy arrays."""

import numpy as np

from .launch import THREADS, blocks, kernel, optional


def _launch(name, param, arrays, scalars):
    n = param.size
    kernel("optim.cu", name, param.dtype)(blocks(n), (THREADS,), (*arrays, np.int64(n), *scalars))


def sgd_step(param, grad, grad_scale, weight_decay, l1, lr):
    _launch("sgd_step", param, (param, grad), (grad_scale, weight_decay, l1, lr))


def sgd_momentum_step(param, grad, buffer, grad_scale, weight_decay, l1, lr, buffer_decay, grad_coefficient, direct,
                      lookahead):
    _launch("sgd_momentum_step", param, (param, grad, buffer),
            (grad_scale, weight_decay, l1, lr, buffer_decay, grad_coefficient, direct, lookahead))


def adagrad_step(param, grad, sum_of_squared, grad_scale, weight_decay, l1, lr, eps):
    _launch("adagrad_step", param, (param, grad, sum_of_squared), (grad_scale, weight_decay, l1, lr, eps))


def rmsprop_step(param, grad, square_avg, grad_avg, buffer, grad_scale, weight_decay, l1, lr, alpha, eps, momentum):
    _launch("rmsprop_step", param, (param, grad, square_avg, optional(grad_avg), optional(buffer)),
            (grad_scale, weight_decay, l1, lr, alpha, eps, momentum))


def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, grad_scale, weight_decay, l1, decay_factor, beta1,
              beta2, step_size, bias_correction2_sqrt, eps):
    _launch("adam_step", param, (param, grad, exp_avg, exp_avg_sq, optional(max_exp_avg_sq)),
            (grad_scale, weight_decay, l1, decay_factor, beta1, beta2, step_size, bias_correction2_sqrt, eps))


_device_tables = {}


def segment_sums_of_squares(first, second, piece_bounds, piece_segments, partials, sums):
    """sums[s] = (sum first^2, sum second^2) per segment, into the host array ``sums`` (the optimizer reads it on
    the host: one small copy back per step)."""
    import cupy

    key = (id(piece_bounds), id(piece_segments))
    if key not in _device_tables:  # the tables never change for a buffer: copy them to the device once
        _device_tables[key] = (cupy.asarray(piece_bounds), cupy.asarray(piece_segments),
                               cupy.empty(partials.shape), cupy.empty(sums.shape))
    bounds, segments, device_partials, device_sums = _device_tables[key]
    pieces = len(piece_segments)
    kernel("optim.cu", "piece_sums_of_squares", first.dtype)((pieces,), (THREADS,),
                                                             (first, optional(second), bounds, device_partials))
    kernel("optim.cu", "segment_sums")(blocks(len(sums)), (THREADS,),
                                       (device_partials, segments, np.int32(pieces), np.int32(len(sums)), device_sums))
    sums[...] = device_sums.get()
