"""Inverted dropout, plainly: element k of call ``counter`` is kept when uniform(seed, counter, k) >= p (the counter
generator every backend shares), survivors scaled by 1 / (1 - p). The mask is stored as bytes."""

import numpy as np

from .. import counter_rng


def dropout_mask(shape, p, seed, counter):
    u = counter_rng.uniform(seed, counter, np.arange(int(np.prod(shape)))).reshape(shape)
    return (u >= p).astype(np.uint8)


def dropout_forward(x, p, seed, counter, mask_out, y_out):
    mask_out[...] = dropout_mask(x.shape, p, seed, counter)
    y_out[...] = x * mask_out / (1 - p) if p > 0 else x


def dropout_backward(grad_y, mask, p, grad_x):
    grad_x[...] = grad_y * mask / (1 - p) if p > 0 else grad_y
