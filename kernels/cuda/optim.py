"""Launchers for optim.cu: the signatures of kernels/cpu/optim.py, on CuPy arrays (or numpy on the emulator).

Scalars are cast to the parameters' type here (the kernels take them by value, so changing lr never
recompiles). Per-tensor work (LARS, LAMB, norms) runs one block per piece of the flat buffer; the small
per-tensor tables live on the host, as on the CPU, and the piece tables are copied to the device once.
"""

import numpy as np

from ..bfloat16 import key_offset
from ..reference.optim import lamb_trust_ratios, lars_trust_ratios  # noqa: F401  (a few scalars per tensor: host)
from .launch import NULL, THREADS, array_module, blocks, kernel, on_host, optional, workspace

SOURCE = "optim.cu"


PACK_BYTES = 16  # FastdlPack in optim.cu


def _launch(name, param, arrays, scalars, elements_per_thread=1):
    n = param.size
    T = param.dtype.type
    kernel(SOURCE, name, param.dtype, like=param)(blocks((n + elements_per_thread - 1) // elements_per_thread),
                                                  (THREADS,), (*arrays, np.int64(n), *(T(s) for s in scalars)))


def _address(array):
    return array.ctypes.data if on_host(array) else array.data.ptr


def _packable(*arrays):
    return all(_address(a) % PACK_BYTES == 0 for a in arrays)


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
    scalars = (grad_scale, weight_decay, l1, decay_factor, beta1, beta2, step_size, bias_correction2_sqrt, eps)
    if optional(max_exp_avg_sq) is NULL and _packable(param, grad, exp_avg, exp_avg_sq):
        _launch("adam_packed_step", param, (param, grad, exp_avg, exp_avg_sq), scalars,
                elements_per_thread=PACK_BYTES // param.itemsize)
        return
    _launch("adam_step", param, (param, grad, exp_avg, exp_avg_sq, optional(max_exp_avg_sq)), scalars)


def adam_bfloat16_step(param, grad, exp_avg, exp_avg_sq, seed, counter, grad_scale, weight_decay, l1, decay_factor,
                       beta1, beta2, step_size, bias_correction2_sqrt, eps):
    n = param.size
    T = param.dtype.type
    kernel(SOURCE, "adam_bfloat16_step", param.dtype, like=param)(
        blocks(n), (THREADS,),
        (param, grad, exp_avg, exp_avg_sq, np.int64(n), np.uint32(key_offset(seed, counter)),
         *(T(s) for s in (grad_scale, weight_decay, l1, decay_factor, beta1, beta2, step_size, bias_correction2_sqrt,
                          eps))))


_device_tables = {}


def _tables(piece_bounds, piece_segments, like):
    """(bounds, segments) where the kernels can read them: copied to the GPU once per buffer. The cache keeps the
    host arrays alive, so their ids (the key) cannot be reused by other arrays."""
    if on_host(like):
        return piece_bounds, piece_segments
    key = (id(piece_bounds), id(piece_segments))
    if key not in _device_tables:  # the tables never change for a buffer
        xp = array_module(like)
        _device_tables[key] = (piece_bounds, piece_segments, xp.asarray(piece_bounds), xp.asarray(piece_segments))
    return _device_tables[key][2:]


def _on_device(host, name, like):
    """The device's copy of a small float64 host array (trust ratios), in a reused workspace; the host array
    itself on the emulator."""
    if on_host(like):
        return host
    device = workspace(name, host.shape, np.float64, like)
    device.set(host)
    return device


def _piece_partials(partials, like):
    return partials if on_host(like) else workspace("piece_partials", partials.shape, np.float64, like)


def _segment_sums(bounds, segments, device_partials, sums, like):
    """sums[s] = the pieces of segment s added in order, into the host array ``sums``."""
    pieces, count = len(segments), len(sums)
    device_sums = sums if on_host(like) else workspace("segment_sums", sums.shape, np.float64, like)
    kernel(SOURCE, "segment_sums", like=like)(blocks(count), (THREADS,),
                                              (device_partials, segments, np.int32(pieces), np.int32(count),
                                               device_sums))
    if not on_host(like):
        sums[...] = device_sums.get()


def segment_sums_of_squares(first, second, piece_bounds, piece_segments, partials, sums):
    """sums[s] = (sum first^2, sum second^2) per segment, into the host array ``sums`` (one small copy back)."""
    bounds, segments = _tables(piece_bounds, piece_segments, first)
    device_partials = _piece_partials(partials, first)
    kernel(SOURCE, "piece_sums_of_squares", first.dtype, like=first)(
        (len(piece_segments),), (THREADS,), (first, optional(second), bounds, device_partials))
    _segment_sums(bounds, segments, device_partials, sums, first)


def lars_step(param, grad, buffer, ratios, piece_bounds, piece_segments, grad_scale, weight_decay, l1, lr, momentum):
    T = param.dtype.type
    bounds, segments = _tables(piece_bounds, piece_segments, param)
    kernel(SOURCE, "lars_step", param.dtype, like=param)(
        (len(piece_segments),), (THREADS,),
        (param, grad, buffer, _on_device(ratios, "ratios", param),
         bounds, segments, T(grad_scale), T(weight_decay), T(l1),
         np.float64(lr), T(momentum)))


def lamb_moments(param, grad, exp_avg, exp_avg_sq, piece_bounds, piece_segments, partials, sums, grad_scale,
                 weight_decay, l1, beta1, beta2, bias_correction1, bias_correction2, eps):
    T = param.dtype.type
    bounds, segments = _tables(piece_bounds, piece_segments, param)
    device_partials = _piece_partials(partials, param)
    kernel(SOURCE, "lamb_moments", param.dtype, like=param)(
        (len(piece_segments),), (THREADS,),
        (param, grad, exp_avg, exp_avg_sq, bounds, device_partials, T(grad_scale), T(l1), T(beta1), T(beta2),
         T(weight_decay), T(bias_correction1), T(bias_correction2), T(eps)))
    _segment_sums(bounds, segments, device_partials, sums, param)


def lamb_apply(param, exp_avg, exp_avg_sq, ratios, piece_bounds, piece_segments, weight_decay, lr, bias_correction1,
               bias_correction2, eps):
    T = param.dtype.type
    bounds, segments = _tables(piece_bounds, piece_segments, param)
    kernel(SOURCE, "lamb_apply", param.dtype, like=param)(
        (len(piece_segments),), (THREADS,),
        (param, exp_avg, exp_avg_sq, _on_device(ratios, "ratios", param),
         bounds, segments, T(weight_decay), np.float64(lr),
         T(bias_correction1), T(bias_correction2), T(eps)))
