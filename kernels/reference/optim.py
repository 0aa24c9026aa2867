"""Optimizer updates, written straight from PyTorch's formulas (the ground truth for the fused kernels).

Every function updates ``param`` and the state arrays in place over the flat buffers, in the parameter's dtype.
The gradient the algorithm sees is ``g = grad_scale * grad + weight_decay * param + l1 * sign(param)``:
``grad_scale`` carries global-norm clipping (1 without it), ``weight_decay`` the coupled L2 penalty, ``l1`` the L1
subgradient. Hyperparameters come per parameter group: ``hyper[r]`` is group r's row (its columns are the op's
``kernels.ops.HYPER_COLUMNS``), and piece k of the buffer, ``[piece_bounds[k], piece_bounds[k + 1])``, belongs to
group ``piece_groups[k]``. Each formula below is written for one piece and that piece's scalars. LARS and LAMB
also need per-tensor norms: tensor ``s`` is made of the pieces k with ``piece_segments[k] == s``.
"""

import numpy as np

from .. import bfloat16


def effective_gradient(param, grad, grad_scale, weight_decay, l1):
    return grad * grad_scale + weight_decay * param + l1 * np.sign(param)


def _sum_of_squares(x):
    return float(np.sum(np.square(x, dtype=np.float64)))


def _part(array, part):
    return None if array is None else array[part]


def pieces(param, hyper, piece_bounds, piece_groups):
    """(k, slice of piece k, its group's hyperparameters in the parameters' dtype) for every piece, in order."""
    rows = hyper.astype(param.dtype)
    for k in range(len(piece_groups)):
        yield k, slice(piece_bounds[k], piece_bounds[k + 1]), rows[piece_groups[k]]


def segment_sums_of_squares(first, second, piece_bounds, piece_segments, partials, sums):
    """sums[s, 0] = sum(first^2) and sums[s, 1] = sum(second^2) over tensor s (float64); second may be None.
    ``partials`` (pieces x 2, float64) is the fused kernel's workspace."""
    sums[...] = 0
    for k in range(len(piece_segments)):
        start, stop = piece_bounds[k], piece_bounds[k + 1]
        sums[piece_segments[k], 0] += _sum_of_squares(first[start:stop])
        if second is not None:
            sums[piece_segments[k], 1] += _sum_of_squares(second[start:stop])


def sgd_step(param, grad, grad_scale, hyper, piece_bounds, piece_groups):
    """p <- p - lr g"""
    for _, part, (weight_decay, l1, lr) in pieces(param, hyper, piece_bounds, piece_groups):
        p = param[part]
        p -= lr * effective_gradient(p, grad[part], grad_scale, weight_decay, l1)


def sgd_momentum_step(param, grad, buffer, grad_scale, hyper, piece_bounds, piece_groups):
    """b <- buffer_decay b + grad_coefficient g;  p <- p - lr (direct g + lookahead b).

    PyTorch's SGD: the first step sets b = g (buffer_decay 0, grad_coefficient 1), later steps
    b = momentum b + (1 - dampening) g. Heavy ball steps along b (direct 0, lookahead 1), Nesterov along
    g + momentum b (direct 1, lookahead momentum).
    """
    for _, part, row in pieces(param, hyper, piece_bounds, piece_groups):
        weight_decay, l1, lr, buffer_decay, grad_coefficient, direct, lookahead = row
        p, b = param[part], buffer[part]
        g = effective_gradient(p, grad[part], grad_scale, weight_decay, l1)
        b[...] = buffer_decay * b + grad_coefficient * g
        p -= lr * (direct * g + lookahead * b)


def adagrad_step(param, grad, sum_of_squared, grad_scale, hyper, piece_bounds, piece_groups):
    """G <- G + g^2;  p <- p - lr g / (sqrt(G) + eps), with lr already decayed: lr0 / (1 + (t - 1) lr_decay)."""
    for _, part, (weight_decay, l1, lr, eps) in pieces(param, hyper, piece_bounds, piece_groups):
        p, total = param[part], sum_of_squared[part]
        g = effective_gradient(p, grad[part], grad_scale, weight_decay, l1)
        total += g * g
        p -= lr * g / (np.sqrt(total) + eps)


def rmsprop_step(param, grad, square_avg, grad_avg, buffer, grad_scale, hyper, piece_bounds, piece_groups):
    """v <- alpha v + (1 - alpha) g^2;  centered (grad_avg given): a <- alpha a + (1 - alpha) g, v - a^2 in place of v;
    step g / (sqrt(v) + eps), through a momentum buffer b <- momentum b + step when ``buffer`` is given.

    PyTorch adds eps outside the square root; the textbook's sqrt(v + eps) differs there.
    """
    for _, part, (weight_decay, l1, lr, alpha, eps, momentum) in pieces(param, hyper, piece_bounds, piece_groups):
        p, v, a, b = param[part], square_avg[part], _part(grad_avg, part), _part(buffer, part)
        g = effective_gradient(p, grad[part], grad_scale, weight_decay, l1)
        v[...] = alpha * v + (1 - alpha) * g * g
        if a is not None:
            a[...] = alpha * a + (1 - alpha) * g
            denominator = np.sqrt(v - a * a) + eps
        else:
            denominator = np.sqrt(v) + eps
        if b is not None:
            b[...] = momentum * b + g / denominator
            p -= lr * b
        else:
            p -= lr * g / denominator


def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, grad_scale, hyper, piece_bounds, piece_groups):
    """Adam and AdamW. p <- decay_factor p (AdamW's decoupled decay, 1 - lr wd; 1 for Adam);
    m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2;  with AMSGrad (max_exp_avg_sq given)
    v_max <- max(v_max, v) is used in place of v;  p <- p - step_size m / (sqrt(v) / sqrt(1 - beta2^t) + eps),
    step_size = lr / (1 - beta1^t).
    """
    for _, part, row in pieces(param, hyper, piece_bounds, piece_groups):
        weight_decay, l1, decay_factor, beta1, beta2, step_size, bias_correction2_sqrt, eps = row
        p, m, v, v_max = param[part], exp_avg[part], exp_avg_sq[part], _part(max_exp_avg_sq, part)
        g = effective_gradient(p, grad[part], grad_scale, weight_decay, l1)
        p *= decay_factor
        m[...] = beta1 * m + (1 - beta1) * g
        v[...] = beta2 * v + (1 - beta2) * g * g
        second = v
        if v_max is not None:
            np.maximum(v_max, v, out=v_max)
            second = v_max
        p -= step_size * m / (np.sqrt(second) / bias_correction2_sqrt + eps)


def adam_bfloat16_step(param, grad, exp_avg, exp_avg_sq, seed, counter, grad_scale, hyper, piece_bounds,
                       piece_groups):
    """Adam and AdamW (no AMSGrad) with the moments stored as bfloat16 bits (uint16), float32 parameters.

    m and v are widened to float32, updated and used for the step as in ``adam_step``, then stored rounded
    stochastically (``kernels/bfloat16.py``): element i of step ``counter`` draws 32 bits, whose top 16 round
    m and low 16 round v.
    """
    draws = bfloat16.rounding_bits(seed, counter, param.size)
    for _, part, row in pieces(param, hyper, piece_bounds, piece_groups):
        weight_decay, l1, decay_factor, beta1, beta2, step_size, bias_correction2_sqrt, eps = row
        p = param[part]
        g = effective_gradient(p, grad[part], grad_scale, weight_decay, l1)
        m = beta1 * bfloat16.to_float32(exp_avg[part]) + (1 - beta1) * g
        v = beta2 * bfloat16.to_float32(exp_avg_sq[part]) + (1 - beta2) * g * g
        p *= decay_factor
        p -= step_size * m / (np.sqrt(v) / bias_correction2_sqrt + eps)
        exp_avg[part] = bfloat16.round_stochastic(m, draws[part] >> np.uint32(16))
        exp_avg_sq[part] = bfloat16.round_stochastic(v, draws[part] & np.uint32(0xFFFF))


def lars_trust_ratios(sums, adapt, grad_scale, hyper, segment_groups, ratios):
    """Per tensor s (You et al. 2017): trust_coefficient ||p|| / (||g|| + weight_decay ||p|| + eps) with its group's
    hyperparameters, from sums[s, 0] = ||p||^2 and sums[s, 1] = ||grad||^2 (before clipping); 1 where not ``adapt``
    or a norm is 0."""
    for s in range(len(ratios)):
        weight_decay, _, _, _, trust_coefficient, eps = hyper[segment_groups[s]]
        param_norm = np.sqrt(sums[s, 0])
        grad_norm = grad_scale * np.sqrt(sums[s, 1])
        if adapt[s] and param_norm > 0 and grad_norm > 0:
            ratios[s] = trust_coefficient * param_norm / (grad_norm + weight_decay * param_norm + eps)
        else:
            ratios[s] = 1.0


def lars_step(param, grad, buffer, ratios, piece_segments, grad_scale, hyper, piece_bounds, piece_groups):
    """b <- momentum b + lr ratio_s g;  p <- p - b, per tensor s (the local lr computed in float64, then narrowed)."""
    for k, part, (weight_decay, l1, _, momentum, _, _) in pieces(param, hyper, piece_bounds, piece_groups):
        g = effective_gradient(param[part], grad[part], grad_scale, weight_decay, l1)
        local_lr = param.dtype.type(hyper[piece_groups[k], 2] * ratios[piece_segments[k]])
        buffer[part] = momentum * buffer[part] + local_lr * g
        param[part] -= buffer[part]


def lamb_update_direction(param, exp_avg, exp_avg_sq, weight_decay, bias_correction1, bias_correction2, eps):
    return (exp_avg / bias_correction1) / (np.sqrt(exp_avg_sq / bias_correction2) + eps) + weight_decay * param


def lamb_moments(param, grad, exp_avg, exp_avg_sq, piece_segments, partials, sums, grad_scale, hyper, piece_bounds,
                 piece_groups):
    """LAMB's first pass (You et al. 2019): m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2;
    r = m_hat / (sqrt(v_hat) + eps) + weight_decay p;  sums[s] = (||p||^2, ||r||^2) per tensor s."""
    sums[...] = 0
    for k, part, row in pieces(param, hyper, piece_bounds, piece_groups):
        weight_decay, l1, _, beta1, beta2, bias_correction1, bias_correction2, eps = row
        p, m, v = param[part], exp_avg[part], exp_avg_sq[part]
        g = effective_gradient(p, grad[part], grad_scale, 0, l1)
        m[...] = beta1 * m + (1 - beta1) * g
        v[...] = beta2 * v + (1 - beta2) * g * g
        direction = lamb_update_direction(p, m, v, weight_decay, bias_correction1, bias_correction2, eps)
        sums[piece_segments[k], 0] += _sum_of_squares(p)
        sums[piece_segments[k], 1] += _sum_of_squares(direction)


def lamb_trust_ratios(sums, ratios):
    """||p|| / ||r|| per tensor; 1 where either norm is 0."""
    for s in range(len(ratios)):
        param_norm, direction_norm = np.sqrt(sums[s, 0]), np.sqrt(sums[s, 1])
        ratios[s] = param_norm / direction_norm if param_norm > 0 and direction_norm > 0 else 1.0


def lamb_apply(param, exp_avg, exp_avg_sq, ratios, piece_segments, hyper, piece_bounds, piece_groups):
    """p <- p - lr ratio_s r, per tensor s (the local lr computed in float64, then narrowed)."""
    for k, part, row in pieces(param, hyper, piece_bounds, piece_groups):
        weight_decay, _, _, _, _, bias_correction1, bias_correction2, eps = row
        p = param[part]
        direction = lamb_update_direction(p, exp_avg[part], exp_avg_sq[part], weight_decay, bias_correction1,
                                          bias_correction2, eps)
        p -= param.dtype.type(hyper[piece_groups[k], 2] * ratios[piece_segments[k]]) * direction
