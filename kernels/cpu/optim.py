"""Fused in-place optimizer updates over one flat parameter buffer.

Each update is one loop over the flat buffer that reads every element of the parameter, its gradient and
the algorithm's state once and writes each once (Adam: reads p, g, m, v, writes p, m, v: 28 bytes per float32
parameter). Global-norm clipping, coupled weight decay and the L1 subgradient are applied to the gradient on
the fly (``g = grad_scale * grad + weight_decay * p + l1 * sign(p)``), so no pass rewrites the gradients.
Hyperparameters arrive as one float64 row per parameter group (``hyper``, columns in ``kernels/ops.py``); each piece
of the buffer narrows its group's row to the parameters' dtype once, before its loop (float64 scalars would promote
the float32 arithmetic, slower). So any number of groups is still one kernel call.
``error_model="numpy"``: a division by zero gives Inf or NaN as in NumPy and PyTorch instead of raising, and without
the per-division check the loops vectorize. Options that change the state (AMSGrad, centered RMSprop, momentum) are
absent state arrays (``None``), which Numba prunes at compile time, so no option costs a branch per element.

Loops over a piece index a slice of it from 0: Numba's negative-index check on ``x[i]`` with ``i`` from an arbitrary
start keeps LLVM from vectorizing. Norms are computed in float64 over fixed pieces of the buffer (a piece never crosses
a tensor boundary) and combined in piece order: the result does not depend on the thread count. They are the only
kernels with ``fastmath`` (reassociation only, so the sum vectorizes); the tests hold them to float64 references.

Every kernel body is compiled twice: ``parallel`` for buffers of at least PARALLEL_MIN_ELEMENTS, ``serial``
below, where waking the thread pool costs more than the loop (see dense.py).
"""

import numpy as np
from numba import njit, prange

from ..bfloat16 import key_offset
from .bfloat16 import LOW_16, SIXTEEN, narrow, rounding_bits, widen
from .compile_twice import parallel_and_serial
from .reference_counts import WITHOUT_REFERENCE_COUNTS

PARALLEL_MIN_ELEMENTS = 1 << 17


@njit(inline="always")
def _gradient(param, grad, i, grad_scale, weight_decay, l1):
    """g = grad_scale * grad + weight_decay * p + l1 * sign(p), added in that order. A weight_decay or l1 passed
    as None has its term compiled out (the same result as 0: adding 0 * p changes nothing); the bfloat16 update,
    compute-bound on the CPU, passes zeros that way."""
    g = grad[i] * grad_scale
    if weight_decay is not None:
        g = g + weight_decay * param[i]
    if l1 is not None:
        g = g + l1 * np.sign(param[i])
    return g


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS, fastmath={"reassoc"}, error_model="numpy")
def _sum_of_squares(x):
    # Not inlined: fastmath applies to this function alone, the update arithmetic stays exact.
    total = 0.0
    for i in range(x.size):
        value = np.float64(x[i])
        total += value * value
    return total


def _segment_sums_of_squares(first, second, piece_bounds, piece_segments, partials, sums):
    for k in prange(piece_segments.size):
        start, stop = piece_bounds[k], piece_bounds[k + 1]
        partials[k, 0] = _sum_of_squares(first[start:stop])
        if second is not None:
            partials[k, 1] = _sum_of_squares(second[start:stop])
    sums[:] = 0
    for k in range(piece_segments.size):
        sums[piece_segments[k], 0] += partials[k, 0]
        if second is not None:
            sums[piece_segments[k], 1] += partials[k, 1]


def _sgd(param, grad, grad_scale, hyper, piece_bounds, piece_groups):
    T = param.dtype.type
    for k in prange(piece_groups.size):
        row = hyper[piece_groups[k]]
        weight_decay, l1, lr = T(row[0]), T(row[1]), T(row[2])
        p, g = param[piece_bounds[k]:piece_bounds[k + 1]], grad[piece_bounds[k]:piece_bounds[k + 1]]
        for i in range(p.size):
            p[i] -= lr * _gradient(p, g, i, grad_scale, weight_decay, l1)


def _sgd_momentum(param, grad, buffer, grad_scale, hyper, piece_bounds, piece_groups):
    T = param.dtype.type
    for k in prange(piece_groups.size):
        row = hyper[piece_groups[k]]
        weight_decay, l1, lr, buffer_decay = T(row[0]), T(row[1]), T(row[2]), T(row[3])
        grad_coefficient, direct, lookahead = T(row[4]), T(row[5]), T(row[6])
        start, stop = piece_bounds[k], piece_bounds[k + 1]
        p, g, b = param[start:stop], grad[start:stop], buffer[start:stop]
        for i in range(p.size):
            gradient = _gradient(p, g, i, grad_scale, weight_decay, l1)
            momentum_buffer = buffer_decay * b[i] + grad_coefficient * gradient
            b[i] = momentum_buffer
            p[i] -= lr * (direct * gradient + lookahead * momentum_buffer)


def _adagrad(param, grad, sum_of_squared, grad_scale, hyper, piece_bounds, piece_groups):
    T = param.dtype.type
    for k in prange(piece_groups.size):
        row = hyper[piece_groups[k]]
        weight_decay, l1, lr, eps = T(row[0]), T(row[1]), T(row[2]), T(row[3])
        start, stop = piece_bounds[k], piece_bounds[k + 1]
        p, g, s = param[start:stop], grad[start:stop], sum_of_squared[start:stop]
        for i in range(p.size):
            gradient = _gradient(p, g, i, grad_scale, weight_decay, l1)
            total = s[i] + gradient * gradient
            s[i] = total
            p[i] -= lr * gradient / (np.sqrt(total) + eps)


def _rmsprop(param, grad, square_avg, grad_avg, buffer, grad_scale, hyper, piece_bounds, piece_groups):
    T = param.dtype.type
    one = T(1)
    for k in prange(piece_groups.size):
        row = hyper[piece_groups[k]]
        weight_decay, l1, lr, alpha, eps, momentum = T(row[0]), T(row[1]), T(row[2]), T(row[3]), T(row[4]), T(row[5])
        start, stop = piece_bounds[k], piece_bounds[k + 1]
        p, g, sq = param[start:stop], grad[start:stop], square_avg[start:stop]
        # the optional states' pieces, sliced only where present (tested on the arguments: Numba prunes the
        # branches); indexed from 0 like the others, so the loop keeps no negative-index test and vectorizes
        if grad_avg is not None:
            avg = grad_avg[start:stop]
        if buffer is not None:
            b = buffer[start:stop]
        for i in range(p.size):
            gradient = _gradient(p, g, i, grad_scale, weight_decay, l1)
            v = alpha * sq[i] + (one - alpha) * gradient * gradient
            sq[i] = v
            if grad_avg is not None:
                a = alpha * avg[i] + (one - alpha) * gradient
                avg[i] = a
                v = v - a * a
            step = gradient / (np.sqrt(v) + eps)
            if buffer is not None:
                step = momentum * b[i] + step
                b[i] = step
            p[i] -= lr * step


@njit(inline="always")
def _adam_scalars(row, param):
    """A group's row of ``kernels.ops.ADAM_COLUMNS``, narrowed to the parameters' dtype."""
    T = param.dtype.type
    return T(row[0]), T(row[1]), T(row[2]), T(row[3]), T(row[4]), T(row[5]), T(row[6]), T(row[7])


def _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, grad_scale, hyper, piece_bounds, piece_groups):
    T = param.dtype.type
    one = T(1)
    for k in prange(piece_groups.size):
        row = hyper[piece_groups[k]]
        weight_decay, l1, decay_factor, beta1, beta2, step_size, bias_correction2_sqrt, eps = _adam_scalars(row, param)
        start, stop = piece_bounds[k], piece_bounds[k + 1]
        p, g, m_, v_ = param[start:stop], grad[start:stop], exp_avg[start:stop], exp_avg_sq[start:stop]
        if max_exp_avg_sq is not None:  # tested on the argument: Numba prunes the branches (see _rmsprop)
            v_max = max_exp_avg_sq[start:stop]
        for i in range(p.size):
            gradient = _gradient(p, g, i, grad_scale, weight_decay, l1)
            m = beta1 * m_[i] + (one - beta1) * gradient
            v = beta2 * v_[i] + (one - beta2) * gradient * gradient
            m_[i] = m
            v_[i] = v
            if max_exp_avg_sq is not None:
                v = max(v_max[i], v)
                v_max[i] = v
            p[i] = p[i] * decay_factor - step_size * m / (np.sqrt(v) / bias_correction2_sqrt + eps)


def _adam_bfloat16(param, grad, exp_avg, exp_avg_sq, first_key, grad_scale, hyper, piece_bounds, piece_groups,
                   penalties):
    """Adam with bfloat16 moments (uint16 bits): widened, updated and used in float32, stored rounded stochastically
    with the top and low 16 bits of element i's draw (the formulas of reference.optim.adam_bfloat16_step).
    ``penalties`` None (no group has weight_decay or l1) compiles their terms out: this update is compute-bound."""
    T = param.dtype.type
    one = T(1)
    for k in prange(piece_groups.size):
        row = hyper[piece_groups[k]]
        weight_decay, l1, decay_factor, beta1, beta2, step_size, bias_correction2_sqrt, eps = _adam_scalars(row, param)
        start, stop = piece_bounds[k], piece_bounds[k + 1]
        p, g, m_, v_ = param[start:stop], grad[start:stop], exp_avg[start:stop], exp_avg_sq[start:stop]
        piece_key = np.uint32(np.uint32(start) + first_key)
        for i in range(p.size):
            if penalties is None:
                gradient = _gradient(p, g, i, grad_scale, None, None)
            else:
                gradient = _gradient(p, g, i, grad_scale, weight_decay, l1)
            m = beta1 * widen(m_[i]) + (one - beta1) * gradient
            v = beta2 * widen(v_[i]) + (one - beta2) * gradient * gradient
            p[i] = p[i] * decay_factor - step_size * m / (np.sqrt(v) / bias_correction2_sqrt + eps)
            draw = rounding_bits(np.uint32(np.uint32(i) + piece_key))
            m_[i] = narrow(m, draw >> SIXTEEN)
            v_[i] = narrow(v, draw & LOW_16)


def _lars(param, grad, buffer, ratios, piece_segments, grad_scale, hyper, piece_bounds, piece_groups):
    T = param.dtype.type
    for k in prange(piece_segments.size):
        row = hyper[piece_groups[k]]
        weight_decay, l1, momentum = T(row[0]), T(row[1]), T(row[3])
        local_lr = T(row[2] * ratios[piece_segments[k]])
        piece = slice(piece_bounds[k], piece_bounds[k + 1])
        p, g, b = param[piece], grad[piece], buffer[piece]
        for i in range(p.size):
            b[i] = momentum * b[i] + local_lr * _gradient(p, g, i, grad_scale, weight_decay, l1)
            p[i] -= b[i]


@njit(inline="always")
def _lamb_direction(param, exp_avg, exp_avg_sq, i, weight_decay, bias_correction1, bias_correction2, eps):
    return (exp_avg[i] / bias_correction1) / (np.sqrt(exp_avg_sq[i] / bias_correction2) + eps) + weight_decay * param[i]


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS, fastmath={"reassoc"}, error_model="numpy")
def _lamb_direction_sum_of_squares(p, m, v, weight_decay, bias_correction1, bias_correction2, eps):
    total = 0.0
    for i in range(p.size):
        r = np.float64(_lamb_direction(p, m, v, i, weight_decay, bias_correction1, bias_correction2, eps))
        total += r * r
    return total


def _lamb_moments(param, grad, exp_avg, exp_avg_sq, piece_segments, partials, sums, grad_scale, hyper, piece_bounds,
                  piece_groups):
    T = param.dtype.type
    one = T(1)
    zero = T(0)
    for k in prange(piece_segments.size):
        row = hyper[piece_groups[k]]
        weight_decay, l1, beta1, beta2 = T(row[0]), T(row[1]), T(row[3]), T(row[4])
        bias_correction1, bias_correction2, eps = T(row[5]), T(row[6]), T(row[7])
        piece = slice(piece_bounds[k], piece_bounds[k + 1])
        p, m, v = param[piece], exp_avg[piece], exp_avg_sq[piece]
        g = grad[piece]
        for i in range(p.size):
            gradient = _gradient(p, g, i, grad_scale, zero, l1)
            m[i] = beta1 * m[i] + (one - beta1) * gradient
            v[i] = beta2 * v[i] + (one - beta2) * gradient * gradient
        # the piece (at most 256 KiB per array) is still in cache for the two norms
        partials[k, 0] = _sum_of_squares(p)
        partials[k, 1] = _lamb_direction_sum_of_squares(p, m, v, weight_decay, bias_correction1, bias_correction2, eps)
    sums[:] = 0
    for k in range(piece_segments.size):
        sums[piece_segments[k], 0] += partials[k, 0]
        sums[piece_segments[k], 1] += partials[k, 1]


def _lamb_apply(param, exp_avg, exp_avg_sq, ratios, piece_segments, hyper, piece_bounds, piece_groups):
    T = param.dtype.type
    for k in prange(piece_segments.size):
        row = hyper[piece_groups[k]]
        weight_decay, bias_correction1, bias_correction2, eps = T(row[0]), T(row[5]), T(row[6]), T(row[7])
        local_lr = T(row[2] * ratios[piece_segments[k]])
        piece = slice(piece_bounds[k], piece_bounds[k + 1])
        p, m, v = param[piece], exp_avg[piece], exp_avg_sq[piece]
        for i in range(p.size):
            p[i] -= local_lr * _lamb_direction(p, m, v, i, weight_decay, bias_correction1, bias_correction2, eps)


# Each body compiled twice, parallel and serial (see the module docstring).
segment_sums_of_squares_parallel, segment_sums_of_squares_serial = parallel_and_serial(
    _segment_sums_of_squares, "segment_sums_of_squares", fastmath={"reassoc"}, error_model="numpy")
sgd_parallel, sgd_serial = parallel_and_serial(_sgd, "sgd", error_model="numpy")
sgd_momentum_parallel, sgd_momentum_serial = parallel_and_serial(_sgd_momentum, "sgd_momentum", error_model="numpy")
adagrad_parallel, adagrad_serial = parallel_and_serial(_adagrad, "adagrad", error_model="numpy")
rmsprop_parallel, rmsprop_serial = parallel_and_serial(_rmsprop, "rmsprop", error_model="numpy")
adam_parallel, adam_serial = parallel_and_serial(_adam, "adam", error_model="numpy")
adam_bfloat16_parallel, adam_bfloat16_serial = parallel_and_serial(_adam_bfloat16, "adam_bfloat16",
                                                                   error_model="numpy")
lars_parallel, lars_serial = parallel_and_serial(_lars, "lars", error_model="numpy")
lamb_moments_parallel, lamb_moments_serial = parallel_and_serial(_lamb_moments, "lamb_moments", error_model="numpy")
lamb_apply_parallel, lamb_apply_serial = parallel_and_serial(_lamb_apply, "lamb_apply", error_model="numpy")


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS, error_model="numpy")
def lars_trust_ratios(sums, adapt, grad_scale, hyper, segment_groups, ratios):
    for s in range(ratios.size):
        row = hyper[segment_groups[s]]
        weight_decay, trust_coefficient, eps = row[0], row[4], row[5]
        param_norm = np.sqrt(sums[s, 0])
        grad_norm = grad_scale * np.sqrt(sums[s, 1])
        if adapt[s] and param_norm > 0 and grad_norm > 0:
            ratios[s] = trust_coefficient * param_norm / (grad_norm + weight_decay * param_norm + eps)
        else:
            ratios[s] = 1.0


@njit(cache=True, **WITHOUT_REFERENCE_COUNTS, error_model="numpy")
def lamb_trust_ratios(sums, ratios):
    for s in range(ratios.size):
        param_norm = np.sqrt(sums[s, 0])
        direction_norm = np.sqrt(sums[s, 1])
        ratios[s] = param_norm / direction_norm if param_norm > 0 and direction_norm > 0 else 1.0


def _pick(parallel, serial, size):
    return parallel if size >= PARALLEL_MIN_ELEMENTS else serial


def segment_sums_of_squares(first, second, piece_bounds, piece_segments, partials, sums):
    _pick(segment_sums_of_squares_parallel, segment_sums_of_squares_serial, first.size)(
        first, second, piece_bounds, piece_segments, partials, sums)


def sgd_step(param, grad, grad_scale, hyper, piece_bounds, piece_groups):
    _pick(sgd_parallel, sgd_serial, param.size)(param, grad, grad_scale, hyper, piece_bounds, piece_groups)


def sgd_momentum_step(param, grad, buffer, grad_scale, hyper, piece_bounds, piece_groups):
    _pick(sgd_momentum_parallel, sgd_momentum_serial, param.size)(param, grad, buffer, grad_scale, hyper, piece_bounds,
                                                                  piece_groups)


def adagrad_step(param, grad, sum_of_squared, grad_scale, hyper, piece_bounds, piece_groups):
    _pick(adagrad_parallel, adagrad_serial, param.size)(param, grad, sum_of_squared, grad_scale, hyper, piece_bounds,
                                                        piece_groups)


def rmsprop_step(param, grad, square_avg, grad_avg, buffer, grad_scale, hyper, piece_bounds, piece_groups):
    _pick(rmsprop_parallel, rmsprop_serial, param.size)(param, grad, square_avg, grad_avg, buffer, grad_scale, hyper,
                                                        piece_bounds, piece_groups)


def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, grad_scale, hyper, piece_bounds, piece_groups):
    _pick(adam_parallel, adam_serial, param.size)(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, grad_scale, hyper,
                                                  piece_bounds, piece_groups)


def adam_bfloat16_step(param, grad, exp_avg, exp_avg_sq, seed, counter, grad_scale, hyper, piece_bounds,
                       piece_groups):
    penalties = True if hyper[:, :2].any() else None  # columns 0 and 1: weight_decay, l1
    _pick(adam_bfloat16_parallel, adam_bfloat16_serial, param.size)(
        param, grad, exp_avg, exp_avg_sq, np.uint32(key_offset(seed, counter)), grad_scale, hyper, piece_bounds,
        piece_groups, penalties)


def lars_step(param, grad, buffer, ratios, piece_segments, grad_scale, hyper, piece_bounds, piece_groups):
    _pick(lars_parallel, lars_serial, param.size)(param, grad, buffer, ratios, piece_segments, grad_scale, hyper,
                                                  piece_bounds, piece_groups)


def lamb_moments(param, grad, exp_avg, exp_avg_sq, piece_segments, partials, sums, grad_scale, hyper, piece_bounds,
                 piece_groups):
    _pick(lamb_moments_parallel, lamb_moments_serial, param.size)(
        param, grad, exp_avg, exp_avg_sq, piece_segments, partials, sums, grad_scale, hyper, piece_bounds,
        piece_groups)


def lamb_apply(param, exp_avg, exp_avg_sq, ratios, piece_segments, hyper, piece_bounds, piece_groups):
    _pick(lamb_apply_parallel, lamb_apply_serial, param.size)(
        param, exp_avg, exp_avg_sq, ratios, piece_segments, hyper, piece_bounds, piece_groups)
