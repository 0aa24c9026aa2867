"""Optimizer updates, written straight from PyTorch's formulas (the ground truth for the fused kernels).

Every function updates ``param`` and the state arrays in place, over the flat buffers or over any array of
matching shape, in the parameter's dtype (scalars are float32 for float32 parameters). The gradient the
algorithm sees is ``g = grad_scale * grad + weight_decay * param + l1 * sign(param)``: ``grad_scale`` carries
global-norm clipping (1 without it), ``weight_decay`` the coupled L2 penalty, ``l1`` the L1 subgradient.
LARS and LAMB need per-tensor norms: tensor ``s`` of the flat buffer is made of the pieces ``k`` with
``piece_segments[k] == s``, piece ``k`` covering ``[piece_bounds[k], piece_bounds[k + 1])``.
"""

import numpy as np

from .. import bfloat16


def effective_gradient(param, grad, grad_scale, weight_decay, l1):
    return grad * grad_scale + weight_decay * param + l1 * np.sign(param)


def _sum_of_squares(x):
    return float(np.sum(np.square(x, dtype=np.float64)))


def segment_sums_of_squares(first, second, piece_bounds, piece_segments, partials, sums):
    """sums[s, 0] = sum(first^2) and sums[s, 1] = sum(second^2) over tensor s (float64); second may be None.
    ``partials`` (pieces x 2, float64) is the fused kernel's workspace."""
    sums[...] = 0
    for k in range(len(piece_segments)):
        start, stop = piece_bounds[k], piece_bounds[k + 1]
        sums[piece_segments[k], 0] += _sum_of_squares(first[start:stop])
        if second is not None:
            sums[piece_segments[k], 1] += _sum_of_squares(second[start:stop])


def sgd_step(param, grad, grad_scale, weight_decay, l1, lr):
    """p <- p - lr g"""
    param -= lr * effective_gradient(param, grad, grad_scale, weight_decay, l1)


def sgd_momentum_step(param, grad, buffer, grad_scale, weight_decay, l1, lr, buffer_decay, grad_coefficient,
                      direct, lookahead):
    """b <- buffer_decay b + grad_coefficient g;  p <- p - lr (direct g + lookahead b).

    PyTorch's SGD: the first step sets b = g (buffer_decay 0, grad_coefficient 1), later steps
    b = momentum b + (1 - dampening) g. Heavy ball steps along b (direct 0, lookahead 1), Nesterov along
    g + momentum b (direct 1, lookahead momentum).
    """
    g = effective_gradient(param, grad, grad_scale, weight_decay, l1)
    buffer[...] = buffer_decay * buffer + grad_coefficient * g
    param -= lr * (direct * g + lookahead * buffer)


def adagrad_step(param, grad, sum_of_squared, grad_scale, weight_decay, l1, lr, eps):
    """G <- G + g^2;  p <- p - lr g / (sqrt(G) + eps), with lr already decayed: lr0 / (1 + (t - 1) lr_decay)."""
    g = effective_gradient(param, grad, grad_scale, weight_decay, l1)
    sum_of_squared += g * g
    param -= lr * g / (np.sqrt(sum_of_squared) + eps)


def rmsprop_step(param, grad, square_avg, grad_avg, buffer, grad_scale, weight_decay, l1, lr, alpha, eps, momentum):
    """v <- alpha v + (1 - alpha) g^2;  centered (grad_avg given): a <- alpha a + (1 - alpha) g, v - a^2 in place of v;
    step g / (sqrt(v) + eps), through a momentum buffer b <- momentum b + step when ``buffer`` is given.

    PyTorch adds eps outside the square root; the textbook's sqrt(v + eps) differs there.
    """
    g = effective_gradient(param, grad, grad_scale, weight_decay, l1)
    square_avg[...] = alpha * square_avg + (1 - alpha) * g * g
    if grad_avg is not None:
        grad_avg[...] = alpha * grad_avg + (1 - alpha) * g
        denominator = np.sqrt(square_avg - grad_avg * grad_avg) + eps
    else:
        denominator = np.sqrt(square_avg) + eps
    if buffer is not None:
        buffer[...] = momentum * buffer + g / denominator
        param -= lr * buffer
    else:
        param -= lr * g / denominator


def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, grad_scale, weight_decay, l1, decay_factor, beta1,
              beta2, step_size, bias_correction2_sqrt, eps):
    """Adam and AdamW. p <- decay_factor p (AdamW's decoupled decay, 1 - lr wd; 1 for Adam);
    m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2;  with AMSGrad (max_exp_avg_sq given)
    v_max <- max(v_max, v) is used in place of v;  p <- p - step_size m / (sqrt(v) / sqrt(1 - beta2^t) + eps),
    step_size = lr / (1 - beta1^t).
    """
    g = effective_gradient(param, grad, grad_scale, weight_decay, l1)
    param *= decay_factor
    exp_avg[...] = beta1 * exp_avg + (1 - beta1) * g
    exp_avg_sq[...] = beta2 * exp_avg_sq + (1 - beta2) * g * g
    second = exp_avg_sq
    if max_exp_avg_sq is not None:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        second = max_exp_avg_sq
    param -= step_size * exp_avg / (np.sqrt(second) / bias_correction2_sqrt + eps)


def adam_bfloat16_step(param, grad, exp_avg, exp_avg_sq, seed, counter, grad_scale, weight_decay, l1, decay_factor,
                       beta1, beta2, step_size, bias_correction2_sqrt, eps):
    """Adam and AdamW (no AMSGrad) with the moments stored as bfloat16 bits (uint16), float32 parameters.

    m and v are widened to float32, updated and used for the step as in ``adam_step``, then stored rounded
    stochastically (``kernels/bfloat16.py``): element i of step ``counter`` draws 32 bits, whose top 16 round
    m and low 16 round v.
    """
    g = effective_gradient(param, grad, grad_scale, weight_decay, l1)
    m = beta1 * bfloat16.to_float32(exp_avg) + (1 - beta1) * g
    v = beta2 * bfloat16.to_float32(exp_avg_sq) + (1 - beta2) * g * g
    param *= decay_factor
    param -= step_size * m / (np.sqrt(v) / bias_correction2_sqrt + eps)
    draws = bfloat16.rounding_bits(seed, counter, param.size)
    exp_avg[...] = bfloat16.round_stochastic(m, draws >> np.uint32(16))
    exp_avg_sq[...] = bfloat16.round_stochastic(v, draws & np.uint32(0xFFFF))


def lars_trust_ratios(sums, adapt, grad_scale, trust_coefficient, weight_decay, eps, ratios):
    """Per tensor (You et al. 2017): trust_coefficient ||p|| / (||g|| + weight_decay ||p|| + eps), from
    sums[:, 0] = ||p||^2 and sums[:, 1] = ||grad||^2 (before clipping); 1 where not ``adapt`` or a norm is 0."""
    for s in range(len(ratios)):
        param_norm = np.sqrt(sums[s, 0])
        grad_norm = grad_scale * np.sqrt(sums[s, 1])
        if adapt[s] and param_norm > 0 and grad_norm > 0:
            ratios[s] = trust_coefficient * param_norm / (grad_norm + weight_decay * param_norm + eps)
        else:
            ratios[s] = 1.0


def lars_step(param, grad, buffer, ratios, piece_bounds, piece_segments, grad_scale, weight_decay, l1, lr,
              momentum):
    """b <- momentum b + lr ratio_s g;  p <- p - b, per tensor s."""
    for k in range(len(piece_segments)):
        part = slice(piece_bounds[k], piece_bounds[k + 1])
        g = effective_gradient(param[part], grad[part], grad_scale, weight_decay, l1)
        local_lr = (lr * ratios[piece_segments[k]]).astype(param.dtype)
        buffer[part] = momentum * buffer[part] + local_lr * g
        param[part] -= buffer[part]


def lamb_update_direction(param, exp_avg, exp_avg_sq, weight_decay, bias_correction1, bias_correction2, eps):
    return (exp_avg / bias_correction1) / (np.sqrt(exp_avg_sq / bias_correction2) + eps) + weight_decay * param


def lamb_moments(param, grad, exp_avg, exp_avg_sq, piece_bounds, piece_segments, partials, sums, grad_scale,
                 weight_decay, l1, beta1, beta2, bias_correction1, bias_correction2, eps):
    """LAMB's first pass (You et al. 2019): m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2;
    r = m_hat / (sqrt(v_hat) + eps) + weight_decay p;  sums[s] = (||p||^2, ||r||^2) per tensor s."""
    g = effective_gradient(param, grad, grad_scale, 0, l1)
    exp_avg[...] = beta1 * exp_avg + (1 - beta1) * g
    exp_avg_sq[...] = beta2 * exp_avg_sq + (1 - beta2) * g * g
    direction = lamb_update_direction(param, exp_avg, exp_avg_sq, weight_decay, bias_correction1, bias_correction2, eps)
    segment_sums_of_squares(param, direction, piece_bounds, piece_segments, partials, sums)


def lamb_trust_ratios(sums, ratios):
    """||p|| / ||r|| per tensor; 1 where either norm is 0."""
    for s in range(len(ratios)):
        param_norm, direction_norm = np.sqrt(sums[s, 0]), np.sqrt(sums[s, 1])
        ratios[s] = param_norm / direction_norm if param_norm > 0 and direction_norm > 0 else 1.0


def lamb_apply(param, exp_avg, exp_avg_sq, ratios, piece_bounds, piece_segments, weight_decay, lr, bias_correction1,
               bias_correction2, eps):
    """p <- p - lr ratio_s r, per tensor s."""
    direction = lamb_update_direction(param, exp_avg, exp_avg_sq, weight_decay, bias_correction1, bias_correction2, eps)
    for k in range(len(piece_segments)):
        part = slice(piece_bounds[k], piece_bounds[k + 1])
        param[part] -= (lr * ratios[piece_segments[k]]).astype(param.dtype) * direction[part]
